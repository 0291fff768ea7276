#!/usr/bin/env bash
# Runs the adapter integration tests (libuv transport, TLS, c-ares, spool) under valgrind
# memcheck: uninitialised reads, invalid accesses and definite leaks fail the run.
#
#   scripts/valgrind.sh                 build in build-valgrind/, run [uv] [tls] [ares] [spool]
#                                       and [segment] (without the [crash] rounds)
#   scripts/valgrind.sh "[spool]" ...   only the given Catch2 test specs
#
# The build has no sanitizers (valgrind and ASan do not mix) and -O1 -g. Only the test binary
# runs under valgrind, not the servers and helpers it starts (smtp-sink, unbound, the crash
# writers); children it forks itself are checked too. scripts/valgrind.supp holds the few
# false positives, each with its reason. Environment: JOBS (build parallelism, default 2), BUILD_DIR (default
# build-valgrind), VALGRIND_ARGS (extra valgrind options).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-valgrind}
jobs=${JOBS:-2}

if ! command -v valgrind >/dev/null; then
  echo "valgrind.sh: valgrind is not installed (apt-get install -y valgrind)" >&2
  exit 2
fi

specs=("$@")
if [[ ${#specs[@]} -eq 0 ]]; then
  specs=("[uv]" "[tls]" "[ares]" "[spool]" "[segment]~[crash]")
fi

# The tests' own code at -O1 too (not the -O0 of the other builds): under valgrind the test
# loops that write and compare spool files cost several times more unoptimised.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="-O1 -g" \
  -DMAILQ_TEST_CODE_OPTIONS= \
  -DMAILQ_BUILD_TESTS=ON -DMAILQ_BUILD_EXAMPLES=OFF -DMAILQ_BUILD_BENCH=OFF \
  -DMAILQ_BUILD_FUZZ=OFF -DMAILQ_SANITIZE=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target mailq_integration_tests

status=0
for spec in "${specs[@]}"; do
  echo "=== valgrind memcheck: mailq_integration_tests \"$spec\""
  start=$(date +%s)
  # --errors-for-leak-kinds=definite: libuv, c-ares and mbedTLS keep some process-lifetime
  # allocations ("still reachable"); a definite leak is ours to fix.
  # shellcheck disable=SC2086
  if valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
       --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-origins=yes \
       --num-callers=30 --suppressions="$root/scripts/valgrind.supp" ${VALGRIND_ARGS:-} \
       "$build/tests/mailq_integration_tests" "$spec"; then
    echo "=== $spec: clean ($(( $(date +%s) - start )) s)"
  else
    rc=$?
    echo "=== $spec: FAILED with status $rc ($(( $(date +%s) - start )) s)" >&2
    status=1
  fi
done
exit $status
