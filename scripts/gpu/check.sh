#!/usr/bin/env bash
# Run THERE, after scripts/gpu/build.sh: every GPU check, then one PASS/FAIL table (and the same
# table, logs and benchmark output under $OUT when the device tool sets it). Under 10 minutes.
#
#   scripts/gpu/check.sh [--bundle DIR] [--prefix DIR] [--build DIR] [--work DIR] [--python PY]
#                        [--device cuda|cpu] [--skip-bench] [--skip-sweep]
#
#   1 checkpoints  make-model again there; sha256 equal to the one recorded here
#   2 attribute    attribute --device DEV, float32 and bfloat16, all cases, against the CPU scores
#                  computed here (float32: 1e-4 of the largest score; bfloat16: $BF16_TOL and the
#                  same top-10 edges); also the build's own CPU float32 against here's
#   3 logits       dump_logits (float32, DEV and cpu) against transformers' AutoModelForCausalLM
#                  (float32, CPU), 1e-4; the ids against tokenizers'
#   4 tokens       test_parity against ids from Hugging Face tokenizers on tests/data/tokenizer_corpus.jsonl
#   5 bench        bench_eap --device DEV, float32 and bfloat16 (BM1, Qwen2-, Llama-shaped)
#   6 sweep        mpirun -np 2 run (group_size 1, DEV) against the CPU sweep made here; then
#                  group_size 2 (NCCL on CUDA; NCCL may refuse two ranks on one device: SKIP)
# Without transformers/tokenizers (the build machine), 3 uses tests/model/reference.py and 4 is
# skipped; --device cpu there rehearses the whole script on CPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle="$root/.gpu-bundle"
prefix="$root/.gpu-prefix"
build="$root/build-gpu"
work="$root/.gpu-work"
python=${TEAP_PYTHON:-python3}
device=cuda
skip_bench=0
skip_sweep=0
while (($#)); do
  case $1 in
    --bundle) bundle=${2:?--bundle needs a folder}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a folder}; shift 2 ;;
    --build) build=${2:?--build needs a folder}; shift 2 ;;
    --work) work=${2:?--work needs a folder}; shift 2 ;;
    --python) python=${2:?--python needs a program}; shift 2 ;;
    --device) device=${2:?--device needs cuda or cpu}; shift 2 ;;
    --skip-bench) skip_bench=1; shift ;;
    --skip-sweep) skip_sweep=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $device == cpu || $device == cuda* ]] || { echo "gpu-check: --device must be cuda, cuda:N or cpu, not '$device'" >&2; exit 2; }
bin="$build/src/tinysql-eap"
dump="$build/tests/model/dump_logits"
parity="$build/tests/test_parity"
bench="$build/bench/bench_eap"
for f in "$bin" "$dump" "$parity" "$bench"; do
  [ -x "$f" ] || { echo "gpu-check: $f not found (run scripts/gpu/build.sh first)" >&2; exit 2; }
done
for f in refs/models.tsv tokenizers.tar.xz demo-model.tar.xz; do
  [ -e "$bundle/$f" ] || { echo "gpu-check: $bundle/$f not found (run scripts/gpu/bundle.sh here and carry it)" >&2; exit 2; }
done
command -v "$python" >/dev/null || { echo "gpu-check: $python not found (--python)" >&2; exit 2; }
# shellcheck source=env.sh
source "$root/scripts/gpu/env.sh" "$prefix"
# shellcheck source=cases.sh
source "$root/scripts/gpu/cases.sh"
# bfloat16 against the CPU's bfloat16: both round every activation to 8 bits of mantissa, but
# accumulate in other orders. Measured here (bundle.sh prints it): bfloat16 vs float32 on CPU.
BF16_TOL=${BF16_TOL:-0.2}
t_start=$(date +%s)
rm -rf "$work" && mkdir -p "$work/scores" "$work/logs" "$work/models"
results="$work/results.tsv"
: >"$results"
# record CHECK VERDICT DETAIL
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; echo "[$2] $1: $3"; }
# verdict_of COMMAND...: runs it, logs its output, records PASS/FAIL with its last line.
compare() {
  local name=$1; shift
  local log="$work/logs/$(echo "$name" | tr ' /:' '___').log" rc=0
  "$@" >"$log" 2>&1 || rc=$?
  local line
  line=$(grep -E '^(PASS|FAIL)' "$log" | tail -1 || true)
  [ -n "$line" ] || line="FAIL $(tail -1 "$log")"
  if ((rc == 0)); then record "$name" PASS "${line#PASS }"; else record "$name" FAIL "${line#FAIL }"; fi
}

echo "== machine"
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; } | tee "$work/logs/machine.txt"
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' \
  2>&1 | tee -a "$work/logs/machine.txt" || true
have_hf=0
"$python" -c 'import transformers, tokenizers' 2>/dev/null && have_hf=1
"$python" -c 'import transformers, tokenizers; print("transformers", transformers.__version__, "tokenizers", tokenizers.__version__)' \
  2>&1 | tee -a "$work/logs/machine.txt" || true

echo "== 1 checkpoints"
# untar ARCHIVE DIR: tar with xz, else Python's tarfile (a machine without xz).
untar() { tar -C "$2" -xJf "$1" 2>/dev/null || "$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; }
untar "$bundle/tokenizers.tar.xz" "$work"
untar "$bundle/demo-model.tar.xz" "$work/models"
tok="$work/tokenizers"
for c in "${CASES[@]}"; do
  read -r name family tokname opts <<<"$c"
  m="$work/models/$name"
  if [ "$family" != trained ]; then
    # shellcheck disable=SC2086
    "$bin" make-model --family "$family" --vocab-from "$tok/$tokname" --out "$m" $opts >/dev/null
  fi
  want=$(awk -v n="$name" '$1 == n {print $2}' "$bundle/refs/models.tsv")
  got=$(cat "$m"/*.safetensors | sha256sum | cut -c1-64)
  if [ "$want" = "$got" ]; then record "checkpoint $name" PASS "sha256 ${got:0:12} as made here"
  else record "checkpoint $name" FAIL "sha256 ${got:0:12}, here ${want:0:12}: the CPU scores below do not apply"; fi
done

echo "== 2 attribute"
for c in "${CASES[@]}"; do
  read -r name _ <<<"$c"
  m="$work/models/$name"
  for dtype in float32 bfloat16; do
    s="$work/scores/$name.$dtype.$device.json"
    # shellcheck disable=SC2086
    if "$bin" attribute --model "$m" --device "$device" --dtype "$dtype" $ATTRIBUTE_ARGS --scores-out "$s" \
      >"$work/logs/attribute.$name.$dtype.$device.log" 2>&1; then
      tol=1e-4; [ "$dtype" = bfloat16 ] && tol=$BF16_TOL
      compare "attribute $name $dtype $device vs cpu here" \
        "$python" "$root/scripts/gpu/compare_scores.py" --tol "$tol" --top 10 "$bundle/refs/$name.$dtype.json" "$s"
    else
      record "attribute $name $dtype $device vs cpu here" FAIL "attribute exited non-zero: $(tail -1 "$work/logs/attribute.$name.$dtype.$device.log")"
    fi
  done
  if [ "$device" != cpu ]; then
    s="$work/scores/$name.float32.cpu.json"
    # shellcheck disable=SC2086
    "$bin" attribute --model "$m" --device cpu --dtype float32 $ATTRIBUTE_ARGS --scores-out "$s" >"$work/logs/attribute.$name.float32.cpu.log" 2>&1 || true
    compare "attribute $name float32 cpu there vs cpu here" \
      "$python" "$root/scripts/gpu/compare_scores.py" --tol 1e-4 "$bundle/refs/$name.float32.json" "$s"
  fi
done

echo "== 3 logits"
ref=hf; ((have_hf)) || ref=project
for c in "${CASES[@]}"; do
  read -r name _ <<<"$c"
  devs=("$device"); [ "$device" != cpu ] && devs+=(cpu)
  for d in "${devs[@]}"; do
    compare "logits $name $d vs $ref" "$python" "$root/scripts/gpu/compare_hf.py" logits "$work/models/$name" \
      --bin "$bin" --dump-logits "$dump" --device "$d" --reference "$ref" --work "$work/logits"
  done
done

echo "== 4 tokens"
corpus="$root/tests/data/tokenizer_corpus.jsonl"
# test_parity loads PATH and compares with the reference made from REF's tokenizer.json.
for pair in gpt2:gpt2-json gpt2/encoder.json:gpt2-json gpt2-json:gpt2-json qwen2:qwen2 llama3:llama3 llama3-bos:llama3-bos; do
  path=${pair%%:*} refdir=${pair#*:}
  if ((!have_hf)); then record "tokens $path" SKIP "Hugging Face tokenizers not importable"; continue; fi
  out="$work/ref_$refdir.jsonl"
  [ -f "$out" ] || "$python" "$root/scripts/gpu/compare_hf.py" tokens "$tok/$refdir" "$corpus" "$out" >"$work/logs/tokens.$refdir.log" 2>&1 ||
    { record "tokens $path" FAIL "tokenizers failed: $(tail -1 "$work/logs/tokens.$refdir.log")"; continue; }
  log="$work/logs/parity.$(echo "$path" | tr '/' '_').log"
  if TEAP_TOKENIZER="$tok/$path" TEAP_REFERENCE="$out" "$parity" >"$log" 2>&1; then
    record "tokens $path" PASS "$(wc -l <"$out") corpus texts: ids, plain ids and decode identical to tokenizers'"
  else
    record "tokens $path" FAIL "$(grep -m1 -E 'mismatch|Failure|differ' "$log" || tail -1 "$log")"
  fi
done

if ((!skip_bench)); then
  echo "== 5 bench"
  for dtype in float32 bfloat16; do
    if "$bench" --device "$device" --dtype "$dtype" >"$work/bench.$device.$dtype.txt" 2>&1; then
      record "bench $device $dtype" PASS "$(grep -c '^BM1\|^qwen2\|^llama' "$work/bench.$device.$dtype.txt") shapes (table below)"
    else
      record "bench $device $dtype" FAIL "$(tail -1 "$work/bench.$device.$dtype.txt")"
    fi
  done
fi

if ((!skip_sweep)); then
  echo "== 6 sweep"
  for g in 1 2; do
    out="$work/sweep-g$g"
    write_job "$work/sweep-g$g.toml" "$out" "$work/models/demo" "$device" "$g"
    log="$work/logs/sweep-g$g.log"
    # shellcheck disable=SC2086
    if NCCL_DEBUG=WARN mpirun.openmpi -np 2 $MPIRUN_ARGS -x NCCL_DEBUG "$bin" run "$work/sweep-g$g.toml" >"$log" 2>&1; then
      compare "sweep 2 ranks group_size $g $device vs cpu here" \
        "$python" "$root/scripts/gpu/compare_scores.py" --tol 1e-4 "$bundle/refs/sweep" "$out"
    elif ((g == 2)) && [ "$device" != cpu ] && grep -qiE "duplicate GPU|NCCL init: invalid usage" "$log"; then
      # NCCL refuses two ranks of one communicator on one device (ncclInvalidUsage at init).
      record "sweep 2 ranks group_size 2 $device" SKIP "NCCL refuses 2 ranks on one device: $(grep -m1 -iE 'duplicate GPU|invalid usage' "$log" | cut -c1-160)"
    else
      record "sweep 2 ranks group_size $g $device" FAIL "$(grep -m1 -iE 'error|failed' "$log" | cut -c1-200 || tail -1 "$log")"
    fi
  done
fi

echo
echo "== results ($(($(date +%s) - t_start)) s, device $device)"
column -t -s $'\t' "$results" 2>/dev/null || cat "$results"
if ((!skip_bench)); then
  for f in "$work"/bench.*.txt; do echo; echo "-- $(basename "$f")"; cat "$f"; done
fi
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  cp "$results" "$OUT/results.tsv"
  cat "$work"/bench.*.txt >"$OUT/bench.txt" 2>/dev/null || true
  tar -C "$work" -czf "$OUT/logs.tar.gz" logs scores 2>/dev/null || true
fi
n_fail=$(awk -F'\t' '$2 == "FAIL"' "$results" | wc -l)
echo "gpu-check: $(awk -F'\t' '$2 == "PASS"' "$results" | wc -l) passed, $n_fail failed, $(awk -F'\t' '$2 == "SKIP"' "$results" | wc -l) skipped"
((n_fail == 0))
