#!/usr/bin/env bash
# tools/gpu_vk_khr.sh: the Vulkan backend's two cooperative-matrix flavours on the GPU machine's
# NVIDIA driver, which offers both extensions: VK_KHR_cooperative_matrix (the *_cm_khr_*
# shaders, the default, what AMD and Intel GPUs run) and VK_NV_cooperative_matrix
# (CHIMERA_VULKAN_DISABLE=coopmat_khr); and bf16 products on KHR bf16 matrices
# (CHIMERA_VULKAN_COOPMAT_BF16=native).
#
# Uses the pack of tools/gpu_pack.sh (carry .gpu and .gl); nothing is compiled here:
#   GPU_OUT=.gpu tools/gpu_pack.sh     # on the build machine (needs the modern glslang)
#   bash tools/gpu_vk_khr.sh           # on the GPU machine
# Steps: `chimera info`; Criterion vulkan_coopmat/* on KHR and on NV, vk_attention/* and
# vk_lowp/* on KHR; chimera-1b's step (`chimera plan`) on KHR and on NV (with cm2 for bf16:
# session 8's default); vk_bench --matmul and --coopmat-probe on both; 30 steps of
# configs/tiny.yaml on both.
# Same binary, same lease: the comparisons RESULTS.md reports. A table ends it.
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_steps.sh
gpu_vulkan_setup gpu_vk_khr
STEP_TAIL=15
step_done() { pack_logs; }

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$LOG/card.txt"
NV=coopmat_khr # CHIMERA_VULKAN_DISABLE for the NV flavour
TINY=(train --config configs/tiny.yaml --backend vulkan --set train.steps=30
      --set train.eval_every=0 --set train.save_every=0 --out)
VP=(plan --config training_dolma --set train.grad_accum=1 --backend vulkan --steps 4)
# (most telling first: a call cut short by its time limit still returns the logs so far)
step info 60 "$B/chimera" info
if [ -x "$B/chimera_tests" ]; then
    step coopmat-khr 150 "$B/chimera_tests" --jobs 4 --filter 'vulkan_coopmat/*'
fi
step 1b-khr 120 "$B/chimera" "${VP[@]}"
if [ -x "$B/vk_bench" ]; then # the tensor-core ceilings of each flavour, and the KHR list
    step probe-khr 120 "$B/vk_bench" --coopmat-probe
    step bench-khr 100 "$B/vk_bench" --matmul --no-train
fi
if [ -x "$B/chimera_tests" ]; then
    step attention-khr 100 "$B/chimera_tests" --jobs 4 --filter 'vk_attention/*'
    step lowp-khr 120 "$B/chimera_tests" --jobs 4 --filter 'vk_lowp/*'
fi
step tiny-khr 60 "$B/chimera" "${TINY[@]}" /tmp/khr_tiny_khr
# The NV flavour (session 9 measured it against KHR: these repeat that comparison)
step 1b-nv 120 env CHIMERA_VULKAN_DISABLE=$NV "$B/chimera" "${VP[@]}"
if [ -x "$B/vk_bench" ]; then
    step probe-nv 120 env CHIMERA_VULKAN_DISABLE=$NV "$B/vk_bench" --coopmat-probe
    step bench-nv 100 env CHIMERA_VULKAN_DISABLE=$NV "$B/vk_bench" --matmul --no-train
fi
if [ -x "$B/chimera_tests" ]; then
    step coopmat-nv 150 env CHIMERA_VULKAN_DISABLE=$NV "$B/chimera_tests" --jobs 4 \
        --filter 'vulkan_coopmat/*'
fi
step tiny-nv 60 env CHIMERA_VULKAN_DISABLE=$NV "$B/chimera" "${TINY[@]}" /tmp/khr_tiny_nv

echo
echo "== summary ($(head -n 1 "$LOG/card.txt"))"
printf '%s\n' "${STEPS[@]}"
grep -h -o "cooperative matrices [A-Z]* 16x[0-9]*x16[^)]*)" "$LOG/info.txt" | head -n 1
for t in coopmat-khr coopmat-nv attention-khr lowp-khr; do
    echo "$t: $(grep -h "Synthesis" "$LOG/$t.txt" 2>/dev/null)"
done
for t in tiny-khr tiny-nv; do
    echo "$t: $(grep -h -E "^step 30/" "$LOG/$t.txt" | tail -n 1)"
done
for t in 1b-khr 1b-nv; do
    echo "$t: $(grep -h -E "bf16 \(cooperative" "$LOG/$t.txt" | tail -n 1)"
done
for b in probe-khr probe-nv; do
    echo "$b: $(grep -h -E "KHR matrices|coopmat probe: best" "$LOG/$b.txt" 2>/dev/null | tr '\n' ' ')"
done
for b in bench-khr bench-nv; do
    echo "$b:"
    grep -h -E "TFLOP/s" "$LOG/$b.txt" | grep -v plain | head -n 6
done
