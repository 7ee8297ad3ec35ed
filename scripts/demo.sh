#!/usr/bin/env bash
# The main command: installs what is missing, builds, and runs the demo end to end with what exists
# so far (tokenizer and prompt generator); later steps (model, EAP, sweep, reducer) join it as they land.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
bin="$root/build/src/tinysql-eap"
tok="$root/.cache/tokenizers/gpt2"
out="$root/out/demo"
mkdir -p "$out"
"$bin" --version
echo "== tokenizer (GPT-2, BM1's): the spec's 36-token example"
"$bin" tokenize --tokenizer "$tok" \
  "### Instruction: show me the price and count from the people table ### Context: CREATE TABLE people ( price INT, count CHAR ) ### Response: SELECT price, count FROM people"
for feature in EngTableName EngFieldName DefTableName DefFieldName; do
  "$bin" generate --tokenizer "$tok" --feature "$feature" --batch-size 30 --batches 2 --seed 1 \
    --format jsonl >"$out/prompts.$feature.jsonl"
done
echo "== one clean/corrupt pair per feature (all pairs: $out/prompts.*.jsonl)"
"$bin" generate --tokenizer "$tok" --feature DefFieldName --batch-size 1 --seed 1 --format text
echo "demo done: prompt pairs for the four features are in $out"
