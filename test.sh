#!/usr/bin/env bash
# test.sh — set up, then run the whole test suite twice: an optimised build, and a build under
# AddressSanitizer + UndefinedBehaviorSanitizer in which any report fails the run.
set -euo pipefail
. "$(dirname "$0")/scripts/setup.sh"
tg_install
tg_build build --buildtype=release
tg_build build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined \
    -Dc_args=-fno-sanitize-recover=all -Db_lundef=false

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$TG_ROOT/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# OpenBLAS's own threads are outside what we test; one thread keeps the sanitizer run quick.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

status=0
passed=0
failed=0
for dir in build build-asan; do
    echo "== meson test ($dir)"
    if meson test -C "$TG_ROOT/$dir" --print-errorlogs --num-processes 2 | tee "$TG_ROOT/$dir/test-summary.txt"; then :; else status=1; fi
    ok=$(awk '/^Ok:/ {print $2}' "$TG_ROOT/$dir/test-summary.txt")
    bad=$(awk '/^(Fail|Timeout|Unexpected Pass):/ {s += $2} END {print s + 0}' "$TG_ROOT/$dir/test-summary.txt")
    passed=$((passed + ${ok:-0}))
    failed=$((failed + bad))
done
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || status=1
exit $status
