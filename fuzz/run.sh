#!/usr/bin/env bash
# fuzz/run.sh HARNESS SECONDS [libFuzzer flags…] — fuzz one harness for a while with libFuzzer.
#
# Builds build-fuzz/ with clang (-fsanitize=fuzzer,address,undefined; the library is
# instrumented for coverage with -fsanitize=fuzzer-no-link), then runs
# build-fuzz/fuzz/fuzz_HARNESS_libfuzzer on a scratch copy of fuzz/corpus/HARNESS plus
# fuzz/regressions/HARNESS, one process, one job. New interesting inputs go to
# build-fuzz/corpus-HARNESS (not to the repository: commit the few worth keeping); a crash
# is written as build-fuzz/crash-HARNESS-<sha1> — copy it to fuzz/regressions/HARNESS/ with a
# name that says what it found, fix the code, and the test suite replays it from then on.
# The last lines printed are libFuzzer's final statistics (stat::number_of_executed_units).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 2 ]; then
    echo "usage: fuzz/run.sh HARNESS SECONDS [libFuzzer flags...]   (harnesses: see fuzz/meson.build)" >&2
    exit 2
fi
h=$1 secs=$2
shift 2
[ -f "$ROOT/fuzz/fuzz_$h.c" ] || { echo "fuzz/run.sh: no harness fuzz/fuzz_$h.c" >&2; exit 2; }

# clang and its libFuzzer runtime are needed here only, not by ./test.sh or ./run.sh.
. "$ROOT/scripts/setup.sh"
TG_PACKAGES+=(clang libclang-rt-14-dev)
tg_install

B=$ROOT/build-fuzz
if [ ! -f "$B/build.ninja" ]; then
    CC=clang meson setup "$B" "$ROOT" --buildtype=debugoptimized -Db_sanitize=address,undefined \
        -Db_lundef=false -Dc_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" >&2
fi
ninja -C "$B" "fuzz/fuzz_${h}_libfuzzer" >&2

mkdir -p "$B/corpus-$h"
cp -n "$ROOT/fuzz/corpus/$h/"* "$B/corpus-$h/" 2>/dev/null || true
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# -jobs=1 -workers=1: exactly one fuzzing process (the machine is shared); libFuzzer then runs
# it as a child writing fuzz-0.log in the current directory, which is shown at the end.
# The regression inputs are read but not added to (libFuzzer writes only to the first directory).
cd "$B"
rm -f fuzz-0.log
status=0
"$B/fuzz/fuzz_${h}_libfuzzer" -max_total_time="$secs" -workers=1 -jobs=1 \
    -print_final_stats=1 -artifact_prefix="$B/crash-$h-" -max_len=65536 \
    "$@" "$B/corpus-$h" "$ROOT/fuzz/regressions/$h" || status=$?
cp fuzz-0.log "fuzz-$h.log" 2>/dev/null || true
tail -n 25 "fuzz-$h.log" 2>/dev/null || true
exit $status
