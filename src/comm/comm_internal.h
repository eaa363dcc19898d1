/*
 * comm_internal.h: what the files of src/comm share: the group (struct
 * chm_comm), the table of one transport, and the transports' entry points.
 * comm.c checks every argument and dispatches; comm_mpi.c, comm_nccl.c and
 * the single-process table in comm.c trust what they get (tensors of the
 * attached backend, a root in range). Internal to src/comm (and its tests).
 */
#ifndef CHIMERA_COMM_INTERNAL_H
#define CHIMERA_COMM_INTERNAL_H

#include "chimera/comm.h"

#define COMM_PATH 4096

/* One transport: the collectives of comm.h after their checks, and its teardown. */
typedef struct comm_impl {
    const char *name;
    chm_status (*all_reduce)(chm_comm *c, const chm_tensor *t, chm_err *err);
    chm_status (*reduce_scatter)(chm_comm *c, const chm_tensor *t, chm_err *err);
    chm_status (*all_gather)(chm_comm *c, const chm_tensor *t, chm_err *err);
    chm_status (*broadcast)(chm_comm *c, const chm_tensor *t, int root, chm_err *err);
    chm_status (*barrier)(chm_comm *c, chm_err *err);
    chm_status (*sum_host)(chm_comm *c, double *x, int n, chm_err *err);
    /* nonblocking all-reduce (comm.h); NULL entries: a blocking all_reduce, no-ops */
    chm_status (*all_reduce_start)(chm_comm *c, const chm_tensor *t, chm_err *err);
    chm_status (*progress)(chm_comm *c, chm_err *err);
    chm_status (*wait_all)(chm_comm *c, chm_comm_timing *tm, chm_err *err);
    bool (*overlaps)(const chm_comm *c);
    /* free the transport's state (c->state); `failed`: a peer may be gone, do not wait */
    void (*detach)(chm_comm *c, bool failed);
} comm_impl;

struct chm_comm {
    int rank, world;                /* this process, the group's size */
    int local_rank, local_size;     /* on this machine */
    bool mpi_launched;              /* rank and size came from mpirun */
    bool mpi_inited;                /* this group called MPI_Init (and finalises it) */
    bool failed;                    /* chm_comm_abort ran: never wait on peers again */
    double timeout_s;               /* NCCL watchdog */
    char rendezvous[COMM_PATH];     /* explicit group: the NCCL id file ("" = attach's default) */
    chm_backend *be;                /* attached backend, or NULL */
    const comm_impl *impl;          /* attached transport, or NULL */
    void *state;                    /* the transport's own */
    char desc[192];                 /* chm_comm_describe */
};

/* The single-process transport (comm.c). */
extern const comm_impl chm_comm_single_impl;

/* ---- comm_mpi.c (stubs returning CHM_ERR_UNSUPPORTED without CHIMERA_HAVE_MPI) ---- */

/* MPI_Init (funneled threads) and rank/size/local rank into c. */
chm_status chm_comm_mpi_init(chm_comm *c, chm_err *err);
/* MPI_Finalize. */
void chm_comm_mpi_finalize(chm_comm *c);
/* MPI_Abort(MPI_COMM_WORLD, code): does not return. */
void chm_comm_mpi_abort(int code);
/* Broadcast n host bytes from root (the NCCL id under mpirun). */
chm_status chm_comm_mpi_bcast_bytes(chm_comm *c, void *bytes, int n, int root, chm_err *err);
/* The host-staged transport on c->be: sets c->impl, c->state and c->desc. */
chm_status chm_comm_mpi_attach(chm_comm *c, chm_err *err);

/* ---- comm_nccl.c (a stub returning CHM_ERR_UNSUPPORTED without CHIMERA_HAVE_CUDA) ---- */

/*
 * The NCCL transport on c->be (a cuda backend): load libnccl.so.2, share the
 * id (MPI under mpirun, else the rendezvous file c->rendezvous), create the
 * communicator. CHM_ERR_UNSUPPORTED (message in err) when NCCL cannot be
 * loaded, so that the caller may fall back to MPI.
 */
chm_status chm_comm_nccl_attach(chm_comm *c, chm_err *err);
/* Number of cuda devices (0 without cuda in the build or on the machine). */
int chm_comm_cuda_devices(void);

/* ---- rendezvous.c: the NCCL id through a shared file ---- */

/*
 * Rank 0 writes n bytes to `path` (atomically: a temporary file renamed into
 * place, after removing an old one); any other rank waits until a fresh file
 * for this world size is there (up to timeout_s seconds) and reads them.
 * Files older than CHM_RENDEZVOUS_STALE_S seconds are ignored as left over
 * from an earlier run. Errors: CHM_ERR_IO naming the path.
 */
#define CHM_RENDEZVOUS_STALE_S 600
chm_status chm_comm_rendezvous(const char *path, int rank, int world, void *bytes, size_t n,
                               double timeout_s, chm_err *err);
/* Rank 0, once every rank is connected: remove the file (a no-op for other ranks). */
void chm_comm_rendezvous_done(const char *path, int rank);

/* ---- helpers ---- */

/* Monotonic seconds. */
double chm_comm_now(void);
/* Elements per MPI call and per host staging step (CHIMERA_COMM_CHUNK overrides, for tests). */
int64_t chm_comm_chunk(void);

#endif
