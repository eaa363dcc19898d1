#!/usr/bin/env bash
# tools/gpu_attn_ab.sh: on the GPU machine, alternate several builds of cuda_opcheck on the
# attention benchmark in one lease, check each, and print one table last.
#
# Here (no GPU): pack a build with tools/gpu_pack.sh (GPU_OUT=.gpu-v), then copy each variant's
# cuda_opcheck to .gpu-v/bin/cuda_opcheck_NAME (the base as cuda_opcheck_base); carry .gpu-v
# (compressed if large) and .gl. Then with the device tool:
#   bash tools/gpu_attn_ab.sh          # REPS=3 rounds; SAN=new: sanitizers on that variant
# Every variant but base runs `--check --only attention` at seeds 1 and 7 first (the checks
# compare with the cpu and run each backward twice for bitwise equality); each round runs every
# variant's --bench once, in the same order. Variants NAME@ENV=VALUE run cuda_opcheck_NAME
# with that environment (e.g. new@CHIMERA_CUDA_DISABLE=wgmma).
set -uo pipefail
cd "$(dirname "$0")/.."
G=.gpu-v
B=$G/bin
L=/tmp/attn_ab
rm -rf "$L" && mkdir -p "$L"
export LD_LIBRARY_PATH="$PWD/$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
mapfile -t V < <(ls "$B" 2>/dev/null | sed -n 's/^cuda_opcheck_//p')
V+=(${EXTRA:-})
if [ ${#V[@]} -eq 0 ]; then
    echo "gpu_attn_ab: no $B/cuda_opcheck_* here: see this script's header" >&2
    exit 2
fi
run() {  # run VARIANT ARGS...: the variant's binary with its environment
    local v=$1
    shift
    if [[ $v == *@* ]]; then
        env "${v#*@}" "$B/cuda_opcheck_${v%%@*}" "$@"
    else
        "$B/cuda_opcheck_$v" "$@"
    fi
}
for v in "${V[@]}"; do
    [ "$v" = base ] && continue
    for s in 1 7; do
        echo "check $v seed $s: $(run "$v" --check --only attention --seed "$s" | grep 'op check')"
    done
done
CS=/usr/local/cuda/bin/compute-sanitizer
for v in ${SAN:-}; do
    echo "memcheck $v: $(timeout 120 "$CS" --tool memcheck --error-exitcode 3 "$B/cuda_opcheck_$v" \
        --check --only attention --quiet 2>&1 | grep -E 'ERROR SUMMARY|op check' | tr '\n' ' ')"
    echo "racecheck $v: $(timeout 180 "$CS" --tool racecheck --check-warpgroup-mma yes \
        --error-exitcode 3 "$B/cuda_opcheck_$v" --check --only attention --quiet 2>&1 |
        grep -E 'RACECHECK SUMMARY|op check' | tr '\n' ' ')"
done
for r in $(seq 1 "${REPS:-3}"); do
    for v in "${V[@]}"; do
        run "$v" --bench --only none >"$L/${v//[@=]/_}.$r.txt" 2>&1
    done
done
[ -n "${OUT:-}" ] && tar czf "$OUT/attn_ab.tgz" -C /tmp attn_ab
echo
echo "attention fwd / bwd / fwd+bwd ms at T2048 d64, T2048 d128, T8192 d64, T8192 d128 (rounds):"
for v in "${V[@]}"; do
    for r in $(seq 1 "${REPS:-3}"); do
        f=$L/${v//[@=]/_}.$r.txt
        ms() { awk -v w="$1" 'index($0, w) == 3 { for (i = 1; i <= NF; i++) if ($i == "ms") { print $(i - 1); exit } }' "$f"; }
        row=$(printf '%-28s' "$v")
        for s in "8x2048 h16 d64:T2048 d64" "8x2048 h8 d128:T2048 d128" "2x8192 h16 d64:T8192 d64" \
            "2x8192 h8 d128:T8192 d128"; do
            row+=$(printf ' | %s / %s / %s' "$(ms "attention fwd ${s%%:*}")" \
                "$(ms "attention bwd ${s%%:*}")" "$(ms "attention fwd+bwd ${s#*:}")")
        done
        echo "$row"
    done
done
