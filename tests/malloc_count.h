/* malloc_count.h — counting pass-throughs for the heap allocator, for tests that assert "no
 * heap allocation after warm-up" on the real heap (not just the tape's own counters).
 * Include once, in a test's main file. Every allocation entry point is replaced by a wrapper
 * that counts and forwards to glibc's implementation; heap_calls() reads the count.
 * Under AddressSanitizer, which owns malloc, nothing is replaced and COUNT_MALLOC is 0. */
#ifndef TG_TEST_MALLOC_COUNT_H
#define TG_TEST_MALLOC_COUNT_H

#include <errno.h>
#include <stddef.h>

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#define COUNT_MALLOC 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static size_t n_heap_calls; /* allocation calls from any thread */
static int heap_fail;       /* set: posix_memalign (the arena's allocator) reports ENOMEM */
static void count_one(void) { __atomic_fetch_add(&n_heap_calls, 1, __ATOMIC_RELAXED); }

void *malloc(size_t n)
{
    count_one();
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t s)
{
    count_one();
    return __libc_calloc(n, s);
}
void *realloc(void *p, size_t n)
{
    count_one();
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t al, size_t n)
{
    count_one();
    return __libc_memalign(al, n);
}
void *memalign(size_t al, size_t n)
{
    count_one();
    return __libc_memalign(al, n);
}
int posix_memalign(void **out, size_t al, size_t n)
{
    count_one();
    if (heap_fail) return ENOMEM;
    if (al < sizeof(void *) || (al & (al - 1))) return EINVAL;
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
void free(void *p) { __libc_free(p); }

static size_t heap_calls(void) { return __atomic_load_n(&n_heap_calls, __ATOMIC_RELAXED); }
#else
#define COUNT_MALLOC 0
static size_t heap_calls(void) { return 0; }
#endif

#endif
