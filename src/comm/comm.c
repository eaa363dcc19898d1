/*
 * comm.c: the process group of a data-parallel run (chimera/comm.h): how it
 * is found (mpirun's environment, an explicit rank and world size, or one
 * process), which transport serves a backend, the argument checks of every
 * collective, and the single-process transport (every collective a no-op).
 */
#include "comm_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/check.h"

double chm_comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t chm_comm_chunk(void) {
    const char *s = getenv("CHIMERA_COMM_CHUNK");
    long long v = s && *s ? atoll(s) : 0;
    return v > 0 ? (int64_t)v : INT64_C(1) << 26;
}

/* ---- the single-process transport -------------------------------------------------- */

static chm_status single_tensor(chm_comm *c, const chm_tensor *t, chm_err *err) {
    (void)c, (void)t, (void)err;
    return CHM_OK;
}

static chm_status single_broadcast(chm_comm *c, const chm_tensor *t, int root, chm_err *err) {
    (void)c, (void)t, (void)root, (void)err;
    return CHM_OK;
}

static chm_status single_barrier(chm_comm *c, chm_err *err) {
    (void)c, (void)err;
    return CHM_OK;
}

static chm_status single_sum_host(chm_comm *c, double *x, int n, chm_err *err) {
    (void)c, (void)x, (void)n, (void)err;
    return CHM_OK;
}

static void single_detach(chm_comm *c, bool failed) { (void)c, (void)failed; }

const comm_impl chm_comm_single_impl = {
    .name = "single",
    .all_reduce = single_tensor,
    .reduce_scatter = single_tensor,
    .all_gather = single_tensor,
    .broadcast = single_broadcast,
    .barrier = single_barrier,
    .sum_host = single_sum_host,
    .detach = single_detach,
};

/* ---- the group --------------------------------------------------------------------- */

/* The watchdog: the option, else CHIMERA_COMM_TIMEOUT, else the default. */
static double timeout_of(const chm_comm_options *o) {
    if (o->timeout_s > 0) return o->timeout_s;
    const char *s = getenv("CHIMERA_COMM_TIMEOUT");
    double v = s && *s ? strtod(s, NULL) : 0;
    return v > 0 ? v : CHM_COMM_TIMEOUT_DEFAULT;
}

/* Processes mpirun started (OMPI_COMM_WORLD_SIZE), 0 when not under mpirun. */
static int mpirun_size(void) {
    const char *s = getenv("OMPI_COMM_WORLD_SIZE");
    return s && *s ? atoi(s) : 0;
}

static chm_status check_options(const chm_comm_options *o, chm_err *err) {
    if (o->world_size < 0 || (o->world_size > 0 && (o->rank < 0 || o->rank >= o->world_size)))
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "--rank %d does not fit --world-size %d: ranks are 0 .. world size - 1",
                       o->rank, o->world_size);
    if (o->world_size > 0 && mpirun_size() > 1)
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                       "both mpirun (%d processes) and --rank/--world-size give this process a "
                       "rank: use one of them", mpirun_size());
    return CHM_OK;
}

chm_status chm_comm_open(const chm_comm_options *opts, chm_comm **out, chm_err *err) {
    chm_comm_options none = {0};
    const chm_comm_options *o = opts ? opts : &none;
    *out = NULL;
    chm_status rc = check_options(o, err);
    if (rc) return rc;
    chm_comm *c = calloc(1, sizeof *c);
    if (!c) return CHM_ERR(err, CHM_ERR_NOMEM, "comm: no memory");
    c->world = c->local_size = 1;
    c->timeout_s = timeout_of(o);
    if (o->rendezvous) snprintf(c->rendezvous, sizeof c->rendezvous, "%s", o->rendezvous);
    if (o->world_size > 0) {
        /* started by hand: assume one machine, so the local rank is the rank */
        c->rank = c->local_rank = o->rank;
        c->world = c->local_size = o->world_size;
    } else if (mpirun_size() > 1) {
        rc = chm_comm_mpi_init(c, err);
    }
    if (rc) {
        free(c);
        return rc;
    }
    snprintf(c->desc, sizeof c->desc, "%s", c->world == 1 ? "single process" : "not attached");
    *out = c;
    return CHM_OK;
}

void chm_comm_detach(chm_comm *c) {
    if (!c || !c->impl) return;
    c->impl->detach(c, c->failed);
    c->impl = NULL;
    c->state = NULL;
    c->be = NULL;
}

void chm_comm_close(chm_comm *c) {
    if (!c) return;
    chm_comm_detach(c);
    if (c->mpi_inited && !c->failed) chm_comm_mpi_finalize(c);
    free(c);
}

void chm_comm_abort(chm_comm *c, int code) {
    if (!c || c->world <= 1) return;
    c->failed = true;
    chm_comm_detach(c);
    if (c->mpi_inited) chm_comm_mpi_abort(code);
}

int chm_comm_rank(const chm_comm *c) { return c ? c->rank : 0; }
int chm_comm_size(const chm_comm *c) { return c ? c->world : 1; }
int chm_comm_local_rank(const chm_comm *c) { return c ? c->local_rank : 0; }
int chm_comm_local_size(const chm_comm *c) { return c ? c->local_size : 1; }
const char *chm_comm_describe(const chm_comm *c) { return c ? c->desc : "single process"; }

int chm_comm_device_index(const chm_comm *c, const char *name) {
    if (!c || c->world <= 1) return -1;
    if (name && strcmp(name, "cuda") != 0 && strcmp(name, "auto") != 0) return -1;
    int n = chm_comm_cuda_devices();
    return n > 0 ? c->local_rank % n : -1;
}

void chm_comm_block(int64_t n, int world, int rank, int64_t *begin, int64_t *count) {
    int64_t w = world > 0 ? world : 1, a = CHM_COMM_BLOCK_ALIGN;
    int64_t s = (n + w - 1) / w;
    s = (s + a - 1) / a * a;
    int64_t b = (int64_t)rank * s < n ? (int64_t)rank * s : n;
    int64_t e = b + s < n ? b + s : n;
    *begin = b;
    *count = e - b;
}

/* ---- attaching a transport ----------------------------------------------------------- */

/* CHIMERA_COMM: "" / "auto", "mpi" or "nccl"; CHM_ERR_CONFIG for anything else. */
static chm_status forced_transport(const char **force, chm_err *err) {
    const char *s = getenv("CHIMERA_COMM");
    *force = s && *s && strcmp(s, "auto") != 0 ? s : "";
    if (!**force || !strcmp(*force, "mpi") || !strcmp(*force, "nccl")) return CHM_OK;
    return CHM_ERR(err, CHM_ERR_CONFIG, "CHIMERA_COMM=%.40s: use auto, mpi or nccl", s);
}

/* The transport for a group of more than one: NCCL for cuda (falling back to MPI under
 * mpirun when NCCL cannot be loaded), MPI host-staged otherwise. */
static chm_status attach_group(chm_comm *c, chm_err *err) {
    const char *force;
    chm_status rc = forced_transport(&force, err);
    if (rc) return rc;
    char nccl_why[320] = "";
    bool cuda = !strcmp(c->be->name, "cuda");
    if (cuda && strcmp(force, "mpi") != 0) {
        rc = chm_comm_nccl_attach(c, err);
        if (rc != CHM_ERR_UNSUPPORTED || !c->mpi_launched || !strcmp(force, "nccl")) return rc;
        snprintf(nccl_why, sizeof nccl_why, "%s", err ? err->msg : "NCCL unavailable");
    } else if (!strcmp(force, "nccl")) {
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                       "CHIMERA_COMM=nccl: NCCL works on the cuda backend only, this run uses %s",
                       c->be->name);
    }
    if (!c->mpi_launched)
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                       "--rank/--world-size start processes without MPI, and only the cuda backend "
                       "(NCCL) can communicate that way; this run uses %s: launch it with "
                       "mpirun -np %d chimera train ...", c->be->name, c->world);
    rc = chm_comm_mpi_attach(c, err);
    if (rc == CHM_OK && nccl_why[0]) {
        size_t n = strlen(c->desc);
        snprintf(c->desc + n, sizeof c->desc - n, " (NCCL not used: %.120s)", nccl_why);
    }
    return rc;
}

chm_status chm_comm_attach(chm_comm *c, chm_backend *be, const char *rendezvous, chm_err *err) {
    if (!c || !be)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm attach: needs a group and a backend");
    if (c->impl)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm attach: already attached to %s",
                       c->be->name);
    if (!c->rendezvous[0] && rendezvous)
        snprintf(c->rendezvous, sizeof c->rendezvous, "%s", rendezvous);
    c->be = be;
    chm_status rc = CHM_OK;
    if (c->world == 1) {
        c->impl = &chm_comm_single_impl;
        snprintf(c->desc, sizeof c->desc, "single process");
    } else {
        rc = attach_group(c, err);
    }
    if (rc) {
        c->be = NULL;
        c->impl = NULL;
        c->state = NULL;
    }
    return rc;
}

/* ---- checked collectives ------------------------------------------------------------- */

/* c is attached and t is a tensor of its backend (sum: of a dtype that adds). */
static chm_status check(chm_comm *c, const char *op, const chm_tensor *t, bool sum, chm_err *err) {
    if (!c || !c->impl)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm %s: the group is not attached to a backend "
                       "(chm_comm_attach)", op);
    if (chm_check_tensor(c->be, op, "t", t) != CHM_OK)
        return CHM_ERR(err, c->be->err.code, "comm %s", c->be->err.msg);
    if (sum && !chm_dtype_is_float(t->dtype) && t->dtype != CHM_I32)
        return CHM_ERR(err, CHM_ERR_DTYPE, "comm %s: t is %s; sums take float or i32 tensors", op,
                       chm_dtype_name(t->dtype));
    return CHM_OK;
}

chm_status chm_comm_all_reduce(chm_comm *c, const chm_tensor *t, chm_err *err) {
    chm_status rc = check(c, "all_reduce", t, true, err);
    return rc ? rc : c->impl->all_reduce(c, t, err);
}

chm_status chm_comm_reduce_scatter(chm_comm *c, const chm_tensor *t, chm_err *err) {
    chm_status rc = check(c, "reduce_scatter", t, true, err);
    return rc ? rc : c->impl->reduce_scatter(c, t, err);
}

chm_status chm_comm_all_gather(chm_comm *c, const chm_tensor *t, chm_err *err) {
    chm_status rc = check(c, "all_gather", t, false, err);
    return rc ? rc : c->impl->all_gather(c, t, err);
}

chm_status chm_comm_broadcast(chm_comm *c, const chm_tensor *t, int root, chm_err *err) {
    chm_status rc = check(c, "broadcast", t, false, err);
    if (rc == CHM_OK && (root < 0 || root >= c->world))
        rc = CHM_ERR(err, CHM_ERR_INVALID_ARG,
                     "comm broadcast: root %d outside the group's %d ranks", root, c->world);
    return rc ? rc : c->impl->broadcast(c, t, root, err);
}

chm_status chm_comm_barrier(chm_comm *c, chm_err *err) {
    if (!c || !c->impl)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm barrier: the group is not attached");
    return c->impl->barrier(c, err);
}

chm_status chm_comm_sum_host(chm_comm *c, double *x, int n, chm_err *err) {
    if (!c || !c->impl)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm sum_host: the group is not attached");
    if (n < 0 || (n > 0 && !x))
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm sum_host: %d values at %p", n, (void *)x);
    return n ? c->impl->sum_host(c, x, n, err) : CHM_OK;
}

/* ---- nonblocking all-reduce ------------------------------------------------------------------ */

bool chm_comm_overlaps(const chm_comm *c) {
    return c && c->impl && c->impl->overlaps && c->impl->overlaps(c);
}

chm_status chm_comm_all_reduce_start(chm_comm *c, const chm_tensor *t, chm_err *err) {
    chm_status rc = check(c, "all_reduce_start", t, true, err);
    if (rc) return rc;
    return c->impl->all_reduce_start ? c->impl->all_reduce_start(c, t, err)
                                     : c->impl->all_reduce(c, t, err);
}

chm_status chm_comm_progress(chm_comm *c, chm_err *err) {
    if (!c || !c->impl)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm progress: the group is not attached");
    return c->impl->progress ? c->impl->progress(c, err) : CHM_OK;
}

chm_status chm_comm_wait_all(chm_comm *c, chm_comm_timing *timing, chm_err *err) {
    chm_comm_timing none;
    chm_comm_timing *tm = timing ? timing : &none;
    memset(tm, 0, sizeof *tm);
    if (!c || !c->impl)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm wait_all: the group is not attached");
    return c->impl->wait_all ? c->impl->wait_all(c, tm, err) : CHM_OK;
}
