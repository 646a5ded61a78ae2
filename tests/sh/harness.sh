#!/usr/bin/env bash
# The C harness reports passed, failed and skipped cases apart, in its
# per-case lines, its summary and the grand total of scripts/run-c-tests.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cc -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation -I"$root/tests/lib" -o "$tmp/harness-selftest" \
    "$root/tests/sh/harness-selftest.c" "$root/tests/lib/harness.c"

status=0
"$tmp/harness-selftest" >"$tmp/out" 2>&1 || status=$?
cat "$tmp/out"
expect() { grep -qE "$1" "$tmp/out" || { echo "missing: $1"; exit 1; }; }
expect '^ok     harness-selftest/passes \('
expect '^FAIL   harness-selftest/fails: exit status 1 '
expect '^skip   harness-selftest/skips: no widget here \('
expect '^FAIL   harness-selftest/exits_77_without_a_reason: exit status 77 '
expect '^# harness-selftest: 1 passed, 2 failed, 1 skipped$'
[ "$status" -eq 1 ] || { echo "runner exit status $status, expected 1"; exit 1; }

# a group of skips alone passes the run, and is listed
status=0
"$root/scripts/run-c-tests" "" "$tmp/harness-selftest" >"$tmp/all" 2>&1 || status=$?
cat "$tmp/all"
grep -q '^== C tests: 1 passed, 2 failed, 1 skipped$' "$tmp/all" || { echo "wrong total"; exit 1; }
[ "$status" -eq 1 ] || { echo "run-c-tests exit status $status, expected 1"; exit 1; }
status=0
BUS1_TEST_FILTER="skips" "$root/scripts/run-c-tests" "" "$tmp/harness-selftest" >"$tmp/skip" 2>&1 || status=$?
cat "$tmp/skip"
grep -q '^== C tests: 0 passed, 0 failed, 1 skipped$' "$tmp/skip" || { echo "wrong total"; exit 1; }
grep -q '^skipped cases:$' "$tmp/skip" || { echo "skips not listed"; exit 1; }
[ "$status" -eq 0 ] || { echo "run-c-tests exit status $status, expected 0"; exit 1; }
