/*
 * tapegrad_dist.h — data-parallel training over MPI: who this process is, and the two exchanges
 * training needs. Without MPI (a build without libopenmpi-dev, or a program not started by
 * mpirun) everything here describes a single process and the exchanges do nothing.
 *
 *   struct tg_dist *d;
 *   if (tg_dist_init(&d) != TG_OK) puts(tg_last_error());   // MPI_Init when started by mpirun
 *   struct tg_train_config cfg = {.dist = d, .micro_batches = 4, ...};
 *   tg_train(&cfg, NULL);                                  // rank 0 alone logs and checkpoints
 *   tg_dist_free(d);                                       // MPI_Finalize
 *
 * The unit of work is a micro-batch: a fixed block of rows of the global batch (models/train.c).
 * K micro-batches are shared out in contiguous blocks, rank r owning [r·K/N, (r+1)·K/N), so
 * shares differ by at most one micro-batch. Every exchange moves whole slots: slot k is micro-
 * batch k's bytes, and rank r contributes its own slots.
 *
 * Launch detection: MPI is initialised only when a launcher's variables are in the environment
 * (OMPI_COMM_WORLD_SIZE from Open MPI's mpirun, PMI_SIZE from MPICH's or Slurm's), so a plain
 * run never pays for MPI_Init. A build without MPI that a launcher starts as one of N > 1 copies
 * refuses (each copy would train alone and all would write the same checkpoint); so does any
 * build when TAPEGRAD_NO_MPI=1 is set, which stands in for a build without MPI.
 */
#ifndef TAPEGRAD_DIST_H
#define TAPEGRAD_DIST_H

#include <stddef.h>

#include "tapegrad.h"

#ifdef __cplusplus
extern "C" {
#endif

struct tg_dist; /* opaque: the communicator and exchange statistics */

/* Join the job a launcher started (MPI_Init), or describe a single process. TG_ERR_VALUE when
 * a launcher started N > 1 copies of a program that cannot use MPI (message says what to do). */
enum tg_status tg_dist_init(struct tg_dist **out);
/* MPI_Finalize if tg_dist_init initialised MPI. NULL is fine. */
void tg_dist_free(struct tg_dist *d);
int tg_dist_built_with_mpi(void);
/* Rank and number of ranks; a NULL d is rank 0 of 1. */
int tg_dist_rank(const struct tg_dist *d);
int tg_dist_size(const struct tg_dist *d);
/* The launcher's rank and size from the environment (0 and 1 if there is no launcher). */
void tg_dist_launch_env(int *rank, int *size);

/* Rank r's share of K micro-batches among N ranks: [*first, *first + *count). */
void tg_dist_share(int K, int N, int r, int *first, int *count);

/* buf holds K slots of slot_bytes each; this rank's own slots (its share) are filled. On return
 * every rank holds all K (MPI_Allgatherv in place; one call). */
enum tg_status tg_dist_allgather(struct tg_dist *d, void *buf, size_t slot_bytes, int K);
/* Like tg_dist_allgather, but only rank 0 receives (MPI_Gatherv in place). */
enum tg_status tg_dist_gather0(struct tg_dist *d, void *buf, size_t slot_bytes, int K);
/* Collective: the lowest rank with failed ≠ 0, or −1 when none failed. */
int tg_dist_first_failure(struct tg_dist *d, int failed);
/* Stop every rank of the job (MPI_Abort) with this exit status; returns only without MPI. */
void tg_dist_abort(struct tg_dist *d, int status);

/* What tg_dist_allgather has done so far: calls, bytes this rank received, seconds spent in it. */
struct tg_dist_stats {
    long calls;
    double bytes_received, seconds;
};
void tg_dist_stats(const struct tg_dist *d, struct tg_dist_stats *out);

#ifdef __cplusplus
}
#endif
#endif
