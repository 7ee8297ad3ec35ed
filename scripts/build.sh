#!/usr/bin/env bash
# Configures and builds into build/ (reused when present). Usage: scripts/build.sh [cmake args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$root/build.configure.log" 2>&1 ||
  { cat "$root/build.configure.log"; exit 1; }
grep -E "CUDA|NCCL|LibTorch" "$root/build.configure.log" || true
cmake --build "$root/build" -j "$jobs"
