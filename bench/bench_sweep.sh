#!/usr/bin/env bash
# Benchmark (not a test): the demo-like sweep (4 features x 2 novel-name settings x 3 batches of 30
# prompts = 24 work units) on a random GPT-Neo of d_model 256, 8 layers x 8 heads (a unit takes
# ~0.5-1 s on one thread), run with 1 rank x 1 thread and then 2 ranks x 1 thread, in this one run.
# Prints both wall times, the speed-up (target 1.8 or more), and the share of the ranks' unit time
# spent writing HDF5, from the per-rank log lines "done in X s (write Y s)" (target under 5%).
# Usage: bench/bench_sweep.sh [BIN]     (default: build/src/tinysql-eap)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$root/build/src/tinysql-eap}")
tokenizers=${TEAP_TOKENIZERS:-$root/.cache/tokenizers}
mpi=(mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)

T=$(mktemp -d /tmp/teap-bench-sweep.XXXXXX)
trap 'rm -rf "$T"' EXIT

"$bin" make-model --family gpt_neo --layers 8 --heads 8 --d-model 256 --vocab-from "$tokenizers/gpt2" --seed 1 \
  --out "$T/model" >/dev/null
job() {
  cat >"$T/$1.toml" <<EOF
output = "$T/$1"
[grid]
features = ["EngTableName", "EngFieldName", "DefTableName", "DefFieldName"]
use_novel_names = [false, true]
[settings]
num_fields = 2
batch_size = 30
batches = 3
threads = 1
[models.BM1]
cs1 = "$T/model"
tokenizer = "$T/model"
EOF
  echo "$T/$1.toml"
}

# run NAME RANKS: the sweep's wall time in seconds (mpirun start-up, model loads and all).
run() {
  local t0 t1
  t0=$(date +%s.%N)
  "${mpi[@]}" -np "$2" "$bin" run "$(job "$1")" >"$T/$1.stdout" 2>"$T/$1.stderr" ||
    { cat "$T/$1.stderr" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

echo "bench_sweep: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) before the runs"
w1=$(run one 1)
w2=$(run two 2)

# Per-unit compute and write seconds from the rank logs; "done in X" excludes the write.
shares() {
  cat "$T/$1"/logs/rank-*.log | sed -nE 's/.* done in ([0-9.]+) s \(write ([0-9.]+) s\).*/\1 \2/p' |
    awk '{c += $1; w += $2; n++} END {printf "%d units, compute %.2f s, write %.3f s, write share %.2f%%", n, c, w, 100 * w / (c + w)}'
}
# The sweep loop alone: from the first rank's start line to the last "finished" line (no mpirun
# start-up, no MPI initialisation).
loop() {
  cat "$T/$1"/logs/rank-*.log | sed -nE 's/^\[[0-9-]+ ([0-9]+):([0-9]+):([0-9.]+)\].*(intra-op threads|finished:).*/\1 \2 \3 \4/p' |
    awk '{t = $1 * 3600 + $2 * 60 + $3; if ($4 == "intra-op") { if (!s || t < s) s = t } else if (t > e) e = t}
         END {printf "%.2f", e - s}'
}
l1=$(loop one)
l2=$(loop two)
printf '1 rank  x 1 thread : %6.2f s wall, sweep loop %6.2f s  (%s)\n' "$w1" "$l1" "$(shares one)"
printf '2 ranks x 1 thread : %6.2f s wall, sweep loop %6.2f s  (%s)\n' "$w2" "$l2" "$(shares two)"
printf 'speed-up 2 ranks / 1 rank: %.2f on the wall time, %.2f on the sweep loop (target 1.8 or more)\n' \
  "$(echo "$w1 / $w2" | bc -l)" "$(echo "$l1 / $l2" | bc -l)"
cat "$T"/one/logs/rank-*.log "$T"/two/logs/rank-*.log | sed -nE 's/.* done in ([0-9.]+) s \(write ([0-9.]+) s\).*/\1 \2/p' |
  awk '{c += $1; w += $2} END {printf "HDF5 write share of unit time, both runs: %.2f%% (target under 5%%)\n", 100 * w / (c + w)}'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
