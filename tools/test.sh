#!/usr/bin/env bash
# tools/test.sh: set up, build and run every test: once with gcc (CUDA compiled when nvcc
# is present), once with clang under AddressSanitizer + UBSan. Vulkan tests run with the
# Khronos validation layer on; lavapipe is the Vulkan device when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh

export VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation
# Tests run two at a time on small machines: OpenMP threads must not spin while they wait.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# use_tls=0: clang 14's LeakSanitizer crashes scanning dynamic TLS on this glibc (tests/lsan.supp).
export LSAN_OPTIONS=use_tls=0:suppressions=$PWD/tests/lsan.supp

jobs=$(nproc)
# Each phase with the seconds since this script started, so that CI logs say where the time goes.
phase() { echo "== $* (at $SECONDS s) =="; }
phase "gcc build (-Werror)"
CC=gcc bash tools/build.sh build
bash tools/check_pdl.sh
phase "gcc tests"
./build/chimera_tests --jobs "$jobs" --xml=build/criterion.xml
bash tools/test_times.sh build/criterion.xml
phase "chimera verify: vulkan (lavapipe) against the cpu reference"
./build/chimera verify --backends cpu,vulkan

phase "clang + ASan/UBSan build (-Werror)"
# The shaders are the same SPIR-V in both builds: the sanitized one imports the gcc build's set
# (checked against this tree's sources by its manifest) instead of running glslc on ~300
# variants again. -O1, as the sanitizers' documentation advises for speed (the -O0 and -O1
# suites were not timed apart: session 12 measured 665 s for the -O1 one).
spirv=
if [ -d build/spirv ]; then  # the gcc build compiled shaders (Vulkan found)
    cmake --build build --target chimera_spirv_export >/dev/null
    spirv=-DCHIMERA_SPIRV_DIR=$PWD/build/spirv-export
fi
CC=clang bash tools/build.sh build-asan -DCHIMERA_SANITIZE=ON -DCHIMERA_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-g -O1" ${spirv:+"$spirv"}
phase "clang + ASan/UBSan tests"
# The sanitized tests give lavapipe the same SPIR-V as the gcc run did: start them with that
# run's shader caches (Mesa's, and chimera's pipeline cache: build/test-cache, where the tests
# keep them), as ccache would. lavapipe's LLVM compiles under ASan's allocator took most of the
# sanitized Vulkan tests' time (pinned_subgroup_size: 85 s cold, 4 s warm); our code still
# creates every pipeline, and reading a saved cache is a path of its own worth sanitizing.
if [ -d build/test-cache ]; then
    rm -rf build-asan/test-cache
    cp -r build/test-cache build-asan/test-cache
fi
./build-asan/chimera_tests --jobs "$jobs" --xml=build-asan/criterion.xml
bash tools/test_times.sh build-asan/criterion.xml

# libFuzzer targets of tests/fuzz (the parsers of outside input), 45 s each, two at a time
# (60 s took CI to 30.3 min on 2 cores, session 12; FUZZ_SECONDS=600 for a longer search).
phase "fuzzing (tools/fuzz.sh)"
FUZZ_SECONDS=${FUZZ_SECONDS:-45} FUZZ_JOBS=${FUZZ_JOBS:-2} bash tools/fuzz.sh
phase "done"
