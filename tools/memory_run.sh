#!/usr/bin/env bash
# tools/memory_run.sh: a long training run under AddressSanitizer (+ LeakSanitizer and
# UBSan) that checks that memory stays flat after warm-up and that nothing leaks at exit.
#
# Builds the command with clang + sanitizers in build-memrun (Vulkan, CUDA and MPI off),
# trains configs/test.yaml on the cpu backend for STEPS optimizer steps (default 2000;
# evaluation and a checkpoint every 100 steps, so that every periodic path runs during
# warm-up), samples the process's memory (/proc/PID/status) with the step it is at
# (metrics.jsonl) every SAMPLE_SECONDS (default 2), then checks:
#   - the run exits 0 and LeakSanitizer reports no leak at exit;
#   - after WARMUP steps (default 300) the anonymous resident memory (RssAnon: heap,
#     arenas, stacks) does not grow: the median of the last quarter of the samples is
#     within TOLERANCE percent (default 2) of the median of the first quarter.
# RssAnon rather than VmRSS: VmRSS also counts the pages of the memory-mapped token file,
# which grow as random windows touch more of it until the whole file is resident (page
# cache, not a leak). ASan's quarantine is off (quarantine_size_mb=0) so that freed blocks
# are reused at once: with it, memory grows by design until the quarantine is full.
# Samples go to build-memrun/memory_run.csv (seconds,step,rss_kib,anon_kib,file_kib); a
# summary at the end. SANITIZE=0 builds without sanitizers (build-memrun-plain, glibc's
# malloc) for the memory figure alone: ASan's allocator and bookkeeping add a slow,
# flattening growth of their own (measured: +1.1% over 1,700 steps under ASan, +0.01%
# with glibc; tests/RELIABILITY.md).
# Not part of CI (10-30 minutes on two cores under ASan, 7 without); tests/RELIABILITY.md
# has the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-2000}
warmup=${WARMUP:-300}
tol=${TOLERANCE:-2}
every=${SAMPLE_SECONDS:-2}
sanitize=${SANITIZE:-1}
if [ "$sanitize" = 1 ]; then
  build=${MEMRUN_BUILD:-build-memrun}
  echo "== building the command with ASan + UBSan in $build =="
  flags=(-DCHIMERA_SANITIZE=ON)
  cc=clang
else
  build=${MEMRUN_BUILD:-build-memrun-plain}
  echo "== building the command without sanitizers in $build =="
  flags=(-DCHIMERA_SANITIZE=OFF)
  cc=${CC:-cc}
fi
CC=$cc cmake -S . -B "$build" -G Ninja "${flags[@]}" -DCHIMERA_CUDA=OFF \
  -DCHIMERA_VULKAN=OFF -DCHIMERA_MPI=OFF -DCHIMERA_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target chimera_cli >/dev/null

out=$build/memory-run
rm -rf "$out"
csv=$build/memory_run.csv
echo "seconds,step,rss_kib,anon_kib,file_kib" >"$csv"
export ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_WAIT_POLICY=passive

echo "== training configs/test.yaml for $steps steps (samples every $every s) =="
"$build/chimera" train --config test --backend cpu --out "$out" --quiet \
  --set train.steps="$steps" --set train.eval_every=100 --set train.save_every=100 \
  --set train.log_every=10 >"$build/memory_run.out" 2>"$build/memory_run.err" &
pid=$!
t0=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  mem=$(awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} /^RssFile:/ {f = $2}
             END {if (r) print r "," a "," f}' "/proc/$pid/status" 2>/dev/null || true)
  step=$(grep '"event":"train"' "$out/metrics.jsonl" 2>/dev/null | tail -1 |
    sed -n 's/.*"step":\([0-9]*\).*/\1/p' || true)
  [ -n "$mem" ] && echo "$(( $(date +%s) - t0 )),${step:-0},$mem" >>"$csv"
  sleep "$every"
done
rc=0
wait "$pid" || rc=$?
secs=$(( $(date +%s) - t0 ))

leaks=$(grep -c "LeakSanitizer: detected memory leaks" "$build/memory_run.err" || true)
errors=$(grep -c "ERROR: AddressSanitizer\|runtime error:" "$build/memory_run.err" || true)
# Trend after warm-up: the median of the first quarter of the samples against the median of
# the last quarter (single samples swing by about 1% with the save and evaluation buffers
# that come and go).
post=$(awk -F, -v w="$warmup" 'NR > 1 && $2 >= w {print $4}' "$csv")
n=$(printf '%s\n' "$post" | grep -c . || true)
q=$(( n / 4 ))
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
flat=0
if [ "$q" -ge 2 ]; then
  m1=$(printf '%s\n' "$post" | head -n "$q" | median)
  m2=$(printf '%s\n' "$post" | tail -n "$q" | median)
  summary=$(awk -F, -v w="$warmup" -v m1="$m1" -v m2="$m2" -v tol="$tol" -v q="$q" '
    NR > 1 && $2 >= w { n++; if (n == 1) { fs = $2; rfirst = $3 } last = $2; rlast = $3
                        max = ($4 > max) ? $4 : max; min = (n == 1 || $4 < min) ? $4 : min }
    NR > 1 { peak = ($3 > peak) ? $3 : peak }
    END {
      g = 100.0 * (m2 - m1) / m1
      printf "samples after step %d: %d (steps %d..%d)\n", w, n, fs, last
      printf "RssAnon: median of the first %d samples %.2f MiB, of the last %d %.2f MiB: growth %.2f%% (limit %s%%); range %.2f..%.2f MiB\n",
        q, m1 / 1024, q, m2 / 1024, g, tol, min / 1024, max / 1024
      printf "VmRSS (with the mapped token file): %.1f -> %.1f MiB after warm-up, peak %.1f MiB\n",
        rfirst / 1024, rlast / 1024, peak / 1024
      exit g > tol ? 2 : 0
    }' "$csv") && flat=1
else
  summary="too few samples after step $warmup ($n)"
fi

echo "== memory run: $steps steps in ${secs} s, exit code $rc =="
echo "$summary"
echo "LeakSanitizer leak reports: $leaks; ASan/UBSan errors: $errors; samples: $csv"
tail -2 "$build/memory_run.out"
if [ "$rc" != 0 ] || [ "$leaks" != 0 ] || [ "$errors" != 0 ] || [ "$flat" != 1 ]; then
  echo "memory run FAILED (see $build/memory_run.err)"
  exit 1
fi
echo "memory run: flat after warm-up, no leaks"
