/*
 * comm_nccl.c: the NCCL transport of the cuda backend (chimera/comm.h).
 *
 * libnccl.so.2 is loaded at run time (dlopen) into a table of the few
 * functions used, so the binary has no link-time NCCL dependency and this
 * file compiles wherever the cuda backend does. The types are nccl.h's when
 * the build found it (and then every table entry is checked against its
 * prototype at compile time), else minimal declarations of NCCL's stable C
 * ABI written here.
 *
 * Collectives run in place on device pointers (src/backend/cuda/comm_ptr.c)
 * and are enqueued on the backend's stream, in order with the compute. The
 * host then waits for the stream with a watchdog: it polls the stream and
 * ncclCommGetAsyncError, and after the group's timeout aborts the
 * communicator and fails, so that a rank whose peer died stops with a
 * message instead of hanging. The communicator is created on a helper
 * thread for the same reason: ncclCommInitRank waits for every rank.
 *
 * The NCCL id goes from rank 0 to the others by MPI_Bcast under mpirun, else
 * through the rendezvous file (rendezvous.c).
 *
 * Nonblocking all-reduces (the gradient buckets, comm.h) go on a second
 * stream, the comm stream: each waits for an event recorded on the
 * backend's stream at its start and is bracketed by two timing events;
 * chm_comm_wait_all makes the backend's stream wait for the last one and
 * waits for the comm stream on the host under the same watchdog.
 */
#include "comm_internal.h"

#ifdef CHIMERA_HAVE_CUDA

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_backend.h"

/* ---- the NCCL ABI ----------------------------------------------------------------------- */

#ifdef CHIMERA_HAVE_NCCL_H
#include <nccl.h>
typedef ncclResult_t nc_result;
typedef ncclComm_t nc_comm;
typedef ncclUniqueId nc_id;
typedef ncclDataType_t nc_dtype;
typedef ncclRedOp_t nc_op;
#define NC_SUCCESS ncclSuccess
#define NC_IN_PROGRESS ncclInProgress
#define NC_INT32 ncclInt32
#define NC_F16 ncclFloat16
#define NC_F32 ncclFloat32
#define NC_F64 ncclFloat64
#define NC_BF16 ncclBfloat16
#define NC_SUM ncclSum
#else
/* NCCL's public C ABI (stable since 2.0; bfloat16 since 2.10). */
typedef enum { NC_SUCCESS = 0, NC_IN_PROGRESS = 7 } nc_result;
typedef struct ncclComm *nc_comm;
typedef struct { char internal[128]; } nc_id;
typedef enum { NC_INT32 = 2, NC_F16 = 6, NC_F32 = 7, NC_F64 = 8, NC_BF16 = 9 } nc_dtype;
typedef enum { NC_SUM = 0 } nc_op;
#endif

typedef nc_result (*fn_version)(int *);
typedef nc_result (*fn_unique_id)(nc_id *);
typedef nc_result (*fn_init_rank)(nc_comm *, int, nc_id, int);
typedef nc_result (*fn_comm)(nc_comm);
typedef nc_result (*fn_async_error)(nc_comm, nc_result *);
typedef const char *(*fn_error_string)(nc_result);
typedef const char *(*fn_last_error)(nc_comm);
typedef nc_result (*fn_reduce_all)(const void *, void *, size_t, nc_dtype, nc_op, nc_comm,
                                   cudaStream_t);
typedef nc_result (*fn_all_gather)(const void *, void *, size_t, nc_dtype, nc_comm, cudaStream_t);
typedef nc_result (*fn_broadcast)(const void *, void *, size_t, nc_dtype, int, nc_comm,
                                  cudaStream_t);
typedef nc_result (*fn_reduce)(const void *, void *, size_t, nc_dtype, nc_op, int, nc_comm,
                               cudaStream_t);
typedef nc_result (*fn_group)(void);

#ifdef CHIMERA_HAVE_NCCL_H
/* Each entry's type must match nccl.h's prototype (_Generic does not evaluate, so no link). */
#define NC_MATCHES(f, T) _Static_assert(_Generic(&f, T: 1, default: 0), #f " differs from nccl.h")
NC_MATCHES(ncclGetVersion, fn_version);
NC_MATCHES(ncclGetUniqueId, fn_unique_id);
NC_MATCHES(ncclCommInitRank, fn_init_rank);
NC_MATCHES(ncclCommDestroy, fn_comm);
NC_MATCHES(ncclCommAbort, fn_comm);
NC_MATCHES(ncclCommGetAsyncError, fn_async_error);
NC_MATCHES(ncclGetErrorString, fn_error_string);
NC_MATCHES(ncclGetLastError, fn_last_error);
NC_MATCHES(ncclAllReduce, fn_reduce_all);
NC_MATCHES(ncclReduceScatter, fn_reduce_all);
NC_MATCHES(ncclAllGather, fn_all_gather);
NC_MATCHES(ncclBroadcast, fn_broadcast);
NC_MATCHES(ncclReduce, fn_reduce);
NC_MATCHES(ncclGroupStart, fn_group);
NC_MATCHES(ncclGroupEnd, fn_group);
_Static_assert(sizeof(nc_id) == 128, "ncclUniqueId is 128 bytes");
#endif

/* The loaded library: each group's state holds its own table (its own dlopen reference), so
 * that no process-wide state lives outside the backend registry. The references are never
 * dlclose'd: NCCL keeps proxy threads and exit handlers that must not outlive its code, and a
 * timed-out ncclCommInitRank thread may still run in it; the process's exit unloads it. */
typedef struct nccl_api {
    void *lib;
    int version;
    fn_version get_version;
    fn_unique_id unique_id;
    fn_init_rank init_rank;
    fn_comm destroy, abort;
    fn_async_error async_error;
    fn_error_string error_string;
    fn_last_error last_error; /* optional (NCCL >= 2.13) */
    fn_reduce_all all_reduce, reduce_scatter;
    fn_all_gather all_gather;
    fn_broadcast broadcast;
    fn_reduce reduce;
    fn_group group_start, group_end;
} nccl_api;

static const struct {
    const char *name;
    size_t off;
    bool optional;
} symbols[] = {
    {"ncclGetVersion", offsetof(nccl_api, get_version), false},
    {"ncclGetUniqueId", offsetof(nccl_api, unique_id), false},
    {"ncclCommInitRank", offsetof(nccl_api, init_rank), false},
    {"ncclCommDestroy", offsetof(nccl_api, destroy), false},
    {"ncclCommAbort", offsetof(nccl_api, abort), false},
    {"ncclCommGetAsyncError", offsetof(nccl_api, async_error), false},
    {"ncclGetErrorString", offsetof(nccl_api, error_string), false},
    {"ncclGetLastError", offsetof(nccl_api, last_error), true},
    {"ncclAllReduce", offsetof(nccl_api, all_reduce), false},
    {"ncclReduceScatter", offsetof(nccl_api, reduce_scatter), false},
    {"ncclAllGather", offsetof(nccl_api, all_gather), false},
    {"ncclBroadcast", offsetof(nccl_api, broadcast), false},
    {"ncclReduce", offsetof(nccl_api, reduce), false},
    {"ncclGroupStart", offsetof(nccl_api, group_start), false},
    {"ncclGroupEnd", offsetof(nccl_api, group_end), false},
};

/* dlopen libnccl.so.2 and fill *out; CHM_ERR_UNSUPPORTED saying why not. */
static chm_status load_nccl(nccl_api *out, chm_err *err) {
    /* NVLink SHARP (multicast) stays off unless the user turns it on: chimera's collectives
     * gain little from it, and on a shared host a program that dies holding multicast
     * objects can put the GPUs out of service */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    nccl_api a = {0};
    a.lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!a.lib) a.lib = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!a.lib) {
        const char *why = dlerror();
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "nccl: cannot load libnccl.so.2 (%.200s): install "
                       "NCCL or put its folder on LD_LIBRARY_PATH", why ? why : "not found");
    }
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        void *s = dlsym(a.lib, symbols[i].name);
        if (!s && !symbols[i].optional) {
            dlclose(a.lib);
            return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "nccl: libnccl.so.2 lacks %s: NCCL 2.10 or "
                           "newer is needed", symbols[i].name);
        }
        memcpy((char *)&a + symbols[i].off, &s,
               sizeof s); /* POSIX: data and function pointers agree */
    }
    if (a.get_version(&a.version) != NC_SUCCESS) a.version = 0;
    *out = a;
    return CHM_OK;
}

/* "2.28.9" from NCCL's version code (X*1000+Y*100+Z before 2.9, X*10000+Y*100+Z after). */
static void version_text(int v, char *out, size_t n) {
    if (v >= 10000) snprintf(out, n, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    else snprintf(out, n, "%d.%d.%d", v / 1000, v / 100 % 10, v % 100);
}

/* ---- the communicator -------------------------------------------------------------------- */

/* Up to this many host doubles per sum_host round (the staging buffer's size). */
#define NC_HOST_MAX 512

typedef struct nccl_state {
    nccl_api api;        /* this group's reference to the loaded library */
    nc_comm comm;
    cudaStream_t stream;
    int device;
    chm_buffer *staging; /* [NC_HOST_MAX] f64 for sum_host and the barrier */
    bool dead;           /* aborted: the communicator is gone */
    /* nonblocking all-reduces (made at the first start) */
    cudaStream_t side;   /* the comm stream */
    cudaEvent_t ready;   /* recorded on the backend's stream at each start */
    cudaEvent_t *ev;     /* [n_ev] start and end of each started collective, in pairs */
    int n_ev;
    int started;         /* since the last wait */
} nccl_state;

static const char *nc_text(const nccl_api *a, nc_result r) {
    return a->error_string ? a->error_string(r) : "unknown NCCL error";
}

static void nc_abort(nccl_state *s) {
    if (s->dead || !s->comm) return;
    s->dead = true;
    s->api.abort(s->comm);
}

/* An error of a collective that failed to enqueue. */
static chm_status nc_failed(chm_comm *c, const char *op, nc_result r, chm_err *err) {
    nccl_state *s = c->state;
    const char *last = s->api.last_error && s->comm ? s->api.last_error(s->comm) : "";
    return CHM_ERR(err, CHM_ERR_DEVICE, "nccl %s: %s%s%.300s", op, nc_text(&s->api, r),
                   last && *last ? ": " : "", last ? last : "");
}

static void nap(unsigned spin) {
    struct timespec ts = {0, spin < 64 ? 2000 : 50000};
    nanosleep(&ts, NULL);
}

/* Wait for stream st with the watchdog (see the top of this file). */
static chm_status nc_wait(chm_comm *c, cudaStream_t st, const char *op, chm_err *err) {
    nccl_state *s = c->state;
    double t0 = chm_comm_now();
    for (unsigned spin = 0;; spin++) {
        cudaError_t q = cudaStreamQuery(st);
        if (q == cudaSuccess) return CHM_OK;
        if (q != cudaErrorNotReady) {
            cudaGetLastError();
            return CHM_ERR(err, CHM_ERR_DEVICE, "nccl %s: CUDA error %s", op,
                           cudaGetErrorString(q));
        }
        nc_result a = NC_SUCCESS;
        s->api.async_error(s->comm, &a);
        if (a != NC_SUCCESS && a != NC_IN_PROGRESS) {
            chm_status rc = nc_failed(c, op, a, err);
            nc_abort(s);
            return rc;
        }
        if (chm_comm_now() - t0 > c->timeout_s) {
            nc_abort(s);
            return CHM_ERR(err, CHM_ERR_DEVICE,
                           "nccl %s: not finished after %.0f s on rank %d of %d: another rank "
                           "probably died or stopped (see its log); CHIMERA_COMM_TIMEOUT sets this "
                           "limit", op, c->timeout_s, c->rank, c->world);
        }
        nap(spin);
    }
}

static nc_dtype nc_type(chm_dtype dt) {
    switch (dt) {
    case CHM_F64: return NC_F64;
    case CHM_BF16: return NC_BF16;
    case CHM_F16: return NC_F16;
    case CHM_I32: return NC_INT32;
    default: return NC_F32;
    }
}

/* Finish a collective: the enqueue's result, then the wait. */
static chm_status nc_done(chm_comm *c, const char *op, nc_result r, chm_err *err) {
    nccl_state *s = c->state;
    if (s->dead)
        return CHM_ERR(err, CHM_ERR_DEVICE,
                       "nccl %s: the communicator was aborted after an earlier failure", op);
    if (r != NC_SUCCESS) return nc_failed(c, op, r, err);
    return nc_wait(c, s->stream, op, err);
}

/* ---- collectives --------------------------------------------------------------------------- */

static chm_status nc_all_reduce(chm_comm *c, const chm_tensor *t, chm_err *err) {
    nccl_state *s = c->state;
    size_t n = (size_t)chm_tensor_numel(t);
    char *p = chm_cuda_comm_ptr(t);
    nc_result r = s->dead || !n
                      ? NC_SUCCESS
                      : s->api.all_reduce(p, p, n, nc_type(t->dtype), NC_SUM, s->comm, s->stream);
    return nc_done(c, "all_reduce", r, err);
}

static chm_status nc_broadcast(chm_comm *c, const chm_tensor *t, int root, chm_err *err) {
    nccl_state *s = c->state;
    size_t n = (size_t)chm_tensor_numel(t);
    char *p = chm_cuda_comm_ptr(t);
    nc_result r = s->dead || !n
                      ? NC_SUCCESS
                      : s->api.broadcast(p, p, n, nc_type(t->dtype), root, s->comm, s->stream);
    return nc_done(c, "broadcast", r, err);
}

/* Blocks of equal size that tile t exactly take NCCL's own in-place collective; other
 * splits one broadcast (gather) or reduce (scatter) per block, rooted at its owner. */
static chm_status nc_blocks(chm_comm *c, const chm_tensor *t, bool gather, chm_err *err) {
    nccl_state *s = c->state;
    int64_t n = chm_tensor_numel(t), s0, b, cnt;
    size_t ds = chm_dtype_size(t->dtype);
    nc_dtype dt = nc_type(t->dtype);
    char *p = chm_cuda_comm_ptr(t);
    chm_comm_block(n, c->world, 0, &b, &s0);
    const char *op = gather ? "all_gather" : "reduce_scatter";
    nc_result r = NC_SUCCESS;
    if (s->dead || n == 0) return nc_done(c, op, r, err);
    if (s0 * c->world == n) {
        char *mine = p + (size_t)(s0 * c->rank) * ds;
        r = gather ? s->api.all_gather(mine, p, (size_t)s0, dt, s->comm, s->stream)
                   : s->api.reduce_scatter(p, mine, (size_t)s0, dt, NC_SUM, s->comm, s->stream);
        return nc_done(c, op, r, err);
    }
    r = s->api.group_start();
    for (int k = 0; r == NC_SUCCESS && k < c->world; k++) {
        chm_comm_block(n, c->world, k, &b, &cnt);
        char *q = p + (size_t)b * ds;
        if (cnt == 0) continue;
        r = gather ? s->api.broadcast(q, q, (size_t)cnt, dt, k, s->comm, s->stream)
                   : s->api.reduce(q, q, (size_t)cnt, dt, NC_SUM, k, s->comm, s->stream);
    }
    nc_result e = s->api.group_end();
    return nc_done(c, op, r != NC_SUCCESS ? r : e, err);
}

static chm_status nc_all_gather(chm_comm *c, const chm_tensor *t, chm_err *err) {
    return nc_blocks(c, t, true, err);
}

static chm_status nc_reduce_scatter(chm_comm *c, const chm_tensor *t, chm_err *err) {
    return nc_blocks(c, t, false, err);
}

static chm_status nc_sum_host(chm_comm *c, double *x, int n, chm_err *err) {
    nccl_state *s = c->state;
    for (int off = 0; off < n; off += NC_HOST_MAX) {
        int k = n - off < NC_HOST_MAX ? n - off : NC_HOST_MAX;
        chm_tensor v = chm_tensor_1d(s->staging, 0, CHM_F64, k);
        chm_status rc = chm_upload(c->be, &v, x + off);
        if (rc) return CHM_ERR(err, rc, "nccl sum_host: %s", c->be->err.msg);
        if ((rc = nc_all_reduce(c, &v, err))) return rc;
        if ((rc = chm_download(c->be, &v, x + off)))
            return CHM_ERR(err, rc, "nccl sum_host: %s", c->be->err.msg);
    }
    return CHM_OK;
}

static chm_status nc_barrier(chm_comm *c, chm_err *err) {
    double one = 1;
    return nc_sum_host(c, &one, 1, err);
}

/* ---- nonblocking all-reduce on the comm stream ---------------------------------------------- */

static chm_status nc_cuda(const char *op, cudaError_t e, chm_err *err) {
    if (e == cudaSuccess) return CHM_OK;
    cudaGetLastError();
    return CHM_ERR(err, CHM_ERR_DEVICE, "nccl %s: CUDA error %s", op, cudaGetErrorString(e));
}

/* The comm stream, the ready event, and events for collective k's start and end (the pool
 * grows to the most collectives of one round and is kept). */
static chm_status side_prepare(chm_comm *c, int k, chm_err *err) {
    nccl_state *s = c->state;
    cudaError_t e = cudaSuccess;
    if (!s->side) {
        cudaStream_t st = NULL;
        e = chm_cuda_comm_side_stream(c->be, &st);
        if (e == cudaSuccess && (e = cudaEventCreate(&s->ready)) != cudaSuccess)
            cudaStreamDestroy(st);
        if (e == cudaSuccess) s->side = st;
    }
    if (e == cudaSuccess && 2 * k + 2 > s->n_ev) {
        int want = 2 * k + 32;
        cudaEvent_t *ev = realloc(s->ev, (size_t)want * sizeof *ev);
        if (!ev) return CHM_ERR(err, CHM_ERR_NOMEM, "nccl all_reduce_start: no memory");
        s->ev = ev;
        while (e == cudaSuccess && s->n_ev < want) {
            e = cudaEventCreate(&ev[s->n_ev]);
            s->n_ev += e == cudaSuccess;
        }
    }
    return nc_cuda("all_reduce_start", e, err);
}

static chm_status nc_all_reduce_start(chm_comm *c, const chm_tensor *t, chm_err *err) {
    nccl_state *s = c->state;
    if (s->dead) return nc_done(c, "all_reduce_start", NC_SUCCESS, err);
    chm_status rc = side_prepare(c, s->started, err);
    if (rc) return rc;
    cudaEvent_t *ev = s->ev + 2 * s->started;
    /* the comm stream runs it once the backend's stream has produced t */
    cudaError_t e = cudaEventRecord(s->ready, s->stream);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(s->side, s->ready, 0);
    if (e == cudaSuccess) e = cudaEventRecord(ev[0], s->side);
    if ((rc = nc_cuda("all_reduce_start", e, err))) return rc;
    size_t n = (size_t)chm_tensor_numel(t);
    char *p = chm_cuda_comm_ptr(t);
    nc_result r =
        n ? s->api.all_reduce(p, p, n, nc_type(t->dtype), NC_SUM, s->comm, s->side) : NC_SUCCESS;
    if (r != NC_SUCCESS) return nc_failed(c, "all_reduce_start", r, err);
    s->started++;
    return nc_cuda("all_reduce_start", cudaEventRecord(ev[1], s->side), err);
}

/* Busy and exposed time of the k collectives just finished (their events are complete). */
static chm_status side_timing(nccl_state *s, int k, chm_comm_timing *tm, chm_err *err) {
    float ms = 0;
    cudaError_t e = cudaSuccess;
    tm->started = k;
    for (int i = 0; e == cudaSuccess && i < k; i++) {
        e = cudaEventElapsedTime(&ms, s->ev[2 * i], s->ev[2 * i + 1]);
        tm->busy_s += 1e-3 * ms;
    }
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, s->ready, s->ev[2 * k - 1]);
    tm->exposed_s = ms > 0 ? 1e-3 * ms : 0;
    return nc_cuda("wait_all", e, err);
}

static chm_status nc_wait_all(chm_comm *c, chm_comm_timing *tm, chm_err *err) {
    nccl_state *s = c->state;
    int k = s->started;
    s->started = 0;
    if (k == 0) return CHM_OK;
    if (s->dead) return nc_done(c, "wait_all", NC_SUCCESS, err);
    /* the backend's later work (the norm) runs after the sums, and the host waits with the
     * watchdog so that a dead peer ends the run instead of hanging the next download */
    chm_status rc = nc_cuda("wait_all", cudaStreamWaitEvent(s->stream, s->ev[2 * k - 1], 0), err);
    if (rc == CHM_OK) rc = nc_wait(c, s->side, "all_reduce_start", err);
    return rc ? rc : side_timing(s, k, tm, err);
}

static bool nc_overlaps(const chm_comm *c) {
    (void)c;
    return true;
}

static void nc_detach(chm_comm *c, bool failed) {
    nccl_state *s = c->state;
    if (!s) return;
    if (failed) nc_abort(s);
    if (!s->dead && s->comm) s->api.destroy(s->comm);
    for (int i = 0; i < s->n_ev; i++) cudaEventDestroy(s->ev[i]);
    if (s->side) {
        cudaEventDestroy(s->ready);
        cudaStreamDestroy(s->side);
    }
    free(s->ev);
    chm_buffer_free(s->staging);
    free(s);
}

static const comm_impl nccl_impl = {
    .name = "nccl",
    .all_reduce = nc_all_reduce,
    .reduce_scatter = nc_reduce_scatter,
    .all_gather = nc_all_gather,
    .broadcast = nc_broadcast,
    .barrier = nc_barrier,
    .sum_host = nc_sum_host,
    .all_reduce_start = nc_all_reduce_start,
    .wait_all = nc_wait_all,
    .overlaps = nc_overlaps,
    .detach = nc_detach,
};

/* ---- creating the communicator -------------------------------------------------------------- */

/* ncclCommInitRank on a helper thread, so that the caller can give up after the timeout. */
typedef struct init_job {
    fn_init_rank init_rank;
    nc_id id;
    int world, rank, device;
    nc_comm comm;
    nc_result result;
    cudaError_t cuda;
    bool done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} init_job;

static void *init_thread(void *arg) {
    init_job *j = arg;
    nc_comm comm = NULL;
    /* NCCL binds the communicator to this thread's current device */
    cudaError_t e = cudaSetDevice(j->device);
    nc_result r = e == cudaSuccess ? j->init_rank(&comm, j->world, j->id, j->rank) : NC_SUCCESS;
    pthread_mutex_lock(&j->mu);
    j->cuda = e, j->result = r, j->comm = comm, j->done = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* Wait for the job until the deadline; true when it finished. */
static bool wait_job(init_job *j, double timeout_s) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)timeout_s;
    pthread_mutex_lock(&j->mu);
    int e = 0;
    while (!j->done && e == 0) e = pthread_cond_timedwait(&j->cv, &j->mu, &dl);
    bool done = j->done;
    pthread_mutex_unlock(&j->mu);
    return done;
}

static chm_status init_comm(chm_comm *c, nccl_state *s, const nc_id *id, chm_err *err) {
    init_job *j = calloc(1, sizeof *j);
    if (!j) return CHM_ERR(err, CHM_ERR_NOMEM, "nccl: no memory");
    *j = (init_job){.init_rank = s->api.init_rank, .id = *id, .world = c->world,
                    .rank = c->rank, .device = s->device};
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, init_thread, j) != 0) {
        free(j);
        return CHM_ERR(err, CHM_ERR_INTERNAL, "nccl: cannot start a thread");
    }
    if (!wait_job(j, c->timeout_s)) {
        pthread_detach(th); /* it may never return: leave it (and j) to the process's exit */
        return CHM_ERR(err, CHM_ERR_DEVICE,
                       "nccl: rank %d of %d could not connect to the others within %.0f s: is "
                       "every rank started, with the same --world-size%s? (CHIMERA_COMM_TIMEOUT "
                       "sets the limit)",
                       c->rank, c->world, c->timeout_s, c->mpi_launched ? "" : " and --rendezvous");
    }
    pthread_join(th, NULL);
    chm_status rc = CHM_OK;
    if (j->cuda != cudaSuccess)
        rc = CHM_ERR(err, CHM_ERR_DEVICE, "nccl: cannot use device %d: %s", s->device,
                     cudaGetErrorString(j->cuda));
    else if (j->result != NC_SUCCESS)
        rc = CHM_ERR(err, CHM_ERR_DEVICE, "nccl: ncclCommInitRank (rank %d of %d): %s", c->rank,
                     c->world, nc_text(&s->api, j->result));
    s->comm = j->comm;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
    return rc;
}

/* Rank 0's NCCL id into every rank's *id (MPI, or the rendezvous file). */
static chm_status share_id(chm_comm *c, const nccl_api *api, nc_id *id, chm_err *err) {
    if (c->rank == 0) {
        nc_result r = api->unique_id(id);
        if (r != NC_SUCCESS)
            return CHM_ERR(err, CHM_ERR_DEVICE, "nccl: ncclGetUniqueId: %s", nc_text(api, r));
    }
    if (c->mpi_launched) return chm_comm_mpi_bcast_bytes(c, id, (int)sizeof *id, 0, err);
    if (!c->rendezvous[0])
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "nccl: a group started with --rank/--world-size "
                       "needs a rendezvous file (--rendezvous PATH) that every rank can read");
    return chm_comm_rendezvous(c->rendezvous, c->rank, c->world, id, sizeof *id, c->timeout_s, err);
}

chm_status chm_comm_nccl_attach(chm_comm *c, chm_err *err) {
    nccl_api api;
    chm_status rc = load_nccl(&api, err);
    if (rc) return rc;
    nccl_state *s = calloc(1, sizeof *s);
    if (!s) return CHM_ERR(err, CHM_ERR_NOMEM, "nccl: no memory");
    s->api = api;
    s->stream = chm_cuda_comm_stream(c->be);
    s->device = chm_cuda_comm_device(c->be);
    nc_id id;
    memset(&id, 0, sizeof id);
    rc = chm_buffer_alloc(c->be, NC_HOST_MAX * sizeof(double), &s->staging);
    if (rc) rc = CHM_ERR(err, rc, "nccl: %s", c->be->err.msg);
    if (rc == CHM_OK) rc = share_id(c, &s->api, &id, err);
    if (rc == CHM_OK) rc = init_comm(c, s, &id, err);
    if (rc == CHM_OK && !c->mpi_launched) chm_comm_rendezvous_done(c->rendezvous, c->rank);
    if (rc) {
        if (s->comm) s->api.abort(s->comm);
        chm_buffer_free(s->staging);
        free(s);
        return rc;
    }
    c->state = s;
    c->impl = &nccl_impl;
    char v[32];
    version_text(s->api.version, v, sizeof v);
    snprintf(c->desc, sizeof c->desc, "nccl %s, %d ranks (this one on cuda device %d)", v, c->world,
             s->device);
    return CHM_OK;
}

int chm_comm_cuda_devices(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

#else /* no cuda backend in this build */

chm_status chm_comm_nccl_attach(chm_comm *c, chm_err *err) {
    (void)c;
    return CHM_ERR(err, CHM_ERR_UNSUPPORTED,
                   "nccl: this chimera was built without the cuda backend");
}

int chm_comm_cuda_devices(void) { return 0; }

#endif
