#!/usr/bin/env bash
# tools/gpu_check.sh: the one script to run on the GPU machine (H100/H200, CUDA 13).
#
# Uses the binaries tools/gpu_pack.sh built and packed into .gpu/ (carry .gpu with the
# call); nothing is compiled here. Steps, each with a time limit so that the whole run
# stays under 5 minutes:
#   1. the card and `chimera info` (backend coverage, device probe);
#   2. cuda_opcheck --check: every op on cuda (f32, then bf16) against the cpu reference,
#      one PASS/FAIL line per output with max |err| and relative L2 error;
#   3. compute-sanitizer memcheck on the op check (--quick: small shapes);
#   4. compute-sanitizer racecheck on the kernels that use shared memory;
#   5. the Criterion suite `cuda/*` when chimera_tests was packed;
#   6. cuda_opcheck --bench: bf16 matmul 4096^3, attention fwd/bwd at seq 2048 (head dim
#      64 and 128), selective scan fwd/bwd at chimera-1b sizes;
#   7. vkcoopmat: the Criterion suite `vulkan_coopmat/*` (f16/bf16 matmul on cooperative
#      matrices against the cpu), and vkbench: tools/vk_bench.c (each vulkan matmul path
#      checked, then TFLOP/s plain and cooperative-matrix with a tile sweep, attention and
#      scan times, training tokens/s for tiny and chimera-1b);
# and ends with a table: each step's verdict, then the benchmark figures.
# Logs go to /tmp/gpu_check, packed into $OUT/gpu_check_logs.tgz when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
G=$PWD/.gpu
LOG=/tmp/gpu_check  # the logs; packed into $OUT/gpu_check_logs.tgz at the end (the device returns 8 files at most)
rm -rf "$LOG"
pack_logs() { [ -n "${OUT:-}" ] && tar czf "$OUT/gpu_check_logs.tgz" -C "$LOG" . 2>/dev/null; }
trap pack_logs EXIT
mkdir -p "$LOG"
export LD_LIBRARY_PATH="$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# step NAME SECONDS CMD...: run with a time limit, log to $LOG/NAME.txt, record the verdict.
source tools/gpu_steps.sh

if [ ! -x "$G/bin/cuda_opcheck" ]; then
    echo "no $G/bin/cuda_opcheck: run tools/gpu_pack.sh on the build machine and carry .gpu"
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$LOG/card.txt"
for b in "$G"/bin/*; do
    if ldd "$b" | grep -q "not found"; then
        echo "$(basename "$b") misses libraries (carry them in .gpu/lib):"
        ldd "$b" | grep "not found"
    fi
done
# The Vulkan loader and GL dispatch libraries travel as Debian packages in .gl (device
# README); the NVIDIA driver's Vulkan ICD lives under /usr/local/nvidia.
if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES=$icd
    egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    [ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
fi
[ -x "$G/bin/chimera" ] && "$G/bin/chimera" info 2>&1 | head -40

CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
step opcheck 100 "$G/bin/cuda_opcheck" --check
if [ -x "$CS" ]; then
    step memcheck 90 "$CS" --tool memcheck --leak-check no --error-exitcode 3 \
        "$G/bin/cuda_opcheck" --check --quick --quiet
    step racecheck 75 "$CS" --tool racecheck --error-exitcode 3 \
        "$G/bin/cuda_opcheck" --check --quick --quiet \
        --only attention,selective_scan,router,select_topk,cross_entropy,sum_squares,rmsnorm,row_scale,moe_aux
else
    STEPS+=("sanitizers   SKIP (no compute-sanitizer at $CS)")
fi
# VULKAN=0 skips the Vulkan steps (a run about the cuda backend alone)
vk=${VULKAN:-1}
if [ -x "$G/bin/chimera_tests" ]; then
    step criterion 60 "$G/bin/chimera_tests" --jobs 4 --filter 'cuda/*'
    [ "$vk" = 1 ] && step vulkan 120 "$G/bin/chimera_tests" --jobs 4 --filter 'vulkan/*'
fi
# Whole training steps on each GPU backend (the model's ops must all exist there).
if [ -x "$G/bin/chimera" ]; then
    for be in cuda $([ "$vk" = 1 ] && echo vulkan); do
        step "train-$be" 90 "$G/bin/chimera" train --backend "$be" --config tiny --out "/tmp/run-$be" \
            --set train.steps=30 --set train.eval_every=0 --set train.log_every=10
    done
    [ "${TRAIN_CPU:-1}" = 1 ] && step train-cpu 120 "$G/bin/chimera" train --backend cpu --config tiny --out /tmp/run-cpu \
        --set train.steps=30 --set train.eval_every=0 --set train.log_every=10
fi
step bench 60 "$G/bin/cuda_opcheck" --bench --only none
# A baseline op check packed as bin/cuda_opcheck_base (an older build): its benchmark in the
# same lease, so that before and after compare on one card.
[ -x "$G/bin/cuda_opcheck_base" ] && step bench-base 60 "$G/bin/cuda_opcheck_base" --bench --only none
if [ "$vk" = 1 ] && [ -x "$G/bin/chimera_tests" ]; then
    step vkcoopmat 90 "$G/bin/chimera_tests" --jobs 4 --filter 'vulkan_coopmat/*'
    # bf16 adapters and split bindings on the NVIDIA driver (lavapipe runs them in CI)
    step vkmixed 150 "$G/bin/chimera_tests" --jobs 4 --filter 'vk_[lns]*/*'
fi
# the Vulkan selective scan alone at chimera-1b's shape, for each tile in SCAN_TILES (default: its choice)
if [ "$vk" = 1 ] && [ -x "$G/bin/chimera_tests" ]; then
    for t in ${SCAN_TILES:-default}; do
        step "vkscan-$t" 90 env CHIMERA_VK_SCAN_BENCH=1 $([ "$t" != default ] && echo CHIMERA_VULKAN_SCAN_TILE=$t) \
            "$G/bin/chimera_tests" --filter 'vk_scan/bench*'
    done
fi
if [ "$vk" = 1 ] && [ -x "$G/bin/vk_bench" ]; then
    step vkbench 330 "$G/bin/vk_bench"
fi

echo
echo "== gpu_check summary ($(head -2 "$LOG/card.txt" | tail -1))"
printf '  %s\n' "${STEPS[@]}"
grep -h '^FAIL' "$LOG"/opcheck.txt 2>/dev/null | head -20 | sed 's/^/  /'
grep -h -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOG"/memcheck.txt "$LOG"/racecheck.txt 2>/dev/null | sed 's/^/  /'
sed -n '/^== summary/,$p' "$LOG/bench.txt" 2>/dev/null | sed 's/^/  /'
[ -f "$LOG/bench-base.txt" ] && echo "  baseline (cuda_opcheck_base):" &&
    sed -n '/^== summary/,$p' "$LOG/bench-base.txt" | grep -E 'attention|scan' | sed 's/^/  /'
grep -h -E '^(FAIL|SKIP)' "$LOG"/vkbench.txt 2>/dev/null | head -20 | sed 's/^/  /'
grep -h -E 'vulkan_coopmat/.* runs the ' "$LOG"/vkcoopmat.txt 2>/dev/null | head -3 | sed 's/^/  /'
grep -h 'vk_scan bench' "$LOG"/vkscan-*.txt 2>/dev/null | sed 's/^/  /'
sed -n '/^== summary/,$p' "$LOG/vkbench.txt" 2>/dev/null | sed 's/^/  /'
