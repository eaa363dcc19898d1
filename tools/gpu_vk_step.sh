#!/usr/bin/env bash
# tools/gpu_vk_step.sh: where chimera-1b's step goes on the Vulkan backend against the cuda
# backend, on the GPU machine in one call: the step (`chimera plan`) on vulkan and cuda
# alternated, then each under CHIMERA_PROFILE=shapes (one row per matmul shape, with its TFLOP/s),
# and (if packed) bin/chimera_base's Vulkan step for an A/B in the same lease. A summary ends it.
#   GPU_OUT=.gpu tools/gpu_pack.sh   # on the build machine; then carry .gpu and .gl
# VK_ENV="VAR=value ..." runs the Vulkan steps under those variables too (a switch under test).
# BENCH="--mm-odd ..." first runs bin/vk_bench with those arguments (and again under each
# setting of BENCH_ENV="VAR=value;VAR=value", ';' between settings); TESTS='glob' first runs
# bin/chimera_tests --filter glob; ROUNDS=n alternates the steps n times (2); PROFILE=0 skips
# the profiles (PROFILE_CUDA=0 the cuda one).
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_steps.sh
gpu_vulkan_setup gpu_vk_step
STEP_TAIL=3
step_done() { pack_logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$LOG/card.txt"
VP=(plan --config training_dolma --set train.grad_accum=1 --steps 4)
read -r -a VE <<<"${VK_ENV:-}"
if [ -n "${TESTS:-}" ] && [ -x "$B/chimera_tests" ]; then
    step tests 300 "$B/chimera_tests" --jobs 4 --filter "$TESTS"
fi
if [ -n "${BENCH:-}" ]; then
    read -r -a BA <<<"$BENCH"
    step bench 200 "$B/vk_bench" "${BA[@]}"
    IFS=';' read -r -a BSETS <<<"${BENCH_ENV:-}"
    i=0
    for s in "${BSETS[@]}"; do
        i=$((i + 1))
        read -r -a SE <<<"$s"
        step "bench-env$i" 200 env "${SE[@]}" "$B/vk_bench" "${BA[@]}"
    done
fi
for r in $(seq 1 "${ROUNDS:-2}"); do
    step "1b-vulkan-$r" 150 env "${VE[@]}" "$B/chimera" "${VP[@]}" --backend vulkan
    if [ -x "$B/chimera_base" ]; then
        step "1b-base-$r" 150 "$B/chimera_base" "${VP[@]}" --backend vulkan
    fi
    step "1b-cuda-$r" 150 "$B/chimera" "${VP[@]}" --backend cuda
done
if [ "${PROFILE:-1}" = 1 ]; then
    step prof-vulkan 150 env "${VE[@]}" CHIMERA_PROFILE=shapes "$B/chimera" "${VP[@]}" --backend vulkan
    if [ "${PROFILE_CUDA:-1}" = 1 ]; then
        step prof-cuda 150 env CHIMERA_PROFILE=shapes "$B/chimera" "${VP[@]}" --backend cuda
    fi
fi

echo
echo "== summary ($(head -n 1 "$LOG/card.txt"))"
printf '%s\n' "${STEPS[@]}"
for f in "$LOG"/1b-*.txt; do
    echo "$(basename "$f" .txt): $(grep -h -E "tokens/s" "$f" | grep -v -E "^step|f32" | tail -n 1)"
done
[ -f "$LOG/tests.txt" ] && grep -h -E "Synthesis|FAIL" "$LOG/tests.txt" | head -n 8
for f in "$LOG"/bench*.txt; do
    [ -f "$f" ] || continue
    echo "-- $(basename "$f" .txt) ${BENCH_ENV:-}"
    sed -n '/^== summary/,$p' "$f" | head -n 40
done
for b in vulkan cuda; do
    [ -f "$LOG/prof-$b.txt" ] || continue
    echo "-- profile $b"
    sed -n '/^profile of/,/^plan:/p' "$LOG/prof-$b.txt" | head -n "${PROFILE_ROWS:-60}"
done
