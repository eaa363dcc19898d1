#!/usr/bin/env bash
# tools/gpu_multi.sh: the multi-GPU run (issue 12) on a 2+ GPU machine of the device tool, with
# the binaries of tools/gpu_pack.sh (carry .gpu and .gl). In one call:
#   1. the cuda op check and sanitizers on the kernels changed last, and the kernel benchmark;
#   2. `mpirun -np N chimera train --comm-check`: every NCCL collective against a host reference
#      and the all-reduce bandwidth;
#   3. chimera-1b (training_dolma on the built-in corpus, byte tokenizer) for STEPS steps on one
#      GPU at micro batch 8 x grad_accum N, then on N GPUs at micro batch 8 x grad_accum 1: the
#      same global batch, so the loss curves must agree (bf16 noise); tokens/s, scaling efficiency
#      and the collectives' time per step from metrics.jsonl;
# and prints a table last. NVLink multicast stays off (NCCL_NVLS_ENABLE=0, device README).
set -uo pipefail
cd "$(dirname "$0")/.."
G=$PWD/.gpu
LOG=/tmp/gpu_multi  # the logs; packed into $OUT/gpu_multi_logs.tgz at the end (the device returns 8 files at most)
rm -rf "$LOG"
pack_logs() { [ -n "${OUT:-}" ] && tar czf "$OUT/gpu_multi_logs.tgz" -C "$LOG" . 2>/dev/null; }
trap pack_logs EXIT
STEPS=${STEPS:-50}
mkdir -p "$LOG"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export LD_LIBRARY_PATH="$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
N=$(nvidia-smi -L | wc -l)
C=$G/bin/chimera
MPI="mpirun -np $N --allow-run-as-root --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE"
nvidia-smi -L

if [ "${SKIP_KERNELS:-0}" != 1 ]; then
echo "== 1. kernels"
timeout 120 "$G/bin/cuda_opcheck" --check >"$LOG/opcheck.txt" 2>&1
echo "opcheck: exit $?, $(grep -c '^PASS' "$LOG/opcheck.txt") PASS, $(grep -c '^FAIL' "$LOG/opcheck.txt") FAIL"
grep '^FAIL' "$LOG/opcheck.txt" | head -20
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
only=causal_conv1d,rmsnorm,select_topk,memory,swiglu
timeout 120 "$CS" --tool memcheck --error-exitcode 3 "$G/bin/cuda_opcheck" --check --quick --quiet \
    --only $only 2>&1 | grep -E "ERROR SUMMARY|FAIL" | tee "$LOG/memcheck.txt"
timeout 120 "$CS" --tool racecheck --error-exitcode 3 "$G/bin/cuda_opcheck" --check --quick --quiet \
    --only $only 2>&1 | grep -E "RACECHECK SUMMARY|FAIL" | tee "$LOG/racecheck.txt"
timeout 90 "$G/bin/cuda_opcheck" --bench --only none >"$LOG/bench.txt" 2>&1
sed -n '/^== summary/,$p' "$LOG/bench.txt"

echo "== 2. comm check on $N GPUs"
timeout 120 $MPI "$C" train --backend cuda --comm-check 2>&1 | tail -n 25 | tee "$LOG/comm.txt"

fi
echo "== 3. chimera-1b, 1 GPU x grad_accum $N vs $N GPUs, $STEPS steps"
common=(train --backend cuda --config training_dolma --set data.train=builtin --set data.val=
    --set data.tokenizer=byte --set train.tokens= --set train.steps=$STEPS --set train.eval_every=0
    --set train.log_every=1 --set train.warmup=10)
# run NAME ARGS...: one training run, its metrics kept as $LOG/NAME.jsonl
run() {
    local name=$1
    shift
    timeout 300 "$@" --out "/tmp/$name" >"$LOG/$name.txt" 2>&1
    echo "$name: exit $?"
    tail -n 3 "$LOG/$name.txt"
    cp "/tmp/$name/metrics.jsonl" "$LOG/$name.jsonl"
    rm -rf "/tmp/$name"
}
run one "$C" "${common[@]}" --set train.grad_accum=$N
run multi $MPI "$C" "${common[@]}" --set train.grad_accum=1
# the same without overlap (one all-reduce after the backward): what the buckets hide
run multi0 $MPI "$C" "${common[@]}" --set train.grad_accum=1 --set train.comm_bucket_mb=0
# The yardstick for "within bf16 noise" (NOISE=0 skips it): the same global batch on one GPU
# cut into twice as many micro batches of half the size. The mathematics is that of `one`; only
# the bf16 rounding and the summation order differ, as they do between `one` and `multi`.
# `again` (AGAIN=1) repeats `one` exactly: how deterministic one GPU is.
if [ "${NOISE:-1}" = 1 ]; then
    run half "$C" "${common[@]}" --set train.grad_accum=$((2 * N)) --set train.micro_batch=4
fi
# (AGAIN=1: each run takes ~1.7 min on 2 H200s, and five of them overran a 10-minute call)
[ "${AGAIN:-0}" = 1 ] && run again "$C" "${common[@]}" --set train.grad_accum=$N

# Where one GPU's chimera-1b step goes (PROFILE=1; gpu_train_bench.sh profiles on one GPU too).
if [ "${PROFILE:-0}" = 1 ]; then
    CUDA_VISIBLE_DEVICES=0 timeout 200 "$C" plan --config training_dolma --set train.grad_accum=1 \
        --steps 6 --profile >"$LOG/profile.txt" 2>&1
    echo "== profile of chimera-1b on one GPU (exit $?)"
    sed -n '/benchmark on/,$p' "$LOG/profile.txt" | head -60
fi

python3 - "$LOG" "$N" <<'PY'
import json, os, sys
log, n = sys.argv[1], int(sys.argv[2])
def read(name):
    path = f"{log}/{name}.jsonl"
    if not os.path.exists(path):
        return None, []
    ev = [json.loads(l) for l in open(path)]
    train = {e["step"]: e for e in ev if e["event"] == "train"}
    comm = [(e["comm_ms_per_step"], e.get("comm_exposed_ms_per_step", 0.0))
            for e in ev if e["event"] == "comm"]
    return train, comm
def diff(a, b):
    """Largest and last-10-mean relative loss difference of two runs, over their common steps."""
    steps = sorted(set(a) & set(b))
    rel = [abs(a[s]["loss"] - b[s]["loss"]) / abs(a[s]["loss"]) for s in steps]
    last = steps[-10:]
    ma = sum(a[s]["loss"] for s in last) / len(last)
    mb = sum(b[s]["loss"] for s in last) / len(last)
    return max(rel), abs(ma - mb) / ma, len(steps)
one, _ = read("one")
multi, comm = read("multi")
half, _ = read("half")
again, _ = read("again")
steps = sorted(set(one) & set(multi))
tail = [s for s in steps if s > steps[-1] // 2]  # steady state: the second half
tps1 = sum(one[s]["tokens_per_s"] for s in tail) / len(tail)
tpsn = sum(multi[s]["tokens_per_s"] for s in tail) / len(tail)
def comm_mean(comm):
    """Mean (collectives' time, exposed gradient all-reduce) per step over the second half."""
    h = comm[len(comm) // 2:] or [(0.0, 0.0)]
    return sum(a for a, _ in h) / len(h), sum(b for _, b in h) / len(h)
multi0, comm0 = read("multi0")
print(f"\n== gpu_multi summary ({n} GPUs, {len(steps)} steps compared)")
print(f"  loss step 1: 1 GPU {one[steps[0]]['loss']:.4f}, {n} GPUs {multi[steps[0]]['loss']:.4f}; "
      f"step {steps[-1]}: {one[steps[-1]]['loss']:.4f} vs {multi[steps[-1]]['loss']:.4f}")
print(f"  {'pair':<36} {'max rel diff':>12} {'last-10 mean rel':>17}")
pairs = [("1 GPU vs N GPUs", one, multi)]
if half:
    pairs += [("1 GPU: micro 8 vs micro 4 (noise)", one, half), ("N GPUs vs 1 GPU micro 4", multi, half)]
if again:
    pairs += [("1 GPU vs the same run again", one, again)]
for name, a, b in pairs:
    w, m, k = diff(a, b)
    print(f"  {name:<36} {w:12.2e} {m:17.2e}")
if half:
    w1, m1, _ = diff(one, multi)
    wn, mn, _ = diff(one, half)
    ok = w1 <= 2 * wn and m1 <= 2 * max(mn, 1e-3)
    print(f"  within bf16 noise (the N-GPU difference at most 2x the micro-batch one): {'yes' if ok else 'NO'}")
print(f"  tokens/s (second half mean): 1 GPU {tps1:,.0f}; {n} GPUs {tpsn:,.0f}")
print(f"  scaling efficiency: {tpsn / (n * tps1) * 100:.1f}%")
for name, runs, cm in [("overlapped buckets", multi, comm), ("one all-reduce (bucket 0)", multi0, comm0)]:
    if not runs:
        continue
    busy, exposed = comm_mean(cm)
    tps = sum(runs[s]["tokens_per_s"] for s in tail if s in runs) / len(tail)
    print(f"  {name:<26}: collectives {busy:.1f} ms/step, exposed {exposed:.1f} ms/step, "
          f"{tps:,.0f} tokens/s, scaling {tps / (n * tps1) * 100:.1f}%")
PY
