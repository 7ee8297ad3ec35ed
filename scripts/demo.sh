#!/usr/bin/env bash
# The main command: installs what is missing, builds, trains the demo model once (reused while its
# settings match), runs the demo sweep on 2 MPI ranks, reduces it, and prints where the summary is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
bin="$root/build/src/tinysql-eap"
export TEAP_TOKENIZERS="$root/.cache/tokenizers"
"$bin" --version

echo "== demo model: a 2-layer GPT-Neo (BM1's family) trained on TinySQL here ($root/.cache/demo-model)"
"$bin" train --out "$root/.cache/demo-model" --tokenizer "$root/.cache/tokenizers/gpt2" --threads "$(nproc)"
"$bin" eval --model "$root/.cache/demo-model" --items 200

echo "== demo sweep: jobs/demo.toml on 2 ranks"
mpi=(mpirun -np 2)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
mpi+=(--oversubscribe)
"${mpi[@]}" "$bin" run "$root/jobs/demo.toml"
"$bin" status "$root/out/demo" | tail -1

echo "== reduce: notebook JSON, Sankey diagrams, summary page"
"$bin" reduce "$root/out/demo"
echo "demo done: open $root/out/demo/index.html"
