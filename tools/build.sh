#!/usr/bin/env bash
# tools/build.sh [BUILD_DIR] [cmake args...]: configure (once) and build chimera with Ninja.
# Used by tools/main.sh and tools/test.sh; safe to run again (incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S . -B "$dir" -G Ninja "$@"
fi
cmake --build "$dir" -- -j"$(nproc)"
