#!/usr/bin/env bash
# The long form of the soak run (tests/programs/test_soak.cpp): mailq-relay taking a steady
# stream of SMTP submissions for live, slow, 4xx, 5xx and refusing destinations, SIGKILLed
# every two minutes or so, its spool disk filled to a few MB of free space and then to none for
# 15 s out of every 5 minutes. An hour per spool layout; CI runs 45 s of each.
#
#   scripts/soak.sh [SECONDS] [BUILD_DIR]     default 3600 s per layout, build-test (built first)
#
# Prints, per layout, what happened to every message (acknowledged, refused, delivered,
# bounced, still queued, lost, duplicated) and each relay process's resident memory and open
# descriptors.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-3600}
build=${2:-$root/build-test}
cmake --build "$build" -j"${JOBS:-2}" --target mailq_program_tests powercut_fs mailq-relay \
  mailq-queue
export MAILQ_LONG_TESTS=1 MAILQ_SOAK_SECONDS=$seconds
status=0
for layout in "[soak]~[segments]" "[soak][segments]"; do
  echo "=== soak, $seconds s, $([[ $layout == "[soak][segments]" ]] && echo segment || echo file) spool"
  out=$("$build/tests/mailq_program_tests" -w NoTests "$layout" 2>&1) || status=1
  # The figures are the test's warning (report lines begin with two spaces), then the verdict.
  echo "$out" | sed -n '/warning:$/,/^$/p' | grep -v "warning:$" || true
  echo "$out" | grep -E "FAILED|^All tests passed|^test cases:" || true
done
exit $status
