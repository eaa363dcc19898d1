#!/usr/bin/env bash
# tools/gpu_vk_bf16.sh: the Vulkan backend's default bf16 products on the GPU machine (KHR bf16
# matrices where the driver has them, session 10) against the scaled f16 operands
# (CHIMERA_VULKAN_COOPMAT_BF16=scaled) and an earlier build (bin/chimera_base, if packed), with
# the cuda backend's chimera-1b step in the same lease (issue 6's 40%), in one call:
# `chimera info`; Criterion vulkan_coopmat/*, vk_lowp/*, vk_attention/*; `vk_bench --matmul`;
# chimera-1b's step (`chimera plan`) new / scaled / base alternated, its Vulkan profile, and cuda;
# 30 steps of configs/tiny.yaml. A table ends it.
#   GPU_OUT=.gpu tools/gpu_pack.sh   # on the build machine; then carry .gpu and .gl
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_steps.sh
gpu_vulkan_setup gpu_vk_bf16
STEP_TAIL=3
step_done() { pack_logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$LOG/card.txt"
VP=(plan --config training_dolma --set train.grad_accum=1 --steps 4)
SC=CHIMERA_VULKAN_COOPMAT_BF16=scaled
step info 60 "$B/chimera" info
for r in 1 2; do # SCALED=0: without the scaled-operand runs
    step "1b-new-$r" 120 "$B/chimera" "${VP[@]}" --backend vulkan
    if [ "${SCALED:-1}" = 1 ]; then
        step "1b-scaled-$r" 120 env $SC "$B/chimera" "${VP[@]}" --backend vulkan
    fi
    if [ -x "$B/chimera_base" ]; then
        step "1b-base-$r" 120 "$B/chimera_base" "${VP[@]}" --backend vulkan
    fi
done
step 1b-cuda 120 "$B/chimera" "${VP[@]}" --backend cuda
if [ -x "$B/chimera_tests" ]; then
    step coopmat 150 "$B/chimera_tests" --jobs 4 --filter 'vulkan_coopmat/*'
    step lowp 120 "$B/chimera_tests" --jobs 4 --filter 'vk_lowp/*'
    step attention 100 "$B/chimera_tests" --jobs 4 --filter 'vk_attention/*'
fi
[ -x "$B/vk_bench" ] && step bench 100 "$B/vk_bench" --matmul --no-train
step 1b-profile 120 "$B/chimera" "${VP[@]}" --backend vulkan --profile
TINY=(train --config configs/tiny.yaml --backend vulkan --set train.steps=30
      --set train.eval_every=0 --set train.save_every=0 --out)
step tiny 60 "$B/chimera" "${TINY[@]}" /tmp/bf16_tiny
step tiny-scaled 60 env $SC "$B/chimera" "${TINY[@]}" /tmp/bf16_tiny_scaled

echo
echo "== summary ($(head -n 1 "$LOG/card.txt"))"
printf '%s\n' "${STEPS[@]}"
grep -h -o "cooperative matrices [A-Z]* 16x[0-9]*x16[^)]*)" "$LOG/info.txt" | head -n 1
for t in coopmat lowp attention; do echo "$t: $(grep -h "Synthesis" "$LOG/$t.txt" 2>/dev/null)"; done
for t in tiny tiny-scaled; do echo "$t: $(grep -h -E "^step 30/" "$LOG/$t.txt" | tail -n 1)"; done
for f in "$LOG"/1b-*.txt; do
    echo "$(basename "$f" .txt): $(grep -h -E "tokens/s" "$f" | grep -v -E "^step|f32" | tail -n 1)"
done
grep -h -E "matmul checks|FAIL" "$LOG/bench.txt" 2>/dev/null | head -n 5
grep -h -E "TFLOP/s" "$LOG/bench.txt" 2>/dev/null | grep -v plain | grep " 1b " | tail -n 16
sed -n '/^profile of/,/^plan:/p' "$LOG/1b-profile.txt" | head -n 14
