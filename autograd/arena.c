/* arena.c — one bump allocator per tape (ggml's ggml_init/ggml_reset). Blocks are never freed
 * before tg_arena_free: after the first step of a training loop every later step fits in the
 * blocks the first one made, so the loop allocates nothing on the heap. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static struct tg_arena_block *block_new(size_t size)
{
    struct tg_arena_block *b = malloc(sizeof *b);
    if (!b) return NULL;
    if (posix_memalign((void **)&b->base, TG_ALIGN, size) != 0) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

void tg_arena_init(struct tg_arena *a, size_t first_block)
{
    memset(a, 0, sizeof *a);
    a->min_block = first_block ? first_block : (size_t)1 << 20;
}

void *tg_arena_alloc(struct tg_arena *a, size_t bytes)
{
    size_t need = (bytes + TG_ALIGN - 1) & ~(size_t)(TG_ALIGN - 1);
    if (need == 0) need = TG_ALIGN;
    /* Walk forward through blocks kept from earlier steps before making a new one. */
    while (a->cur && a->cur->used + need > a->cur->size && a->cur->next) {
        a->cur = a->cur->next;
        a->cur->used = 0;
    }
    if (!a->cur || a->cur->used + need > a->cur->size) {
        /* Grow geometrically so a big graph needs few blocks, and never below the request. */
        size_t size = a->capacity > a->min_block ? a->capacity : a->min_block;
        if (size < need) size = need;
        struct tg_arena_block *b = block_new(size);
        if (!b) return NULL;
        a->heap_allocs++;
        a->capacity += size;
        if (a->cur) {
            b->next = a->cur->next;
            a->cur->next = b;
        } else {
            a->head = b;
        }
        a->cur = b;
    }
    void *p = a->cur->base + a->cur->used;
    a->cur->used += need;
    a->used_total += need;
    return p;
}

void tg_arena_reset(struct tg_arena *a)
{
    a->cur = a->head;
    if (a->cur) a->cur->used = 0;
    a->used_total = 0;
}

void tg_arena_free(struct tg_arena *a)
{
    struct tg_arena_block *b = a->head;
    while (b) {
        struct tg_arena_block *n = b->next;
        free(b->base);
        free(b);
        b = n;
    }
    memset(a, 0, sizeof *a);
}
