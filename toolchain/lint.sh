#!/bin/sh
# `make lint`: the code's format (clang-format, .clang-format) and cppcheck's
# warnings. Fails on any finding.
set -eu
cd "$(dirname "$0")/.."

FILES=$(ls firmware/*.c hal/*.c include/edgecap/*.h tests/unit/*.c tests/unit/*.h 2>/dev/null)
rc=0
# shellcheck disable=SC2086
clang-format --dry-run --Werror $FILES || rc=1
cppcheck --quiet --error-exitcode=1 --std=c11 --inline-suppr \
    --enable=warning,performance,portability \
    --suppress=missingIncludeSystem -D__GNUC__ -D_GNU_SOURCE \
    -Iinclude firmware hal || rc=1
[ "$rc" -eq 0 ] && echo "lint: clean"
exit "$rc"
