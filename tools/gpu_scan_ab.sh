#!/usr/bin/env bash
# tools/gpu_scan_ab.sh: on the GPU machine, alternate several builds of cuda_opcheck on the
# selective scan's benchmark in one lease, check each, and print one table last.
#
# Here (no GPU): build cuda_opcheck once per variant (Vulkan off is enough: it needs no loader)
# and copy each binary to .gpu-v/bin/cuda_opcheck_NAME, the base as cuda_opcheck_base:
#   cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCHIMERA_CUDA=ON \
#       -DCHIMERA_VULKAN=OFF -DCMAKE_CUDA_ARCHITECTURES=90
#   cmake --build build-gpu --target cuda_opcheck && cp build-gpu/cuda_opcheck .gpu-v/bin/cuda_opcheck_new
# Then with the device tool (carry .gpu-v):
#   bash tools/gpu_scan_ab.sh              # REPS=3 rounds; PROF=new,base: ncu on those
# Every variant but base runs `--check --only scan` at seeds 1 and 7 first; each round runs
# every variant's --bench once, in the same order (the scan rows come from its summary).
set -uo pipefail
cd "$(dirname "$0")/.."
B=.gpu-v/bin
L=/tmp/scan_ab
rm -rf "$L" && mkdir -p "$L"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
mapfile -t V < <(ls "$B" 2>/dev/null | sed -n 's/^cuda_opcheck_//p')
if [ ${#V[@]} -eq 0 ]; then
    echo "gpu_scan_ab: no $B/cuda_opcheck_* here: build them (see this script's header) and carry .gpu-v" >&2
    exit 2
fi
for v in "${V[@]}"; do
    [ "$v" = base ] && continue
    for s in 1 7; do
        echo "check $v seed $s: $("$B/cuda_opcheck_$v" --check --only scan --seed "$s" | grep 'op check')"
    done
done
for r in $(seq 1 "${REPS:-3}"); do
    for v in "${V[@]}"; do
        timeout 120 "$B/cuda_opcheck_$v" --bench --only none >"$L/$v.$r.txt" 2>&1
    done
done
# ncu: one forward and one backward launch of the model's kernels (FULL, bf16)
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
IFS=, read -ra P <<<"${PROF:-}"
for v in "${P[@]}"; do
    for k in fwd:Lb1ELb0ELb1ELb1E bwd:Lb1ELb1ELb1ELb1ELb1E; do
        timeout 120 "$NCU" --clock-control none --kernel-name-base mangled \
            -k "regex:scan_${k%%:*}_kernelI13__nv_bfloat16${k#*:}" -c 1 \
            --section SpeedOfLight --section SchedulerStats --section WarpStateStats \
            --section ComputeWorkloadAnalysis \
            --metrics 'regex:^(smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio|l1tex__data_pipe_lsu_wavefronts_mem_shared_op_(ld|st)\.sum|smsp__inst_executed\.sum|sm__pipe_(fma|alu|xu|fmaheavy|shared)_cycles_active\.avg\.pct_of_peak_sustained_active|sm__inst_executed_pipe_xu\.avg\.pct_of_peak_sustained_active)$' \
            "$B/cuda_opcheck_$v" --bench --only none >"$L/ncu-${k%%:*}-$v.txt" 2>&1
        echo "== ncu ${k%%:*} $v"
        grep -E '^\s+(Duration|Issue Slots Busy|L1/TEX Hit|L1/TEX Cache Throughput|Active Warps Per Scheduler|Eligible Warps Per Scheduler|smsp__average_warps_issue_stalled_(short_scoreboard|wait|not_selected|mio_throttle|long_scoreboard|barrier|math_pipe_throttle|dispatch_stall|no_instruction)_per|l1tex__data_pipe|smsp__inst_executed.sum|sm__pipe|sm__inst_executed_pipe_xu)' \
            "$L/ncu-${k%%:*}-$v.txt" | sed 's/  */ /g'
    done
done
[ -n "${OUT:-}" ] && tar czf "$OUT/scan_ab.tgz" -C /tmp scan_ab
echo
echo "scan ms (fwd / bwd / fwd+bwd), one column a round:"
for v in "${V[@]}"; do
    row=$(printf '%-10s' "$v")
    for r in $(seq 1 "${REPS:-3}"); do
        f=$L/$v.$r.txt
        ms() { awk -v w="$1" 'index($0, w) == 3 { for (i = 1; i <= NF; i++) if ($i == "ms") { print $(i - 1); exit } }' "$f"; }
        row+=$(printf ' | %s / %s / %s' "$(ms 'scan fwd 8')" "$(ms 'scan bwd 8')" "$(ms 'scan fwd+bwd  ')")
    done
    echo "$row"
done
