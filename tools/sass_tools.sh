#!/usr/bin/env bash
# tools/sass_tools.sh: the selective scan kernels' SASS counted here, without a GPU.
#
# The CUDA toolkit on the build machine lacks cuobjdump and nvdisasm (which cuobjdump runs for
# SASS); NVIDIA's PyPI wheels nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm carry them. This
# fetches them once into .sass-tools/ (git-ignored),
# compiles cuda/selective_scan_{fwd,bwd,bwd_w16}.cu for sm_90 with the build's flags, and prints
# the chunk loops of the kernels chimera-1b runs (bf16, vector tiles; the backward with its
# gradients set and the saved pre-gate y, at 8 warps a block and at 16, the one an sm_90 runs)
# per lane-step (tools/sass_loops.py).
#   tools/sass_tools.sh            # the model's kernels
#   KERNEL=Lb1ELb1ELb1ELb1ELb0E tools/sass_tools.sh   # another backward instantiation (FWD_KERNEL: forward)
set -euo pipefail
cd "$(dirname "$0")/.."
T=.sass-tools
for tool in cuobjdump nvdisasm; do
    if [ ! -x "$T/nvidia/cu13/bin/$tool" ]; then
        mkdir -p "$T"
        python3 -m pip download --quiet --no-deps -d "$T" "nvidia-cuda-$tool"
        python3 -m zipfile -e "$T"/nvidia_cuda_"$tool"-*.whl "$T"
        chmod +x "$T/nvidia/cu13/bin/$tool"
    fi
done
export PATH=$PWD/$T/nvidia/cu13/bin:$PATH
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in fwd bwd bwd_w16; do
    nvcc -O3 -DNDEBUG -cubin -arch=sm_90 --Werror=all-warnings -Iinclude -Icuda \
        -o "$out/scan_$f.cubin" "cuda/selective_scan_$f.cu" &
done
wait
python3 tools/sass_loops.py "$out/scan_fwd.cubin" "scan_fwd_kernelI13__nv_bfloat16${FWD_KERNEL:-Lb1ELb0ELb1ELb1E}" --per 16
python3 tools/sass_loops.py "$out/scan_bwd.cubin" "scan_bwd_kernelI13__nv_bfloat16${KERNEL:-Lb1ELb1ELb1ELb1ELb1E}" --per 16
python3 tools/sass_loops.py "$out/scan_bwd_w16.cubin" "scan_bwd_kernelI13__nv_bfloat16Lb1ELb1ELb1ELb1ELb1E" --per 16
