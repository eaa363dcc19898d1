/*
 * evaluate.c: validation loss, perplexity and bits per byte of a model on a
 * set of token windows (chimera/trainer.h).
 *
 * The loss is the next-token cross-entropy (the "ce" part, without the
 * auxiliary and MTP terms), averaged over whole micro batches of equal size,
 * so the mean over batches is the mean over tokens. Bits per byte divides
 * it by ln 2 and by the text bytes per token measured on the same windows.
 */
#include "chimera/trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

chm_status chm_eval_bytes_per_token(const chm_tokenizer *tok, const int32_t *windows, int64_t n,
                                    int64_t T, double *bytes_per_token, chm_err *err) {
    int32_t eos = chm_tokenizer_eos(tok);
    int32_t *ids = malloc((size_t)(T > 0 ? T : 1) * sizeof *ids);
    if (!ids) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
    int64_t bytes = 0, tokens = 0;
    for (int64_t w = 0; w < n; w++) {
        size_t k = 0;
        for (int64_t t = 1; t <= T; t++) {
            int32_t id = windows[w * (T + 1) + t];
            if (id == eos) bytes++; /* the document boundary counts as one byte */
            else ids[k++] = id;
        }
        tokens += T;
        char *text = NULL;
        size_t len = 0;
        chm_status rc = k ? chm_tokenizer_decode(tok, ids, k, &text, &len, err) : CHM_OK;
        free(text);
        if (rc) {
            free(ids);
            return rc;
        }
        bytes += (int64_t)len;
    }
    free(ids);
    *bytes_per_token = tokens > 0 && bytes > 0 ? (double)bytes / (double)tokens : 1.0;
    return CHM_OK;
}

/* Add the parts of l into sum (every field). */
static void loss_add(chm_model_loss *sum, const chm_model_loss *l) {
    sum->total += l->total, sum->ce += l->ce, sum->mtp += l->mtp;
    for (int k = 0; k < CHM_MODEL_MAX_MTP; k++) sum->mtp_depth[k] += l->mtp_depth[k];
    sum->moe_balance += l->moe_balance, sum->moe_z += l->moe_z, sum->mod_aux += l->mod_aux;
}

static void loss_scale(chm_model_loss *l, double s) {
    l->total *= s, l->ce *= s, l->mtp *= s;
    for (int k = 0; k < CHM_MODEL_MAX_MTP; k++) l->mtp_depth[k] *= s;
    l->moe_balance *= s, l->moe_z *= s, l->mod_aux *= s;
}

chm_status chm_evaluate(chm_model *m, const int32_t *windows, int64_t n, double bytes_per_token,
                        chm_eval_result *r, chm_err *err) {
    int64_t B = chm_model_batch(m), T = chm_model_seq_len(m), nb = n / B;
    memset(r, 0, sizeof *r);
    if (nb < 1)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                       "evaluate: %lld windows are fewer than one micro batch of %lld",
                       (long long)n, (long long)B);
    for (int64_t b = 0; b < nb; b++) {
        chm_model_loss l;
        chm_status rc = chm_model_eval_loss(m, windows + b * B * (T + 1), &l, err);
        if (rc) return rc;
        loss_add(&r->parts, &l);
    }
    loss_scale(&r->parts, 1.0 / (double)nb);
    r->batches = nb;
    r->tokens = nb * B * T;
    r->loss = r->parts.ce;
    r->ppl = exp(r->loss);
    r->bytes_per_token = bytes_per_token > 0 ? bytes_per_token : 1.0;
    r->bits_per_byte = r->loss / log(2.0) / r->bytes_per_token;
    return CHM_OK;
}
