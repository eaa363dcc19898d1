#!/usr/bin/env bash
# tools/gpu_train_bench.sh: the whole-model checks and figures on the GPU machine, run by
# tools/gpu_check.sh after the op checks (or alone, with the same .gpu/ and .gl/ set-up):
#   verify   `chimera verify --backends cpu,vulkan,cuda` (issue 8), report in $LOG/verify.json
#   lowp     the bf16 mixed-precision suites on cuda (model_lowp/*)
#   tiny     30 steps of configs/tiny.yaml on cuda in bf16 (precision auto) and in f32
#   plan-1b  `chimera plan` of chimera-1b (training_dolma) at micro batch 8 x 2048: memory,
#            tokens/s, MFU in bf16 and (when it fits) f32
#   hostprof with HOSTPROF=1, the profile again with the host sampled every 1 ms of wall-clock time
#            (tools/hostprof.c: where the host thread computes or waits)
#   torch    tools/bench/torch_bench.py (PyTorch SDPA, chunked scan, the reference model),
#            only with GPU_TORCH=1 (about 4 minutes; TORCH_ONLY=attention,scan skips the
#            reference model and takes about 1 minute)
# Each step appends its verdict to $LOG/steps.txt; figures are in the logs under $LOG.
set -uo pipefail
cd "$(dirname "$0")/.."
G=$PWD/.gpu
LOG=/tmp/gpu_train_bench  # the logs; packed into $OUT/gpu_train_bench_logs.tgz at the end (the device returns 8 files at most)
rm -rf "$LOG"
pack_logs() { [ -n "${OUT:-}" ] && tar czf "$OUT/gpu_train_bench_logs.tgz" -C "$LOG" . 2>/dev/null; }
trap pack_logs EXIT
mkdir -p "$LOG"
export LD_LIBRARY_PATH="$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
C=$G/bin/chimera
# The Vulkan loader: tools/gpu_check.sh unpacks .gl; the driver's ICD lives under /usr/local/nvidia.
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi

tstep() {
    local name=$1 secs=$2
    shift 2
    echo
    echo "== $name (limit ${secs}s): $*"
    local t0=$SECONDS
    timeout "$secs" "$@" >"$LOG/$name.txt" 2>&1
    local rc=$?
    tail -n 40 "$LOG/$name.txt"
    printf '%-12s %-16s %4ss\n' "$name" "$([ $rc = 0 ] && echo PASS || echo "FAIL (exit $rc)")" \
        "$((SECONDS - t0))" >>"$LOG/steps.txt"
}

tstep verify 240 "$C" verify --backends cpu,vulkan,cuda --json "$LOG/verify.json"
[ -x "$G/bin/chimera_tests" ] && tstep lowp 120 "$G/bin/chimera_tests" --jobs 4 --filter 'model_lowp/*'
for p in auto f32; do
    tstep "tiny-$p" 90 "$C" train --backend cuda --config tiny --out "/tmp/tiny-$p" --set precision=$p \
        --set train.steps=30 --set train.eval_every=0 --set train.log_every=10
done
tstep plan-1b 300 "$C" plan --config training_dolma --set train.grad_accum=1 --steps 8 --tokens 100B
# the same with per-layer recomputation (RECOMPUTE=1; measured in session 4: 0.83x the speed),
# then where the fast path's step goes, per op and GEMM shape
[ "${RECOMPUTE:-0}" = 1 ] && tstep plan-1b-recompute 300 "$C" plan --config training_dolma \
    --set train.grad_accum=1 --steps 8 --tokens 100B --set train.recompute=true
tstep profile-1b 300 env CHIMERA_PROFILE=shapes "$C" plan --config training_dolma --set train.grad_accum=1 --steps 6 --profile
# HOSTPROF=1: the same profile with the host sampled in wall-clock time (tools/hostprof.c); the samples
# land in the logs as hostprof.PID, read here with tools/hostprof_report.py and this pack's chimera
[ "${HOSTPROF:-0}" = 1 ] && [ -f "$G/lib/hostprof.so" ] && tstep hostprof-1b 300 env OMP_WAIT_POLICY=passive HOSTPROF_CLOCK=real HOSTPROF_US=1000 \
    HOSTPROF_OUT="$LOG/hostprof" LD_PRELOAD="$G/lib/hostprof.so" CHIMERA_PROFILE=shapes "$C" plan \
    --config training_dolma --set train.grad_accum=1 --steps 6 --profile
# a baseline CLI packed as bin/chimera_base (an older build): the same profile in the same lease
[ -x "$G/bin/chimera_base" ] && tstep profile-1b-base 300 env CHIMERA_PROFILE=shapes "$G/bin/chimera_base" \
    plan --config training_dolma --set train.grad_accum=1 --steps 6 --profile
if [ "${GPU_TORCH:-0}" = 1 ]; then
    tstep torch 420 env -u LD_LIBRARY_PATH PYTHONUNBUFFERED=1 python3 tools/bench/torch_bench.py --chimera "$C" \
        --only "${TORCH_ONLY:-attention,scan,model}" --json "$LOG/torch_bench.json"
fi
echo
echo "== gpu_train_bench summary"
sed 's/^/  /' "$LOG/steps.txt"
grep -E "^verdict|tokens/s|MFU|fits|DOES NOT" "$LOG"/verify.txt "$LOG"/tiny-*.txt "$LOG"/plan-1b*.txt "$LOG"/profile-1b*.txt 2>/dev/null | tail -n 30 | sed "s|^$LOG/|  |"
