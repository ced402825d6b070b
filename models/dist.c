/* dist.c — MPI underneath data-parallel training (tapegrad_dist.h): initialisation from a
 * launcher, the micro-batch share, and the slot exchanges. Compiled without MPI it describes
 * one process and refuses to be one of several. */
#include <stdlib.h>
#include <string.h>

#include "tg_config.h"
#include "tapegrad_dist.h"

#if TG_HAVE_MPI
#include <mpi.h>
#endif

struct tg_dist {
    int rank, size;
    int initialised;        /* we called MPI_Init (and so call MPI_Finalize) */
    int *counts, *displs;   /* per rank, in slots: the share of the last K seen */
    int shares_for;         /* that K (0: none yet) */
#if TG_HAVE_MPI
    MPI_Datatype slot;      /* slot_bytes contiguous bytes, committed once (no allocation per step) */
#endif
    size_t slot_bytes;      /* 0: no slot type yet */
    struct tg_dist_stats stats;
};

int tg_dist_built_with_mpi(void) { return TG_HAVE_MPI; }

static int env_int(const char *name, int fallback)
{
    const char *v = getenv(name);
    if (!v || !*v) return fallback;
    char *end;
    long x = strtol(v, &end, 10);
    return *end || x < 0 || x > (1 << 24) ? fallback : (int)x;
}

void tg_dist_launch_env(int *rank, int *size)
{
    *size = env_int("OMPI_COMM_WORLD_SIZE", env_int("PMI_SIZE", 1));
    *rank = env_int("OMPI_COMM_WORLD_RANK", env_int("PMI_RANK", 0));
}

enum tg_status tg_dist_init(struct tg_dist **out)
{
    *out = NULL;
    struct tg_dist *d = calloc(1, sizeof *d);
    if (!d) return tg_error(TG_ERR_NOMEM, "tg_dist_init: out of memory");
    d->size = 1;
    int rank, size;
    tg_dist_launch_env(&rank, &size);
    const char *no = getenv("TAPEGRAD_NO_MPI");
    int use_mpi = TG_HAVE_MPI && !(no && strcmp(no, "1") == 0);
    int launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE");
    if (!use_mpi && size > 1) {
        free(d);
        return tg_error(TG_ERR_VALUE, "mpirun started %d copies, but this tapegrad %s: each copy "
                        "would train alone and all would write the same files. Install "
                        "libopenmpi-dev and rebuild (meson setup --reconfigure build && ninja -C "
                        "build), or run without mpirun", size,
                        TG_HAVE_MPI ? "has MPI turned off (TAPEGRAD_NO_MPI=1)"
                                    : "was built without MPI");
    }
#if TG_HAVE_MPI
    if (use_mpi && launched) {
        int provided;
        /* OpenMP threads run our loops, but only the main thread calls MPI. */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            free(d);
            return tg_error(TG_ERR_STATE, "MPI_Init failed");
        }
        d->initialised = 1;
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    }
#else
    (void)launched;
#endif
    d->counts = calloc((size_t)d->size, sizeof *d->counts);
    d->displs = calloc((size_t)d->size, sizeof *d->displs);
    if (!d->counts || !d->displs) {
        tg_dist_free(d);
        return tg_error(TG_ERR_NOMEM, "tg_dist_init: out of memory");
    }
    *out = d;
    return TG_OK;
}

void tg_dist_free(struct tg_dist *d)
{
    if (!d) return;
#if TG_HAVE_MPI
    if (d->slot_bytes) MPI_Type_free(&d->slot);
    if (d->initialised) MPI_Finalize();
#endif
    free(d->counts);
    free(d->displs);
    free(d);
}

int tg_dist_rank(const struct tg_dist *d) { return d ? d->rank : 0; }
int tg_dist_size(const struct tg_dist *d) { return d ? d->size : 1; }

void tg_dist_share(int K, int N, int r, int *first, int *count)
{
    long a = (long)r * K / N, b = (long)(r + 1) * K / N;
    *first = (int)a;
    *count = (int)(b - a);
}

#if TG_HAVE_MPI
static void set_shares(struct tg_dist *d, int K)
{
    if (d->shares_for == K) return;
    for (int r = 0; r < d->size; r++) tg_dist_share(K, d->size, r, &d->displs[r], &d->counts[r]);
    d->shares_for = K;
}

/* One slot as one MPI element, so that counts stay small ints whatever the model size. */
static enum tg_status slot_type(struct tg_dist *d, size_t slot_bytes, MPI_Datatype *t)
{
    if (slot_bytes > (size_t)1 << 30)
        return tg_error(TG_ERR_VALUE, "tg_dist: a micro-batch slot of %zu bytes is over 1 GiB",
                        slot_bytes);
    if (d->slot_bytes != slot_bytes) {
        if (d->slot_bytes) MPI_Type_free(&d->slot);
        d->slot_bytes = 0;
        if (MPI_Type_contiguous((int)slot_bytes, MPI_BYTE, &d->slot) != MPI_SUCCESS ||
            MPI_Type_commit(&d->slot) != MPI_SUCCESS)
            return tg_error(TG_ERR_STATE, "tg_dist: MPI_Type_contiguous failed");
        d->slot_bytes = slot_bytes;
    }
    *t = d->slot;
    return TG_OK;
}
#endif

/* Slots of every rank's share to every rank (all) or to rank 0 only, in place. */
static enum tg_status exchange(struct tg_dist *d, void *buf, size_t slot_bytes, int K, int all)
{
    if (!d || d->size == 1) return TG_OK;
#if TG_HAVE_MPI
    set_shares(d, K);
    MPI_Datatype t = MPI_DATATYPE_NULL;
    enum tg_status st = slot_type(d, slot_bytes, &t);
    if (st != TG_OK) return st;
    double t0 = MPI_Wtime();
    int rc, *n = d->counts, *at = d->displs, me = d->rank;
    if (all)
        rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, n, at, t, MPI_COMM_WORLD);
    else if (me == 0)
        rc = MPI_Gatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, n, at, t, 0, MPI_COMM_WORLD);
    else
        rc = MPI_Gatherv((char *)buf + (size_t)at[me] * slot_bytes, n[me], t, NULL, NULL, NULL, t,
                         0, MPI_COMM_WORLD);
    if (all) {
        d->stats.calls++;
        d->stats.seconds += MPI_Wtime() - t0;
        d->stats.bytes_received += (double)(K - n[me]) * (double)slot_bytes;
    }
    return rc == MPI_SUCCESS ? TG_OK : tg_error(TG_ERR_STATE, "%s failed", all ? "MPI_Allgatherv" : "MPI_Gatherv");
#else
    (void)buf, (void)slot_bytes, (void)K, (void)all;
    return TG_OK;
#endif
}

enum tg_status tg_dist_allgather(struct tg_dist *d, void *buf, size_t slot_bytes, int K)
{
    return exchange(d, buf, slot_bytes, K, 1);
}

enum tg_status tg_dist_gather0(struct tg_dist *d, void *buf, size_t slot_bytes, int K)
{
    return exchange(d, buf, slot_bytes, K, 0);
}

int tg_dist_first_failure(struct tg_dist *d, int failed)
{
    int mine = failed ? tg_dist_rank(d) : 1 << 30, first = mine;
#if TG_HAVE_MPI
    if (d && d->size > 1) MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
#endif
    return first == 1 << 30 ? -1 : first;
}

void tg_dist_abort(struct tg_dist *d, int status)
{
#if TG_HAVE_MPI
    if (d && d->initialised) MPI_Abort(MPI_COMM_WORLD, status);
#else
    (void)d, (void)status;
#endif
}

void tg_dist_stats(const struct tg_dist *d, struct tg_dist_stats *out)
{
    if (d) *out = d->stats;
    else memset(out, 0, sizeof *out);
}
