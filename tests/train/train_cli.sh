#!/usr/bin/env bash
# train_cli.sh BIN EXPECT WORKDIR: `train` and `eval` from the command line. Needs TEAP_TOKENIZERS.
set -euo pipefail
bin=$1 expect=$2 work=$3
tok=$TEAP_TOKENIZERS
rm -rf "$work" && mkdir -p "$work" && cd "$work"
base=(--layers 2 --heads 2 --d-model 32 --batch-size 8 --lr 0.01 --seed 3 --threads 1)
small=("${base[@]}" --steps 30)

# Two runs of the same seed and threads: byte-identical checkpoints (the first uses the default
# tokenizer, $TEAP_TOKENIZERS/gpt2).
"$bin" --log-level warn train --out a "${small[@]}" >/dev/null
"$bin" --log-level warn train --out b --tokenizer "$tok/gpt2" "${small[@]}" >/dev/null
cmp a/model.safetensors b/model.safetensors
python3 - a/training.json <<'PY' || { echo "FAIL: the loss did not fall"; exit 1; }
import json, sys
r = json.load(open(sys.argv[1]))
print("loss", r["first_loss"], "->", r["final_loss"])
sys.exit(0 if r["final_loss"] < 0.5 * r["first_loss"] else 1)
PY

# The folder loads back: inspect, eval.
"$expect" 0 "^family: gpt_neo$" "$bin" inspect a
"$expect" 0 "^trim: none needed$" "$bin" inspect a
"$expect" 0 "^exact match: [0-9]+/30 " "$bin" eval --model a --items 30 --threads 1
"$expect" 0 "feature=DefFieldName;novel=0;syn_field=0;syn_table=0;num_fields=2: [0-9]+/30 " "$bin" eval --model a --items 30 --threads 1

# Same settings again: reused, not retrained.
before=$(stat -c %Y a/model.safetensors)
"$expect" 0 "^reusing a: " "$bin" train --out a "${small[@]}"
[ "$(stat -c %Y a/model.safetensors)" = "$before" ] || { echo "FAIL: reuse rewrote the model"; exit 1; }

# Bad input: exit 2, one line naming the culprit.
"$expect" 2 "--steps 0" "$bin" train --out z --tokenizer "$tok/gpt2" --steps 0
"$expect" 2 "qwen2 tokenizer with [0-9]+ tokens; train needs GPT-2's" "$bin" train --out z --tokenizer "$tok/qwen2" "${small[@]}"
"$expect" 2 "steps 30 \\(wanted 31\\).*--force" "$bin" train --out a "${base[@]}" --steps 31
"$bin" make-model --family gpt_neo --layers 1 --heads 2 --d-model 16 --vocab-from "$tok/gpt2" --out other >/dev/null
"$expect" 2 "other: holds another model \\(config.json, no training.json\\); pass --force" "$bin" train --out other "${small[@]}"
"$expect" 2 "exists and is not a folder" "$bin" train --out a/config.json "${small[@]}"
[ ! -e z ] || { echo "FAIL: a refused run left z behind"; exit 1; }
# --force replaces the other model.
"$bin" --log-level warn train --out other "${small[@]}" --force >/dev/null
cmp a/model.safetensors other/model.safetensors
echo "train_cli: all passed"
