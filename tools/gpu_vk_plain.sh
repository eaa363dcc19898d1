#!/usr/bin/env bash
# tools/gpu_vk_plain.sh: the Vulkan plain matmul (matmul.comp: f32 everywhere, and f16/bf16 on
# devices without cooperative matrices) on the GPU machine, in one call: `vk_bench --mm-plain`
# (checks against the cpu, then TFLOP/s at 4096^3, 8192x2048x8192 and chimera-1b's shapes) for
# this build and, with bin/vk_bench_base in the pack, an earlier one, alternated; the driver's
# statistics of the plain pipelines (registers, local memory); the tiles of PLAIN_TILES
# (CHIMERA_VULKAN_MATMUL_TILE); the vulkan matmul tests on the NVIDIA driver (with
# bin/chimera_tests in the pack); chimera-1b's f32 step on Vulkan (`chimera plan`, base and new
# alternated where bin/chimera_base is there; PLAIN_1B=0 leaves it out). A table ends it.
#   GPU_OUT=.gpu tools/gpu_pack.sh     # on the build machine
#   bash tools/gpu_vk_plain.sh         # on the GPU machine (carry .gpu and .gl)
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_steps.sh
gpu_vulkan_setup gpu_vk_plain
STEP_TAIL=4
step_done() { pack_logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$LOG/card.txt"
export XDG_CACHE_HOME=/tmp/gpu_vk_plain_cache
rm -rf "$XDG_CACHE_HOME"
VP=(plan --config training_dolma --set train.grad_accum=1 --set precision=f32 --backend vulkan
    --steps 4)
for r in 1 2; do # this build and the base, alternated
    if [ -x "$B/vk_bench_base" ]; then step "base-mm-$r" 120 "$B/vk_bench_base" --mm-plain; fi
    step "new-mm-$r" 120 env CHIMERA_VULKAN_PIPELINE_STATS=$((r == 1)) "$B/vk_bench" --mm-plain
done
for t in ${PLAIN_TILES:-}; do
    step "tile-${t//\//_}" 90 env CHIMERA_VULKAN_MATMUL_TILE=$t "$B/vk_bench" --mm-plain
done
if [ -x "$B/chimera_tests" ]; then
    step tests 300 "$B/chimera_tests" --jobs 4 --filter "${PLAIN_TESTS:-vulkan/matmul*}"
fi
if [ "${PLAIN_1B:-1}" = 1 ]; then
    for r in 1 2; do
        if [ -x "$B/chimera_base" ]; then step "base-1b-$r" 150 "$B/chimera_base" "${VP[@]}"; fi
        step "new-1b-$r" 150 "$B/chimera" "${VP[@]}"
    done
fi
echo
echo "== summary ($(head -n 1 "$LOG/card.txt"))"
printf '%s\n' "${STEPS[@]}"
for f in "$LOG"/*-1b-*.txt; do
    [ -f "$f" ] && echo "$(basename "$f" .txt): $(grep -h -E "tokens/s" "$f" | tail -n 1)"
done
grep -h "pipeline matmul" "$LOG"/new-mm-1.txt | sort -u | sed 's/^chimera vulkan: /  /' | cut -c1-200
for f in "$LOG"/base-mm-*.txt "$LOG"/new-mm-*.txt "$LOG"/tile-*.txt; do
    [ -f "$f" ] || continue
    echo "$(basename "$f" .txt): $(grep -h "matmul checks" "$f")"
    sed -n '/== summary/,$p' "$f" | grep "matmul " | grep -v checks | sed 's/(.. of cuBLASLt.*//'
done
