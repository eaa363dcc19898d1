/*
 * config_write.c: a resolved chm_config -> YAML, in schema order, such that
 * loading the output gives the same config again; derived values that are
 * not keys (per-layer table, token counts) follow as comments.
 */
#include "config_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Shortest text that reads back as exactly x; whole numbers keep a ".0" so they read as floats. */
static void write_double(FILE *f, double x) {
    char buf[48];
    if (x == floor(x) && fabs(x) < 1e15) {
        fprintf(f, "%.1f", x);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x) break;
    }
    fputs(buf, f);
}

/* A double-quoted YAML string. */
static void write_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\x%02x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void write_value(FILE *f, const cfg_field *fd, const chm_config *cfg) {
    const void *p = (const char *)cfg + fd->off;
    switch (fd->type) {
    case CFG_INT: fprintf(f, "%d", *(const int *)p); break;
    case CFG_I64:
    case CFG_TOKENS: fprintf(f, "%lld", (long long)*(const int64_t *)p); break;
    case CFG_F64: write_double(f, *(const double *)p); break;
    case CFG_BOOL: fputs(*(const bool *)p ? "true" : "false", f); break;
    case CFG_STR: write_string(f, *(char *const *)p); break;
    case CFG_ENUM: fputs(fd->names[*(const int *)p], f); break;
    case CFG_DTRANK:
        if (cfg->model.mamba.dt_rank_auto)
            fprintf(f, "auto  # = ceil(d_model / 16) = %d", *(const int *)p);
        else
            fprintf(f, "%d", *(const int *)p);
        break;
    case CFG_LAYERS: {
        const chm_config_mod *mod = p;
        fputc('[', f);
        for (int i = 0; i < mod->n_layers; i++) fprintf(f, "%s%d", i ? ", " : "", mod->layers[i]);
        fputc(']', f);
        break;
    }
    case CFG_BETAS: {
        const double *b = p;
        fputc('[', f);
        write_double(f, b[0]);
        fputs(", ", f);
        write_double(f, b[1]);
        fputc(']', f);
        break;
    }
    case CFG_PATTERN: write_string(f, p); break;
    }
}

/* The section components of a dotted path ("model.moe.top_k" -> model, moe); returns the count. */
static int split_section(const char *path, char comps[4][32]) {
    int n = 0;
    const char *p = path, *d;
    while ((d = strchr(p, '.')) && n < 4) {
        snprintf(comps[n++], sizeof comps[0], "%.*s", (int)(d - p), p);
        p = d + 1;
    }
    return n;
}

/* Print the section headers that `path` needs after the previous field `prev`; returns the
 * depth of `path`'s own line. A blank line separates top-level sections. */
static int write_headers(FILE *f, const char *prev, const char *path) {
    char a[4][32], b[4][32];
    int na = split_section(prev, a), nb = split_section(path, b), shared = 0;
    while (shared < na && shared < nb && !strcmp(a[shared], b[shared])) shared++;
    if (shared == 0 && (na || nb) && *prev) fputc('\n', f);
    for (int k = shared; k < nb; k++) fprintf(f, "%*s%s:\n", 2 * k, "", b[k]);
    return nb;
}

/* The per-layer table and the other derived numbers, as comments. */
static void write_derived(FILE *f, const chm_config *cfg) {
    const chm_config_model *m = &cfg->model;
    const chm_config_train *t = &cfg->train;
    fprintf(f, "\n# derived (comments, not read back):\n");
    fprintf(f,
            "#   layers: %d (%d mamba, %d attention), %d with MoE FFN, %d with mixture-of-depths\n",
            m->n_layers, m->n_mamba, m->n_attention, m->n_moe, m->mod.n_layers);
    fprintf(f, "#   mamba d_inner: %d, tokens per step: %lld, total steps: %lld\n",
            m->mamba.d_inner, (long long)t->tokens_per_step, (long long)t->total_steps);
    fprintf(f, "#   layer  mixer      ffn    depth\n");
    for (int i = 0; i < m->n_layers; i++)
        fprintf(f, "#   %5d  %-9s  %-5s  %s\n", i, chm_config_mixer_name(m->mixer[i]),
                m->moe_layer[i] ? "moe" : "dense", m->mod_layer[i] ? "routed" : "all");
}

void chm_config_write(const chm_config *cfg, FILE *f) {
    fprintf(f, "# chimera config resolved from %s (defaults and derived values filled in)\n",
            cfg->source ? cfg->source : "?");
    const char *prev = "";
    for (int i = 0; i < chm_cfg_n_fields; i++) {
        const cfg_field *fd = &chm_cfg_fields[i];
        /* Only the one of steps and tokens that was given. */
        if (fd->off == offsetof(chm_config, train.steps) && !cfg->train.steps) continue;
        if (fd->off == offsetof(chm_config, train.tokens) && !cfg->train.tokens) continue;
        int depth = write_headers(f, prev, fd->path);
        const char *leaf = strrchr(fd->path, '.');
        fprintf(f, "%*s%s: ", 2 * depth, "", leaf ? leaf + 1 : fd->path);
        write_value(f, fd, cfg);
        fputc('\n', f);
        prev = fd->path;
    }
    write_derived(f, cfg);
}
