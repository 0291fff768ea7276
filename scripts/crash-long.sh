#!/usr/bin/env bash
# The long forms of the crash tests, each printing its figures: the spool crash rounds, the
# engine under SIGKILL and under power cuts (tests/crash/powercut_fs.cpp) on both spool layouts,
# mailq-relay over SMTP ingest under power cuts, then the soak run (scripts/soak.sh: an hour
# per spool layout; MAILQ_SOAK_SECONDS sets it, 0 leaves it out). CI runs the short forms (a
# handful of rounds, 45 s of soak) as part of the suite; this runs 50 to 100 rounds of each
# (MAILQ_LONG_TESTS=1).
#
#   scripts/crash-long.sh [BUILD_DIR]     default build-test (built first)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build-test}
cmake --build "$build" -j"${JOBS:-2}" --target mailq_integration_tests mailq_program_tests \
  powercut_fs spool_crash_writer engine_crash_writer mailq-relay
export MAILQ_LONG_TESTS=1
status=0
run() {
  echo "=== $1 $2"
  local out
  out=$("$build/tests/$1" "$2" 2>&1) || status=1
  # Catch2 prints each test's figures as a warning: those lines, then the verdict.
  echo "$out" | grep -E -A1 "warning:$" | grep -v -E "^--$|warning:$" || true
  echo "$out" | grep -E "^All tests passed|^test cases:" || true
}
run mailq_integration_tests "[spool][crash]"
run mailq_integration_tests "[engine][crash]"
run mailq_program_tests "[relay][crash][powercut]"
soak_seconds=${MAILQ_SOAK_SECONDS:-3600}
if [[ $soak_seconds -gt 0 ]]; then
  "$root/scripts/soak.sh" "$soak_seconds" "$build" || status=1
fi
exit $status
