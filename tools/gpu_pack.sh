#!/usr/bin/env bash
# tools/gpu_pack.sh: build the CUDA binaries on this machine and pack them, with the
# shared libraries the GPU machine lacks, into .gpu/ (git-ignored) for tools/gpu_check.sh.
#
# The GPU machine (issue 7: Ubuntu 24.04, CUDA 13.0, no libyaml/Criterion/Vulkan/-dev
# headers) runs binaries built here: same nvcc, x86-64, and this machine's glibc is older
# than Ubuntu 24.04's. Carried: bin/cuda_opcheck (op check + benchmarks, no Criterion),
# bin/chimera (the CLI, for `chimera info`), bin/chimera_tests when Criterion is here,
# and lib/ with every shared library they need that the GPU machine does not have.
#
#   tools/gpu_pack.sh              # archs 90 (H100/H200); GPU_ARCHS="80;90" for more
# Then carry .gpu to the GPU machine and run: bash tools/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=${GPU_BUILD:-build-gpu}
archs=${GPU_ARCHS:-90}
out=${GPU_OUT:-.gpu}   # GPU_OUT: another folder (e.g. .gpu-scan) so that two packs do not collide

# Vulkan is built too (GPU_VULKAN=OFF to skip): its SPIR-V is compiled here, and
# tools/gpu_check.sh brings the loader from .gl (see the device README).
vulkan=${GPU_VULKAN:-ON}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCHIMERA_CUDA=ON \
    "-DCHIMERA_VULKAN=$vulkan" "-DCMAKE_CUDA_ARCHITECTURES=$archs" >/dev/null
# (file targets: with Ninja the name "chimera" means the CLI binary, not the library)
cmake --build "$build" --target libchimera.a libchimera_cuda.a cuda_opcheck
# The CLI, the Criterion suite and the vulkan benchmark (tools/vk_bench.c: its matmul paths
# against the cpu, TFLOP/s, attention, scan and training throughput) are extras: a tree where
# another part is mid-way still packs the op check (tools/cuda_opcheck.c).
extras=(chimera_cli)
if grep -q '^CHIMERA_TESTS:BOOL=ON' "$build/CMakeCache.txt"; then extras+=(chimera_tests); fi
if [ "$vulkan" = ON ]; then extras+=(vk_bench); fi
# the idle-time tracer (tools/cupti_gaps.c), where CUDA's CUPTI is (tools/gpu_gaps.sh)
if grep -q '^CUDA_cupti_LIBRARY:FILEPATH=/' "$build/CMakeCache.txt"; then extras+=(cupti_gaps); fi
for t in "${extras[@]}"; do
    cmake --build "$build" --target "$t" >/dev/null 2>&1 || echo "gpu_pack: $t does not build now; packing without it"
done

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
# (built with the RUNPATH $ORIGIN/../lib: CMakeLists.txt's GPU-machine tools)
for b in cuda_opcheck vk_bench chimera chimera_tests; do
    if [ -x "$build/$b" ] && [ "$build/$b" -nt "$build/libchimera.a" ]; then cp "$build/$b" "$out/bin/"; fi
done

# Libraries the GPU machine has (issue 7's list, plus the C/C++ runtime and the CUDA
# toolkit): everything else a binary needs is copied into lib/.
present='^(libvulkan|libc|libm|libdl|librt|libpthread|ld-linux-x86-64|libgcc_s|libstdc\+\+|libgomp|libcuda|libcudart|libcublas|libcublasLt|libnccl|libopenblas|libgfortran|libquadmath|libz|libzstd|libjansson|libpcre2-8|libmpi|libopen-pal|libopen-rte|libhwloc|libevent[a-z0-9_.-]*|libnvidia-[a-z-]*)\.so'
for b in "$out"/bin/*; do
    ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
    name=$(basename "$lib")
    if ! [[ $name =~ $present ]]; then cp -L "$lib" "$out/lib/$name"; fi
done
# with this machine's CUPTI beside it (the GPU machine's may sit outside the loader's path)
if [ -f "$build/libcupti_gaps.so" ]; then
    cp "$build/libcupti_gaps.so" "$out/lib/"
    cp -L "$(ldd "$build/libcupti_gaps.so" | awk '/libcupti\.so/ {print $3}')" "$out/lib/" || true
fi
# The host-time sampler (tools/hostprof.c), preloaded by tools/gpu_train_bench.sh with HOSTPROF=1
cc -O2 -Wall -Wextra -Werror -shared -fPIC tools/hostprof.c -o "$out/lib/hostprof.so"
echo "packed $(du -sh "$out" | cut -f1) into $out:"
ls -l "$out/bin" "$out/lib"
