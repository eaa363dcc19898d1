/*
 * comm_mpi.c: MPI for the group (chimera/comm.h): initialisation under
 * mpirun, abort, and the host-staged transport of the cpu and vulkan
 * backends.
 *
 * Host staging: a tensor is downloaded into host memory, reduced or moved
 * there by MPI, and the part that changed is uploaded again; on a backend
 * whose buffers are host memory (cpu) MPI works on the buffer itself after
 * a chm_sync. Calls go in chunks of chm_comm_chunk() elements so that counts
 * fit MPI's int. all_gather and reduce_scatter are one broadcast and one
 * reduce per block, rooted at the block's owner: blocks of any size, no
 * int displacements. bf16 and f16 move as 16-bit words and add through
 * user-defined MPI ops that sum in f32 (half.h), since MPI has no 16-bit
 * floats.
 *
 * Nonblocking all-reduce (comm.h): in place, one MPI_Iallreduce per chunk
 * of the bucket on the host buffer, advanced by MPI_Testall from
 * chm_comm_progress and finished by MPI_Waitall; staged, a blocking
 * all-reduce (the download would wait for the device anyway).
 *
 * Failure: MPI's default error handler (MPI_ERRORS_ARE_FATAL) is kept, so a
 * failing call ends the whole job, and Open MPI's runtime ends it too when a
 * process dies or exits non-zero without MPI_Finalize. Return codes are
 * checked all the same.
 */
#include "comm_internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef CHIMERA_HAVE_MPI

#include <mpi.h>

#include "core/half.h"

typedef struct mpi_state {
    MPI_Op sum_bf16, sum_f16;  /* user ops: 16-bit words added in f32 */
    /* nonblocking all-reduces since the last wait */
    MPI_Request *reqs;         /* [n_reqs] outstanding (capacity cap_reqs, grown, kept) */
    int n_reqs, cap_reqs;
    int started;               /* starts since the last wait */
    double busy_s;             /* host seconds inside their MPI calls */
    double t_last;             /* when the last start returned */
} mpi_state;

static chm_status mpi_check(int e, const char *op, chm_err *err) {
    if (e == MPI_SUCCESS) return CHM_OK;
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    MPI_Error_string(e, s, &n);
    return CHM_ERR(err, CHM_ERR_DEVICE, "mpi %s: %.*s", op, n, s);
}

/* ---- the process ---------------------------------------------------------------------- */

/* The processes of this machine: rank and size in a shared-memory split of the world. */
static chm_status local_ranks(chm_comm *c, chm_err *err) {
    MPI_Comm node;
    int e =
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    if (e == MPI_SUCCESS) e = MPI_Comm_rank(node, &c->local_rank);
    if (e == MPI_SUCCESS) e = MPI_Comm_size(node, &c->local_size);
    if (e == MPI_SUCCESS) e = MPI_Comm_free(&node);
    return mpi_check(e, "local ranks", err);
}

chm_status chm_comm_mpi_init(chm_comm *c, chm_err *err) {
    int inited = 0, provided = 0, e = MPI_Initialized(&inited);
    if (e == MPI_SUCCESS && !inited) {
        /* only the main thread calls MPI (OpenMP threads never do) */
        e = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        c->mpi_inited = e == MPI_SUCCESS;
    }
    if (e == MPI_SUCCESS) e = MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    if (e == MPI_SUCCESS) e = MPI_Comm_size(MPI_COMM_WORLD, &c->world);
    chm_status rc = mpi_check(e, "init", err);
    if (rc == CHM_OK) rc = local_ranks(c, err);
    c->mpi_launched = rc == CHM_OK;
    return rc;
}

void chm_comm_mpi_finalize(chm_comm *c) {
    (void)c;
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

void chm_comm_mpi_abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    abort(); /* MPI_Abort does not return; this keeps the promise if it did */
}

chm_status chm_comm_mpi_bcast_bytes(chm_comm *c, void *bytes, int n, int root, chm_err *err) {
    (void)c;
    return mpi_check(MPI_Bcast(bytes, n, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast", err);
}

/* ---- dtypes and ops ------------------------------------------------------------------- */

static void sum_bf16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = chm_f32_to_bf16(chm_bf16_to_f32(a[i]) + chm_bf16_to_f32(b[i]));
}

static void sum_f16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = chm_f32_to_f16(chm_f16_to_f32(a[i]) + chm_f16_to_f32(b[i]));
}

static MPI_Datatype mpi_type(chm_dtype dt) {
    switch (dt) {
    case CHM_F32: return MPI_FLOAT;
    case CHM_F64: return MPI_DOUBLE;
    case CHM_I32: return MPI_INT32_T;
    default: return MPI_UINT16_T; /* bf16, f16: moved as words, added by the user ops */
    }
}

static MPI_Op sum_op(const chm_comm *c, chm_dtype dt) {
    const mpi_state *s = c->state;
    return dt == CHM_BF16 ? s->sum_bf16 : dt == CHM_F16 ? s->sum_f16 : MPI_SUM;
}

/* ---- host staging ---------------------------------------------------------------------- */

/* Host bytes of a tensor: the buffer itself (host-memory backends) or a staged copy. */
typedef struct host_view {
    char *p;
    bool staged;
} host_view;

/* Debug only: CHIMERA_COMM_STAGE=1 stages host-memory tensors too, so that the cpu backend
 * tests the download/upload path the vulkan backend takes. */
static bool force_staging(void) {
    const char *s = getenv("CHIMERA_COMM_STAGE");
    return s && *s == '1';
}

/* The host view of t, holding t's elements [begin, begin + count) (count 0: none needed). */
static chm_status stage_in(chm_comm *c, const chm_tensor *t, int64_t begin, int64_t count,
                           host_view *h, chm_err *err) {
    chm_backend *be = c->be;
    size_t ds = chm_dtype_size(t->dtype), nb = chm_tensor_nbytes(t);
    h->staged = t->buf->host == NULL || force_staging();
    if (!h->staged) {
        h->p = (char *)t->buf->host + t->offset;
        chm_status rc = chm_sync(be);
        return rc ? CHM_ERR(err, rc, "comm: %s", be->err.msg) : CHM_OK;
    }
    h->p = malloc(nb ? nb : 1);
    if (!h->p) return CHM_ERR(err, CHM_ERR_NOMEM, "comm: no memory to stage %zu bytes", nb);
    chm_tensor v;
    chm_status rc = CHM_OK;
    if (count > 0) rc = chm_tensor_view(t, begin, 1, &count, &v, err);
    if (rc == CHM_OK && count > 0 && chm_download(be, &v, h->p + (size_t)begin * ds) != CHM_OK)
        rc = CHM_ERR(err, CHM_ERR_DEVICE, "comm: staging download: %s", be->err.msg);
    if (rc) free(h->p);
    return rc;
}

/* Upload elements [begin, begin + count) of a staged view back into t, then free it. */
static chm_status stage_out(chm_comm *c, const chm_tensor *t, int64_t begin, int64_t count,
                            host_view *h, chm_err *err) {
    if (!h->staged) return CHM_OK;
    chm_status rc = CHM_OK;
    chm_tensor v;
    if (count > 0) rc = chm_tensor_view(t, begin, 1, &count, &v, err);
    if (rc == CHM_OK && count > 0 &&
        chm_upload(c->be, &v, h->p + (size_t)begin * chm_dtype_size(t->dtype)) != CHM_OK)
        rc = CHM_ERR(err, CHM_ERR_DEVICE, "comm: staging upload: %s", c->be->err.msg);
    free(h->p);
    return rc;
}

/* ---- chunked calls on host memory -------------------------------------------------------- */

/* What one chunked call does: all-reduce, broadcast or reduce of [p, p + n elements), or a
 * nonblocking all-reduce whose requests go to the state's list (room made by the caller). */
typedef enum { RANGE_ALLREDUCE, RANGE_BCAST, RANGE_REDUCE, RANGE_IALLREDUCE } range_kind;

static chm_status range_call(chm_comm *c, range_kind k, char *p, int64_t n, chm_dtype dt,
                             int root, chm_err *err) {
    mpi_state *s = c->state;
    MPI_Datatype ty = mpi_type(dt);
    size_t ds = chm_dtype_size(dt);
    int64_t ch = chm_comm_chunk();
    static const char *const names[] = {"all_reduce", "broadcast", "reduce", "iallreduce"};
    for (int64_t off = 0; off < n; off += ch) {
        int cnt = (int)(n - off < ch ? n - off : ch);
        char *q = p + (size_t)off * ds;
        int e;
        if (k == RANGE_ALLREDUCE)
            e = MPI_Allreduce(MPI_IN_PLACE, q, cnt, ty, sum_op(c, dt), MPI_COMM_WORLD);
        else if (k == RANGE_BCAST)
            e = MPI_Bcast(q, cnt, ty, root, MPI_COMM_WORLD);
        else if (k == RANGE_IALLREDUCE)
            e = MPI_Iallreduce(MPI_IN_PLACE, q, cnt, ty, sum_op(c, dt), MPI_COMM_WORLD,
                               &s->reqs[s->n_reqs++]);
        else if (c->rank == root)
            e = MPI_Reduce(MPI_IN_PLACE, q, cnt, ty, sum_op(c, dt), root, MPI_COMM_WORLD);
        else
            e = MPI_Reduce(q, NULL, cnt, ty, sum_op(c, dt), root, MPI_COMM_WORLD);
        chm_status rc = mpi_check(e, names[k], err);
        if (rc) return rc;
    }
    return CHM_OK;
}

/* ---- the transport ------------------------------------------------------------------------ */

static chm_status mpi_all_reduce(chm_comm *c, const chm_tensor *t, chm_err *err) {
    int64_t n = chm_tensor_numel(t);
    host_view h;
    chm_status rc = stage_in(c, t, 0, n, &h, err);
    if (rc) return rc;
    rc = range_call(c, RANGE_ALLREDUCE, h.p, n, t->dtype, 0, err);
    chm_status rc2 = stage_out(c, t, 0, rc ? 0 : n, &h, err);
    return rc ? rc : rc2;
}

static chm_status mpi_broadcast(chm_comm *c, const chm_tensor *t, int root, chm_err *err) {
    int64_t n = chm_tensor_numel(t);
    bool me = c->rank == root;
    host_view h;
    chm_status rc = stage_in(c, t, 0, me ? n : 0, &h, err);
    if (rc) return rc;
    rc = range_call(c, RANGE_BCAST, h.p, n, t->dtype, root, err);
    chm_status rc2 = stage_out(c, t, 0, rc || me ? 0 : n, &h, err);
    return rc ? rc : rc2;
}

static chm_status mpi_all_gather(chm_comm *c, const chm_tensor *t, chm_err *err) {
    int64_t n = chm_tensor_numel(t), b, cnt;
    size_t ds = chm_dtype_size(t->dtype);
    chm_comm_block(n, c->world, c->rank, &b, &cnt);
    host_view h;
    chm_status rc = stage_in(c, t, b, cnt, &h, err);
    if (rc) return rc;
    for (int r = 0; rc == CHM_OK && r < c->world; r++) {
        int64_t rb, rn;
        chm_comm_block(n, c->world, r, &rb, &rn);
        rc = range_call(c, RANGE_BCAST, h.p + (size_t)rb * ds, rn, t->dtype, r, err);
    }
    chm_status rc2 = stage_out(c, t, 0, rc ? 0 : n, &h, err);
    return rc ? rc : rc2;
}

static chm_status mpi_reduce_scatter(chm_comm *c, const chm_tensor *t, chm_err *err) {
    int64_t n = chm_tensor_numel(t), b, cnt;
    size_t ds = chm_dtype_size(t->dtype);
    chm_comm_block(n, c->world, c->rank, &b, &cnt);
    host_view h;
    chm_status rc = stage_in(c, t, 0, n, &h, err);
    if (rc) return rc;
    for (int r = 0; rc == CHM_OK && r < c->world; r++) {
        int64_t rb, rn;
        chm_comm_block(n, c->world, r, &rb, &rn);
        rc = range_call(c, RANGE_REDUCE, h.p + (size_t)rb * ds, rn, t->dtype, r, err);
    }
    chm_status rc2 = stage_out(c, t, b, rc ? 0 : cnt, &h, err);
    return rc ? rc : rc2;
}

static chm_status mpi_barrier(chm_comm *c, chm_err *err) {
    (void)c;
    return mpi_check(MPI_Barrier(MPI_COMM_WORLD), "barrier", err);
}

static chm_status mpi_sum_host(chm_comm *c, double *x, int n, chm_err *err) {
    (void)c;
    return mpi_check(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
                     "sum_host", err);
}

/* ---- nonblocking all-reduce ---------------------------------------------------------------- */

/* In place: the backend's buffers are host memory and staging is not forced. */
static bool mpi_overlaps(const chm_comm *c) {
    return (c->be->caps & CHM_CAP_HOST_MEMORY) && !force_staging();
}

/* MPI_Iallreduce of t in chunks, on the buffer itself. */
static chm_status istart(chm_comm *c, const chm_tensor *t, chm_err *err) {
    mpi_state *s = c->state;
    int64_t n = chm_tensor_numel(t), ch = chm_comm_chunk();
    int more = (int)((n + ch - 1) / ch);
    if (s->n_reqs + more > s->cap_reqs) {
        int cap = 2 * (s->n_reqs + more);
        MPI_Request *r = realloc(s->reqs, (size_t)cap * sizeof *r);
        if (!r) return CHM_ERR(err, CHM_ERR_NOMEM, "comm all_reduce_start: no memory");
        s->reqs = r, s->cap_reqs = cap;
    }
    chm_status rc = chm_sync(c->be); /* the backward's ops up to here are done */
    if (rc) return CHM_ERR(err, rc, "comm: %s", c->be->err.msg);
    char *p = (char *)t->buf->host + t->offset;
    return range_call(c, RANGE_IALLREDUCE, p, n, t->dtype, 0, err);
}

static chm_status mpi_all_reduce_start(chm_comm *c, const chm_tensor *t, chm_err *err) {
    mpi_state *s = c->state;
    double t0 = chm_comm_now();
    chm_status rc = mpi_overlaps(c) && t->buf->host ? istart(c, t, err) : mpi_all_reduce(c, t, err);
    s->started++;
    s->t_last = chm_comm_now();
    s->busy_s += s->t_last - t0;
    return rc;
}

static chm_status mpi_progress(chm_comm *c, chm_err *err) {
    mpi_state *s = c->state;
    if (s->n_reqs == 0) return CHM_OK;
    double t0 = chm_comm_now();
    int done = 0;
    int e = MPI_Testall(s->n_reqs, s->reqs, &done, MPI_STATUSES_IGNORE);
    if (e == MPI_SUCCESS && done) s->n_reqs = 0;
    s->busy_s += chm_comm_now() - t0;
    return mpi_check(e, "testall", err);
}

static chm_status mpi_wait_all(chm_comm *c, chm_comm_timing *tm, chm_err *err) {
    mpi_state *s = c->state;
    double t0 = chm_comm_now();
    int e = s->n_reqs ? MPI_Waitall(s->n_reqs, s->reqs, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
    double t1 = chm_comm_now();
    *tm = (chm_comm_timing){.started = s->started, .busy_s = s->busy_s + (t1 - t0),
                            .exposed_s = s->started ? t1 - s->t_last : 0};
    s->n_reqs = s->started = 0;
    s->busy_s = 0;
    return mpi_check(e, "waitall", err);
}

static void mpi_detach(chm_comm *c, bool failed) {
    mpi_state *s = c->state;
    if (s && !failed) {
        MPI_Op_free(&s->sum_bf16);
        MPI_Op_free(&s->sum_f16);
    }
    if (s) free(s->reqs);
    free(s);
}

static const comm_impl mpi_impl = {
    .name = "mpi",
    .all_reduce = mpi_all_reduce,
    .reduce_scatter = mpi_reduce_scatter,
    .all_gather = mpi_all_gather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .sum_host = mpi_sum_host,
    .all_reduce_start = mpi_all_reduce_start,
    .progress = mpi_progress,
    .wait_all = mpi_wait_all,
    .overlaps = mpi_overlaps,
    .detach = mpi_detach,
};

/* "Open MPI v4.1.4" from MPI's library version string (up to its first comma). */
static void library_name(char *out, size_t n) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(v, &len) != MPI_SUCCESS) len = 0;
    v[len < (int)sizeof v ? len : (int)sizeof v - 1] = '\0';
    v[strcspn(v, ",\n")] = '\0';
    snprintf(out, n, "%s", v[0] ? v : "MPI");
}

chm_status chm_comm_mpi_attach(chm_comm *c, chm_err *err) {
    mpi_state *s = calloc(1, sizeof *s);
    if (!s) return CHM_ERR(err, CHM_ERR_NOMEM, "comm: no memory");
    int e = MPI_Op_create(sum_bf16, 1, &s->sum_bf16);
    if (e == MPI_SUCCESS) e = MPI_Op_create(sum_f16, 1, &s->sum_f16);
    chm_status rc = mpi_check(e, "op create", err);
    if (rc) {
        free(s);
        return rc;
    }
    c->state = s;
    c->impl = &mpi_impl;
    char lib[96];
    library_name(lib, sizeof lib);
    bool direct = mpi_overlaps(c);
    snprintf(c->desc, sizeof c->desc, "mpi (%s, host-staged%s), %d ranks", lib,
             direct ? " in place" : " through downloads and uploads", c->world);
    return CHM_OK;
}

#else /* no MPI in this build */

static const char *const no_mpi =
    "this chimera was built without MPI: install libopenmpi-dev openmpi-bin (tools/bootstrap.sh) "
    "and rebuild";

chm_status chm_comm_mpi_init(chm_comm *c, chm_err *err) {
    (void)c;
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "launched by mpirun (%s processes) but %s",
                   n ? n : "?", no_mpi);
}

void chm_comm_mpi_finalize(chm_comm *c) { (void)c; }

void chm_comm_mpi_abort(int code) { (void)code; }

chm_status chm_comm_mpi_bcast_bytes(chm_comm *c, void *bytes, int n, int root, chm_err *err) {
    (void)c, (void)bytes, (void)n, (void)root;
    return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "%s", no_mpi);
}

chm_status chm_comm_mpi_attach(chm_comm *c, chm_err *err) {
    (void)c;
    return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "%s", no_mpi);
}

#endif
