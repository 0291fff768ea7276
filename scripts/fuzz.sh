#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) and runs them.
#
#   scripts/fuzz.sh [--smoke] [target...]   CI: each target ~60 s, JOBS of them at a time
#   scripts/fuzz.sh --long [target...]      every target at once, until stopped (Ctrl-C) or
#                                           FUZZ_SECONDS per target
#   scripts/fuzz.sh --merge [target...]     fold the inputs found by earlier runs that add
#                                           coverage into the seed corpora fuzz/corpus/<t>/
#   scripts/fuzz.sh --list                  the targets
#
# Targets are the fuzz/<name>.cpp files (smtp_reply, smtp_client, smtp_server, address,
# spool_file, spool_records, record_codec, segment_file, dns_answer, relay_config,
# relay_control, maildrop); default: all.
# Each run starts from the seed corpus fuzz/corpus/<name>/ (read only) and keeps what it
# finds in <build>/fuzz-work/<name>/. A crash, a broken invariant, a leak or a timeout is
# saved as fuzz/crashes/<name>-crash-<sha1> (or -leak-, -timeout-, -oom-) and the script
# fails. Reproduce one with `<build>/fuzz/fuzz_<name> fuzz/crashes/<file>`; once fixed, add
# it to the target's regression inputs (see tests/unit/test_fuzz_regressions.cpp).
#
# Environment: BUILD_DIR (default build-fuzz), JOBS (build parallelism and smoke targets run
# at once, default 2),
# FUZZ_SECONDS (per target; default 60 for --smoke, unlimited for --long), FUZZ_ARGS (extra
# libFuzzer options, e.g. "-max_len=8192").
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}
jobs=${JOBS:-2}
mode=smoke
targets=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) mode=smoke ;;
    --long) mode=long ;;
    --merge) mode=merge ;;
    --list) mode=list ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) targets+=("${1#fuzz_}") ;;
  esac
  shift
done

all=()
for f in "$root"/fuzz/*.cpp; do
  n=$(basename "$f" .cpp)
  all+=("$n")
done
if [[ $mode == list ]]; then
  printf '%s\n' "${all[@]}"
  exit 0
fi
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
  if [[ ! -f "$root/fuzz/$t.cpp" ]]; then
    echo "fuzz.sh: no target '$t' (fuzz/$t.cpp); targets: ${all[*]}" >&2
    exit 2
  fi
done

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ is needed (libFuzzer)" >&2
  exit 2
fi

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMAILQ_BUILD_FUZZ=ON -DMAILQ_BUILD_TESTS=OFF -DMAILQ_BUILD_EXAMPLES=OFF \
  -DMAILQ_BUILD_BENCH=OFF >/dev/null
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
cmake --build "$build" -j"$jobs" --target "${build_targets[@]}"

crashes="$root/fuzz/crashes"
mkdir -p "$crashes"

# Options every run shares: a broken invariant aborts (a crash), 30 s for one input is a
# hang, 2 GiB is an out-of-memory.
common=(-timeout=30 -rss_limit_mb=2048 -print_final_stats=1)

if [[ $mode == merge ]]; then
  for t in "${targets[@]}"; do
    work="$build/fuzz-work/$t"
    [[ -d $work ]] || { echo "fuzz.sh: no inputs found yet for $t ($work)"; continue; }
    before=$(ls "$root/fuzz/corpus/$t" | wc -l)
    # shellcheck disable=SC2086
    "$build/fuzz/fuzz_$t" -merge=1 "${common[@]}" ${FUZZ_ARGS:-} "$root/fuzz/corpus/$t" "$work" \
      >"$build/fuzz-work/$t.merge.log" 2>&1
    echo "$t: $before -> $(ls "$root/fuzz/corpus/$t" | wc -l) seed files"
  done
  exit 0
fi

# run_target NAME SECONDS: runs one target, its log in <build>/fuzz-work/NAME.log.
run_target() {
  local t=$1 secs=$2
  local work="$build/fuzz-work/$t"
  mkdir -p "$work"
  local limit=()
  if [[ $secs -gt 0 ]]; then limit=(-max_total_time="$secs"); fi
  # shellcheck disable=SC2086
  "$build/fuzz/fuzz_$t" "${limit[@]}" "${common[@]}" -artifact_prefix="$crashes/$t-" \
    ${FUZZ_ARGS:-} "$work" "$root/fuzz/corpus/$t" >"$build/fuzz-work/$t.log" 2>&1
}

# summary NAME STATUS: one line from the libFuzzer log.
summary() {
  local t=$1 status=$2 log="$build/fuzz-work/$1.log"
  local execs cov
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1) || true
  cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
  if [[ $status -eq 0 ]]; then
    printf '%-14s ok       %10s execs  cov %s\n' "$t" "${execs:-?}" "${cov:-?}"
  else
    printf '%-14s FAILED   %10s execs  cov %s  (status %s, log %s)\n' "$t" "${execs:-?}" \
      "${cov:-?}" "$status" "$log"
    grep -m1 -E 'fuzz invariant broken|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' \
      "$log" | sed 's/^/    /' || true
  fi
}

marker=$(mktemp)
trap 'rm -f "$marker"' EXIT
before=$(find "$crashes" -type f | wc -l)
failed=0
if [[ $mode == smoke ]]; then
  # JOBS targets at a time (each fuzzes on one core for its FUZZ_SECONDS), summaries in order.
  secs=${FUZZ_SECONDS:-60}
  for ((i = 0; i < ${#targets[@]}; i += jobs)); do
    batch=("${targets[@]:i:jobs}")
    declare -A running=()
    for t in "${batch[@]}"; do
      run_target "$t" "$secs" &
      running[$t]=$!
    done
    for t in "${batch[@]}"; do
      status=0
      wait "${running[$t]}" || status=$?
      summary "$t" "$status"
      [[ $status -eq 0 ]] || failed=1
    done
    unset running
  done
else
  secs=${FUZZ_SECONDS:-0}
  declare -A pids
  for t in "${targets[@]}"; do
    run_target "$t" "$secs" &
    pids[$t]=$!
  done
  # Ctrl-C stops every target; the summaries still print.
  trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
  trap 'rm -f "$marker"; kill "${pids[@]}" 2>/dev/null || true' EXIT
  for t in "${targets[@]}"; do
    status=0
    wait "${pids[$t]}" || status=$?
    summary "$t" "$status"
    # Stopped by the user is not a failure.
    [[ $status -eq 0 || $status -eq 130 || $status -eq 143 || $status -eq 72 ]] || failed=1
  done
fi

after=$(find "$crashes" -type f | wc -l)
if [[ $after -gt $before || $failed -ne 0 ]]; then
  echo "fuzz.sh: FAILED; reproducers in $crashes:" >&2
  find "$crashes" -type f -newer "$marker" | sed 's/^/  /' >&2 || true
  exit 1
fi
echo "fuzz.sh: all targets clean"
