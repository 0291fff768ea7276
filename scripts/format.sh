#!/usr/bin/env bash
# Applies the repository's .clang-format to every C++ source and header.
#
#   scripts/format.sh           reformat in place
#   scripts/format.sh --check   change nothing; list the files that are not formatted (exit 1)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mapfile -t files < <(find include src tests examples bench fuzz \
  \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' \) -type f 2>/dev/null | sort)
[[ ${#files[@]} -gt 0 ]] || exit 0

if [[ "${1:-}" == "--check" ]]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if [[ ${#bad[@]} -gt 0 ]]; then
    printf 'not clang-formatted: %s\n' "${bad[@]}" >&2
    exit 1
  fi
  echo "format.sh: ${#files[@]} files formatted"
else
  clang-format -i "${files[@]}"
fi
