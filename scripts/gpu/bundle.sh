#!/usr/bin/env bash
# Run HERE (Debian 12, network): gathers what the GPU machine lacks into one folder (default
# .gpu-bundle/, gitignored), at most 64 MiB, which the device tool carries along.
#
#   scripts/gpu/bundle.sh [--out DIR] [--build DIR] [--stage debs|refs|all]
#
#   debs  the Debian packages (OpenMPI, HDF5, toml++, spdlog/fmt, CLI11, nlohmann-json, PCRE2,
#         libunistring, GTest, pkgconf) and their runtime closure, as .deb files (apt-get
#         download); scripts/gpu/build.sh unpacks them there with dpkg -x into a private prefix
#   refs  what the GPU checks compare against, computed here on CPU with the build in --build
#         (default build/, which must have been built with this checkout's sources):
#         tokenizers.tar.xz (.cache/tokenizers), demo-model.tar.xz (a small GPT-Neo trained here),
#         refs/models.tsv (the sha256 of each tiny checkpoint, which check.sh makes again there),
#         refs/NAME.DTYPE.json (attribute --scores-out on CPU, float32 and bfloat16),
#         refs/sweep/units/ (the unit files of a small sweep of the demo model on CPU)
#
# The cases (models and attribute options) are in scripts/gpu/cases.sh, shared with check.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.gpu-bundle"
build="$root/build"
stage=all
while (($#)); do
  case $1 in
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --build) build=${2:?--build needs a folder}; shift 2 ;;
    --stage) stage=${2:?--stage needs debs, refs or all}; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bundle: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case $stage in debs|refs|all) ;; *) echo "bundle: --stage must be debs, refs or all, not '$stage'" >&2; exit 2 ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
limit=$((64 * 1024 * 1024))

# --- Debian packages ------------------------------------------------------------------------------
roots=(libopenmpi-dev openmpi-bin libhdf5-openmpi-dev libtomlplusplus-dev libspdlog-dev libfmt-dev
       nlohmann-json3-dev libcli11-dev libgtest-dev libpcre2-dev libunistring-dev pkgconf)
if [ "$stage" = debs ] || [ "$stage" = all ]; then
  command -v apt-get >/dev/null || { echo "bundle: apt-get not found (run this on the Debian 12 build machine)" >&2; exit 1; }
  list=$(/usr/bin/python3 "$root/scripts/gpu/deb_closure.py" "${roots[@]}")
  rm -rf "$out/debs.tmp" && mkdir -p "$out/debs.tmp"
  # shellcheck disable=SC2086
  (cd "$out/debs.tmp" && apt-get download -q $list 2>&1 >/dev/null | { grep -v "unsandboxed" || true; }) ||
    { echo "bundle: apt-get download failed (apt-get update first?)" >&2; exit 1; }
  rm -rf "$out/debs" && mv "$out/debs.tmp" "$out/debs"
  echo "$list" >"$out/debs/PACKAGES"
  echo "bundle: $(ls "$out/debs"/*.deb | wc -l) packages, $(du -sh "$out/debs" | cut -f1) in $out/debs"
fi

# --- CPU references -------------------------------------------------------------------------------
if [ "$stage" = refs ] || [ "$stage" = all ]; then
  bin="$build/src/tinysql-eap"
  [ -x "$bin" ] || { echo "bundle: $bin not found (build first: scripts/build.sh, or --build DIR)" >&2; exit 1; }
  "$bin" attribute --help | grep -q -- --scores-out ||
    { echo "bundle: $bin has no attribute --scores-out (rebuild with this checkout's sources)" >&2; exit 1; }
  tok="$root/.cache/tokenizers"
  for t in gpt2 gpt2-json qwen2 llama3 llama3-bos; do
    [ -d "$tok/$t" ] || { echo "bundle: $tok/$t not found (run scripts/setup.sh)" >&2; exit 1; }
  done
  # shellcheck source=cases.sh
  source "$root/scripts/gpu/cases.sh"
  work="$out/work"
  rm -rf "$work" "$out/refs.tmp" && mkdir -p "$work" "$out/refs.tmp"
  tar -C "$root/.cache" -cJf "$out/tokenizers.tar.xz.tmp" tokenizers/gpt2 tokenizers/gpt2-json tokenizers/qwen2 \
    tokenizers/llama3 tokenizers/llama3-bos
  mv "$out/tokenizers.tar.xz.tmp" "$out/tokenizers.tar.xz"

  # The trained demo model, small enough to travel (train is deterministic for a thread count).
  demo="$work/models/demo"
  echo "bundle: training the demo model ($DEMO_TRAIN)"
  # shellcheck disable=SC2086
  "$bin" train --out "$demo" --tokenizer "$tok/gpt2" --threads 1 $DEMO_TRAIN >"$work/train.log" 2>&1 ||
    { tail -5 "$work/train.log" >&2; echo "bundle: training the demo model failed" >&2; exit 1; }
  tar -C "$work/models" -cJf "$out/demo-model.tar.xz" demo

  : >"$out/refs.tmp/models.tsv"
  for c in "${CASES[@]}"; do
    read -r name family tokname opts <<<"$c"
    m="$work/models/$name"
    if [ "$family" != trained ]; then
      # shellcheck disable=SC2086
      "$bin" make-model --family "$family" --vocab-from "$tok/$tokname" --out "$m" $opts >/dev/null
    fi
    printf '%s\t%s\n' "$name" "$(cat "$m"/*.safetensors | sha256sum | cut -c1-64)" >>"$out/refs.tmp/models.tsv"
    for dtype in float32 bfloat16; do
      echo "bundle: attribute $name $dtype (cpu)"
      # shellcheck disable=SC2086
      "$bin" attribute --model "$m" --device cpu --dtype "$dtype" $ATTRIBUTE_ARGS \
        --scores-out "$out/refs.tmp/$name.$dtype.json" >"$work/attribute.$name.$dtype.log" 2>&1 ||
        { tail -5 "$work/attribute.$name.$dtype.log" >&2; echo "bundle: attribute $name $dtype failed" >&2; exit 1; }
    done
    # How far bfloat16 lands from float32 on the same CPU: the scale of check.sh's bf16 tolerance.
    /usr/bin/python3 "$root/scripts/gpu/compare_scores.py" --measure \
      "$out/refs.tmp/$name.float32.json" "$out/refs.tmp/$name.bfloat16.json" | sed "s/^/bundle: $name bf16 vs fp32 (cpu): /"
  done
  # The sweep check's reference: the demo model's small sweep on CPU, one rank (its unit files).
  write_job "$work/sweep.toml" "$work/sweep" "$demo" cpu 1
  echo "bundle: sweep (cpu, 1 rank)"
  "$bin" run "$work/sweep.toml" >"$work/sweep.log" 2>&1 ||
    { tail -5 "$work/sweep.log" >&2; echo "bundle: the reference sweep failed" >&2; exit 1; }
  mkdir -p "$out/refs.tmp/sweep" && cp -r "$work/sweep/units" "$out/refs.tmp/sweep/units"
  rm -rf "$out/refs" && mv "$out/refs.tmp" "$out/refs"
  rm -rf "$work"
fi

size=$(du -sb "$out" | cut -f1)
echo "bundle: $out holds $((size / 1024)) KiB ($(awk -v s="$size" 'BEGIN{printf "%.1f", s/1048576}') MiB of 64 MiB)"
if ((size > limit)); then echo "bundle: $out is over 64 MiB" >&2; exit 1; fi
