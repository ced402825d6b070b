/* parallel.h — OpenMP loop macros shared by the engine and the ops (engine-private).
 * Both floors use them, so they live at the lower one. */
#ifndef TG_PARALLEL_H
#define TG_PARALLEL_H

#include "tg_config.h"

/* Elementwise loops go parallel only past this many elements: below it, waking threads costs
 * more than the work (measured order of magnitude: a few µs per parallel region). */
#define TG_OMP_MIN 32768

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

#endif
