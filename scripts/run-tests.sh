#!/bin/sh
# Runs Criterion test binaries with the test environment; each summary line names its binary,
# and one closing line sums them all.
# PWB_TEST_FILTER, when set, is passed to Criterion as --filter (the sanitizer build uses it to
# leave out the reference-value suites, whose full SmolLM2 passes take minutes under ASan).
set -u
env_assign=$1; shift
pass=0; fail=0; failed_bins=""
for bin in "$@"; do
  name=$(basename "$bin")
  out=$(mktemp)
  # shellcheck disable=SC2086
  if [ -n "${PWB_TEST_FILTER:-}" ]; then
    env $env_assign "$bin" --jobs 2 --filter "$PWB_TEST_FILTER" >"$out" 2>&1
  else
    env $env_assign "$bin" --jobs 2 >"$out" 2>&1
  fi
  rc=$?
  # Criterion's closing line names no binary: say which one it is for.
  sed "s/^\(\[====\] Synthesis:\)/\1 $name:/" "$out"
  line=$(grep -E 'Synthesis: Tested:' "$out" | tail -n 1)
  rm -f "$out"
  p=$(printf '%s\n' "$line" | sed -n 's/.*Passing: \([0-9]*\).*/\1/p')
  f=$(printf '%s\n' "$line" | sed -n 's/.*Failing: \([0-9]*\).*/\1/p')
  c=$(printf '%s\n' "$line" | sed -n 's/.*Crashing: \([0-9]*\).*/\1/p')
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0} + ${c:-0}))
  if [ "$rc" != 0 ] || [ -z "$line" ]; then
    failed_bins="$failed_bins $name"
    [ -z "$line" ] && fail=$((fail + 1))
  fi
done
[ -n "$failed_bins" ] && echo "failing test binaries:$failed_bins"
echo "tests: $pass passed, $fail failed"
[ "$fail" = 0 ] && [ -z "$failed_bins" ]
