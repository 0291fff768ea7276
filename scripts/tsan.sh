#!/usr/bin/env bash
# ThreadSanitizer build and run of the tests that have threads.
#
#   scripts/tsan.sh                       build in build-tsan/, run the integration and
#                                         program tests
#   scripts/tsan.sh BINARY [SPEC...]      one test binary (mailq_integration_tests,
#                                         mailq_program_tests, mailq_unit_tests) with Catch2
#                                         test specs, e.g. scripts/tsan.sh mailq_integration_tests "[hostile]"
#
# Where threads are: the mailq libraries start none (everything runs on the host's loop
# thread; no uv_queue_work, no uv_fs_* or uv_getaddrinfo, so not even libuv's thread pool;
# the one shared variable, the DSN boundary counter in src/core/dsn.cpp, is atomic). The
# threads are in the tests: the hostile SMTP and DNS servers and the raw client of
# tests/support (a thread per peer, talking to the library over loopback sockets), and the
# control, tools and metrics tests of tests/programs (std::async / std::thread clients). A
# race between those threads and the loop thread is what this run can find.
#
# libuv, c-ares and mbedTLS come from the system, uninstrumented: they are only ever called
# from the loop thread. Environment: JOBS (default 2), BUILD_DIR (default build-tsan),
# TSAN_OPTIONS (default halt_on_error=1 second_deadlock_stack=1).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-tsan}
jobs=${JOBS:-2}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}

if ! command -v clang++ >/dev/null; then
  echo "tsan.sh: clang++ is needed" >&2
  exit 2
fi

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
  -DMAILQ_BUILD_TESTS=ON -DMAILQ_BUILD_EXAMPLES=ON -DMAILQ_BUILD_BENCH=OFF \
  -DMAILQ_BUILD_FUZZ=OFF -DMAILQ_SANITIZE=OFF >/dev/null

runs=()
if [[ $# -gt 0 ]]; then
  runs=("$1")
  shift
  specs=("$@")
else
  runs=(mailq_integration_tests mailq_program_tests)
  # The soak runs (tests/programs/test_soak.cpp) start no thread of their own: minutes of
  # mailq-relay under load that the normal and ASan builds run; here they would only add time.
  specs=("~[soak]")
fi

# Build only what exists (the program tests need the relay kit).
available=$(cmake --build "$build" --target help | sed -n 's/^\([a-z_]*\): .*/\1/p')
build_targets=()
for b in "${runs[@]}"; do
  if grep -qx "$b" <<<"$available"; then build_targets+=("$b"); fi
done
if [[ ${#build_targets[@]} -eq 0 ]]; then
  echo "tsan.sh: none of ${runs[*]} can be built here" >&2
  exit 2
fi
cmake --build "$build" -j"$jobs" --target "${build_targets[@]}"

status=0
for b in "${build_targets[@]}"; do
  echo "=== ThreadSanitizer: $b ${specs[*]:-}"
  start=$(date +%s)
  if "$build/tests/$b" "${specs[@]}"; then
    echo "=== $b: clean ($(( $(date +%s) - start )) s)"
  else
    rc=$?
    echo "=== $b: FAILED with status $rc ($(( $(date +%s) - start )) s)" >&2
    status=1
  fi
done
exit $status
