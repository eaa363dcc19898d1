#!/usr/bin/env bash
# tools/gpu_vk_step.sh: where chimera-1b's step goes on the Vulkan backend against the cuda
# backend, on the GPU machine in one call: the step (`chimera plan`) on vulkan and cuda
# alternated, then each under CHIMERA_PROFILE=shapes (one row per matmul shape, with its TFLOP/s),
# and (if packed) bin/chimera_base's Vulkan step for an A/B in the same lease. A summary ends it.
#   GPU_OUT=.gpu tools/gpu_pack.sh   # on the build machine; then carry .gpu and .gl
# VK_ENV="VAR=value ..." runs the Vulkan steps under those variables too (a switch under test).
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_steps.sh
gpu_vulkan_setup gpu_vk_step
STEP_TAIL=3
step_done() { pack_logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$LOG/card.txt"
VP=(plan --config training_dolma --set train.grad_accum=1 --steps 4)
read -r -a VE <<<"${VK_ENV:-}"
for r in 1 2; do
    step "1b-vulkan-$r" 150 env "${VE[@]}" "$B/chimera" "${VP[@]}" --backend vulkan
    if [ -x "$B/chimera_base" ]; then
        step "1b-base-$r" 150 "$B/chimera_base" "${VP[@]}" --backend vulkan
    fi
    step "1b-cuda-$r" 150 "$B/chimera" "${VP[@]}" --backend cuda
done
step prof-vulkan 150 env "${VE[@]}" CHIMERA_PROFILE=shapes "$B/chimera" "${VP[@]}" --backend vulkan
step prof-cuda 150 env CHIMERA_PROFILE=shapes "$B/chimera" "${VP[@]}" --backend cuda

echo
echo "== summary ($(head -n 1 "$LOG/card.txt"))"
printf '%s\n' "${STEPS[@]}"
for f in "$LOG"/1b-*.txt; do
    echo "$(basename "$f" .txt): $(grep -h -E "tokens/s" "$f" | grep -v -E "^step|f32" | tail -n 1)"
done
for b in vulkan cuda; do
    echo "-- profile $b"
    sed -n '/^profile of/,/^plan:/p' "$LOG/prof-$b.txt" | head -n 60
done
