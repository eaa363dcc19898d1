#!/usr/bin/env bash
# tools/gpu_ab.sh: on the GPU machine, compare the two builds tools/gpu_ab_pack.sh packed into
# .gpu-ab/ in one lease, and check the new one; ends with a short table.
#
#   bash tools/gpu_ab.sh                  # from the device tool (carry .gpu-ab and .gl)
#
# Steps (each under a time limit; logs in /tmp/ab, packed into $OUT/ab.tgz after every step):
#   checks   cuda_opcheck --check at seeds 1 and 7, memcheck and racecheck on the quick check,
#            chimera verify --backends cpu,cuda, Criterion cuda/* (when packed);
#   bench    cuda_opcheck --bench of both builds (attention, scan, bandwidth-bound ops);
#   train    chimera-1b `chimera plan --config training_dolma --set train.grad_accum=1
#            --steps 8`, base and new alternated REPS times (default 2), then a profile of the
#            new build (CHIMERA_PROFILE=shapes);
#   vulkan   (VULKAN=1) the same plan on the Vulkan backend, new build only (VULKAN=2: both);
#   torch    (TORCH=1) tools/bench/torch_bench.py --only attention,scan,model in the same lease
#            (about 4 minutes; the device's 10-minute call limit may need CHECKS=0);
#            TORCH_ONLY=attention,scan limits it to those sections (about 2 minutes).
#   vkchecks (VKCHECKS=1) Criterion's vulkan*/* and vk_*/* suites on the NVIDIA driver, `chimera
#            verify --backends cpu,vulkan,cuda`, and `vk_bench --matmul` when packed (VK_BENCH=1).
#   prof     (PROF=1) ncu on the model's scan kernels of both builds (one launch each, with
#            the warps' stall reasons and the shared-memory wavefronts and instructions).
#   mid      (when .gpu-ab/bin/chimera_mid is packed: a build between base and new) the train
#            step alternates base, mid and new;
#   same     (SAME=1, with chimera_mid) configs/tiny.yaml trained 30 steps on cuda by mid and by
#            new: their losses must match bitwise (a change that must not move any result).
# CHECKS=0 skips the checks, REPS=n sets the alternations.
set -uo pipefail
cd "$(dirname "$0")/.."
G=$PWD/.gpu-ab
B=$G/bin
L=/tmp/ab
rm -rf "$L" && mkdir -p "$L"
export LD_LIBRARY_PATH="$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYTHONUNBUFFERED=1
# the Vulkan loader (the binaries link it), on the GPU machine only (it unpacks into /)
if command -v nvidia-smi >/dev/null && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES=$icd
fi
pack_logs() { [ -n "${OUT:-}" ] && tar czf "$OUT/ab.tgz" -C /tmp ab 2>/dev/null; }
trap pack_logs EXIT
declare -a ROWS=()
# step NAME SECONDS CMD...: run with a limit into $L/NAME.txt, record a row with its last
# summary line.
step() {
    local name=$1 secs=$2 t0=$SECONDS
    shift 2
    timeout "$secs" "$@" >"$L/$name.txt" 2>&1
    local rc=$? what
    what=$(grep -E 'checks,|Synthesis|verdict|SUMMARY|bf16 \(|tokens/s' "$L/$name.txt" | head -1 |
        sed 's/  */ /g' | cut -c1-90)
    ROWS+=("$(printf '%-16s rc %-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$what")")
    echo "${ROWS[-1]}"
    pack_logs
}
cat "$G/REVISIONS" 2>/dev/null
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$L/card.txt"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ "${CHECKS:-1}" = 1 ]; then
    step check-seed1 120 "$B/cuda_opcheck" --check --seed 1
    step check-seed7 120 "$B/cuda_opcheck" --check --seed 7
    step memcheck 120 "$CS" --tool memcheck --leak-check no "$B/cuda_opcheck" --check --quick --quiet
    step racecheck 120 "$CS" --tool racecheck --check-warpgroup-mma yes "$B/cuda_opcheck" --check --quick --quiet
    step verify 90 "$B/chimera" verify --backends cpu,cuda
    [ -x "$B/chimera_tests" ] && step criterion 90 "$B/chimera_tests" --jobs 4 --filter 'cuda/*'
fi
step bench-new 60 "$B/cuda_opcheck" --bench --only none
if [ -x "$B/cuda_opcheck_base" ]; then
    step bench-base 60 "$B/cuda_opcheck_base" --bench --only none
fi
# the Hopper (wgmma) attention kernels off: the mma.sync path in the same lease
step bench-nowgmma 60 env CHIMERA_CUDA_DISABLE=wgmma "$B/cuda_opcheck" --bench --only none
if [ "${PROF:-0}" = 1 ]; then
    # ncu on the model's scan kernels: one forward and one backward launch of each build
    NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
    for v in "" _base; do
        [ -x "$B/cuda_opcheck$v" ] || continue
        for k in fwd:Lb1ELb0ELb1E bwd:Lb1ELb1ELb1ELb1E; do
            step "ncu-${k%%:*}$v" 120 "$NCU" --clock-control none --kernel-name-base mangled \
                -k "regex:scan_${k%%:*}_kernelI13__nv_bfloat16${k#*:}" -c 1 \
                --section SpeedOfLight --section SchedulerStats --section WarpStateStats \
                --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
                --metrics 'regex:^(smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio|l1tex__data_pipe_lsu_wavefronts_mem_shared_op_(ld|st)\.sum|smsp__inst_executed_op_shared_(ld|st)\.sum|smsp__inst_executed\.sum)$' \
                "$B/cuda_opcheck$v" --bench --only none
        done
    done
fi
P=(plan --config training_dolma --set train.grad_accum=1 --steps 8)
VP=(plan --config training_dolma --set train.grad_accum=1 --backend vulkan --steps 4)
if [ "${SAME:-0}" = 1 ] && [ -x "$B/chimera_mid" ]; then
    # tiny, 30 steps, a loss line each step, by both builds; then the losses side by side
    rm -rf /tmp/abrun
    for v in mid new; do
        bin=$B/chimera_mid
        [ $v = new ] && bin=$B/chimera
        step "same-$v" 120 "$bin" train --config configs/tiny.yaml --backend cuda \
            --set train.steps=30 --set train.log_every=1 --set train.eval_every=0 \
            --set train.save_every=0 --set "train.out_dir=/tmp/abrun/$v"
        grep -o '"loss":[^,]*' "/tmp/abrun/$v/metrics.jsonl" >"$L/losses-$v.txt"
    done
    if cmp -s "$L/losses-mid.txt" "$L/losses-new.txt" && [ -s "$L/losses-new.txt" ]; then
        n=$(wc -l <"$L/losses-new.txt")
        ROWS+=("same-losses      $n losses of mid and new: bitwise equal")
    else
        d=$(diff "$L/losses-mid.txt" "$L/losses-new.txt" | head -2 | tr '\n' ' ')
        ROWS+=("same-losses      mid and new DIFFER: $d")
    fi
    echo "${ROWS[-1]}"
fi
for i in $(seq 1 "${REPS:-2}"); do
    step "train-base.$i" 90 "$B/chimera_base" "${P[@]}"
    [ -x "$B/chimera_mid" ] && step "train-mid.$i" 90 "$B/chimera_mid" "${P[@]}"
    step "train-new.$i" 90 "$B/chimera" "${P[@]}"
done
step profile 90 env CHIMERA_PROFILE=shapes "$B/chimera" plan --config training_dolma \
    --set train.grad_accum=1 --steps 4 --profile
if [ "${VKCHECKS:-0}" = 1 ]; then
    if [ -x "$B/chimera_tests" ]; then
        step criterion-vulkan 240 "$B/chimera_tests" --jobs 4 --filter 'vulkan*/*'
        step criterion-vk 240 "$B/chimera_tests" --jobs 4 --filter 'vk_*/*'
    fi
    step verify-all 120 "$B/chimera" verify --backends cpu,vulkan,cuda
    [ -x "$B/vk_bench" ] && step vk-bench 240 "$B/vk_bench" --matmul --no-train
fi
case ${VULKAN:-0} in
2) step vulkan-base 150 "$B/chimera_base" "${VP[@]}" ;&
1) step vulkan-new 150 "$B/chimera" "${VP[@]}" ;;
esac
if [ "${TORCH:-0}" = 1 ]; then
    step torch 300 python3 tools/bench/torch_bench.py --chimera "$B/chimera" --json "$L/torch.json" \
        ${TORCH_ONLY:+--only "$TORCH_ONLY"}
fi
echo
echo "== gpu_ab summary ($(cat "$L/card.txt"))"
printf '%s\n' "${ROWS[@]}"
grep -h "bf16 (" "$L"/train-*.txt "$L"/vulkan-*.txt 2>/dev/null | sed 's/  */ /g'
grep -hE "fwd\+bwd" "$L/bench-new.txt" | sed 's/^/new  /'
grep -hE "fwd\+bwd T" "$L/bench-nowgmma.txt" | sed 's/^/no-wgmma  /'
grep -hE "fwd\+bwd" "$L/bench-base.txt" | sed 's/^/base /'
grep -h "4096^3" "$L/bench-new.txt" 2>/dev/null | head -1 | sed 's/^/cuda /'
grep -h "4096^3" "$L/vk-bench.txt" 2>/dev/null | head -16 | sed 's/^/vk   /'
