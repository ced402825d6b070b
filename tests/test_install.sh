#!/usr/bin/env bash
# test_install.sh — what a new user does after `meson install` (issue 17, item 9): install into a
# scratch folder, then build a program against it with pkg-config, shared and static, and run
# both; the .pc file must not pull in the pthread OpenBLAS's headers, and the installed program
# must find everything it links.
#   test_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_install: $*" >&2; exit 1; }

meson install -C "$build" --no-rebuild --destdir "$tmp/root" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "meson install failed"; }
pc=$(find "$tmp/root" -name tapegrad.pc | head -n 1)
[ -n "$pc" ] || fail "no tapegrad.pc installed"
# --destdir moved the files, not the prefix the .pc file names: point it at where they are.
prefix=$(sed -n 's/^prefix=//p' "$pc")
sed -i "s|^prefix=.*|prefix=$tmp/root$prefix|" "$pc"
export PKG_CONFIG_PATH=$(dirname "$pc")
pkc() { pkg-config "$@" tapegrad; }

cflags=$(pkc --cflags)
case "$cflags" in *openblas*) fail "pkg-config --cflags names an OpenBLAS folder: $cflags" ;; esac
grep -q '^Requires:.*openblas' "$pc" && fail "tapegrad.pc requires the openblas package"
libdir=$(pkc --variable=libdir)
[ -f "$libdir/libtapegrad.so" ] && [ -f "$libdir/libtapegrad.a" ] || fail "library not in $libdir"

# The engine's worked example, with ops the user writes against the installed headers.
cat >"$tmp/user.c" <<'C'
#include <math.h>
#include <stdio.h>
#include <tapegrad.h>
#include <tapegrad_ops.h>
int main(void)
{
    struct tg_tape *t = tg_tape_new(0);
    struct tg_tensor *W = tg_param_new("W", 4, 3, TG_F64);
    struct tg_tensor *x = tg_tensor_new(t, 2, 3, TG_F64);
    tg_tensor_fill(W, 0.1);
    tg_tensor_fill(x, 1.0);
    struct tg_tensor *y = tg_sum(t, tg_tanh(t, tg_matmul(t, x, W, 0, 1)));
    if (!y || tg_backward(t, y) != TG_OK) { puts(tg_last_error()); return 1; }
    double want = 2 * (1 - tanh(0.3) * tanh(0.3)); /* dy/dW[0][0] = Σ_rows (1 − y²)·x */
    int ok = fabs(tg_grad_get(W, 0, 0) - want) < 1e-12;
    tg_tape_free(t);
    tg_tensor_free(W);
    return ok ? 0 : 2;
}
C
cc "$tmp/user.c" $cflags $(pkc --libs) -lm -Wl,-rpath,"$libdir" -o "$tmp/user_shared" ||
    fail "could not link against the shared library"
"$tmp/user_shared" || fail "the program linked to libtapegrad.so failed"
cc "$tmp/user.c" $cflags "$libdir/libtapegrad.a" $(pkc --static --libs | sed 's/-ltapegrad//') \
    -o "$tmp/user_static" || fail "could not link statically with pkg-config --static"
"$tmp/user_static" || fail "the statically linked program failed"

# The installed program runs from the scratch prefix (its rpath names the install folder).
prog=$(find "$tmp/root" -type f -name tapegrad -perm -u+x | head -n 1)
[ -n "$prog" ] || fail "no tapegrad program installed"
ldd "$prog" | grep -q "not found" && fail "the installed program misses a library: $(ldd "$prog" | grep 'not found')"
"$prog" --help >/dev/null 2>&1 || fail "the installed program does not run"
echo "1 passed, 0 failed"
