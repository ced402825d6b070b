/* op_util.h — helpers shared by the op files (not public). */
#ifndef TG_OP_UTIL_H
#define TG_OP_UTIL_H

#include <math.h>
#include <string.h>

#include "internal.h"

/* Instantiate a kernel body for both dtypes: DEF(float, f32) and DEF(double, f64). */
#define TG_BOTH_DTYPES(DEF) DEF(float, f32) DEF(double, f64)

/* Call name_f32 or name_f64 on the dtype of tensor x. */
#define TG_CALL(x, name, ...)                                                                  \
    ((x)->dtype == TG_F64 ? name##_f64(__VA_ARGS__) : name##_f32(__VA_ARGS__))

#if TG_HAVE_OPENMP
#include <omp.h>
#define TG_PRAGMA(x) _Pragma(#x)
#define TG_MAX_THREADS() omp_get_max_threads()
#else
#define TG_PRAGMA(x)
#define TG_MAX_THREADS() 1
#endif
/* Go parallel only for loops worth waking threads for, and only when more than one thread may
 * run: libgomp allocates a team for every parallel region, even a one-thread one. */
#define TG_GO_PARALLEL(n) ((n) >= TG_OMP_MIN && TG_MAX_THREADS() > 1)
/* TG_PAR_FOR(n, for (...) ...): an elementwise loop over n items goes parallel only when n is
 * worth waking threads for. The test is an ordinary branch, not an OpenMP if() clause: with
 * if(false) libgomp still opens a one-thread parallel region, and it mallocs and frees a team
 * for every such region — a heap allocation per small op, every step (found by test_tape). */
#define TG_PAR_FOR(n, ...)                                                                     \
    {                                                                                          \
        if (TG_GO_PARALLEL(n)) {                                                               \
            TG_PRAGMA(omp parallel for schedule(static))                                       \
            __VA_ARGS__                                                                        \
        } else {                                                                               \
            __VA_ARGS__                                                                        \
        }                                                                                      \
    }

/* Serial vector loop over n items: `#pragma omp simd` makes GCC vectorise even where its
 * alias analysis would keep a scalar fallback (the scalar tanh loop turned the select between
 * its two formulas into a mispredicted branch). Parallel above TG_OMP_MIN like TG_PAR_FOR. */
#define TG_SIMD_FOR(n, ...)                                                                    \
    {                                                                                          \
        if (TG_GO_PARALLEL(n)) {                                                               \
            TG_PRAGMA(omp parallel for simd schedule(static))                                  \
            __VA_ARGS__                                                                        \
        } else {                                                                               \
            TG_PRAGMA(omp simd)                                                                \
            __VA_ARGS__                                                                        \
        }                                                                                      \
    }

/* Kernels whose cost is arithmetic (transcendentals) get an AVX2+FMA clone picked at load
 * time, so one binary runs everywhere and uses 8-wide vectors where the CPU has them. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define TG_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TG_SIMD_CLONES
#endif

/* Broadcast rule of add/sub/mul: equal shapes, or one side a 1×n row and the other m×n.
 * Returns 0 and raises "name: shapes do not broadcast: (axb) op (cxd)" otherwise. */
int tg_binary_shape(struct tg_tape *t, const char *name, const char *sym,
                    const struct tg_tensor *a, const struct tg_tensor *b, int *rows, int *cols);

/* Add the column sums of g (m×n) into dst (1×n) times `scale`: a broadcast row's gradient. */
void tg_colsum_acc(const struct tg_tensor *g_like, const void *g, void *dst, double scale);

#endif
