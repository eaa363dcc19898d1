/*
 * comm_check.c: chm_comm_selftest (chimera/comm.h): every collective of the
 * attached transport against a reference computed on the host, then the
 * bandwidth of one large all-reduce. `chimera train --comm-check` runs it,
 * under mpirun or as a hand-started group, before trusting a machine with a
 * run.
 *
 * all_reduce_start checks the nonblocking all-reduce of the gradient buckets
 * (three uneven views of one tensor, started, then waited for).
 *
 * Inputs are small integers that depend on rank and index, so that every
 * sum is exact in every dtype (bf16 included) and results compare exactly.
 * Sizes cover one element, a block smaller than the alignment (so some ranks
 * own nothing), uneven blocks, and blocks that tile the tensor exactly (the
 * path where NCCL runs its own all-gather and reduce-scatter). Each rank
 * checks its own results; the failure count is summed so that every rank
 * returns the same verdict.
 */
#include "comm_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"

typedef enum {
    OP_ALL_REDUCE,
    OP_REDUCE_SCATTER,
    OP_ALL_GATHER,
    OP_BROADCAST,
    OP_ALL_REDUCE_START, /* three uneven buckets started, then waited for */
    OP_COUNT
} check_op;

static const char *const op_names[OP_COUNT] = {"all_reduce", "reduce_scatter", "all_gather",
                                               "broadcast", "all_reduce_start"};

typedef struct checker {
    chm_comm *c;
    int fails;
    char first[400];  /* this rank's first wrong result */
} checker;

/* Rank r's input at index i: a small integer, so sums are exact in every dtype. */
static double value(int r, int64_t i) { return (double)((i * 7 + r * 3) % 11) - 5; }

static void to_dtype(chm_dtype dt, const double *x, void *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case CHM_F64: ((double *)out)[i] = x[i]; break;
        case CHM_I32: ((int32_t *)out)[i] = (int32_t)x[i]; break;
        case CHM_BF16: ((uint16_t *)out)[i] = chm_f32_to_bf16((float)x[i]); break;
        case CHM_F16: ((uint16_t *)out)[i] = chm_f32_to_f16((float)x[i]); break;
        default: ((float *)out)[i] = (float)x[i]; break;
        }
    }
}

static void from_dtype(chm_dtype dt, const void *in, double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case CHM_F64: x[i] = ((const double *)in)[i]; break;
        case CHM_I32: x[i] = ((const int32_t *)in)[i]; break;
        case CHM_BF16: x[i] = chm_bf16_to_f32(((const uint16_t *)in)[i]); break;
        case CHM_F16: x[i] = chm_f16_to_f32(((const uint16_t *)in)[i]); break;
        default: x[i] = ((const float *)in)[i]; break;
        }
    }
}

/* The owner of element i: the rank whose block holds it. */
static int owner(int64_t n, int world, int64_t i) {
    for (int r = 0; r < world; r++) {
        int64_t b, k;
        chm_comm_block(n, world, r, &b, &k);
        if (i >= b && i < b + k) return r;
    }
    return 0;
}

/* Input x (this rank's) and expected result want of op over n elements; lo/hi: the range
 * of elements that must match (reduce_scatter: this rank's block). */
static void reference(const checker *k, check_op op, int64_t n, double *x, double *want,
                      int64_t *lo, int64_t *hi) {
    int world = chm_comm_size(k->c), me = chm_comm_rank(k->c), root = world - 1;
    *lo = 0, *hi = n;
    if (op == OP_REDUCE_SCATTER) {
        chm_comm_block(n, world, me, lo, hi);
        *hi += *lo;
    }
    for (int64_t i = 0; i < n; i++) {
        int own = owner(n, world, i);
        x[i] = op == OP_ALL_GATHER && own != me ? 99 + me : value(me, i); /* junk off the block */
        double sum = 0;
        for (int r = 0; r < world; r++) sum += value(r, i);
        want[i] = op == OP_ALL_GATHER ? value(own, i) : op == OP_BROADCAST ? value(root, i) : sum;
    }
}

/* t in three uneven buckets (the first may be empty), each started as the gradient buckets
 * are, with a progress call after each, then the wait. */
static chm_status buckets(chm_comm *c, const chm_tensor *t, chm_err *err) {
    int64_t n = chm_tensor_numel(t), cut[4] = {0, n / 4, n / 4 + (n + 1) / 2, n};
    size_t ds = chm_dtype_size(t->dtype);
    chm_status rc = CHM_OK;
    for (int b = 0; rc == CHM_OK && b < 3; b++) {
        if (cut[b + 1] == cut[b]) continue;
        chm_tensor v = chm_tensor_1d(t->buf, t->offset + (size_t)cut[b] * ds, t->dtype,
                                     cut[b + 1] - cut[b]);
        rc = chm_comm_all_reduce_start(c, &v, err);
        if (rc == CHM_OK) rc = chm_comm_progress(c, err);
    }
    chm_status rc2 = chm_comm_wait_all(c, NULL, rc ? NULL : err);
    return rc ? rc : rc2;
}

static chm_status run_op(chm_comm *c, check_op op, const chm_tensor *t, chm_err *err) {
    switch (op) {
    case OP_ALL_REDUCE_START: return buckets(c, t, err);
    case OP_ALL_REDUCE: return chm_comm_all_reduce(c, t, err);
    case OP_REDUCE_SCATTER: return chm_comm_reduce_scatter(c, t, err);
    case OP_ALL_GATHER: return chm_comm_all_gather(c, t, err);
    default: return chm_comm_broadcast(c, t, chm_comm_size(c) - 1, err);
    }
}

/* One op on one dtype and size: upload, run, download, compare. */
static chm_status check_one(checker *k, check_op op, chm_dtype dt, int64_t n, chm_err *err) {
    chm_backend *be = k->c->be;
    size_t ds = chm_dtype_size(dt);
    double *x = malloc((size_t)n * 2 * sizeof *x);
    void *h = malloc((size_t)n * ds);
    chm_buffer *buf = NULL;
    chm_status rc = x && h ? chm_buffer_alloc(be, (size_t)n * ds, &buf) : CHM_ERR_NOMEM;
    if (rc) rc = CHM_ERR(err, rc, "comm check: cannot allocate %lld elements", (long long)n);
    chm_tensor t = chm_tensor_1d(buf, 0, dt, n);
    int64_t lo = 0, hi = 0;
    if (rc == CHM_OK) {
        reference(k, op, n, x, x + n, &lo, &hi);
        to_dtype(dt, x, h, n);
        rc = chm_upload(be, &t, h);
        if (rc) rc = CHM_ERR(err, rc, "comm check: %s", be->err.msg);
    }
    if (rc == CHM_OK) rc = run_op(k->c, op, &t, err);
    if (rc == CHM_OK && (rc = chm_download(be, &t, h)))
        rc = CHM_ERR(err, rc, "comm check: %s", be->err.msg);
    if (rc == CHM_OK) from_dtype(dt, h, x, n);
    for (int64_t i = lo; rc == CHM_OK && i < hi; i++) {
        if (x[i] == x[n + i]) continue;
        if (k->fails++ == 0)
            snprintf(k->first, sizeof k->first,
                     "%s %s n=%lld: rank %d element %lld is %g, expected %g", op_names[op],
                     chm_dtype_name(dt), (long long)n, chm_comm_rank(k->c), (long long)i, x[i],
                     x[n + i]);
        break;
    }
    chm_buffer_free(buf);
    free(x);
    free(h);
    return rc;
}

/* The dtypes the attached backend holds. */
static int dtypes_of(const chm_backend *be, chm_dtype *out) {
    int n = 0;
    out[n++] = CHM_F32;
    if (be->caps & CHM_CAP_F64) out[n++] = CHM_F64;
    if (be->caps & CHM_CAP_BF16) out[n++] = CHM_BF16;
    if (be->caps & CHM_CAP_F16) out[n++] = CHM_F16;
    out[n++] = CHM_I32;
    return n;
}

/* The bandwidth of a large f32 all-reduce (256 MiB on cuda, 4 MiB elsewhere), on rank 0's out. */
static chm_status bandwidth(chm_comm *c, FILE *out, chm_err *err) {
    int64_t n = !strcmp(c->be->name, "cuda") ? INT64_C(64) << 20 : INT64_C(1) << 20;
    chm_buffer *buf;
    chm_status rc = chm_buffer_alloc(c->be, (size_t)n * 4, &buf);
    if (rc) return CHM_ERR(err, rc, "comm check: %s", c->be->err.msg);
    chm_tensor t = chm_tensor_1d(buf, 0, CHM_F32, n);
    rc = chm_fill(c->be, &t, 1.0);
    if (rc) rc = CHM_ERR(err, rc, "comm check: %s", c->be->err.msg);
    if (rc == CHM_OK) rc = chm_comm_all_reduce(c, &t, err); /* warm up */
    if (rc == CHM_OK) rc = chm_comm_barrier(c, err);
    double t0 = chm_comm_now();
    const int iters = 5;
    for (int i = 0; rc == CHM_OK && i < iters; i++) rc = chm_comm_all_reduce(c, &t, err);
    if (rc == CHM_OK && (rc = chm_sync(c->be)))
        rc = CHM_ERR(err, rc, "comm check: %s", c->be->err.msg);
    double s = (chm_comm_now() - t0) / iters, bytes = (double)n * 4, w = chm_comm_size(c);
    if (rc == CHM_OK && out && chm_comm_rank(c) == 0)
        fprintf(
            out,
            "comm check: all_reduce of %.0f MiB f32: %.3f ms, algbw %.2f GB/s, busbw %.2f GB/s\n",
            bytes / 1048576.0, 1e3 * s, bytes / s / 1e9, bytes / s / 1e9 * 2 * (w - 1) / w);
    chm_buffer_free(buf);
    return rc;
}

/* Every op on one dtype at every size; one line on rank 0. */
static chm_status check_dtype(checker *k, chm_dtype dt, FILE *out, chm_err *err) {
    int world = chm_comm_size(k->c);
    const int64_t sizes[] = {1, 7, 1000, 2 * CHM_COMM_BLOCK_ALIGN * world};
    chm_status rc = CHM_OK;
    for (int op = 0; op < OP_COUNT; op++) {
        int before = k->fails;
        for (size_t s = 0; rc == CHM_OK && s < sizeof sizes / sizeof sizes[0]; s++)
            rc = check_one(k, (check_op)op, dt, sizes[s], err);
        if (rc) return rc;
        if (out && chm_comm_rank(k->c) == 0)
            fprintf(out, "comm check: %-16s %-4s n = 1, 7, 1000, %lld: %s\n", op_names[op],
                    chm_dtype_name(dt), (long long)sizes[3], k->fails > before ? "WRONG" : "ok");
    }
    return CHM_OK;
}

chm_status chm_comm_selftest(chm_comm *c, FILE *out, chm_err *err) {
    if (!c || !c->impl)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "comm check: the group is not attached");
    checker k = {.c = c};
    chm_dtype dts[8];
    int nd = dtypes_of(c->be, dts);
    if (out && c->rank == 0)
        fprintf(out, "comm check: %s, backend %s on %s\n", c->desc, c->be->name, c->be->device);
    chm_status rc = CHM_OK;
    for (int i = 0; rc == CHM_OK && i < nd; i++) rc = check_dtype(&k, dts[i], out, err);
    double h[2] = {(double)c->rank, (double)k.fails};
    if (rc == CHM_OK) rc = chm_comm_sum_host(c, h, 2, err);
    if (rc == CHM_OK && h[0] != (double)c->world * (c->world - 1) / 2)
        return CHM_ERR(err, CHM_ERR_INTERNAL, "comm check: sum_host of the ranks gave %g", h[0]);
    if (rc == CHM_OK && h[1] > 0)
        return CHM_ERR(err, CHM_ERR_INTERNAL, "comm check: %g wrong result(s) over the ranks; %s",
                       h[1], k.fails ? k.first : "this rank's were right");
    if (rc == CHM_OK) rc = chm_comm_barrier(c, err);
    /* tiny test chunks (CHIMERA_COMM_CHUNK) would make the bandwidth run take minutes */
    if (rc == CHM_OK && c->world > 1 && chm_comm_chunk() >= 4096) rc = bandwidth(c, out, err);
    if (rc == CHM_OK && out && c->rank == 0) fprintf(out, "comm check: every collective agrees\n");
    return rc;
}
