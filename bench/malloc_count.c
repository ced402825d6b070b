/*
 * malloc_count.c — a counting allocator for `tapegrad bench`, loaded with LD_PRELOAD.
 *
 *   gcc -O2 -shared -fPIC -o malloc_count.so bench/malloc_count.c      (run_bench.sh does this)
 *   LD_PRELOAD=$PWD/malloc_count.so tapegrad bench ...
 *
 * Why a preloaded object: glibc 2.34 removed __malloc_hook, and defining malloc inside the
 * `tapegrad` executable would replace the allocator for every subcommand (and fight
 * AddressSanitizer in the sanitizer build). A preloaded object interposes only the runs that
 * ask for it. Every allocation entry point of the process — the library, OpenBLAS, libgomp,
 * libc itself — resolves to the functions below, which count the call and hand it to glibc's
 * own allocator through its exported __libc_* entry points (so blocks stay glibc blocks and
 * glibc's free, malloc_usable_size and mallopt keep working on them).
 *
 * The bench finds the counters with dlsym(RTLD_DEFAULT, "tg_malloc_count_calls"); without the
 * preload the symbol is absent and it reports allocations as not counted. Each allocation is
 * also tallied by its call site (the return address into the caller), so the bench can say
 * which library allocated during a step (dladdr on the addresses, outside the timed loop).
 * Counted as allocations: malloc, calloc, realloc (every call: it may move the block),
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc. free is counted separately.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/* Relaxed atomics: several OpenMP/OpenBLAS threads may allocate at once, and only the totals
 * matter. */
static unsigned long n_alloc, n_free, n_bytes;

/* Call sites: an open-addressing table filled with compare-and-swap (no locks, no allocation;
 * call sites past a full table are counted in `lost` only). */
enum { SITES = 1024 };
static void *site_addr[SITES];
static unsigned long site_count[SITES], lost;

static void tally_site(void *ra)
{
    size_t h = (size_t)(((uintptr_t)ra >> 2) * 0x9E3779B97F4A7C15ull >> 54);
    for (size_t i = 0; i < SITES; i++) {
        size_t k = (h + i) & (SITES - 1);
        void *cur = __atomic_load_n(&site_addr[k], __ATOMIC_ACQUIRE);
        if (!cur) {
            void *expected = NULL;
            if (__atomic_compare_exchange_n(&site_addr[k], &expected, ra, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                cur = ra;
            else
                cur = expected;
        }
        if (cur == ra) {
            __atomic_fetch_add(&site_count[k], 1, __ATOMIC_RELAXED);
            return;
        }
    }
    __atomic_fetch_add(&lost, 1, __ATOMIC_RELAXED);
}

#define count(bytes) count_at((bytes), __builtin_return_address(0))
static inline __attribute__((always_inline)) void count_at(size_t bytes, void *ra)
{
    __atomic_fetch_add(&n_alloc, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&n_bytes, (unsigned long)bytes, __ATOMIC_RELAXED);
    tally_site(ra);
}

/* Copy up to max (address, count) pairs of the call sites seen so far; returns how many. */
int tg_malloc_count_sites(void **addr, unsigned long *counts, int max)
{
    int n = 0;
    for (size_t k = 0; k < SITES && n < max; k++) {
        void *a = __atomic_load_n(&site_addr[k], __ATOMIC_ACQUIRE);
        if (!a) continue;
        addr[n] = a;
        counts[n++] = __atomic_load_n(&site_count[k], __ATOMIC_RELAXED);
    }
    return n;
}

unsigned long tg_malloc_count_calls(void) { return __atomic_load_n(&n_alloc, __ATOMIC_RELAXED); }
unsigned long tg_malloc_count_frees(void) { return __atomic_load_n(&n_free, __ATOMIC_RELAXED); }
unsigned long tg_malloc_count_bytes(void) { return __atomic_load_n(&n_bytes, __ATOMIC_RELAXED); }

void *malloc(size_t n)
{
    count(n);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    count(n * size);
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    count(n);
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p) __atomic_fetch_add(&n_free, 1, __ATOMIC_RELAXED);
    __libc_free(p);
}

void *memalign(size_t align, size_t n)
{
    count(n);
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    count(n);
    return __libc_memalign(align, n);
}

/* POSIX: the alignment must be a power of two and a multiple of sizeof(void *). */
int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    count(n);
    void *p = __libc_memalign(align, n);
    if (!p && n) return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    count(n);
    return __libc_valloc(n);
}

void *pvalloc(size_t n)
{
    count(n);
    return __libc_pvalloc(n);
}
