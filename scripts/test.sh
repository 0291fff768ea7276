#!/usr/bin/env bash
# Builds mailq and runs its whole test suite (unit, integration, programs, consumer projects).
#
#   scripts/test.sh              RelWithDebInfo build in build-test/, then ctest
#   scripts/test.sh --sanitize   the same under ASan + UBSan, in build-asan/
#   scripts/test.sh --hardening  ThreadSanitizer (scripts/tsan.sh), valgrind memcheck of the
#                                adapters (scripts/valgrind.sh) and a fuzz smoke run of every
#                                libFuzzer target (scripts/fuzz.sh --smoke)
#   scripts/test.sh --all        all of the above, one after the other (what CI runs)
#
# Other options:
#   --no-deps         do not run scripts/deps.sh first (it is a no-op once all is installed)
#   -- ARGS...        pass ARGS to ctest, e.g. `scripts/test.sh -- -R "unit: " -V`
# Environment: JOBS (build and ctest parallelism, default 2), MAILQ_TEST_TIMEOUT (default
# per-test timeout in seconds for tests that set none, default 300), FUZZ_SECONDS (per fuzz
# target in the smoke run, default 20).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${JOBS:-2}
timeout=${MAILQ_TEST_TIMEOUT:-300}
normal=1
sanitize=0
hardening=0
deps=1
ctest_args=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --sanitize) normal=0; sanitize=1 ;;
    --hardening) normal=0; hardening=1 ;;
    --all) normal=1; sanitize=1; hardening=1 ;;
    --no-deps) deps=0 ;;
    --) shift; ctest_args=("$@"); break ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $deps -eq 1 ]]; then
  "$root/scripts/deps.sh"
fi

# configure_build_test NAME BUILD_DIR CMAKE_ARGS...
# Every step checks its own status: `set -e` does not apply inside a function called from a
# `||` list, and a failed build must never let ctest run stale binaries.
configure_build_test() {
  local name=$1 dir=$2
  shift 2
  echo "=== mailq: $name build in ${dir#"$root"/} ==="
  if [[ -f "$dir/CMakeCache.txt" ]] &&
     ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
    echo "test.sh: $dir was configured with another generator; remove it first" >&2
    return 1
  fi
  mkdir -p "$dir" || return 1
  if ! cmake -S "$root" -B "$dir" -G Ninja -DMAILQ_BUILD_TESTS=ON "$@" >"$dir/configure.log" 2>&1
  then
    cat "$dir/configure.log" >&2
    echo "test.sh: $name configure failed" >&2
    return 1
  fi
  if ! cmake --build "$dir" -j "$jobs"; then
    echo "test.sh: $name build failed" >&2
    return 1
  fi
  echo "=== mailq: $name tests ==="
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" --timeout "$timeout" \
    ${stage_ctest_args[@]+"${stage_ctest_args[@]}"} ${ctest_args[@]+"${ctest_args[@]}"} ||
    return 1
}

failed=()
stage_ctest_args=()

if [[ $normal -eq 1 ]]; then
  configure_build_test "RelWithDebInfo" "$root/build-test" -DCMAKE_BUILD_TYPE=RelWithDebInfo ||
    failed+=("normal")
fi

if [[ $sanitize -eq 1 ]]; then
  # -O1: sanitizer builds compile and run noticeably faster than at -O2 and still inline enough
  # to be realistic. Leak checking on; the first error ends the program.
  (
    export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    # The consumer tests that compile mailq again (label "rebuild") check the build wiring,
    # which the sanitizers do not change: the normal build runs them.
    stage_ctest_args=(-LE rebuild)
    configure_build_test "ASan+UBSan" "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug \
      "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" -DMAILQ_SANITIZE=ON
  ) || failed+=("sanitize")
fi

if [[ $hardening -eq 1 ]]; then
  echo "=== mailq: ThreadSanitizer ==="
  JOBS=$jobs "$root/scripts/tsan.sh" || failed+=("tsan")
  echo "=== mailq: valgrind memcheck of the adapters ==="
  JOBS=$jobs "$root/scripts/valgrind.sh" || failed+=("valgrind")
  echo "=== mailq: fuzz smoke ==="
  JOBS=$jobs FUZZ_SECONDS=${FUZZ_SECONDS:-20} "$root/scripts/fuzz.sh" --smoke || failed+=("fuzz")
fi

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "=== mailq: FAILED: ${failed[*]} ===" >&2
  exit 1
fi
echo "=== mailq: all requested test runs passed ==="
