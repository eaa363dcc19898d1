#!/usr/bin/env bash
# tools/fuzz.sh: build the libFuzzer targets of tests/fuzz (clang, ASan + UBSan) in
# build-fuzz and run each for FUZZ_SECONDS (default 60), FUZZ_JOBS at a time (default 2),
# starting from its seed corpus tests/fuzz/<name>/. Prints executions and time per target
# and exits 1 when any target found a crash, a leak, undefined behaviour or a timeout.
#
#   tools/fuzz.sh                 every target
#   tools/fuzz.sh dolma npy       some of them
#   FUZZ_SECONDS=600 tools/fuzz.sh
#
# New inputs go to build-fuzz/fuzz-out/corpus/<name>/ and crash inputs to
# build-fuzz/fuzz-out/artifacts/ (never into the repository: a crash input becomes a
# regression seed in tests/fuzz/<name>/ and a test once the bug is fixed). Logs:
# build-fuzz/fuzz-out/<name>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
build=${FUZZ_BUILD:-build-fuzz}

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in tests/fuzz/fuzz_*.c; do n=${f##*/fuzz_}; targets+=("${n%.c}"); done
fi

echo "== building the fuzz targets in $build (clang, ASan + UBSan) =="
CC=clang cmake -S . -B "$build" -G Ninja -DCHIMERA_FUZZ=ON -DCHIMERA_SANITIZE=ON \
  -DCHIMERA_CUDA=OFF -DCHIMERA_VULKAN=OFF -DCHIMERA_MPI=OFF -DCHIMERA_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

out=$build/fuzz-out
mkdir -p "$out/artifacts"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1

# Extra read-only seed folders of the project that a target can start from too.
extra_seeds() {
  case $1 in
    config) echo "configs tests/data/configs" ;;
  esac
}

# The libFuzzer dictionary of a target (tokens of its format), if any.
dict_of() {
  case $1 in
    config) echo tests/fuzz/yaml.dict ;;
    dolma | manifest | safetensors | tokenizer | trainer_state) echo tests/fuzz/json.dict ;;
  esac
}

run_one() {
  local t=$1 rc=0 dict=()
  mkdir -p "$out/corpus/$t"
  [ -n "$(dict_of "$t")" ] && dict=(-dict="$(dict_of "$t")")
  # shellcheck disable=SC2046
  "./$build/fuzz_$t" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" "${dict[@]}" \
    "$out/corpus/$t" "tests/fuzz/$t" $(extra_seeds "$t") >"$out/$t.log" 2>&1 || rc=$?
  echo $rc >"$out/$t.rc"
}

echo "== fuzzing ${#targets[@]} targets for $secs s each, $jobs at a time =="
rm -f "$out"/*.rc
for t in "${targets[@]}"; do
  run_one "$t" || true &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
done
wait

fail=0
printf '%-16s %12s %8s %10s %8s  %s\n' target executions seconds execs/s corpus result
for t in "${targets[@]}"; do
  log=$out/$t.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  corpus=$(find "$out/corpus/$t" -type f | wc -l)
  rc=$(cat "$out/$t.rc" 2>/dev/null || echo 99)
  found=$(find "$out/artifacts" -name "$t-*" -type f | wc -l)
  result=ok
  if [ "$rc" != 0 ] || [ "$found" != 0 ]; then result="FAILED (exit $rc, $found artifact(s))"; fail=1; fi
  rate=$([ -n "${took:-}" ] && [ "${took:-0}" -gt 0 ] && echo $(( ${execs:-0} / took )) || echo -)
  printf '%-16s %12s %8s %10s %8s  %s\n' "$t" "${execs:--}" "${took:--}" "$rate" "$corpus" "$result"
done
if [ $fail != 0 ]; then
  for t in "${targets[@]}"; do
    if [ "$(cat "$out/$t.rc" 2>/dev/null || echo 99)" != 0 ]; then
      echo "---- $t: the end of $out/$t.log ----"
      grep -E "ERROR|SUMMARY|Test unit written|==[0-9]+==" "$out/$t.log" | head -20 || tail -20 "$out/$t.log"
    fi
  done
  echo "fuzzing found problems: inputs in $out/artifacts/"
  exit 1
fi
echo "fuzzing: no crash, leak, undefined behaviour or timeout"
