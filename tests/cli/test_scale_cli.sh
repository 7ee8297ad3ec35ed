#!/usr/bin/env bash
# Issue 17 at the command line: --tokenizer takes a repository id of the Hugging Face cache in
# tokenize, generate, inspect, complete, attribute and make-model --vocab-from (as job files do);
# make-model --preset writes the real configuration (tied as it says, any vocabulary size, the
# stored dtype as torch_dtype), overridable size by size.
# Usage: test_scale_cli.sh BIN TOKENIZERS_DIR
set -u
bin=$1 tok=$2
T=$(mktemp -d /tmp/teap-scale-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# A cache entry org/tok whose snapshot holds GPT-2's tokenizer files.
export HF_HUB_CACHE=$T/hub
commit=0123456789abcdef0123456789abcdef01234567
mkdir -p "$HF_HUB_CACHE/models--org--tok/refs" "$HF_HUB_CACHE/models--org--tok/snapshots/$commit"
echo "$commit" >"$HF_HUB_CACHE/models--org--tok/refs/main"
cp "$tok"/gpt2/* "$HF_HUB_CACHE/models--org--tok/snapshots/$commit/"

out=$("$bin" tokenize --tokenizer org/tok "show me") || fail "tokenize org/tok"
echo "$out" | grep -q '^ids: 12860 502$' || fail "tokenize org/tok: $out"
"$bin" generate --tokenizer org/tok --feature DefFieldName --format text --batches 1 --batch-size 2 | grep -q . ||
  fail "generate org/tok"
"$bin" make-model --family gpt_neo --layers 1 --heads 2 --d-model 16 --vocab-from org/tok --out "$T/m" >/dev/null ||
  fail "make-model --vocab-from org/tok"
rm "$T"/m/vocab.json "$T"/m/merges.txt "$T"/m/tokenizer.json 2>/dev/null
out=$("$bin" inspect "$T/m" --tokenizer org/tok) || fail "inspect --tokenizer org/tok"
echo "$out" | grep -q "^tokenizer: .*snapshots/$commit.* (gpt2, 50257 tokens)$" || fail "inspect: $out"
"$bin" complete "$T/m" "show me" --tokenizer org/tok --max-tokens 2 >/dev/null || fail "complete --tokenizer org/tok"
"$bin" attribute --model "$T/m" --tokenizer org/tok --feature EngTableName --batches 1 --batch-size 2 >/dev/null || fail "attribute --tokenizer org/tok"
err=$("$bin" tokenize --tokenizer org/missing x 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && [ "$(echo "$err" | wc -l)" = 1 ] && echo "$err" | grep -q "org/missing: no such folder, and not in the Hugging Face cache" ||
  fail "a missing id: exit $rc: $err"
echo "ok: repository ids as --tokenizer"

# Presets: BM3's real configuration with one layer, a narrow MLP and a small vocabulary, stored BF16.
out=$("$bin" make-model --preset bm3 --layers 1 --d-mlp 64 --vocab-size 512 --bf16 --vocab-from "$tok/llama3" --out "$T/bm3") ||
  fail "make-model --preset bm3"
echo "$out" | grep -q "llama, 1 layers, 32 heads (8 kv), d_model 2048, d_mlp 64, vocabulary 512, tied, " || fail "bm3: $out"
cfg=$T/bm3/config.json
grep -q '"torch_dtype": "bfloat16"' "$cfg" || fail "bm3: torch_dtype: $(grep dtype "$cfg")"
grep -q '"tie_word_embeddings": true' "$cfg" || fail "bm3: not tied"
grep -q '"rope_type": "llama3"' "$cfg" && grep -q '"head_dim": 64' "$cfg" && grep -q '"rms_norm_eps": 1e-05' "$cfg" ||
  fail "bm3: rope or head_dim or eps: $(cat "$cfg")"
head -c 100000 "$T/bm3/model.safetensors" | grep -aq lm_head && fail "bm3: a tied model has an lm_head"
out=$("$bin" inspect "$T/bm3") || fail "inspect bm3"
echo "$out" | grep -q "^dtype: BF16 " || fail "inspect bm3: $out"
# BM2 untied at any vocabulary size; BM1 as TinyStories-Instruct-2Layers-33M.
out=$("$bin" make-model --preset bm2 --layers 1 --d-mlp 32 --vocab-size 151936 --untied --vocab-from "$tok/qwen2" --out "$T/bm2") ||
  fail "make-model --preset bm2"
echo "$out" | grep -q "qwen2, 1 layers, 14 heads (2 kv), d_model 896, d_mlp 32, vocabulary 151936, untied, " || fail "bm2: $out"
head -c 100000 "$T/bm2/model.safetensors" | grep -aq '"lm_head.weight"' || fail "bm2 --untied: no lm_head"
grep -q '"torch_dtype": "float32"' "$T/bm2/config.json" || fail "bm2: torch_dtype"
out=$("$bin" make-model --preset bm1 --vocab-from "$tok/gpt2" --out "$T/bm1") || fail "make-model --preset bm1"
echo "$out" | grep -q "gpt_neo, 2 layers, 16 heads (16 kv), d_model 1024, d_mlp 4096, vocabulary 50257, tied, 78748672 parameters" ||
  fail "bm1: $out"
err=$("$bin" make-model --preset bm2 --family llama --vocab-from "$tok/qwen2" --out "$T/x" 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && echo "$err" | grep -q "\-\-family llama: --preset bm2 is a qwen2 model" || fail "preset vs family: exit $rc: $err"
echo "ok: presets"
