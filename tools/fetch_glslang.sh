#!/usr/bin/env bash
# tools/fetch_glslang.sh: fetch a modern glslang (Slang's build of glslang + SPIRV-Tools, as the
# shared library libslang-glslang that PyPI's slangpy wheel carries) into chimera's cache, for
# the Vulkan shader variants Debian 12's glslang 12 cannot compile (GL_KHR_cooperative_matrix,
# GL_NV_cooperative_matrix2, GL_EXT_bfloat16). tools/glslc_dl.c drives it; CMake finds it at
# $CHIMERA_CACHE/glslang/ (default ~/.cache/chimera). Called by tools/bootstrap.sh.
#
# The wheel and the library are pinned by SHA-256. Without network (or on any failure) this
# warns and exits 0: the build then leaves those variants out and says so, and the backend runs
# its older cooperative-matrix path. Nothing is installed outside the cache folder.
set -euo pipefail

WHEEL_URL="https://files.pythonhosted.org/packages/0b/89/917567a889417c87842cea379091cb46b7f4f4000e9fec1b9d25d251c4cf/slangpy-0.43.1-cp311-cp311-manylinux_2_34_x86_64.whl"
WHEEL_SHA=965dbbd1d907c90e17027945780146a67c66baf766f3d0b8af3f52ea2c4a8eb9
MEMBER=slangpy/libslang-glslang-2026.12.so
LIB_SHA=d529bf64d39521d626cca4c1f74612b1b662e0b68829a5efd12fdb20306f0b69

dir="${CHIMERA_CACHE:-$HOME/.cache/chimera}/glslang"
lib="$dir/$(basename "$MEMBER")"
warn() { echo "fetch_glslang: $*; the KHR/NV2/bf16 cooperative-matrix shader variants will be left out" >&2; exit 0; }

if [ -f "$lib" ] && echo "$LIB_SHA  $lib" | sha256sum -c --status; then
  echo "fetch_glslang: $lib present"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || warn "no x86_64 build of the library for $(uname -m)"
command -v curl >/dev/null || warn "curl is missing"
command -v python3 >/dev/null || warn "python3 is missing"
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch_glslang: downloading slangpy 0.43.1's wheel (92 MB) for its glslang library"
curl -fsSL --retry 3 -o "$tmp/w.whl" "$WHEEL_URL" || warn "download failed"
echo "$WHEEL_SHA  $tmp/w.whl" | sha256sum -c --status || warn "the wheel's SHA-256 does not match"
python3 - "$tmp/w.whl" "$MEMBER" "$tmp/lib.so" <<'EOF' || warn "cannot extract the library"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
echo "$LIB_SHA  $tmp/lib.so" | sha256sum -c --status || warn "the library's SHA-256 does not match"
mv "$tmp/lib.so" "$lib"
echo "fetch_glslang: $lib"
