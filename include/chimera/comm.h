/*
 * chimera/comm.h: communication between the processes of a data-parallel
 * run. One process per device, each with its own backend, joined in a group
 * of `world` ranks; the collectives below work in place on tensors of that
 * backend.
 *
 * Transports, chosen by chm_comm_attach from the backend and the launch:
 *   single  a group of one: every collective is a no-op.
 *   mpi     Open MPI, host-staged: the tensor is downloaded, reduced by MPI
 *           in host memory and uploaded (for the cpu backend the buffer is
 *           host memory and is used directly). For cpu and vulkan.
 *   nccl    NCCL on device buffers, enqueued on the backend's stream (cuda).
 *           libnccl.so.2 is loaded at run time; the NCCL id goes through MPI
 *           under mpirun, else through a shared file (the rendezvous).
 * CHIMERA_COMM=mpi forces the host-staged transport on any backend (under
 * mpirun), CHIMERA_COMM=nccl forbids falling back to it. Debug only:
 * CHIMERA_COMM_STAGE=1 stages cpu tensors too (tests the vulkan path on the
 * cpu), CHIMERA_COMM_CHUNK=n makes MPI calls of n elements at most.
 *
 * Launch: under mpirun (Open MPI's OMPI_COMM_WORLD_RANK/SIZE in the
 * environment) chm_comm_open initialises MPI and takes rank and size from
 * it; with an explicit rank and world size (--rank/--world-size) it does
 * not touch MPI and the group can only use NCCL; otherwise it is a group of
 * one. The cuda device of a rank is local_rank % device_count (so
 * CUDA_VISIBLE_DEVICES still decides which devices there are).
 *
 * A rank that dies must not leave the others waiting: under mpirun Open
 * MPI's runtime ends the whole job when a process dies or exits non-zero
 * (MPI's default error handler, MPI_ERRORS_ARE_FATAL, stays in place). NCCL
 * collectives are watched: one that has not finished after the timeout
 * (CHIMERA_COMM_TIMEOUT seconds, default 600) aborts the NCCL communicator
 * and fails with a message that says a peer probably died. A rank that
 * fails on its own calls chm_comm_abort so that the others stop at once.
 *
 * Blocks: all_gather and reduce_scatter split an n-element tensor into
 * world contiguous blocks, chm_comm_block's; rank r owns block r (ZeRO-1:
 * the optimizer state of block r lives on rank r).
 *
 * Errors: chm_status + chm_err as everywhere; messages name the collective
 * and the transport. Threading: one thread per group. Every rank must call
 * the same collectives in the same order with tensors of the same dtype and
 * element count.
 */
#ifndef CHIMERA_COMM_H
#define CHIMERA_COMM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "chimera/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Block sizes are rounded up to this many elements so that every block starts aligned. */
#define CHM_COMM_BLOCK_ALIGN 64
/* NCCL's watchdog when neither the options nor CHIMERA_COMM_TIMEOUT say (seconds). */
#define CHM_COMM_TIMEOUT_DEFAULT 600.0

typedef struct chm_comm chm_comm;

/* How chm_comm_open finds the group. Zero-initialise, then set what you need. */
typedef struct chm_comm_options {
    int world_size;          /* > 0: an explicit group of this many processes started by
                                hand (--world-size; NCCL only); 0: mpirun's environment,
                                else a group of one */
    int rank;                /* with world_size > 0: this process's rank, 0..world_size-1 */
    const char *rendezvous;  /* explicit group: a file all ranks can read, where rank 0
                                writes the NCCL id; NULL: the default chm_comm_attach gets */
    double timeout_s;        /* NCCL watchdog; <= 0: CHIMERA_COMM_TIMEOUT, else 600 */
} chm_comm_options;

/*
 * Find the group (see the top of this file) and, under mpirun, initialise
 * MPI. opts may be NULL. Errors: CHM_ERR_INVALID_ARG for a bad rank/world,
 * CHM_ERR_UNSUPPORTED when launched by mpirun without MPI in the build or
 * with both mpirun and an explicit rank.
 */
chm_status chm_comm_open(const chm_comm_options *opts, chm_comm **out, chm_err *err);

/* Normal end: detach, then finalise MPI when this group initialised it. NULL is a no-op. */
void chm_comm_close(chm_comm *c);

/*
 * A rank that fails: end every rank of the group now. Under MPI it calls
 * MPI_Abort with `code` and does not return; with NCCL alone it aborts the
 * NCCL communicator (the others' watchdogs fire) and returns. A no-op for a
 * group of one.
 */
void chm_comm_abort(chm_comm *c, int code);

/* This process's rank, the group's size, and the rank and count of its processes on
 * this machine (mpirun's local rank; the rank itself for an explicit group). */
int chm_comm_rank(const chm_comm *c);
int chm_comm_size(const chm_comm *c);
int chm_comm_local_rank(const chm_comm *c);
int chm_comm_local_size(const chm_comm *c);

/*
 * The device index this rank should open backend `name` ("cuda", "auto",
 * ...) on: local_rank % (number of cuda devices) for cuda and auto when this
 * build and machine have cuda devices and the group has more than one rank,
 * else -1 (the backend's own choice).
 */
int chm_comm_device_index(const chm_comm *c, const char *name);

/*
 * Bind the group to backend be (every collective then takes tensors of be)
 * and connect the transport. rendezvous: the NCCL id file of an explicit
 * group when the options gave none (e.g. RUN_DIR/.nccl-id). Rank 0 writes
 * it, the others wait for it (up to the timeout), and rank 0 removes it once
 * everyone is connected. Errors: CHM_ERR_UNSUPPORTED when no transport fits
 * (cpu/vulkan outside mpirun, cuda without libnccl.so.2 outside mpirun),
 * CHM_ERR_DEVICE when NCCL fails, CHM_ERR_IO for the rendezvous file.
 */
chm_status chm_comm_attach(chm_comm *c, chm_backend *be, const char *rendezvous, chm_err *err);

/* Release the transport's state on the backend (before closing the backend). */
void chm_comm_detach(chm_comm *c);

/* One line for logs: "single process", "mpi (Open MPI v4.1.4, host-staged), 2 ranks",
 * "nccl 2.21.5, 2 ranks". */
const char *chm_comm_describe(const chm_comm *c);

/*
 * Block `rank` of an n-element tensor split over `world` ranks: elements
 * [*begin, *begin + *count). Blocks hold S = ceil(n / world) rounded up to
 * CHM_COMM_BLOCK_ALIGN elements each, the last ones fewer or none.
 */
void chm_comm_block(int64_t n, int world, int rank, int64_t *begin, int64_t *count);

/* ---- collectives (after chm_comm_attach); t: a tensor of the attached backend ---- */

/* t = the sum of every rank's t (float dtypes and i32). */
chm_status chm_comm_all_reduce(chm_comm *c, const chm_tensor *t, chm_err *err);

/* Block r of t (chm_comm_block) = the sum over ranks of block r, on rank r; the rest of
 * t is left undefined. */
chm_status chm_comm_reduce_scatter(chm_comm *c, const chm_tensor *t, chm_err *err);

/* Every rank's t = the concatenation of block r of rank r's t, for every r. */
chm_status chm_comm_all_gather(chm_comm *c, const chm_tensor *t, chm_err *err);

/* Every rank's t = rank root's t. */
chm_status chm_comm_broadcast(chm_comm *c, const chm_tensor *t, int root, chm_err *err);

/* Return once every rank has called it. */
chm_status chm_comm_barrier(chm_comm *c, chm_err *err);

/* x[0..n) = the sum over ranks of x, for small host vectors (losses, flags, counts). */
chm_status chm_comm_sum_host(chm_comm *c, double *x, int n, chm_err *err);

/* ---- nonblocking all-reduce (overlapping the backward) ----
 *
 * The trainer starts one all-reduce per bucket of the gradient buffer while
 * the backward still runs, then waits for all of them before the norm:
 *   nccl  each start enqueues ncclAllReduce on a second stream of the device
 *         (the comm stream) after an event of the backend's stream, so it
 *         runs once the work enqueued so far is done and alongside what is
 *         enqueued later; the wait makes the backend's stream wait for the
 *         comm stream and waits on the host with the watchdog.
 *   mpi   in place (cpu backend): MPI_Iallreduce on the host buffer after a
 *         chm_sync; progress calls MPI_Testall (Open MPI moves data only
 *         inside MPI calls); the wait is MPI_Waitall. Host-staged (vulkan,
 *         CHIMERA_COMM_STAGE=1): a start is a blocking all-reduce.
 *   single  no-ops.
 * Started collectives must be waited for before any other collective. */

/* What chm_comm_wait_all measured over the collectives it finished. */
typedef struct chm_comm_timing {
    int started;      /* collectives started since the previous wait */
    double busy_s;    /* their own time: nccl, the sum of each one's time on the comm stream
                         (CUDA events around it); mpi, host time inside the MPI calls of the
                         starts, progress calls and the wait */
    double exposed_s; /* from the last start (the backend's work enqueued before it done) until
                         the last one finished: what nothing overlapped; nccl: CUDA events,
                         mpi: host time */
} chm_comm_timing;

/* Whether chm_comm_all_reduce_start overlaps with the backend's work (nccl; mpi in place), not
 * only a blocking all-reduce (host-staged mpi, a group of one, an unattached group). */
bool chm_comm_overlaps(const chm_comm *c);

/*
 * Start t = the sum over ranks of t (float dtypes and i32), typically a view
 * of one bucket of a larger buffer, once the work enqueued on the backend so
 * far has produced it, and return without waiting for it. Neither the caller
 * nor the backend may touch t until chm_comm_wait_all. Every rank starts the
 * same collectives (dtype, count) in the same order. Where the transport
 * does not overlap, it is a blocking all-reduce.
 */
chm_status chm_comm_all_reduce_start(chm_comm *c, const chm_tensor *t, chm_err *err);

/* Let started collectives advance without waiting for them (mpi); a no-op elsewhere. */
chm_status chm_comm_progress(chm_comm *c, chm_err *err);

/*
 * Finish every started collective: afterwards the host and the backend's
 * later work see the sums (nccl: the backend's stream waits for the comm
 * stream, and the host waits with the watchdog; a stuck peer fails as
 * chm_comm_all_reduce does). timing may be NULL; zeros when nothing was started.
 */
chm_status chm_comm_wait_all(chm_comm *c, chm_comm_timing *timing, chm_err *err);

/*
 * Run every collective against a reference computed on the host, on
 * tensors of each dtype the backend holds at a few odd sizes, and print one
 * line per check (rank 0 only) to out (may be NULL). CHM_ERR_INTERNAL
 * naming the first collective that gave a wrong result.
 */
chm_status chm_comm_selftest(chm_comm *c, FILE *out, chm_err *err);

#ifdef __cplusplus
}
#endif
#endif
