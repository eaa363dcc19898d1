/*
 * checkpoint_load.c: opening a checkpoint directory and loading it
 * (chimera/trainer.h).
 *
 * Opening reads trainer_state.json, checks every listed file's size and
 * sha256 before anything else reads it, and loads the stored config. The
 * model section is compared as the YAML chm_config_write produces, line by
 * line, so a mismatch is reported with its key path and both values.
 * Tensors are matched by name; each must have the parameter's shape, and a
 * file holding a tensor the model does not know is refused too.
 */
#include "checkpoint_internal.h"
#include "data/sha256.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chimera/checkpoint.h"

struct chm_checkpoint {
    char dir[CK_PATH];
    char backend[32];
    chm_config cfg;
    chm_checkpoint_state st;
    bool has_optim;
};

/* ---- opening ---------------------------------------------------------------------------- */

/* Check dir/name against its {"sha256", "bytes"} entry. */
static chm_status verify_file(const char *dir, const char *name, json_t *e, chm_err *err) {
    char path[CK_PATH], hex[65];
    int64_t size = -1;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const char *want = json_string_value(json_object_get(e, "sha256"));
    json_int_t bytes = json_integer_value(json_object_get(e, "bytes"));
    if (!want)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s/" CK_STATE_FILE ": no sha256 for %s", dir, name);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return CHM_ERR(err, CHM_ERR_IO, "%s: missing (listed in " CK_STATE_FILE ")", path);
    /* Only regular files are read: a directory or a FIFO planted under a listed name
     * must not make the checksum fail obscurely or block. */
    if (!S_ISREG(sb.st_mode))
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: not a regular file (listed in " CK_STATE_FILE ")",
                       path);
    chm_status rc = chm_sha256_file(path, hex, &size, err);
    if (rc) return rc;
    if (size != (int64_t)bytes || strcmp(hex, want) != 0)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: checksum mismatch: " CK_STATE_FILE " says sha256 %.16s... (%lld bytes), "
                       "the file has %.16s... (%lld bytes); the file was changed or damaged "
                       "after the save: use another checkpoint",
                       path, want, (long long)bytes, hex, (long long)size);
    return CHM_OK;
}

static chm_status verify_files(chm_checkpoint *c, json_t *files, chm_err *err) {
    if (!json_is_object(files) || !json_object_get(files, CK_MODEL_FILE))
        return CHM_ERR(err, CHM_ERR_PARSE, "%s/" CK_STATE_FILE ": no \"files\" entry for " CK_MODEL_FILE,
                       c->dir);
    const char *name;
    json_t *e;
    json_object_foreach(files, name, e) {
        if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
            return CHM_ERR(err, CHM_ERR_PARSE, "%s/" CK_STATE_FILE ": bad file name '%s'", c->dir, name);
        chm_status rc = verify_file(c->dir, name, e, err);
        if (rc) return rc;
    }
    c->has_optim = json_object_get(files, CK_OPTIM_FILE) != NULL;
    return CHM_OK;
}

static int64_t get_i64(json_t *o, const char *key, bool *ok) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) *ok = false;
    return (int64_t)json_integer_value(v);
}

/* The counters of the state object into c->st. */
static chm_status parse_counters(chm_checkpoint *c, json_t *root, chm_err *err) {
    bool ok = true;
    chm_checkpoint_state *s = &c->st;
    s->step = get_i64(root, "step", &ok);
    s->tokens = get_i64(root, "tokens", &ok);
    s->adamw_updates = get_i64(root, "adamw_updates", &ok);
    s->skipped_steps = get_i64(root, "skipped_steps", &ok);
    s->elapsed_s = json_number_value(json_object_get(root, "elapsed_s"));
    json_t *ld = json_object_get(root, "loader"), *rng = json_object_get(root, "rng");
    s->cursor.seed = (uint64_t)get_i64(ld, "seed", &ok);
    s->cursor.epoch = get_i64(ld, "epoch", &ok);
    s->cursor.position = get_i64(ld, "position", &ok);
    s->cursor.train_windows = get_i64(ld, "train_windows", &ok);
    s->cursor.seq_len = get_i64(ld, "seq_len", &ok);
    const char *key = json_string_value(json_object_get(rng, "key"));
    s->rng_key = key ? strtoull(key, NULL, 16) : 0;
    s->rng_counter = (uint64_t)get_i64(rng, "counter", &ok);
    s->last_lr = json_number_value(json_object_get(json_object_get(root, "schedule"), "last_lr"));
    const char *be = json_string_value(json_object_get(root, "backend"));
    snprintf(c->backend, sizeof c->backend, "%s", be ? be : "?");
    if (!ok || !key)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s/" CK_STATE_FILE ": a counter (step, tokens, loader, rng) is missing or "
                       "not an integer", c->dir);
    return CHM_OK;
}

static chm_status read_state(chm_checkpoint *c, chm_err *err) {
    char path[CK_PATH];
    snprintf(path, sizeof path, "%s/" CK_STATE_FILE, c->dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        if (!ck_exists(path))
            return CHM_ERR(err, CHM_ERR_IO, "%s: missing: %s is not a complete checkpoint", path,
                           c->dir);
        return CHM_ERR(err, CHM_ERR_PARSE, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    }
    const char *fmt = json_string_value(json_object_get(root, "format"));
    chm_status rc = CHM_OK;
    json_int_t version = json_integer_value(json_object_get(root, "version"));
    if (!fmt || strcmp(fmt, CK_FORMAT) || version != CK_VERSION)
        rc = CHM_ERR(err, CHM_ERR_PARSE, "%s: not a version %d %s state", path, CK_VERSION, CK_FORMAT);
    if (rc == CHM_OK) rc = verify_files(c, json_object_get(root, "files"), err);
    if (rc == CHM_OK) rc = parse_counters(c, root, err);
    const char *yaml = json_string_value(json_object_get(root, "config"));
    if (rc == CHM_OK && !yaml) rc = CHM_ERR(err, CHM_ERR_PARSE, "%s: no \"config\"", path);
    char name[CK_PATH + 16];
    snprintf(name, sizeof name, "%s (config)", path);
    if (rc == CHM_OK) rc = chm_config_load_string(yaml, name, NULL, 0, &c->cfg, err);
    json_decref(root);
    return rc;
}

chm_status chm_checkpoint_open(const char *dir, chm_checkpoint **out, chm_err *err) {
    *out = NULL;
    chm_checkpoint *c = calloc(1, sizeof *c);
    if (!c) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    size_t n = strlen(c->dir);
    while (n > 1 && c->dir[n - 1] == '/') c->dir[--n] = '\0';
    chm_status rc = read_state(c, err);
    if (rc) {
        chm_checkpoint_close(c);
        return rc;
    }
    *out = c;
    return CHM_OK;
}

void chm_checkpoint_close(chm_checkpoint *c) {
    if (!c) return;
    chm_config_free(&c->cfg);
    free(c);
}

const chm_config *chm_checkpoint_config(const chm_checkpoint *c) { return &c->cfg; }
const chm_checkpoint_state *chm_checkpoint_get_state(const chm_checkpoint *c) { return &c->st; }
const char *chm_checkpoint_dir(const chm_checkpoint *c) { return c->dir; }
const char *chm_checkpoint_backend(const chm_checkpoint *c) { return c->backend; }

/* ---- the model section ---------------------------------------------------------------- */

/* The "model:" section of cfg written as YAML (malloc'd), or NULL. */
static char *model_yaml(const chm_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    chm_config_write(cfg, f);
    fclose(f);
    char *start = buf ? strstr(buf, "\nmodel:\n") : NULL;
    if (!start) {
        free(buf);
        return NULL;
    }
    start++;
    char *end = start + 7;
    while (*end && !(end[0] == '\n' && end[1] && end[1] != ' ')) end++;
    *end = '\0';
    memmove(buf, start, strlen(start) + 1);
    return buf;
}

/* Split off the next line of *s (NUL-terminated in place); NULL at the end. */
static char *next_line(char **s) {
    if (!*s || !**s) return NULL;
    char *l = *s, *nl = strchr(l, '\n');
    if (nl) *nl = '\0', *s = nl + 1;
    else *s = l + strlen(l);
    return l;
}

/* Key path of a "  key: value" line given the stack of enclosing keys; value out. */
static void line_key(const char *line, char stack[8][64], char *path, size_t n, const char **value) {
    int indent = 0;
    while (line[indent] == ' ') indent++;
    int level = indent / 2 < 7 ? indent / 2 : 7;
    const char *colon = strchr(line, ':');
    size_t klen = colon ? (size_t)(colon - line - indent) : strlen(line + indent);
    snprintf(stack[level], sizeof stack[level], "%.*s", (int)(klen < 63 ? klen : 63), line + indent);
    path[0] = '\0';
    for (int i = 0; i <= level; i++)
        snprintf(path + strlen(path), n - strlen(path), "%s%s", i ? "." : "", stack[i]);
    *value = colon ? colon + 1 + (colon[1] == ' ') : "";
}

chm_status chm_checkpoint_check_model(const chm_checkpoint *c, const chm_config_model *want,
                                      chm_err *err) {
    chm_config mine = c->cfg; /* shares the strings: only written, never freed */
    mine.model = *want;
    char *a = model_yaml(&c->cfg), *b = model_yaml(&mine);
    chm_status rc = a && b ? CHM_OK : CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
    char *pa = a, *pb = b, stack[8][64] = {{0}};
    while (rc == CHM_OK) {
        char *la = next_line(&pa), *lb = next_line(&pb);
        if (!la && !lb) break;
        if (la && lb && !strcmp(la, lb)) {
            const char *v;
            char path[512];
            line_key(la, stack, path, sizeof path, &v);
            continue;
        }
        char path[512];
        const char *va = "(absent)", *vb = "(absent)";
        if (la) line_key(la, stack, path, sizeof path, &va);
        if (lb) line_key(lb, stack, path, sizeof path, &vb);
        rc = CHM_ERR(err, CHM_ERR_CONFIG,
                     "%s: %s is %s in the checkpoint but %s in the config: the checkpoint holds "
                     "another model; use its config, or train into another --out",
                     c->dir, path, va, vb);
    }
    free(a);
    free(b);
    return rc;
}

/* ---- tensors ---------------------------------------------------------------------------- */

static void shape_text(int ndim, const int64_t *shape, char *out, size_t n) {
    snprintf(out, n, "[");
    for (int d = 0; d < ndim; d++)
        snprintf(out + strlen(out), n - strlen(out), "%s%lld", d ? ", " : "", (long long)shape[d]);
    snprintf(out + strlen(out), n - strlen(out), "]");
}

/* Find `name` in f with p's shape (f32/f64); errors name path and tensor. */
static chm_status find_tensor(chm_safetensors *f, const char *path, const char *name,
                              const chm_model_param *p, const chm_st_tensor **out, chm_err *err) {
    const chm_st_tensor *t = chm_safetensors_find(f, name);
    if (!t)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%s' is missing (the model has it)", path, name);
    bool same = t->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
    if (!same) {
        char a[96], b[96];
        shape_text(t->ndim, t->shape, a, sizeof a);
        shape_text(p->ndim, p->shape, b, sizeof b);
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%s' has shape %s, the model expects %s", path,
                       name, a, b);
    }
    if (t->dtype != CHM_F32 && t->dtype != CHM_F64)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%s' is %s, expected F32 or F64", path, name,
                       chm_safetensors_dtype_name(t->dtype));
    *out = t;
    return CHM_OK;
}

/* Copy a checked tensor into host memory of dtype dt, converting f32 <-> f64. */
static void convert(const chm_st_tensor *t, chm_dtype dt, void *dst, int64_t n) {
    if (t->dtype == dt) {
        memcpy(dst, t->data, (size_t)t->nbytes);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        double v;
        if (t->dtype == CHM_F32) {
            float x;
            memcpy(&x, (const char *)t->data + i * 4, 4);
            v = x;
        } else {
            memcpy(&v, (const char *)t->data + i * 8, 8);
        }
        if (dt == CHM_F32) ((float *)dst)[i] = (float)v;
        else ((double *)dst)[i] = v;
    }
}

/* Upload tensor `name` of f into dst (shaped like p). */
static chm_status load_one(chm_safetensors *f, const char *path, const char *name,
                           const chm_model_param *p, chm_backend *be, const chm_tensor *dst,
                           chm_err *err) {
    const chm_st_tensor *t = NULL;
    chm_status rc = find_tensor(f, path, name, p, &t, err);
    if (rc) return rc;
    void *host = malloc(chm_tensor_nbytes(dst) ? chm_tensor_nbytes(dst) : 1);
    if (!host) return CHM_ERR(err, CHM_ERR_NOMEM, "no memory");
    convert(t, dst->dtype, host, p->numel);
    rc = chm_upload(be, dst, host);
    free(host);
    return rc ? CHM_ERR(err, rc, "%s: tensor '%s': %s", path, name, be->err.msg) : CHM_OK;
}

/* Refuse tensors of f that are not expected (count mismatch: find the stranger). */
static chm_status check_extra(chm_safetensors *f, const char *path, const chm_model *m, int per,
                              chm_err *err) {
    int n = chm_safetensors_count(f);
    if (n == per * chm_model_param_count(m)) return CHM_OK;
    for (int i = 0; i < n; i++) {
        const char *name = chm_safetensors_get(f, i)->name;
        const char *base = name;
        if (!strncmp(name, CK_PREFIX_V, strlen(CK_PREFIX_V))) base = name + strlen(CK_PREFIX_V);
        else if (!strncmp(name, CK_PREFIX_M, strlen(CK_PREFIX_M))) base = name + strlen(CK_PREFIX_M);
        if (!chm_model_param_find(m, per == 1 ? name : base))
            return CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%s' is not a parameter of this model",
                           path, name);
    }
    return CHM_ERR(err, CHM_ERR_PARSE, "%s: holds %d tensors, the model has %d parameters", path, n,
                   chm_model_param_count(m));
}

chm_status chm_checkpoint_load_model(const chm_checkpoint *c, chm_model *m, chm_err *err) {
    char path[CK_PATH];
    snprintf(path, sizeof path, "%s/" CK_MODEL_FILE, c->dir);
    chm_safetensors *f;
    chm_status rc = chm_safetensors_open(path, &f, err);
    if (rc) return rc;
    chm_backend *be = chm_model_backend(m);
    for (int i = 0; rc == CHM_OK && i < chm_model_param_count(m); i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        rc = load_one(f, path, p->name, p, be, &p->value, err);
    }
    if (rc == CHM_OK) rc = check_extra(f, path, m, 1, err);
    if (rc == CHM_OK) rc = chm_model_refresh_compute(m, err); /* mixed precision: round them */
    chm_safetensors_close(f);
    return rc;
}

chm_status chm_checkpoint_load_optim(const chm_checkpoint *c, chm_model *m, chm_optim *o,
                                     chm_err *err) {
    char path[CK_PATH], name[160];
    snprintf(path, sizeof path, "%s/" CK_OPTIM_FILE, c->dir);
    if (!c->has_optim)
        return CHM_ERR(err, CHM_ERR_IO, "%s: missing: the checkpoint has no optimizer state", path);
    chm_safetensors *f;
    chm_status rc = chm_safetensors_open(path, &f, err);
    if (rc) return rc;
    chm_backend *be = chm_model_backend(m);
    for (int i = 0; rc == CHM_OK && i < chm_model_param_count(m); i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        chm_tensor mt, vt;
        chm_optim_moments(o, p, &mt, &vt);
        snprintf(name, sizeof name, CK_PREFIX_M "%s", p->name);
        rc = load_one(f, path, name, p, be, &mt, err);
        snprintf(name, sizeof name, CK_PREFIX_V "%s", p->name);
        if (rc == CHM_OK) rc = load_one(f, path, name, p, be, &vt, err);
    }
    if (rc == CHM_OK) rc = check_extra(f, path, m, 2, err);
    if (rc == CHM_OK) chm_optim_set_updates(o, c->st.adamw_updates);
    chm_safetensors_close(f);
    return rc;
}
