# tools/gpu_steps.sh: the step runner of the GPU-machine scripts (sourced by tools/gpu_check.sh
# and tools/gpu_vk_*.sh), and the setup the Vulkan ones share (gpu_vulkan_setup).
#
# step NAME SECONDS CMD...: runs CMD with a time limit, its output into $LOG/NAME.txt (shown
# as it runs; with STEP_TAIL=n only its last n lines, after it ends), and appends the verdict
# (PASS, SKIP for exit 77, TIMEOUT, FAIL with the exit code) and the seconds to the STEPS
# array, then calls step_done (a no-op unless the script defines one, e.g. to pack its logs
# so that a call cut short still returns them).
declare -a STEPS=()
step() {
    local name=$1 secs=$2 rc
    shift 2
    echo
    echo "== $name (limit ${secs}s): $*"
    local t0=$SECONDS
    if [ "${STEP_TAIL:-0}" -gt 0 ]; then
        timeout "$secs" "$@" >"$LOG/$name.txt" 2>&1
        rc=$?
        tail -n "$STEP_TAIL" "$LOG/$name.txt"
    else
        timeout "$secs" "$@" 2>&1 | tee "$LOG/$name.txt"
        rc=${PIPESTATUS[0]}
    fi
    local verdict=PASS
    case $rc in
    0) ;;
    77) verdict=SKIP ;;
    124 | 137) verdict=TIMEOUT ;;
    *) verdict="FAIL (exit $rc)" ;;
    esac
    STEPS+=("$(printf '%-14s %-16s %4ss' "$name" "$verdict" "$((SECONDS - t0))")")
    if declare -F step_done >/dev/null; then step_done; fi
}

# gpu_vulkan_setup NAME: the setup the Vulkan GPU-machine scripts share (gpu_vk_*.sh): G and B
# (the pack of tools/gpu_pack.sh and its bin/), LOG=/tmp/NAME afresh, the logs packed into
# $OUT/NAME_logs.tgz at exit and after each step, the pack's libraries first on the library path,
# and on a machine with an NVIDIA GPU the Vulkan loader of .gl unpacked (the device README).
gpu_vulkan_setup() {
    G=$PWD/.gpu
    B=$G/bin
    LOG=/tmp/$1
    LOG_PACK=$1_logs.tgz
    rm -rf "$LOG" && mkdir -p "$LOG"
    pack_logs() { [ -n "${OUT:-}" ] && tar czf "$OUT/$LOG_PACK" -C "$LOG" . 2>/dev/null; }
    trap pack_logs EXIT
    export LD_LIBRARY_PATH="$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if command -v nvidia-smi >/dev/null && ls .gl/*.deb >/dev/null 2>&1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
}
