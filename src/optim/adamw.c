/*
 * adamw.c: AdamW over the model's parameter buffer, gradient norm and
 * clipping (chimera/optim.h).
 *
 * The parameter buffer is one flat array of E elements (the model's decayed
 * region, then the others, each parameter padded); the moments get one
 * buffer of 2*E elements, exp_avg at [0, E) and exp_avg_sq at [E, 2E), so a
 * parameter's moments sit at its own element offset. At creation the
 * parameters are walked in buffer order and cut into segments of equal
 * weight decay (a parameter's padding belongs to it): a step is one fused
 * chm_adamw_step per segment. Padding holds zeros in params and grads, so
 * the update leaves it at zero. In mixed precision (chimera/model.h) the
 * moments take the master dtype (f32), the step reads 16-bit gradients and
 * writes the rounded new weights into the model's compute copy (param_lowp).
 *
 * ZeRO-1 (data parallel, chm_optim_options.shard): the optimizer owns the
 * element range [lo, lo + nloc) of the flat buffers. The segments are cut
 * to that range, the moments hold only its nloc elements (exp_avg at
 * [0, nloc), exp_avg_sq at [nloc, 2 nloc)), and a step updates only its
 * parameters; the trainer all-gathers the parameters afterwards.
 */
#include "chimera/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A run of elements [start, start+n) of the flat buffers with one weight decay. */
typedef struct segment {
    int64_t start, n;
    bool decay;
} segment;

struct chm_optim {
    chm_model *model;
    chm_backend *be;
    chm_dtype dt;
    double beta1, beta2, eps, weight_decay;
    bool decay_embeddings;
    int64_t updates;         /* AdamW's t: updates applied */
    int64_t numel;           /* E: elements of the parameter buffer */
    size_t base;             /* byte offset of element 0 in the parameter/gradient buffers */
    int64_t first;           /* the same in elements: parameter offsets are relative to it */
    chm_buffer *pbuf, *gbuf; /* the model's buffers */
    chm_dtype gdt;           /* the gradients' and compute copy's dtype (16-bit when mixed) */
    size_t gbase;            /* byte offset of element 0 in the gradient buffer */
    chm_buffer *lbuf;        /* mixed precision: the compute copy (param_lowp), else NULL */
    size_t lbase;            /* byte offset of element 0 in it */
    int64_t lo, nloc;        /* the shard [lo, lo + nloc) of [0, E) (0, E unsharded) */
    chm_buffer *state;       /* [2 nloc]: exp_avg then exp_avg_sq of the shard */
    chm_buffer *norm_buf;    /* [2]: squared norms of the two gradient regions */
    chm_dtype norm_dt;       /* f64 where the backend has it, else f32 */
    segment *seg;
    int n_seg;
};

static bool is_embedding(const char *name) {
    return strcmp(name, "embed.weight") == 0 || strcmp(name, "lm_head.weight") == 0;
}

bool chm_optim_decays(const chm_optim *o, const chm_model_param *p) {
    return p->decay && (o->decay_embeddings || !is_embedding(p->name));
}

static int cmp_offset(const void *a, const void *b) {
    const chm_model_param *x = *(const chm_model_param *const *)a;
    const chm_model_param *y = *(const chm_model_param *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Cut [0, E) into segments of equal decay, walking the parameters by offset. */
static chm_status build_segments(chm_optim *o, chm_err *err) {
    int n = chm_model_param_count(o->model);
    const chm_model_param **order = malloc((size_t)(n ? n : 1) * sizeof *order);
    o->seg = malloc((size_t)(n ? n : 1) * sizeof *o->seg);
    if (!order || !o->seg) {
        free(order);
        return CHM_ERR(err, CHM_ERR_NOMEM, "optimizer: no memory for %d segments", n);
    }
    for (int i = 0; i < n; i++) order[i] = chm_model_param_get(o->model, i);
    qsort(order, (size_t)n, sizeof *order, cmp_offset);
    o->n_seg = 0;
    for (int i = 0; i < n; i++) {
        int64_t start = i == 0 ? 0 : order[i]->offset - o->first; /* leading padding joins */
        int64_t end = i + 1 < n ? order[i + 1]->offset - o->first : o->numel;
        bool d = chm_optim_decays(o, order[i]);
        if (o->n_seg > 0 && o->seg[o->n_seg - 1].decay == d)
            o->seg[o->n_seg - 1].n = end - o->seg[o->n_seg - 1].start;
        else
            o->seg[o->n_seg++] = (segment){start, end - start, d};
    }
    free(order);
    return CHM_OK;
}

/* ZeRO-1: cut the segments to the shard [lo, lo + nloc), dropping those outside it. */
static void shard_segments(chm_optim *o) {
    int k = 0;
    for (int i = 0; i < o->n_seg; i++) {
        int64_t b = o->seg[i].start > o->lo ? o->seg[i].start : o->lo;
        int64_t e = o->seg[i].start + o->seg[i].n, he = o->lo + o->nloc;
        if (e > he) e = he;
        if (e > b) o->seg[k++] = (segment){b, e - b, o->seg[i].decay};
    }
    o->n_seg = k;
}

/* The shard of the options (the whole buffer without one); CHM_ERR_INVALID_ARG outside [0, E). */
static chm_status set_shard(chm_optim *o, const chm_optim_options *opt, chm_err *err) {
    o->lo = 0, o->nloc = o->numel;
    if (!opt || !opt->shard) return CHM_OK;
    int64_t b = opt->shard_begin, n = opt->shard_count;
    if (b < 0 || n < 0 || b + n > o->numel)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "optimizer: shard [%lld, +%lld) outside the %lld "
                       "elements of the parameter buffer", (long long)b, (long long)n,
                       (long long)o->numel);
    o->lo = opt->shard_begin, o->nloc = opt->shard_count;
    shard_segments(o);
    return CHM_OK;
}

/* Find the flat layout: element count and the byte offset of element 0 in each buffer. */
static void find_layout(chm_optim *o) {
    chm_tensor pd, gd, pn, gn, ld;
    chm_model_param_region(o->model, true, &pd, &gd);
    chm_model_param_region(o->model, false, &pn, &gn);
    o->numel = chm_tensor_numel(&pd) + chm_tensor_numel(&pn);
    o->base = pd.offset;
    o->first = (int64_t)(pd.offset / chm_dtype_size(o->dt));
    o->pbuf = pd.buf;
    o->gbuf = gd.buf;
    o->gdt = gd.dtype;
    o->gbase = gd.offset;
    bool mixed = chm_model_compute_region(o->model, true, &ld);
    o->lbuf = mixed ? ld.buf : NULL;
    o->lbase = ld.offset;
}

static chm_status alloc_state(chm_optim *o, chm_err *err) {
    size_t ds = chm_dtype_size(o->dt);
    o->norm_dt = (o->be->caps & CHM_CAP_F64) ? CHM_F64 : CHM_F32;
    size_t bytes = (size_t)(2 * o->nloc) * ds;
    chm_status rc = chm_buffer_alloc(o->be, bytes ? bytes : ds, &o->state);
    if (rc == CHM_OK) rc = chm_buffer_alloc(o->be, 2 * chm_dtype_size(o->norm_dt), &o->norm_buf);
    if (rc != CHM_OK)
        return CHM_ERR(err, rc, "optimizer: cannot allocate %zu bytes of moments: %s",
                       bytes, o->be->err.msg);
    return chm_optim_reset(o, err);
}

chm_status chm_optim_create(chm_model *m, const chm_config_train *tc,
                            const chm_optim_options *opt, chm_optim **out, chm_err *err) {
    if (!m || !tc || !out || !chm_model_backend(m))
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "optimizer: need a model with a backend and a config");
    *out = NULL;
    chm_optim *o = calloc(1, sizeof *o);
    if (!o) return CHM_ERR(err, CHM_ERR_NOMEM, "optimizer: no memory");
    o->model = m;
    o->be = chm_model_backend(m);
    o->dt = chm_model_master_dtype(m); /* moments: f32 in mixed precision */
    o->beta1 = tc->betas[0], o->beta2 = tc->betas[1];
    o->eps = tc->eps, o->weight_decay = tc->weight_decay;
    o->decay_embeddings = opt && opt->decay_embeddings;
    find_layout(o);
    chm_status rc = build_segments(o, err);
    if (rc == CHM_OK) rc = set_shard(o, opt, err);
    if (rc == CHM_OK) rc = alloc_state(o, err);
    if (rc != CHM_OK) {
        chm_optim_free(o);
        return rc;
    }
    *out = o;
    return CHM_OK;
}

void chm_optim_free(chm_optim *o) {
    if (!o) return;
    chm_buffer_free(o->state);
    chm_buffer_free(o->norm_buf);
    free(o->seg);
    free(o);
}

chm_status chm_optim_reset(chm_optim *o, chm_err *err) {
    chm_tensor all = chm_tensor_1d(o->state, 0, o->dt, 2 * o->nloc);
    o->updates = 0;
    chm_status rc = chm_fill(o->be, &all, 0.0);
    return rc ? CHM_ERR(err, rc, "optimizer: %s", o->be->err.msg) : CHM_OK;
}

/* ---- gradient norm and clipping -------------------------------------------------------- */

chm_status chm_optim_grad_norm(chm_optim *o, double *norm, chm_err *err) {
    double sq[2] = {0, 0};
    float sqf[2] = {0, 0};
    size_t ns = chm_dtype_size(o->norm_dt);
    for (int r = 0; r < 2; r++) {
        chm_tensor g, out = chm_tensor_1d(o->norm_buf, (size_t)r * ns, o->norm_dt, 1);
        chm_model_param_region(o->model, r == 0, NULL, &g);
        chm_status rc = chm_tensor_numel(&g) > 0 ? chm_sum_squares(o->be, &out, &g)
                                                 : chm_fill(o->be, &out, 0.0);
        if (rc) return CHM_ERR(err, rc, "grad norm: %s", o->be->err.msg);
    }
    chm_tensor both = chm_tensor_1d(o->norm_buf, 0, o->norm_dt, 2);
    chm_status rc = chm_download(o->be, &both, o->norm_dt == CHM_F64 ? (void *)sq : (void *)sqf);
    if (rc) return CHM_ERR(err, rc, "grad norm: %s", o->be->err.msg);
    if (o->norm_dt == CHM_F32) sq[0] = sqf[0], sq[1] = sqf[1];
    *norm = sqrt(sq[0] + sq[1]);
    return CHM_OK;
}

double chm_optim_clip_factor(double norm, double clip) {
    return clip > 0 && norm > clip ? clip / norm : 1.0;
}

/* ---- the update --------------------------------------------------------------------- */

chm_status chm_optim_step(chm_optim *o, double lr, double grad_scale, chm_err *err) {
    size_t ds = chm_dtype_size(o->dt);
    chm_adamw_args a = {.lr = lr, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps,
                        .step = o->updates + 1, .grad_scale = grad_scale};
    for (int s = 0; s < o->n_seg; s++) {
        const segment *g = &o->seg[s];
        size_t off = (size_t)g->start * ds, loff = (size_t)g->start * chm_dtype_size(o->gdt);
        chm_tensor p = chm_tensor_1d(o->pbuf, o->base + off, o->dt, g->n);
        chm_tensor gr = chm_tensor_1d(o->gbuf, o->gbase + loff, o->gdt, g->n);
        size_t moff = (size_t)(g->start - o->lo) * ds; /* the moments hold the shard only */
        chm_tensor m = chm_tensor_1d(o->state, moff, o->dt, g->n);
        chm_tensor v = chm_tensor_1d(o->state, (size_t)o->nloc * ds + moff, o->dt, g->n);
        /* mixed precision: the same kernel writes the rounded new weights to the compute copy */
        chm_tensor lp = chm_tensor_1d(o->lbuf, o->lbase + loff, o->gdt, g->n);
        a.weight_decay = g->decay ? o->weight_decay : 0.0;
        chm_status rc = chm_adamw_step(o->be, &p, &gr, &m, &v, o->lbuf ? &lp : NULL, &a);
        if (rc) return CHM_ERR(err, rc, "optimizer step: %s", o->be->err.msg);
    }
    o->updates++;
    return CHM_OK;
}

int64_t chm_optim_updates(const chm_optim *o) { return o->updates; }
void chm_optim_set_updates(chm_optim *o, int64_t t) { o->updates = t; }

void chm_optim_moments(const chm_optim *o, const chm_model_param *p, chm_tensor *exp_avg,
                       chm_tensor *exp_avg_sq) {
    int64_t at = p->offset - o->first - o->lo;
    size_t ds = chm_dtype_size(o->dt), off = (size_t)at * ds;
    bool inside = at >= 0 && at + p->numel <= o->nloc; /* always, unless sharded */
    *exp_avg = chm_tensor_make(inside ? o->state : NULL, off, o->dt, p->ndim, p->shape);
    *exp_avg_sq = chm_tensor_make(inside ? o->state : NULL, (size_t)o->nloc * ds + off, o->dt,
                                  p->ndim, p->shape);
}

void chm_optim_moment_buffers(const chm_optim *o, chm_tensor *exp_avg, chm_tensor *exp_avg_sq) {
    size_t ds = chm_dtype_size(o->dt);
    *exp_avg = chm_tensor_1d(o->state, 0, o->dt, o->nloc);
    *exp_avg_sq = chm_tensor_1d(o->state, (size_t)o->nloc * ds, o->dt, o->nloc);
}

size_t chm_optim_bytes(const chm_optim *o) {
    return (size_t)(2 * o->nloc) * chm_dtype_size(o->dt);
}

void chm_optim_shard(const chm_optim *o, int64_t *begin, int64_t *count, int64_t *total) {
    if (begin) *begin = o->lo;
    if (count) *count = o->nloc;
    if (total) *total = o->numel;
}
