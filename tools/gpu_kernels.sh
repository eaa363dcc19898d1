#!/usr/bin/env bash
# tools/gpu_kernels.sh: on the GPU machine, every kernel's own device time in one chimera-1b
# training step, from Nsight Compute (one metric, gpu__time_duration, no cache flush, the
# clocks left free), summed by kernel name; the step is the last complete one between two
# AdamW launches. Prints a table last; the raw CSV lands in $OUT (or /tmp).
#
#   bash tools/gpu_kernels.sh [BIN]     # BIN: the chimera binary (default .gpu-ab/bin/chimera)
#
# Environment: STEPS (plan steps, default 3: two warm-up and one timed), TOP (table rows,
# default 40), PLAN_SET (extra --set arguments), DETAIL (a regex: those kernels again, by grid). The step's kernel-time sum against its wall
# time (from the plan's tokens/s run without ncu) tells how long the GPU idles between ops.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.gpu-ab/bin/chimera}
O=${OUT:-/tmp}
G=$PWD/.gpu-ab
export LD_LIBRARY_PATH="$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# the Vulkan loader (the binaries link it), on the GPU machine only (it unpacks into /)
if command -v nvidia-smi >/dev/null && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
P=(plan --config training_dolma --set train.grad_accum=1 ${PLAN_SET:-} --steps "${STEPS:-3}" --profile)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
"$BIN" "${P[@]}" >"$O/kernels_wall.txt" 2>&1   # the wall time, without ncu
timeout 480 "$NCU" --metrics gpu__time_duration.sum --clock-control none --cache-control none \
    --csv --log-file "$O/kernels.csv" "$BIN" "${P[@]}" >"$O/kernels_plan.txt" 2>&1
echo "ncu rc $? ($(wc -l <"$O/kernels.csv") csv lines)"
python3 - "$O/kernels.csv" "${TOP:-40}" "${DETAIL:-}" <<'PY'
import csv, re, sys, collections
rows = []
with open(sys.argv[1]) as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    v = float(r["Metric Value"].replace(",", ""))
    unit = r["Metric Unit"]
    us = v / 1e3 if unit in ("nsecond", "ns") else v * 1e3 if unit in ("msecond", "ms") else v
    name = r["Kernel Name"].replace("<unnamed>::", "").replace("(anonymous namespace)::", "")
    name = re.sub(r"\(.*$", "", name).strip()
    name = re.sub(r"^void ", "", name)
    rows.append((name, r.get("Grid Size", ""), us))
adam = [i for i, r in enumerate(rows) if "adamw" in r[0]]
# a step's AdamW launches may have a few kernels between them (the gradient norm): a group
# ends where the next AdamW launch is more than 50 kernels away
ends = [i for k, i in enumerate(adam) if k + 1 == len(adam) or adam[k + 1] > i + 50]
if len(ends) < 2:
    print("fewer than two AdamW groups: no complete step"); sys.exit(0)
step = rows[ends[-2] + 1: ends[-1] + 1]
tot = sum(r[2] for r in step)
by = collections.defaultdict(lambda: [0, 0.0])
for n, g, us in step:
    short = re.sub(r"<.*", "", n).split("::")[-1][:48]
    by[short][0] += 1
    by[short][1] += us
gemm = sum(us for n, g, us in step if n.startswith("nvjet") or "gemm" in n.lower())
print(f"\n== one step: {len(step)} kernels, {tot/1e3:.2f} ms of kernel time, of which "
      f"cuBLAS(Lt) GEMMs {gemm/1e3:.2f} ms ({100*gemm/tot:.0f}%)")
print(f"  {'kernel':48s} {'calls':>6s} {'ms':>8s} {'share':>6s} {'mean us':>8s}")
for k, (c, us) in sorted(by.items(), key=lambda kv: -kv[1][1])[: int(sys.argv[2])]:
    print(f"  {k:48s} {c:6d} {us/1e3:8.3f} {100*us/tot:5.1f}% {us/c:8.1f}")
want = re.compile(sys.argv[3]) if sys.argv[3] else None
if want:
    byg = collections.defaultdict(lambda: [0, 0.0])
    for n, g, us in step:
        short = re.sub(r"<.*", "", n).split("::")[-1][:40]
        if want.search(short):
            byg[(short, g)][0] += 1
            byg[(short, g)][1] += us
    print(f"\n== by grid, kernels matching {sys.argv[3]}")
    for (k, g), (c, us) in sorted(byg.items(), key=lambda kv: -kv[1][1]):
        print(f"  {k:40s} {g:>16s} {c:5d} {us/1e3:8.3f} ms {us/c:8.1f} us")
PY
echo "without ncu:"; grep -h "tokens/s\|after warm-up" "$O/kernels_wall.txt" | head -3
