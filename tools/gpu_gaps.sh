#!/usr/bin/env bash
# tools/gpu_gaps.sh: on the GPU machine, how much of a chimera-1b training step the device
# idles, and where: chimera plan under tools/cupti_gaps.c (a CUPTI injection library), once
# as the model runs by default and once per variant in GAPS_VARIANTS, with a plain run first
# for the tokens/s the tracing may cost.
#
#   bash tools/gpu_gaps.sh [BIN] [LIB]
#   # defaults: .gpu-ab/bin/chimera, .gpu-ab/lib/libcupti_gaps.so
#
# Environment: STEPS (plan steps, default 4), PLAN_SET (extra --set arguments), GAPS_VARIANTS
# (space-separated VAR=value environment settings, each traced once; default
# CHIMERA_MOE_GROUPED=1: the MoE backward without its counts download), CHM_GAPS_TOP,
# CHM_GAPS_STEP (the step shown in full; default the fast path's last).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.gpu-ab/bin/chimera}
LIB=${2:-$PWD/.gpu-ab/lib/libcupti_gaps.so}
G=$PWD/.gpu-ab
# CUPTI: the pack's copy (tools/gpu_pack.sh) in $G/lib, else the toolkit's
CUPTI_DIRS=/usr/local/cuda/extras/CUPTI/lib64:/usr/local/cuda/lib64
export LD_LIBRARY_PATH="$G/lib:$CUPTI_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if command -v nvidia-smi >/dev/null && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
P=(plan --config training_dolma --set train.grad_accum=1 ${PLAN_SET:-} --steps "${STEPS:-4}")
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
# the first benchmark line is the fast path (bf16); an f32 run follows where it fits
tps() { grep -o "[0-9,.]* tokens/s" "$1" | head -1; }
# complete steps 1 .. STEPS-1 are the fast path's
export CHM_GAPS_STEP=${CHM_GAPS_STEP:-$((${STEPS:-4} - 1))}
"$BIN" "${P[@]}" >/tmp/gaps_plain.txt 2>&1
echo "plain:  $(tps /tmp/gaps_plain.txt)"
CUDA_INJECTION64_PATH="$LIB" "$BIN" "${P[@]}" >/tmp/gaps_trace.txt 2>&1
echo "traced: $(tps /tmp/gaps_trace.txt)"
sed -n '/== cupti_gaps/,/^plan:/p' /tmp/gaps_trace.txt
for v in ${GAPS_VARIANTS-CHIMERA_MOE_GROUPED=1}; do
    env "$v" CUDA_INJECTION64_PATH="$LIB" "$BIN" "${P[@]}" >/tmp/gaps_var.txt 2>&1
    echo "traced with $v: $(tps /tmp/gaps_var.txt)"
    sed -n '/== cupti_gaps/,/^plan:/p' /tmp/gaps_var.txt
done
