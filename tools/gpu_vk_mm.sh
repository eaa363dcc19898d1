#!/usr/bin/env bash
# tools/gpu_vk_mm.sh: where the Vulkan cooperative-matrix matmul (matmul_cm.comp) spends its
# time on the GPU machine, in one call: the driver's statistics of its pipelines (registers,
# spills: CHIMERA_VULKAN_PIPELINE_STATS=1), and `vk_bench --mm-time` (f16/bf16 4096^3 and
# 8192x2048x8192 on the default path) with parts of the K loop left out
# (CHIMERA_VULKAN_COOPMAT_ABLATE bits: 1 no global loads, 2 no staging stores, 4 no barrier,
# 8 no multiply; products wrong), and at a few tiles (MM_TILES). With bin/vk_bench_base (and
# bin/chimera_base) in the pack, an earlier build is timed beside this one, alternated; MM_1B=1
# adds chimera-1b's Vulkan step (`chimera plan`) for each. A table ends it.
#   GPU_OUT=.gpu tools/gpu_pack.sh     # on the build machine
#   bash tools/gpu_vk_mm.sh            # on the GPU machine (carry .gpu and .gl)
set -uo pipefail
cd "$(dirname "$0")/.."
source tools/gpu_steps.sh
gpu_vulkan_setup gpu_vk_mm
STEP_TAIL=4
step_done() { pack_logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$LOG/card.txt"
export CHIMERA_VULKAN_PIPELINE_STATS=1
export XDG_CACHE_HOME=/tmp/gpu_vk_mm_cache # a fresh pipeline cache: statistics of compiled pipelines
rm -rf "$XDG_CACHE_HOME"
VP=(plan --config training_dolma --set train.grad_accum=1 --backend vulkan --steps 4)
for r in 1 2; do # this build and the base, alternated
    if [ -x "$B/vk_bench_base" ]; then
        rm -rf "$XDG_CACHE_HOME"
        step "base-mm-$r" 60 "$B/vk_bench_base" --mm-time
    fi
    rm -rf "$XDG_CACHE_HOME"
    step "new-mm-$r" 60 "$B/vk_bench" --mm-time
done
if [ "${MM_1B:-0}" = 1 ]; then
    for r in 1 2; do
        if [ -x "$B/chimera_base" ]; then step "base-1b-$r" 120 "$B/chimera_base" "${VP[@]}"; fi
        step "new-1b-$r" 120 "$B/chimera" "${VP[@]}"
    done
fi
if [ "${MM_PROFILE:-0}" = 1 ]; then # where this build's step goes, per shader
    step "new-1b-profile" 150 "$B/chimera" "${VP[@]}" --profile
fi
if [ "${MM_DUMP:-0}" = 1 ]; then # the driver's internal representations, if it offers any
    mkdir -p "$LOG/ir"
    rm -rf "$XDG_CACHE_HOME"
    step "dump" 60 env CHIMERA_VULKAN_PIPELINE_DUMP="$LOG/ir" "$B/vk_bench" --mm-time
    rm -rf "$XDG_CACHE_HOME"
    step "dump-16x16" 60 env CHIMERA_VULKAN_PIPELINE_DUMP="$LOG/ir" \
        CHIMERA_VULKAN_COOPMAT_TILE=128x128x32/64x64/16x16 "$B/vk_bench" --mm-time
    ls -la "$LOG/ir" | head -n 20
fi
# MM_CASES="name:VAR=v,VAR2=w name2:..." : `vk_bench --mm-time` under those variables (one step
# each, e.g. t16-mult:CHIMERA_VULKAN_COOPMAT_TILE=128x128x32/64x64/16x16,CHIMERA_VULKAN_COOPMAT_ABLATE=7)
for c in ${MM_CASES:-}; do
    IFS=, read -r -a vars <<<"${c#*:}"
    rm -rf "$XDG_CACHE_HOME"
    step "case-${c%%:*}" 60 env "${vars[@]}" "$B/vk_bench" --mm-time
done
# MM_1B_CASES: the same for chimera-1b's step
for c in ${MM_1B_CASES:-}; do
    IFS=, read -r -a vars <<<"${c#*:}"
    step "1b-case-${c%%:*}" 120 env "${vars[@]}" "$B/chimera" "${VP[@]}"
done
for ab in ${MM_ABLATE-0 1 3 5 7 8 4}; do
    rm -rf "$XDG_CACHE_HOME"
    step "ablate-$ab" 60 env CHIMERA_VULKAN_COOPMAT_ABLATE=$ab "$B/vk_bench" --mm-time
done
for t in ${MM_TILES:-}; do
    rm -rf "$XDG_CACHE_HOME"
    step "tile-${t//\//_}" 60 env CHIMERA_VULKAN_COOPMAT_TILE=$t "$B/vk_bench" --mm-time
done
echo
echo "== summary ($(head -n 1 "$LOG/card.txt"))"
printf '%s\n' "${STEPS[@]}"
for f in "$LOG"/*-1b-*.txt "$LOG"/1b-case-*.txt; do
    [ -f "$f" ] && echo "$(basename "$f" .txt): $(grep -h -E "bf16 \(cooperative" "$f" | tail -n 1)"
done
for f in "$LOG"/base-mm-*.txt "$LOG"/new-mm-*.txt "$LOG"/case-*.txt "$LOG"/ablate-*.txt \
    "$LOG"/tile-*.txt; do
    [ -f "$f" ] || continue
    echo "$(basename "$f" .txt):"
    grep -h "pipeline matmul_cm" "$f" | sort -u | sed 's/^chimera vulkan: /    /' | cut -c1-240
    sed -n '/== summary/,$p' "$f" | grep "matmul " | sed 's/(.. of cuBLASLt.*//'
done
