/*
 * params.c: the parameter table (names, shapes, offsets), the parameter,
 * gradient and compute-copy buffers, and the initialisation.
 *
 * The table is built by one walk over the architecture run twice: a counting
 * pass, then a filling pass into an array of exactly that size (size,
 * allocate once, point). Each entry records how it is initialised. Offsets
 * put every decayed parameter first, then the others, each padded to
 * MDL_PARAM_ALIGN elements so that views stay aligned on every backend.
 * Initial values are drawn on the host from the generator keyed by (seed,
 * name) of chimera/rng.h and uploaded: every backend starts identical.
 * In mixed precision the three buffers share the element layout (offsets
 * count elements), so one element index names the same weight in the master
 * buffer (f32), the gradient buffer and the compute copy (16-bit), and the
 * compute copy is refreshed by one cast of the whole buffer.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chimera/rng.h"
#include "model_internal.h"

/* Elements each parameter's offset is rounded up to (256 bytes of f32). */
#define MDL_PARAM_ALIGN 64

typedef enum init_kind {
    INIT_NORMAL,  /* normal(0, scale) */
    INIT_UNIFORM, /* uniform(-scale, scale) */
    INIT_ONES,
    INIT_A_LOG,  /* row c, column n: log(n + 1) */
    INIT_DT_BIAS /* softplus^-1 of dt log-uniform in [1e-3, 1e-1] */
} init_kind;

struct mdl_init {
    init_kind kind;
    double scale;
};

/* The walk's state: the model, and whether entries are written or only counted. */
typedef struct builder {
    chm_model *m;
    int n;
    bool fill;
    char prefix[48];
} builder;

/* Register one parameter "<prefix><name>" and return its index. */
static int add(builder *b, const char *name, init_kind kind, double scale, bool decay, int ndim,
               int64_t d0, int64_t d1, int64_t d2) {
    int i = b->n++;
    if (!b->fill) return i;
    chm_model_param *p = &b->m->params[i];
    snprintf(p->name, sizeof p->name, "%s%s", b->prefix, name);
    int64_t dims[3] = {d0, d1, d2};
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < CHM_MAX_DIMS; d++) {
        p->shape[d] = d < ndim ? dims[d] : 1;
        p->numel *= p->shape[d];
    }
    p->decay = decay;
    b->m->inits[i] = (struct mdl_init){kind, scale};
    return i;
}

/* A normal(0, std) matrix, decayed. */
static int add_mat(builder *b, const char *name, double std, int ndim, int64_t d0, int64_t d1,
                   int64_t d2) {
    return add(b, name, INIT_NORMAL, std, true, ndim, d0, d1, d2);
}

static int add_norm(builder *b, const char *name, int64_t C) {
    return add(b, name, INIT_ONES, 0, false, 1, C, 1, 1);
}

static void set_prefix(builder *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->prefix, sizeof b->prefix, fmt, ap);
    va_end(ap);
}

/* The mixer's parameters of one layer. */
static void add_mixer(builder *b, mdl_layer *ly, double resid_std) {
    const chm_model *m = b->m;
    if (ly->mixer == 'A') {
        ly->q = add_mat(b, "mixer.q_proj.weight", 0.02, 2, m->H * m->Dh, m->C, 1);
        ly->k = add_mat(b, "mixer.k_proj.weight", 0.02, 2, m->Hk * m->Dh, m->C, 1);
        ly->v = add_mat(b, "mixer.v_proj.weight", 0.02, 2, m->Hk * m->Dh, m->C, 1);
        ly->o = add_mat(b, "mixer.o_proj.weight", resid_std, 2, m->C, m->H * m->Dh, 1);
        return;
    }
    double conv_bound = 1.0 / sqrt((double)m->W);
    ly->in_proj = add_mat(b, "mixer.in_proj.weight", 0.02, 2, 2 * m->Di, m->C, 1);
    ly->conv_w = add(b, "mixer.conv1d.weight", INIT_UNIFORM, conv_bound, true, 2, m->Di, m->W, 1);
    ly->conv_b = add(b, "mixer.conv1d.bias", INIT_UNIFORM, conv_bound, false, 1, m->Di, 1, 1);
    ly->x_proj = add_mat(b, "mixer.x_proj.weight", 0.02, 2, m->Rk + 2 * m->N, m->Di, 1);
    ly->dt_w = add(b, "mixer.dt_proj.weight", INIT_UNIFORM, 1.0 / sqrt((double)m->Rk), true, 2,
                   m->Di, m->Rk, 1);
    ly->dt_b = add(b, "mixer.dt_proj.bias", INIT_DT_BIAS, 0, false, 1, m->Di, 1, 1);
    ly->A_log = add(b, "mixer.A_log", INIT_A_LOG, 0, false, 2, m->Di, m->N, 1);
    ly->D = add(b, "mixer.D", INIT_ONES, 0, false, 1, m->Di, 1, 1);
    ly->out_proj = add_mat(b, "mixer.out_proj.weight", resid_std, 2, m->C, m->Di, 1);
}

/* The FFN's parameters of one layer: dense SwiGLU or experts with a router. */
static void add_ffn(builder *b, mdl_layer *ly, double resid_std) {
    const chm_model *m = b->m;
    if (!ly->moe) {
        ly->w1 = add_mat(b, "ffn.w1.weight", 0.02, 2, m->F, m->C, 1);
        ly->w3 = add_mat(b, "ffn.w3.weight", 0.02, 2, m->F, m->C, 1);
        ly->w2 = add_mat(b, "ffn.w2.weight", resid_std, 2, m->C, m->F, 1);
        return;
    }
    ly->router = add_mat(b, "ffn.router.weight", 0.02, 2, m->E, m->C, 1);
    ly->w1 = add_mat(b, "ffn.experts.w1", 0.02, 3, m->E, m->Fe, m->C);
    ly->w3 = add_mat(b, "ffn.experts.w3", 0.02, 3, m->E, m->Fe, m->C);
    ly->w2 = add_mat(b, "ffn.experts.w2", resid_std, 3, m->E, m->C, m->Fe);
}

/* One layer (prefix already set). */
static void add_layer(builder *b, mdl_layer *ly, double resid_std) {
    memset(&ly->norm1, -1, sizeof *ly - offsetof(mdl_layer, norm1));
    ly->norm1 = add_norm(b, "norm1.weight", b->m->C);
    add_mixer(b, ly, resid_std);
    ly->norm2 = add_norm(b, "norm2.weight", b->m->C);
    add_ffn(b, ly, resid_std);
    if (ly->mod) ly->mod_router = add_mat(b, "mod.router.weight", 0.02, 2, 1, b->m->C, 1);
}

/* The whole walk. */
static void walk(builder *b) {
    chm_model *m = b->m;
    const chm_config_model *cfg = &m->cfg;
    double resid_std = 0.02 / sqrt(2.0 * (double)m->L);
    set_prefix(b, "");
    m->embed = add_mat(b, "embed.weight", 0.02, 2, m->V, m->C, 1);
    for (int l = 0; l < m->L; l++) {
        mdl_layer *ly = &m->layers[l];
        ly->mixer = (char)cfg->mixer[l];
        ly->moe = cfg->moe_layer[l] && m->E > 0;
        ly->mod = cfg->mod_layer[l];
        set_prefix(b, "layers.%d.", l);
        add_layer(b, ly, resid_std);
    }
    set_prefix(b, "");
    m->final_norm = add_norm(b, "final_norm.weight", m->C);
    m->lm_head =
        cfg->tie_embeddings ? m->embed : add_mat(b, "lm_head.weight", 0.02, 2, m->V, m->C, 1);
    for (int k = 0; k < m->depth; k++) {
        mdl_mtp *t = &m->mtp[k];
        set_prefix(b, "mtp.%d.", k);
        t->norm_h = add_norm(b, "norm_h.weight", m->C);
        t->norm_e = add_norm(b, "norm_e.weight", m->C);
        t->proj = add_mat(b, "proj.weight", 0.02, 3, 2, m->C, m->C);
        set_prefix(b, "mtp.%d.layer.", k);
        t->layer = (mdl_layer){.mixer = cfg->pattern[0], .moe = false, .mod = false};
        add_layer(b, &t->layer, resid_std);
        set_prefix(b, "mtp.%d.", k);
        t->norm_out = add_norm(b, "norm_out.weight", m->C);
    }
}

/* Offsets: decayed parameters first, each padded to MDL_PARAM_ALIGN elements. */
static void assign_offsets(chm_model *m) {
    int64_t at = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < m->n_params; i++) {
            chm_model_param *p = &m->params[i];
            if (p->decay != (pass == 0)) continue;
            p->offset = at;
            at += (p->numel + MDL_PARAM_ALIGN - 1) / MDL_PARAM_ALIGN * MDL_PARAM_ALIGN;
        }
        if (pass == 0) m->numel_decay = at;
    }
    m->numel_all = at;
}

chm_status mdl_params_build(chm_model *m, chm_err *err) {
    builder b = {m, 0, false, ""};
    walk(&b);
    m->n_params = b.n;
    m->params = calloc((size_t)b.n, sizeof *m->params);
    m->inits = calloc((size_t)b.n, sizeof *m->inits);
    if (!m->params || !m->inits)
        return CHM_ERR(err, CHM_ERR_NOMEM, "no memory for a table of %d parameters", b.n);
    b = (builder){m, 0, true, ""};
    walk(&b);
    assign_offsets(m);
    return CHM_OK;
}

/* One buffer of numel_all elements of dt, zeroed (the padding between parameters stays zero). */
static chm_status buffer_zeroed(chm_model *m, chm_dtype dt, chm_buffer **out) {
    chm_status rc = chm_buffer_alloc(m->be, (size_t)m->numel_all * chm_dtype_size(dt), out);
    if (rc != CHM_OK) return rc;
    chm_tensor all = chm_tensor_1d(*out, 0, dt, m->numel_all);
    return chm_fill(m->be, &all, 0.0);
}

chm_status mdl_params_alloc(chm_model *m, chm_err *err) {
    bool mixed = m->mdt != m->dt;
    chm_status rc = buffer_zeroed(m, m->mdt, &m->pbuf);
    if (rc == CHM_OK) rc = buffer_zeroed(m, m->dt, &m->gbuf);
    if (rc == CHM_OK && mixed) rc = buffer_zeroed(m, m->dt, &m->cbuf);
    if (rc != CHM_OK)
        return CHM_ERR(err, rc,
                       "cannot allocate the parameter buffers (%lld elements: %s master "
                       "weights, %s gradients%s): %s",
                       (long long)m->numel_all, chm_dtype_name(m->mdt), chm_dtype_name(m->dt),
                       mixed ? " and compute copy" : "", m->be->err.msg);
    for (int i = 0; i < m->n_params; i++) {
        chm_model_param *p = &m->params[i];
        size_t off = (size_t)p->offset * chm_dtype_size(m->dt);
        p->value = chm_tensor_make(m->pbuf, (size_t)p->offset * chm_dtype_size(m->mdt), m->mdt,
                                   p->ndim, p->shape);
        p->grad = chm_tensor_make(m->gbuf, off, m->dt, p->ndim, p->shape);
        p->compute = mixed ? chm_tensor_make(m->cbuf, off, m->dt, p->ndim, p->shape) : p->value;
    }
    return CHM_OK;
}

chm_status chm_model_refresh_compute(chm_model *m, chm_err *err) {
    if (!m || !m->be)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "refresh_compute: the model has no backend");
    if (!m->cbuf) return CHM_OK;
    chm_tensor master = chm_tensor_1d(m->pbuf, 0, m->mdt, m->numel_all);
    chm_tensor lowp = chm_tensor_1d(m->cbuf, 0, m->dt, m->numel_all);
    chm_status rc = chm_cast(m->be, &lowp, &master);
    if (rc != CHM_OK) return CHM_ERR(err, rc, "refresh_compute: %s", m->be->err.msg);
    return CHM_OK;
}

/* The initial values of parameter p (host doubles, x [numel]). */
/* Counters of the generator one element of an init kind takes (each element draws from
 * its own counters, so elements are independent of the order they are computed in). */
static uint64_t init_draws(int kind) {
    return kind == INIT_NORMAL ? 2 : (kind == INIT_UNIFORM || kind == INIT_DT_BIAS) ? 1 : 0;
}

/* Element i of a parameter whose generator has key `key`. */
static double init_one(const struct mdl_init *in, uint64_t key, int64_t i, int64_t cols) {
    chm_rng r = {key, (uint64_t)i * init_draws(in->kind)};
    switch (in->kind) {
    case INIT_NORMAL:
        return in->scale * chm_rng_normal(&r);
    case INIT_UNIFORM:
        return in->scale * (2.0 * chm_rng_uniform(&r) - 1.0);
    case INIT_ONES:
        return 1.0;
    case INIT_A_LOG:
        return log((double)(i % cols + 1));
    case INIT_DT_BIAS: {
        double lo = log(1e-3), hi = log(1e-1);
        double dt = fmax(exp(lo + (hi - lo) * chm_rng_uniform(&r)), 1e-4);
        return dt + log(-expm1(-dt)); /* softplus(x) = dt */
    }
    }
    return 0.0;
}

/* A parameter's initial values into x [numel], in parallel: the same values whatever the
 * thread count (chimera-1b's 1.15B normals took 50 s on one core). */
static void init_values(const chm_model_param *p, const struct mdl_init *in, uint64_t seed,
                        double *x) {
    uint64_t key = chm_rng_keyed(seed, p->name).key;
    int64_t cols = p->shape[p->ndim - 1];
#pragma omp parallel for schedule(static) if (p->numel > 65536)
    for (int64_t i = 0; i < p->numel; i++) x[i] = init_one(in, key, i, cols);
}

/* Upload host doubles into a parameter's master weights (f32 through f [numel]). */
static chm_status upload_param(chm_model *m, const chm_model_param *p, const double *x, float *f) {
    if (m->mdt == CHM_F64) return chm_upload(m->be, &p->value, x);
#pragma omp parallel for schedule(static) if (p->numel > 65536)
    for (int64_t i = 0; i < p->numel; i++) f[i] = (float)x[i];
    return chm_upload(m->be, &p->value, f);
}

chm_status chm_model_init_params(chm_model *m, uint64_t seed, chm_err *err) {
    if (!m || !m->be)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "init_params: the model has no backend");
    int64_t most = 1;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].numel > most) most = m->params[i].numel;
    double *x = malloc((size_t)most * sizeof *x);
    float *f = malloc((size_t)most * sizeof *f);
    if (!x || !f) {
        free(x);
        free(f);
        return CHM_ERR(err, CHM_ERR_NOMEM, "init_params: no memory for %lld values",
                       (long long)most);
    }
    chm_status rc = CHM_OK;
    for (int i = 0; i < m->n_params && rc == CHM_OK; i++) {
        init_values(&m->params[i], &m->inits[i], seed, x);
        rc = upload_param(m, &m->params[i], x, f);
    }
    free(x);
    free(f);
    if (rc != CHM_OK) return CHM_ERR(err, rc, "init_params: %s", m->be->err.msg);
    return chm_model_refresh_compute(m, err);
}

int chm_model_param_count(const chm_model *m) { return m ? m->n_params : 0; }

const chm_model_param *chm_model_param_get(const chm_model *m, int i) {
    return m && i >= 0 && i < m->n_params ? &m->params[i] : NULL;
}

const chm_model_param *chm_model_param_find(const chm_model *m, const char *name) {
    for (int i = 0; m && name && i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

/* Region `decay` of buffer buf holding dtype dt. */
static chm_tensor region(const chm_model *m, bool decay, chm_buffer *buf, chm_dtype dt) {
    int64_t off = decay ? 0 : m->numel_decay;
    int64_t n = decay ? m->numel_decay : m->numel_all - m->numel_decay;
    return chm_tensor_1d(buf, (size_t)off * chm_dtype_size(dt), dt, n);
}

void chm_model_param_region(const chm_model *m, bool decay, chm_tensor *params, chm_tensor *grads) {
    if (params) *params = region(m, decay, m->pbuf, m->mdt);
    if (grads) *grads = region(m, decay, m->gbuf, m->dt);
}

bool chm_model_compute_region(const chm_model *m, bool decay, chm_tensor *lowp) {
    *lowp = region(m, decay, m->cbuf, m->dt);
    return m->cbuf != NULL;
}

size_t chm_model_buffer_bytes(const chm_model *m) {
    size_t n = (size_t)m->numel_all;
    return n * (chm_dtype_size(m->mdt) + chm_dtype_size(m->dt) * (m->mdt != m->dt ? 2 : 1));
}

chm_status chm_model_zero_grad(chm_model *m, chm_err *err) {
    if (!m || !m->be)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "zero_grad: the model has no backend");
    chm_tensor all = chm_tensor_1d(m->gbuf, 0, m->dt, m->numel_all);
    chm_status rc = chm_fill(m->be, &all, 0.0);
    if (rc != CHM_OK) return CHM_ERR(err, rc, "zero_grad: %s", m->be->err.msg);
    return CHM_OK;
}
