/* train_mpi.c — `mpirun -np N tapegrad train …`: joins the MPI job around cmd_train, keeps every
 * rank but 0 quiet (rank 0 alone prints, as it alone logs and checkpoints), and settles failures
 * so that no rank waits forever in an exchange. Run without mpirun it only calls cmd_train. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tapegrad_dist.h"

static struct tg_dist *world;
static int err_fd = -1; /* the real stderr of a quiet rank */

struct tg_dist *train_dist(void) { return world; }

/* Ranks other than 0 send stdout and stderr to /dev/null; their own failures still reach the
 * terminal through err_fd. */
static void quiet(void)
{
    int null = open("/dev/null", O_WRONLY);
    if (null < 0) return;
    fflush(stdout);
    fflush(stderr);
    err_fd = dup(2);
    dup2(null, 1);
    dup2(null, 2);
    close(null);
}

static void say(const char *msg)
{
    if (tg_dist_rank(world) == 0) {
        cli_fail("train", "%s", msg);
    } else if (err_fd >= 0) {
        char line[1024];
        snprintf(line, sizeof line, "tapegrad train: rank %d: %s\n", tg_dist_rank(world), msg);
        for (char *c = line; c[1]; c++)
            if ((unsigned char)*c < 32) *c = '?';
        if (write(err_fd, line, strlen(line)) < 0) { /* nothing left to tell it to */ }
    }
}

int train_dist_settle(int failed, const char *msg)
{
    int first = tg_dist_first_failure(world, failed);
    if (first >= 0 && first == tg_dist_rank(world)) say(msg);
    return first >= 0;
}

int train_dist_fail(int where, const char *msg)
{
    if (tg_dist_rank(world) == 0 || where != 0) say(msg);
    if (where == 1) tg_dist_abort(world, 1);
    return 1;
}

int cmd_train_mpi(int argc, char **argv)
{
    int rank, size;
    tg_dist_launch_env(&rank, &size);
    if (tg_dist_init(&world) != TG_OK) {
        if (rank == 0) cli_fail("train", "%s", tg_last_error());
        return 1;
    }
    if (tg_dist_rank(world) != 0) quiet();
    int rc = cmd_train(argc, argv);
    fflush(stdout);
    tg_dist_free(world);
    world = NULL;
    if (err_fd >= 0) close(err_fd);
    return rc;
}
