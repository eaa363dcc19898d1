/*
 * grad_hook.c: which ranges of the gradient buffer the backward finishes,
 * and when (chimera/model.h, chm_model_set_grad_hook), so that a data-parallel
 * trainer can start reducing them while the rest of the backward runs.
 *
 * The stages follow the real order of a training pass (model.c):
 *   MDL_STAGE_HEADS  the fused heads run in the FORWARD (loss.c, mtp.c): the
 *                    gradients of final_norm, lm_head (untied) and every
 *                    mtp.k.norm_out are complete before the backward starts;
 *   mtp k            deepest first: module k's layer, proj, norm_h, norm_e
 *                    (written by mdl_mtp_bwd(k) alone);
 *   layer l          last first: every parameter of layers.l (MoD router and
 *                    the inner layer included: mdl_layer_bwd(l) alone);
 *   embed            last of all: mdl_mtp_bwd adds to the embedding's
 *                    gradient and the trunk's embedding backward closes the
 *                    pass; tied embeddings are the unembedding too, so their
 *                    gradient is final only here.
 * The plan is built once at creation from the parameter table: per stage,
 * its parameters in buffer order, each with the padding up to the next
 * parameter, adjacent ones merged. Decayed parameters and the others live in
 * two regions (params.c), so a stage usually gives two ranges. Every element
 * of the buffer belongs to exactly one range.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* The parameter indices of mdl_layer are the int fields from norm1 to router (add_layer's
 * memset relies on the same). */
_Static_assert(offsetof(mdl_layer, router) + sizeof(int) == sizeof(mdl_layer) &&
                   (sizeof(mdl_layer) - offsetof(mdl_layer, norm1)) % sizeof(int) == 0,
               "mdl_layer: the parameter indices are its last fields, all int");
enum { LAYER_INDICES = (sizeof(mdl_layer) - offsetof(mdl_layer, norm1)) / sizeof(int) };

/* Every parameter of layer ly (-1 entries are absent) gets `stage`. */
static void stage_layer(const mdl_layer *ly, int stage, int *st) {
    int idx[LAYER_INDICES];
    memcpy(idx, (const char *)ly + offsetof(mdl_layer, norm1), sizeof idx);
    for (int i = 0; i < LAYER_INDICES; i++)
        if (idx[i] >= 0) st[idx[i]] = stage;
}

/* The stage that finishes each parameter's gradient (see the top of the file). */
static void assign_stages(const chm_model *m, int *st) {
    for (int i = 0; i < m->n_params; i++) st[i] = -1;
    st[m->final_norm] = MDL_STAGE_HEADS;
    st[m->lm_head] = MDL_STAGE_HEADS;
    for (int k = 0; k < m->depth; k++) {
        const mdl_mtp *t = &m->mtp[k];
        int s = mdl_stage_mtp(m, k);
        stage_layer(&t->layer, s, st);
        st[t->norm_h] = st[t->norm_e] = st[t->proj] = s;
        st[t->norm_out] = MDL_STAGE_HEADS;
    }
    for (int l = 0; l < m->L; l++) stage_layer(&m->layers[l], mdl_stage_layer(m, l), st);
    st[m->embed] = mdl_stage_embed(m); /* after lm_head: tied, it is the same entry */
}

typedef struct by_offset {
    int64_t offset;
    int index;
} by_offset;

static int cmp_offset(const void *a, const void *b) {
    int64_t x = ((const by_offset *)a)->offset, y = ((const by_offset *)b)->offset;
    return x < y ? -1 : x > y;
}

/* The ranges of every stage, in stage order, from the parameters in buffer order o [P]. */
static int plan_ranges(chm_model *m, const by_offset *o, const int *st) {
    int P = m->n_params, n = 0, stages = mdl_stage_embed(m) + 1;
    for (int s = 0; s < stages; s++)
        for (int j = 0; j < P; j++) {
            if (st[o[j].index] != s) continue;
            int64_t b = o[j].offset, e = j + 1 < P ? o[j + 1].offset : m->numel_all;
            mdl_ready *r = n > 0 ? &m->ready[n - 1] : NULL;
            if (r && r->stage == s && r->begin + r->count == b) r->count += e - b;
            else m->ready[n++] = (mdl_ready){.stage = s, .begin = b, .count = e - b};
        }
    return n;
}

chm_status mdl_ready_plan(chm_model *m, chm_err *err) {
    int P = m->n_params;
    int *st = calloc((size_t)P, sizeof *st);
    by_offset *o = calloc((size_t)P, sizeof *o);
    m->ready = calloc((size_t)P, sizeof *m->ready);
    chm_status rc = st && o && m->ready ? CHM_OK
                                        : CHM_ERR(err, CHM_ERR_NOMEM, "model: no memory for the "
                                                  "gradient plan of %d parameters", P);
    if (rc == CHM_OK) {
        assign_stages(m, st);
        for (int i = 0; i < P; i++) {
            o[i] = (by_offset){m->params[i].offset, i};
            if (st[i] < 0 && rc == CHM_OK)
                rc = CHM_ERR(err, CHM_ERR_INTERNAL, "model: parameter %s has no backward stage",
                             m->params[i].name);
        }
    }
    if (rc == CHM_OK) {
        qsort(o, (size_t)P, sizeof *o, cmp_offset);
        m->n_ready = plan_ranges(m, o, st);
    }
    free(st);
    free(o);
    return rc;
}

chm_status mdl_ready_report(chm_model *m, int stage) {
    if (!m->hook || m->dry) return CHM_OK;
    while (m->ready_next < m->n_ready && m->ready[m->ready_next].stage == stage) {
        const mdl_ready *r = &m->ready[m->ready_next++];
        bool last = m->ready_next == m->n_ready;
        chm_status rc = m->hook(m->hook_user, r->begin, r->count, last, &m->hook_err);
        if (rc != CHM_OK) {
            m->hook_failed = true;
            return rc;
        }
    }
    return CHM_OK;
}

void chm_model_set_grad_hook(chm_model *m, chm_model_grad_hook fn, void *user) {
    if (!m) return;
    m->hook = fn;
    m->hook_user = fn ? user : NULL;
}

int64_t chm_model_grad_numel(const chm_model *m) { return m ? m->numel_all : 0; }
