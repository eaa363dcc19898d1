#!/usr/bin/env bash
# tools/gpu_ab_pack.sh: pack a base build and a new build of chimera for one device call that
# compares them in the same lease (tools/gpu_ab.sh runs there).
#
#   tools/gpu_ab_pack.sh BASE [NEW]
#
# BASE and NEW are git revisions (NEW defaults to HEAD; "." packs the working tree as it is,
# helpers' uncommitted edits included). Each is checked out in a worktree under /tmp and built
# by tools/gpu_pack.sh with Vulkan on (arch 90); the packs merge into .gpu-ab/ (git-ignored):
# bin/chimera, bin/cuda_opcheck, bin/chimera_tests from NEW, bin/chimera_base and
# bin/cuda_opcheck_base from BASE, lib/ with the shared libraries the GPU machine lacks.
# The build directories stay under /tmp (chimera-ab-<rev>), so a later pack of the same
# revision only relinks. Then, from the device tool: carry [".gpu-ab", ".gl"] and run
# `bash tools/gpu_ab.sh` (its header lists the knobs). The carry limit is 64 MiB: the pack
# prints its size; NO_TESTS=1 leaves chimera_tests out, NO_OPCHECK_BASE=1 the base's
# cuda_opcheck; VK_BENCH=1 adds the new build's vk_bench.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
base=${1:?usage: tools/gpu_ab_pack.sh BASE [NEW]}
new=${2:-HEAD}
out=$root/.gpu-ab

# pack REV DIR: build REV (or the working tree for ".") with gpu_pack.sh into DIR.
pack() {
    local rev=$1 dir=$2 src=$root tag
    if [ "$rev" != "." ]; then
        tag=$(git rev-parse --short "$rev")
        src=/tmp/chimera-ab-src-$tag
        [ -d "$src" ] || git worktree add -f --detach "$src" "$tag" >/dev/null
        git -C "$src" checkout -q --detach "$tag"
    else
        tag=tree
    fi
    (cd "$src" && GPU_OUT="$dir" GPU_BUILD="/tmp/chimera-ab-build-$tag" bash tools/gpu_pack.sh >/dev/null)
    echo "gpu_ab_pack: $rev ($tag) built"
}

tmp=$(mktemp -d)
pack "$base" "$tmp/base"
pack "$new" "$tmp/new"
rm -rf "$out"
mkdir -p "$out/bin"
cp -r "$tmp/new/lib" "$out/"
cp -n "$tmp/base/lib/"* "$out/lib/" 2>/dev/null || true
for b in chimera cuda_opcheck; do
    cp "$tmp/new/bin/$b" "$out/bin/$b"
    [ "$b" = cuda_opcheck ] && [ -n "${NO_OPCHECK_BASE:-}" ] && continue
    cp "$tmp/base/bin/$b" "$out/bin/${b}_base"
done
if [ -z "${NO_TESTS:-}" ] && [ -x "$tmp/new/bin/chimera_tests" ]; then
    cp "$tmp/new/bin/chimera_tests" "$out/bin/"
fi
if [ -n "${VK_BENCH:-}" ] && [ -x "$tmp/new/bin/vk_bench" ]; then
    cp "$tmp/new/bin/vk_bench" "$out/bin/"
fi
rm -rf "$tmp"
printf '%s\n%s\n' "base $(git rev-parse --short "$base")" \
    "new $([ "$new" = . ] && echo "working tree of $(git rev-parse --short HEAD)" || git rev-parse --short "$new")" \
    >"$out/REVISIONS"
echo "gpu_ab_pack: $(du -sh "$out" | cut -f1) in $out (carry it with .gl; limit 64 MiB with the tree)"
