#!/usr/bin/env bash
# tools/test_times.sh REPORT.xml [N]: the N (12) slowest tests of a Criterion XML report
# (chimera_tests --xml=FILE), slowest first, so that CI logs say where its time goes.
set -euo pipefail
report=$1
n=${2:-12}
[ -f "$report" ] || { echo "test_times: no report at $report (run chimera_tests --xml=$report)" >&2; exit 1; }
awk -v n="$n" '
/<testsuite / { if (match($0, /name="[^"]*"/)) suite = substr($0, RSTART + 6, RLENGTH - 7) }
/<testcase / {
    name = ""; t = 0
    if (match($0, /name="[^"]*"/)) name = substr($0, RSTART + 6, RLENGTH - 7)
    if (match($0, /time="[^"]*"/)) t = substr($0, RSTART + 6, RLENGTH - 7) + 0
    printf "%10.1f %s/%s\n", t, suite, name
}
' "$report" | sort -rn >"$report.times"
head -n "$n" "$report.times"
awk '{ s += $1 } END { printf "%10.1f s in all, summed over the jobs\n", s }' "$report.times"
