/*
 * decode.c: incremental decoding, one token at a time, in causal routing.
 *
 * The decoder owns one buffer with every layer's state: attention layers
 * keep their keys and values [max_len, Hk, D] (after RoPE), Mamba layers
 * the inputs of their convolution [max_len, Di] (the window of the last
 * d_conv rows is convolved again at each step) and the scan state [Di, N].
 * Each layer counts the tokens it has run: every token for a plain layer,
 * the routed ones (score > 0) for a mixture-of-depths layer, whose cache
 * positions and RoPE positions are then ranks among its routed tokens,
 * exactly as chm_model_logits computes in causal routing. MoE layers route
 * the token alone, so nothing is dropped. Per-step scratch comes from the
 * model's arena, rewound at each step (a dry run at creation checks that a
 * step fits).
 */
#include <math.h>
#include <stdlib.h>

#include "model_internal.h"

/* One layer's decoding state (views into the decoder's buffer). */
typedef struct dec_layer {
    chm_tensor kc, vc; /* attention: [max_len, Hk, D] */
    chm_tensor hist;   /* Mamba: [max_len, Di] conv inputs */
    chm_tensor h;      /* Mamba: [1, Di, N] scan state */
    int64_t n;         /* tokens this layer has run (its next position) */
} dec_layer;

struct chm_decoder {
    chm_model *m;
    int64_t max_len, pos;
    chm_buffer *buf;
    dec_layer *layers; /* [L] */
};

/* Bytes of layer ly's state, and (when buf) its tensors at *off. */
static size_t state_place(const chm_model *m, const mdl_layer *ly, int64_t max_len, chm_buffer *buf,
                          size_t *off, dec_layer *st) {
    size_t es = chm_dtype_size(m->dt), start = *off;
    int64_t n_a = max_len * m->Hk * m->Dh, n_h = max_len * m->Di, n_s = m->Di * m->N;
    if (ly->mixer == 'A') {
        if (buf) st->kc = chm_tensor_3d(buf, *off, m->dt, max_len, m->Hk, m->Dh);
        *off += (size_t)n_a * es;
        if (buf) st->vc = chm_tensor_3d(buf, *off, m->dt, max_len, m->Hk, m->Dh);
        *off += (size_t)n_a * es;
    } else {
        if (buf) st->hist = chm_tensor_2d(buf, *off, m->dt, max_len, m->Di);
        *off += (size_t)n_h * es;
        if (buf) st->h = chm_tensor_3d(buf, *off, m->dt, 1, m->Di, m->N);
        *off += (size_t)n_s * es;
    }
    *off = (*off + 255) / 256 * 256;
    return *off - start;
}

/* Attention for the token at position t: q against the cached keys 0..t. */
static chm_status attn_step(chm_model *m, const mdl_layer *ly, dec_layer *st, const chm_tensor *xn,
                            const chm_tensor *out, int64_t t) {
    chm_backend *be = m->be;
    int64_t H = m->H, Hk = m->Hk, D = m->Dh, C = m->C, KD = Hk * D;
    chm_tensor q, att;
    MDL_TRY(MDL_ALLOC(m, &q, 1, 1, H, D));
    MDL_TRY(MDL_ALLOC(m, &att, 1, 1, H, D));
    chm_tensor x2 = MDL_VIEW(xn, 0, 1, C), q2 = MDL_VIEW(&q, 0, 1, H * D);
    chm_tensor k4 = MDL_VIEW(&st->kc, t * KD, 1, 1, Hk, D);
    chm_tensor k2 = MDL_VIEW(&st->kc, t * KD, 1, KD), v2 = MDL_VIEW(&st->vc, t * KD, 1, KD);
    MDL_TRY(mdl_linear_fwd(m, &q2, &x2, mdl_w(m, ly->q), 0));
    MDL_TRY(mdl_linear_fwd(m, &k2, &x2, mdl_w(m, ly->k), 0));
    MDL_TRY(mdl_linear_fwd(m, &v2, &x2, mdl_w(m, ly->v), 0));
    MDL_OP(m, chm_rope_fwd(be, &q, &q, m->cfg.rope_theta, t));
    MDL_OP(m, chm_rope_fwd(be, &k4, &k4, m->cfg.rope_theta, t));
    chm_tensor K = MDL_VIEW(&st->kc, 0, 1, t + 1, Hk, D), V = MDL_VIEW(&st->vc, 0, 1, t + 1, Hk, D);
    MDL_OP(m, chm_attention_decode(be, &att, &q, &K, &V, 1.0 / sqrt((double)D)));
    chm_tensor att2 = MDL_VIEW(&att, 0, 1, H * D), out2 = MDL_VIEW(out, 0, 1, C);
    return mdl_linear_fwd(m, &out2, &att2, mdl_w(m, ly->o), 1);
}

/* Mamba for the token at position t: conv over the last d_conv inputs, one scan step. */
static chm_status mamba_step(chm_model *m, const mdl_layer *ly, dec_layer *st, const chm_tensor *xn,
                             const chm_tensor *out, int64_t t) {
    chm_backend *be = m->be;
    int64_t Di = m->Di, N = m->N, C = m->C, s0 = t - m->W + 1 < 0 ? 0 : t - m->W + 1,
            nw = t - s0 + 1;
    mdl_mamba_w w = mdl_mamba_views(m, mdl_w(m, ly->in_proj));
    mdl_mamba_act a;
    MDL_TRY(MDL_ALLOC(m, &a.z, 1, 1, Di));
    MDL_TRY(MDL_ALLOC(m, &a.xc, 1, nw, Di)); /* conv of the window; its last row is this step's */
    /* one row: x_proj's output [1,Rk+2N] is its own transpose; dt, B, C are views of it */
    MDL_TRY(MDL_ALLOC(m, &a.xpT, 1, m->Rk + 2 * N));
    a.bm = MDL_VIEW(&a.xpT, m->Rk, 1, 1, N);
    a.cm = MDL_VIEW(&a.xpT, m->Rk + N, 1, 1, N);
    MDL_TRY(MDL_ALLOC(m, &a.delta, 1, 1, Di));
    MDL_TRY(MDL_ALLOC(m, &a.A, Di, N));
    MDL_TRY(MDL_ALLOC(m, &a.y, 1, 1, Di));
    chm_tensor x2 = MDL_VIEW(xn, 0, 1, C), row = MDL_VIEW(&st->hist, t * Di, 1, Di);
    chm_tensor z2 = MDL_VIEW(&a.z, 0, 1, Di), win = MDL_VIEW(&st->hist, s0 * Di, 1, nw, Di);
    MDL_TRY(mdl_linear_fwd(m, &row, &x2, &w.in_x, 0));
    MDL_TRY(mdl_linear_fwd(m, &z2, &x2, &w.in_z, 0));
    MDL_OP(m, chm_causal_conv1d_fwd(be, &a.xc, &win, mdl_w(m, ly->conv_w), mdl_w(m, ly->conv_b),
                                    true));
    chm_tensor xc3 = MDL_VIEW(&a.xc, (nw - 1) * Di, 1, 1, Di), xc2 = MDL_VIEW(&xc3, 0, 1, Di);
    chm_tensor d2 = MDL_VIEW(&a.delta, 0, 1, Di), dtl = MDL_VIEW(&a.xpT, 0, 1, m->Rk);
    MDL_TRY(mdl_linear_fwd(m, &a.xpT, &xc2, mdl_w(m, ly->x_proj), 0));
    MDL_TRY(mdl_linear_fwd(m, &d2, &dtl, mdl_w(m, ly->dt_w), 0));
    MDL_OP(m, chm_exp_fwd(be, &a.A, mdl_w(m, ly->A_log), -1.0));
    chm_scan_args s = {&xc3, &a.delta,           &a.A, &a.bm, &a.cm, mdl_w(m, ly->D),
                       &a.z, mdl_w(m, ly->dt_b), true, NULL, 0, NULL};
    MDL_OP(m, chm_selective_scan_step(be, &a.y, &st->h, &s));
    chm_tensor y2 = MDL_VIEW(&a.y, 0, 1, Di), out2 = MDL_VIEW(out, 0, 1, C);
    return mdl_linear_fwd(m, &out2, &y2, mdl_w(m, ly->out_proj), 1);
}

/* One layer without MoD for one token: x [1,1,C] -> out, at the layer's next position. */
static chm_status core_step(chm_model *m, const mdl_layer *ly, dec_layer *st, const chm_tensor *x,
                            const chm_tensor *out) {
    chm_backend *be = m->be;
    double eps = m->cfg.norm_eps;
    mdl_layer_act act = {0};
    MDL_TRY(MDL_ALLOC(m, &act.xn1, 1, 1, m->C));
    MDL_TRY(MDL_ALLOC_STATS(m, &act.rstd1, 1));
    MDL_TRY(MDL_ALLOC(m, &act.h, 1, 1, m->C));
    MDL_TRY(MDL_ALLOC(m, &act.xn2, 1, 1, m->C));
    MDL_TRY(MDL_ALLOC_STATS(m, &act.rstd2, 1));
    MDL_OP(m, chm_rmsnorm_fwd(be, &act.xn1, &act.rstd1, x, mdl_w(m, ly->norm1), eps));
    MDL_OP(m, chm_copy(be, &act.h, x));
    if (ly->mixer == 'A')
        MDL_TRY(attn_step(m, ly, st, &act.xn1, &act.h, st->n));
    else
        MDL_TRY(mamba_step(m, ly, st, &act.xn1, &act.h, st->n));
    st->n++;
    MDL_OP(m, chm_rmsnorm_fwd(be, &act.xn2, &act.rstd2, &act.h, mdl_w(m, ly->norm2), eps));
    MDL_OP(m, chm_copy(be, out, &act.h));
    if (ly->moe) return mdl_moe_fwd(m, ly, &act.moe, &act.xn2, out, 1);
    return mdl_ffn_fwd(m, ly, &act.ffn, &act.xn2, out, out, 1);
}

/* A MoD layer for one token: run the layer when the score is > 0 (a host read), scaled. */
static chm_status mod_step(chm_model *m, const mdl_layer *ly, dec_layer *st, const chm_tensor *x,
                           const chm_tensor *out) {
    chm_backend *be = m->be;
    int64_t C = m->C;
    chm_tensor score, y, ones, sig;
    MDL_TRY(MDL_ALLOC(m, &score, 1));
    MDL_TRY(MDL_ALLOC(m, &y, 1, 1, C));
    MDL_TRY(MDL_ALLOC(m, &ones, 1, 1));
    MDL_TRY(MDL_ALLOC(m, &sig, 1, 1));
    chm_tensor x2 = MDL_VIEW(x, 0, 1, C), s2 = MDL_VIEW(&score, 0, 1, 1),
               y2 = MDL_VIEW(&y, 0, 1, C);
    MDL_TRY(mdl_linear_fwd(m, &s2, &x2, mdl_w(m, ly->mod_router), 0));
    MDL_OP(m, chm_copy(be, out, x));
    double s = 1; /* dry run: size the routed case */
    if (!m->dry) {
        MDL_TRY(mdl_download_f64(be, &score, m->host_score));
        s = m->host_score[0];
    }
    if (!(s > 0)) return CHM_OK;
    MDL_TRY(core_step(m, ly, st, x, &y));
    MDL_OP(m, chm_axpy(be, &y, x, -1.0));
    MDL_OP(m, chm_fill(be, &ones, 1.0));
    MDL_OP(m, chm_row_scale_fwd(be, &sig, &ones, &score, true));
    chm_tensor out2 = MDL_VIEW(out, 0, 1, C), idx; /* out += sig * (y - x) on row 0 */
    MDL_TRY(MDL_ALLOC_I32(m, &idx, 1));
    MDL_OP(m, chm_fill(be, &idx, 0));
    chm_tensor sig1 = MDL_VIEW(&sig, 0, 1);
    MDL_OP(m, chm_scatter_add_rows_bounded(be, &out2, &y2, &idx, &sig1, 1));
    return CHM_OK;
}

/* One step: embed `token`, every layer, final norm and logits into m->logits row 0. */
static chm_status step(chm_decoder *d, int32_t token) {
    chm_model *m = d->m;
    chm_backend *be = m->be;
    mdl_release(m, 0);
    m->routing = CHM_ROUTING_CAUSAL;
    m->routed = false;
    chm_tensor id, x[2], rstd;
    MDL_TRY(MDL_ALLOC_I32(m, &id, 1));
    MDL_TRY(MDL_ALLOC(m, &x[0], 1, 1, m->C));
    MDL_TRY(MDL_ALLOC(m, &x[1], 1, 1, m->C));
    MDL_TRY(MDL_ALLOC(m, &m->hn, 1, 1, m->C));
    MDL_TRY(MDL_ALLOC_STATS(m, &rstd, 1));
    MDL_TRY(MDL_ALLOC(m, &m->logits, 1, m->V));
    MDL_OP(m, chm_upload(be, &id, &token));
    chm_tensor x0 = MDL_VIEW(&x[0], 0, 1, m->C);
    MDL_OP(m, chm_embedding_fwd(be, &x0, &id, mdl_w(m, m->embed)));
    for (int l = 0; l < m->L; l++) {
        const mdl_layer *ly = &m->layers[l];
        size_t mark = mdl_mark(m);
        const chm_tensor *in = &x[l % 2], *out = &x[(l + 1) % 2];
        MDL_TRY(ly->mod ? mod_step(m, ly, &d->layers[l], in, out)
                        : core_step(m, ly, &d->layers[l], in, out));
        mdl_release(m, mark);
    }
    MDL_OP(m, chm_rmsnorm_fwd(be, &m->hn, &rstd, &x[m->L % 2], mdl_w(m, m->final_norm),
                              m->cfg.norm_eps));
    chm_tensor h2 = MDL_VIEW(&m->hn, 0, 1, m->C);
    return mdl_linear_fwd(m, &m->logits, &h2, mdl_w(m, m->lm_head), 0);
}

chm_status chm_decoder_reset(chm_decoder *d, chm_err *err) {
    chm_model *m = d->m;
    d->pos = 0;
    for (int l = 0; l < m->L; l++) {
        d->layers[l].n = 0;
        if (m->layers[l].mixer != 'M') continue;
        chm_status rc = chm_fill(m->be, &d->layers[l].h, 0);
        if (rc != CHM_OK) return CHM_ERR(err, rc, "decoder_reset: %s", m->be->err.msg);
    }
    return CHM_OK;
}

/* Check with a dry step at the last position that a step fits the model's arena. */
static chm_status check_fits(chm_decoder *d, chm_err *err) {
    chm_model *m = d->m;
    m->dry = true;
    m->dry_used = m->dry_peak = 0;
    for (int l = 0; l < m->L; l++) d->layers[l].n = d->max_len - 1;
    chm_status rc = step(d, 0);
    m->dry = false;
    if (rc != CHM_OK) return CHM_ERR(err, rc, "decoder_create: %s", m->be->err.msg);
    if (m->dry_peak > chm_model_arena_bytes(m))
        return CHM_ERR(err, CHM_ERR_NOMEM,
                       "decoder_create: a step needs %zu bytes of activations, the model's arena "
                       "has %zu; create the model with a larger micro batch",
                       m->dry_peak, chm_model_arena_bytes(m));
    return chm_decoder_reset(d, err);
}

chm_status chm_decoder_create(chm_model *m, int64_t max_len, chm_decoder **out, chm_err *err) {
    if (!m || !m->be || !out || max_len < 1)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "decoder_create: need a model with a backend and max_len >= 1");
    chm_decoder *d = calloc(1, sizeof *d);
    if (d) d->layers = calloc((size_t)m->L, sizeof *d->layers);
    if (!d || !d->layers) {
        free(d);
        return CHM_ERR(err, CHM_ERR_NOMEM, "decoder_create: no memory");
    }
    d->m = m;
    d->max_len = max_len;
    size_t bytes = 0;
    for (int l = 0; l < m->L; l++) state_place(m, &m->layers[l], max_len, NULL, &bytes, NULL);
    chm_status rc = chm_buffer_alloc(m->be, bytes ? bytes : 256, &d->buf);
    if (rc != CHM_OK) rc = CHM_ERR(err, rc, "decoder_create: %s", m->be->err.msg);
    size_t off = 0;
    for (int l = 0; rc == CHM_OK && l < m->L; l++)
        state_place(m, &m->layers[l], max_len, d->buf, &off, &d->layers[l]);
    if (rc == CHM_OK) rc = check_fits(d, err);
    if (rc != CHM_OK) {
        chm_decoder_free(d);
        return rc;
    }
    *out = d;
    return CHM_OK;
}

chm_status chm_decoder_step(chm_decoder *d, int32_t token, double *logits, chm_err *err) {
    chm_model *m = d->m;
    if (d->pos >= d->max_len)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "decoder_step: the sequence is full (%lld tokens)",
                       (long long)d->max_len);
    if (token < 0 || token >= m->V)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "decoder_step: token %d is outside [0, %lld)",
                       (int)token, (long long)m->V);
    chm_status rc = step(d, token);
    if (rc == CHM_OK) rc = mdl_download_f64(m->be, &m->logits, logits);
    if (rc != CHM_OK) return CHM_ERR(err, rc, "decoder_step: %s", m->be->err.msg);
    d->pos++;
    return CHM_OK;
}

int64_t chm_decoder_pos(const chm_decoder *d) { return d->pos; }

void chm_decoder_free(chm_decoder *d) {
    if (!d) return;
    chm_buffer_free(d->buf);
    free(d->layers);
    free(d);
}
