/*
 * config_convert.c: YAML node -> typed value of one config key, with the
 * type and range checks of its schema entry, and the shared error helpers.
 * Only plain (unquoted) scalars count as numbers or booleans, as in YAML:
 * `d_model: "64"` is a string and is reported as one.
 */
#include "config_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

chm_status chm_cfg_fail(const cfg_ctx *c, const chm_ynode *at, bool at_key, const char *path,
                        chm_status code, const char *fmt, ...) {
    char where[400], what[800];
    chm_ynode_where(at, c->name, at_key, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    bool same = at && at->set && !strcmp(at->set, path);
    if (same || !*path) return CHM_ERR(c->err, code, "%s: %s", where, what);
    return CHM_ERR(c->err, code, "%s: %s: %s", where, path, what);
}

chm_status chm_cfg_fail_path(const cfg_ctx *c, const char *path, const char *fmt, ...) {
    const chm_ynode *nearest = NULL;
    const chm_ynode *n = chm_ynode_find(c->root, path, &nearest);
    char what[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* A missing key is reported at the key of the section that should hold it. */
    if (n) return chm_cfg_fail(c, n, false, path, CHM_ERR_CONFIG, "%s", what);
    return chm_cfg_fail(c, nearest == c->root ? NULL : nearest, true, path, CHM_ERR_CONFIG, "%s",
                        what);
}

/* Copy `t` without '_' digit separators ("100_000"); false if it does not fit or is hex
 * (strtod would read "0x10" as 16, which YAML does not mean for a decimal key). */
static bool strip_separators(const char *t, char *out, size_t size) {
    size_t n = 0;
    if (strpbrk(t, "xX")) return false;
    for (; *t; t++) {
        if (*t == '_') continue;
        if (n + 1 >= size) return false;
        out[n++] = *t;
    }
    out[n] = 0;
    return true;
}

/* An integer from a plain scalar: digits, '_' between digits, or an integral float like 1e6. */
static bool parse_int(const chm_ynode *n, int64_t *v) {
    char buf[64], *end;
    if (n->kind != CHM_YNODE_SCALAR || !n->plain || !*n->text) return false;
    if (!strip_separators(n->text, buf, sizeof buf)) return false;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (!*end && errno == 0) {
        *v = x;
        return true;
    }
    /* 1e6 or 2.0: a float that is a whole number, within what a double holds exactly. */
    double d = strtod(buf, &end);
    if (*end || !isfinite(d) || d != floor(d) || fabs(d) > 9007199254740992.0) return false;
    *v = (int64_t)d;
    return true;
}

/* A finite number from a plain scalar. */
static bool parse_number(const chm_ynode *n, double *v) {
    char buf[64], *end;
    if (n->kind != CHM_YNODE_SCALAR || !n->plain || !*n->text) return false;
    if (!strip_separators(n->text, buf, sizeof buf)) return false;
    *v = strtod(buf, &end);
    return !*end && isfinite(*v);
}

static bool parse_bool(const chm_ynode *n, bool *v) {
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No",
                                     "NO",    "off",   "Off",   "OFF"};
    if (n->kind != CHM_YNODE_SCALAR || !n->plain) return false;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcmp(n->text, yes[i]) || !strcmp(n->text, no[i])) {
            *v = !strcmp(n->text, yes[i]);
            return true;
        }
    }
    return false;
}

/* A token count: an integer, or a number with a K/M/B/T suffix in a plain or quoted string. */
static bool parse_tokens(const chm_ynode *n, double *v) {
    int64_t i;
    if (parse_int(n, &i)) {
        *v = (double)i;
        return true;
    }
    if (n->kind != CHM_YNODE_SCALAR || !*n->text) return false;
    char buf[64], *end;
    if (!strip_separators(n->text, buf, sizeof buf)) return false;
    double x = strtod(buf, &end), scale = 0;
    switch (*end) {
    case 'k': case 'K': scale = 1e3; break;
    case 'm': case 'M': scale = 1e6; break;
    case 'b': case 'B': scale = 1e9; break;
    case 't': case 'T': scale = 1e12; break;
    default: return false;
    }
    if (end == buf || end[1] || !isfinite(x)) return false;
    *v = x * scale;
    return *v == floor(*v);
}

static bool in_range(const cfg_field *f, double x) {
    bool lo_ok = f->lo_open ? x > f->lo : x >= f->lo;
    bool hi_ok = f->hi_open ? x < f->hi : x <= f->hi;
    return lo_ok && hi_ok;
}

/* "expected <what f accepts>, found <n>" at node n. */
static chm_status mismatch(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n,
                           const char *path) {
    char want[256], found[128];
    chm_cfg_expected(f, want, sizeof want);
    chm_ynode_describe(n, found, sizeof found);
    return chm_cfg_fail(c, n, false, path, CHM_ERR_CONFIG, "expected %s, found %s", want, found);
}

/* A number (integer if `integral`) in the field's range, or a mismatch error. */
static chm_status read_number(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n,
                              const char *path, bool integral, double *out) {
    int64_t i;
    bool ok = integral ? parse_int(n, &i) : parse_number(n, out);
    if (integral && ok) *out = (double)i;
    if (!ok || !in_range(f, *out)) return mismatch(c, f, n, path);
    return CHM_OK;
}

static chm_status convert_string(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n,
                                 void *dst) {
    if (n->kind != CHM_YNODE_SCALAR || strlen(n->text) < (size_t)f->lo)
        return mismatch(c, f, n, f->path);
    char *s = chm_ystrdup(n->text);
    if (!s) return CHM_ERR(c->err, CHM_ERR_NOMEM, "out of memory");
    free(*(char **)dst);
    *(char **)dst = s;
    return CHM_OK;
}

static chm_status convert_enum(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n,
                               void *dst) {
    for (int i = 0; n->kind == CHM_YNODE_SCALAR && f->names[i]; i++) {
        if (!strcmp(n->text, f->names[i])) {
            *(int *)dst = i;
            return CHM_OK;
        }
    }
    return mismatch(c, f, n, f->path);
}

static chm_status convert_pattern(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n,
                                  char *dst) {
    size_t len = n->kind == CHM_YNODE_SCALAR ? strlen(n->text) : 0;
    if (len < 1 || len > CHM_CONFIG_MAX_LAYERS || strspn(n->text, "AM") != len)
        return mismatch(c, f, n, f->path);
    memcpy(dst, n->text, len + 1);
    return CHM_OK;
}

/* A list read item by item; items get paths like "model.mod.layers[2]". */
static chm_status convert_layers(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n,
                                 chm_config_mod *mod) {
    if (n->kind != CHM_YNODE_LIST || n->n_kids > CHM_CONFIG_MAX_LAYERS)
        return mismatch(c, f, n, f->path);
    cfg_field item = *f;
    item.type = CFG_INT;
    for (int i = 0; i < n->n_kids; i++) {
        char path[96];
        double x;
        snprintf(path, sizeof path, "%s[%d]", f->path, i);
        chm_status rc = read_number(c, &item, n->kids[i], path, true, &x);
        if (rc) return rc;
        mod->layers[i] = (int)x;
    }
    mod->n_layers = n->n_kids;
    return CHM_OK;
}

static chm_status convert_betas(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n,
                                double *dst) {
    if (n->kind != CHM_YNODE_LIST || n->n_kids != 2) return mismatch(c, f, n, f->path);
    cfg_field item = *f;
    item.type = CFG_F64;
    for (int i = 0; i < 2; i++) {
        char path[96];
        snprintf(path, sizeof path, "%s[%d]", f->path, i);
        chm_status rc = read_number(c, &item, n->kids[i], path, false, &dst[i]);
        if (rc) return rc;
    }
    return CHM_OK;
}

/* Integer-like fields: CFG_INT, CFG_I64, CFG_DTRANK, CFG_TOKENS. */
static chm_status convert_count(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n,
                                void *dst) {
    double x;
    if (f->type == CFG_DTRANK && n->kind == CHM_YNODE_SCALAR && !strcmp(n->text, "auto")) {
        *(int *)dst = 0;
        return CHM_OK;
    }
    if (f->type == CFG_TOKENS) {
        if (!parse_tokens(n, &x) || !in_range(f, x)) return mismatch(c, f, n, f->path);
    } else {
        chm_status rc = read_number(c, f, n, f->path, true, &x);
        if (rc) return rc;
    }
    if (f->type == CFG_INT || f->type == CFG_DTRANK)
        *(int *)dst = (int)x;
    else
        *(int64_t *)dst = (int64_t)x;
    return CHM_OK;
}

chm_status chm_cfg_convert(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n) {
    void *dst = (char *)c->cfg + f->off;
    switch (f->type) {
    case CFG_INT:
    case CFG_I64:
    case CFG_DTRANK:
    case CFG_TOKENS: return convert_count(c, f, n, dst);
    case CFG_F64: return read_number(c, f, n, f->path, false, (double *)dst);
    case CFG_BOOL: {
        bool b;
        if (!parse_bool(n, &b)) return mismatch(c, f, n, f->path);
        *(bool *)dst = b;
        return CHM_OK;
    }
    case CFG_STR: return convert_string(c, f, n, dst);
    case CFG_ENUM: return convert_enum(c, f, n, dst);
    case CFG_LAYERS: return convert_layers(c, f, n, (chm_config_mod *)dst);
    case CFG_BETAS: return convert_betas(c, f, n, (double *)dst);
    case CFG_PATTERN: return convert_pattern(c, f, n, (char *)dst);
    }
    return CHM_ERR(c->err, CHM_ERR_INTERNAL, "config key %s has no converter", f->path);
}
