/*
 * config_load.c: the public load functions (file, string, builtin, spec) and
 * the two passes over the YAML tree that come before the cross-key checks:
 * every key must be known (with a did-you-mean when it is not), then every
 * schema key is read, from the tree or from its default.
 */
#include "config_internal.h"
#include "core/embedded.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- unknown keys -------------------------------------------------------------- */

/* A key path elsewhere in the schema whose last part is close to `key` ("d_model" under train
 * -> "model.d_model"), or NULL. The result lives in a static buffer. */
static const char *suggest_elsewhere(const char *key) {
    static _Thread_local char full[2 * CFG_MAX_FIELDS][64];
    const char *last[2 * CFG_MAX_FIELDS];
    int n = 0;
    /* Candidates: every field path and every section path (each prefix ending before a dot). */
    for (int i = 0; i < chm_cfg_n_fields; i++) {
        const char *p = chm_cfg_fields[i].path;
        for (const char *d = strchr(p, '.');; d = strchr(d + 1, '.')) {
            size_t len = d ? (size_t)(d - p) : strlen(p);
            bool dup = false;
            for (int j = 0; j < n && !dup; j++)
                dup = strlen(full[j]) == len && !strncmp(full[j], p, len);
            if (!dup && len < sizeof full[0] && n < 2 * CFG_MAX_FIELDS) {
                memcpy(full[n], p, len);
                full[n][len] = 0;
                const char *dot = strrchr(full[n], '.');
                last[n] = dot ? dot + 1 : full[n];
                n++;
            }
            if (!d) break;
        }
    }
    const char *s = chm_cfg_suggest(key, last, n);
    for (int i = 0; s && i < n; i++)
        if (last[i] == s) return full[i];
    return NULL;
}

static chm_status unknown_key(const cfg_ctx *c, const chm_ynode *kid, const char *section,
                              const char *path) {
    const char *names[CFG_MAX_FIELDS];
    int n = chm_cfg_children(section, names, CFG_MAX_FIELDS);
    char in[200];
    snprintf(in, sizeof in, *section ? "in %s" : "at the top level", section);
    const char *s = chm_cfg_suggest(kid->key, names, n);
    if (s)
        return chm_cfg_fail(c, kid, true, path, CHM_ERR_CONFIG,
                            "unknown key '%s' %s; did you mean '%s'?", kid->key, in, s);
    const char *other = suggest_elsewhere(kid->key);
    if (other)
        return chm_cfg_fail(c, kid, true, path, CHM_ERR_CONFIG,
                            "unknown key '%s' %s; did you mean '%s'? (it goes in a different "
                            "section)",
                            kid->key, in, other);
    char list[600];
    size_t len = 0;
    for (int i = 0; i < n && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", names[i]);
    return chm_cfg_fail(c, kid, true, path, CHM_ERR_CONFIG,
                        "unknown key '%s' %s; expected one of: %s", kid->key, in, list);
}

/* Every key of `map` (the section at `section`) must be a field or a section of the schema. */
static chm_status check_keys(const cfg_ctx *c, const chm_ynode *map, const char *section) {
    for (int i = 0; i < map->n_kids; i++) {
        const chm_ynode *kid = map->kids[i];
        char path[256], found[128];
        snprintf(path, sizeof path, "%s%s%s", section, *section ? "." : "", kid->key);
        if (strchr(kid->key, '.'))
            return chm_cfg_fail(c, kid, true, path, CHM_ERR_CONFIG,
                                "expected a plain key, found the dotted key '%s' (nest it: "
                                "one map per section)",
                                kid->key);
        if (chm_cfg_field(path)) continue;
        if (!chm_cfg_is_section(path)) return unknown_key(c, kid, section, path);
        if (kid->kind == CHM_YNODE_MAP) {
            chm_status rc = check_keys(c, kid, path);
            if (rc) return rc;
        } else if (!chm_ynode_is_null(kid)) {
            chm_ynode_describe(kid, found, sizeof found);
            return chm_cfg_fail(c, kid, false, path, CHM_ERR_CONFIG,
                                "expected a map of %s settings, found %s", path, found);
        }
    }
    return CHM_OK;
}

/* ---- reading the fields ------------------------------------------------------------ */

static chm_status read_default(const cfg_ctx *c, const cfg_field *f) {
    chm_ynode *n = NULL;
    chm_status rc = chm_ytree_parse_value(f->def, f->path, &n, c->err);
    if (!rc) rc = chm_cfg_convert(c, f, n);
    chm_ynode_free(n);
    if (rc && rc != CHM_ERR_NOMEM)
        return CHM_ERR(c->err, CHM_ERR_INTERNAL, "bad default for %s: %s", f->path, c->err->msg);
    return rc;
}

static chm_status read_fields(cfg_ctx *c) {
    for (int i = 0; i < chm_cfg_n_fields; i++) {
        const cfg_field *f = &chm_cfg_fields[i];
        const chm_ynode *n = chm_ynode_find(c->root, f->path, NULL);
        chm_status rc = CHM_OK;
        char want[256];
        chm_cfg_expected(f, want, sizeof want);
        if (n && !chm_ynode_is_null(n)) {
            c->given[i] = true;
            rc = chm_cfg_convert(c, f, n);
        } else if (f->required && n) {
            rc = chm_cfg_fail(c, n, false, f->path, CHM_ERR_CONFIG,
                              "expected %s, found an empty value (the key is required)", want);
        } else if (f->required) {
            rc = chm_cfg_fail_path(c, f->path, "missing required key: expected %s, found nothing",
                                   want);
        } else if (f->def) {
            rc = read_default(c, f);
        }
        if (rc) return rc;
    }
    return CHM_OK;
}

/* ---- entry points ------------------------------------------------------------------ */

static chm_status load_text(const char *text, size_t len, const char *name,
                            const char *const *sets, int n_sets, chm_config *cfg, chm_err *err) {
    memset(cfg, 0, sizeof *cfg);
    cfg_ctx c = {.name = name, .cfg = cfg, .err = err};
    chm_status rc = chm_ytree_parse(text, len, name, &c.root, err);
    if (!rc && c.root && c.root->kind != CHM_YNODE_MAP) {
        char found[128];
        chm_ynode_describe(c.root, found, sizeof found);
        rc = chm_cfg_fail(&c, c.root, false, "", CHM_ERR_CONFIG,
                          "expected a map of sections (model, train, data, ...), found %s", found);
    }
    for (int i = 0; !rc && i < n_sets; i++) rc = chm_ytree_apply_set(&c.root, sets[i], err);
    if (!rc && c.root) rc = check_keys(&c, c.root, "");
    if (!rc) rc = read_fields(&c);
    if (!rc) rc = chm_cfg_resolve(&c);
    if (!rc && !(cfg->source = chm_ystrdup(name)))
        rc = CHM_ERR(err, CHM_ERR_NOMEM, "out of memory");
    chm_ynode_free(c.root);
    if (rc) chm_config_free(cfg);
    return rc;
}

/* Read a whole file into a NUL-terminated buffer (works for pipes too). */
static chm_status read_file(const char *path, char **text, size_t *len, chm_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return CHM_ERR(err, CHM_ERR_IO, "cannot open config %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    chm_status rc = buf ? CHM_OK : CHM_ERR(err, CHM_ERR_NOMEM, "out of memory reading %s", path);
    while (!rc) {
        if (n + 1 >= cap) {
            if (cap > CHM_YTREE_MAX_BYTES) {
                rc = CHM_ERR(err, CHM_ERR_IO, "cannot read config %s: larger than %d MiB", path,
                             CHM_YTREE_MAX_BYTES >> 20);
                break;
            }
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                rc = CHM_ERR(err, CHM_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            buf = b;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0 && ferror(f))
            rc = CHM_ERR(err, CHM_ERR_IO, "cannot read config %s: %s", path, strerror(errno));
        if (got == 0) break;
    }
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *text = buf;
    *len = n;
    return CHM_OK;
}

chm_status chm_config_load_file(const char *path, const char *const *sets, int n_sets,
                                chm_config *cfg, chm_err *err) {
    char *text = NULL;
    size_t len = 0;
    memset(cfg, 0, sizeof *cfg);
    chm_status rc = read_file(path, &text, &len, err);
    if (rc) return rc;
    rc = load_text(text, len, path, sets, n_sets, cfg, err);
    free(text);
    return rc;
}

chm_status chm_config_load_string(const char *text, const char *name, const char *const *sets,
                                  int n_sets, chm_config *cfg, chm_err *err) {
    return load_text(text, strlen(text), name ? name : "<string>", sets, n_sets, cfg, err);
}

/* "test, tiny, training_dolma": the embedded configs, for messages. */
static void builtin_names(char *buf, size_t size) {
    size_t n = 0;
    buf[0] = 0;
    for (const chm_embedded_file *f = chm_embedded_configs; f->name && n < size; f++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", f->name);
}

chm_status chm_config_load_builtin(const char *name, const char *const *sets, int n_sets,
                                   chm_config *cfg, chm_err *err) {
    memset(cfg, 0, sizeof *cfg);
    const chm_embedded_file *f = chm_embedded_config(name);
    if (!f) {
        char names[256];
        builtin_names(names, sizeof names);
        return CHM_ERR(err, CHM_ERR_IO, "no built-in config named '%s' (built-in: %s)", name,
                       names);
    }
    char display[128];
    snprintf(display, sizeof display, "<builtin %s.yaml>", name);
    return load_text(f->text, f->size, display, sets, n_sets, cfg, err);
}

chm_status chm_config_load(const char *spec, const char *const *sets, int n_sets,
                           chm_config *cfg, chm_err *err) {
    if (!spec) return chm_config_load_builtin("test", sets, n_sets, cfg, err);
    FILE *f = fopen(spec, "rb");
    if (f) {
        fclose(f);
        return chm_config_load_file(spec, sets, n_sets, cfg, err);
    }
    int e = errno;
    if (e == ENOENT && chm_embedded_config(spec))
        return chm_config_load_builtin(spec, sets, n_sets, cfg, err);
    memset(cfg, 0, sizeof *cfg);
    char names[256];
    builtin_names(names, sizeof names);
    return CHM_ERR(err, CHM_ERR_IO, "cannot open config %s: %s (nor is it a built-in config: %s)",
                   spec, strerror(e), names);
}

void chm_config_free(chm_config *cfg) {
    if (!cfg) return;
    free(cfg->train.out_dir);
    free(cfg->data.train);
    free(cfg->data.val);
    free(cfg->data.tokenizer);
    free(cfg->source);
    memset(cfg, 0, sizeof *cfg);
}
