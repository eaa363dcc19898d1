/*
 * yaml_tree.c: libyaml document -> owned chm_ynode tree, and the tree edits
 * that --set overrides need (see yaml_tree.h).
 */
#include "yaml_tree.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

char *chm_ystrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static chm_ynode *node_new(chm_ynode_kind kind, const char *set) {
    chm_ynode *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    if (set && !(n->set = chm_ystrdup(set))) {
        free(n);
        return NULL;
    }
    return n;
}

void chm_ynode_free(chm_ynode *n) {
    if (!n) return;
    for (int i = 0; i < n->n_kids; i++) chm_ynode_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n->key);
    free(n->set);
    free(n);
}

/* Append `kid` to `n` (growing the array); on failure the caller still owns kid. */
static bool node_push(chm_ynode *n, chm_ynode *kid) {
    if (n->n_kids == n->cap_kids) {
        int cap = n->cap_kids ? 2 * n->cap_kids : 8;
        chm_ynode **k = realloc(n->kids, (size_t)cap * sizeof *k);
        if (!k) return false;
        n->kids = k;
        n->cap_kids = cap;
    }
    n->kids[n->n_kids++] = kid;
    return true;
}

bool chm_ynode_is_null(const chm_ynode *n) {
    if (!n || n->kind != CHM_YNODE_SCALAR || !n->plain) return false;
    const char *t = n->text;
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") ||
           !strcmp(t, "NULL");
}

chm_ynode *chm_ynode_get(const chm_ynode *map, const char *key) {
    if (!map || map->kind != CHM_YNODE_MAP) return NULL;
    for (int i = 0; i < map->n_kids; i++)
        if (!strcmp(map->kids[i]->key, key)) return map->kids[i];
    return NULL;
}

chm_ynode *chm_ynode_find(const chm_ynode *root, const char *path, const chm_ynode **nearest) {
    const chm_ynode *at = root;
    const char *p = path;
    if (nearest) *nearest = root;
    while (at && *p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        char key[128];
        if (len >= sizeof key) return NULL;
        memcpy(key, p, len);
        key[len] = 0;
        at = chm_ynode_get(at, key);
        if (at && nearest) *nearest = at;
        p = dot ? dot + 1 : p + len;
    }
    return (chm_ynode *)at;
}

void chm_ynode_where(const chm_ynode *n, const char *name, bool at_key, char *buf, size_t size) {
    if (n && n->set)
        snprintf(buf, size, "--set %s", n->set);
    else if (!n)
        snprintf(buf, size, "%s:1:1", name);
    else if (at_key && n->key_line)
        snprintf(buf, size, "%s:%d:%d", name, n->key_line, n->key_col);
    else
        snprintf(buf, size, "%s:%d:%d", name, n->line ? n->line : 1, n->col ? n->col : 1);
}

/* True when a plain scalar reads as a number (so it is shown bare, not quoted). */
static bool looks_numeric(const char *t) {
    char *end;
    if (!*t) return false;
    (void)strtod(t, &end);
    return *end == 0;
}

void chm_ynode_describe(const chm_ynode *n, char *buf, size_t size) {
    if (!n)
        snprintf(buf, size, "nothing");
    else if (n->kind == CHM_YNODE_MAP)
        snprintf(buf, size, "a map");
    else if (n->kind == CHM_YNODE_LIST)
        snprintf(buf, size, "a list");
    else if (chm_ynode_is_null(n))
        snprintf(buf, size, "an empty value");
    else if (!n->plain)
        snprintf(buf, size, "the string \"%.60s\"", n->text);
    else if (looks_numeric(n->text))
        snprintf(buf, size, "%.60s", n->text);
    else
        snprintf(buf, size, "'%.60s'", n->text);
}

/* ---- libyaml document -> tree ----------------------------------------------- */

typedef struct conv {
    yaml_document_t *doc;
    const char *name;  /* file name for positions */
    const char *set;   /* override path when converting a --set value, else NULL */
    int count;         /* nodes made so far */
    chm_err *err;
} conv;

static chm_status conv_node(conv *c, yaml_node_t *yn, int depth, const char *path,
                            chm_ynode **out);

/* Position prefix for an error at mark `m` of the text being converted. */
static void conv_where(const conv *c, yaml_mark_t m, char *buf, size_t size) {
    if (c->set)
        snprintf(buf, size, "--set %s", c->set);
    else
        snprintf(buf, size, "%s:%zu:%zu", c->name, m.line + 1, m.column + 1);
}

static chm_status conv_scalar(conv *c, yaml_node_t *yn, chm_ynode *n) {
    size_t len = yn->data.scalar.length;
    n->text = malloc(len + 1);
    if (!n->text) return CHM_ERR(c->err, CHM_ERR_NOMEM, "out of memory reading %s", c->name);
    memcpy(n->text, yn->data.scalar.value, len);
    n->text[len] = 0;
    n->plain = yn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ||
               yn->data.scalar.style == YAML_ANY_SCALAR_STYLE;
    return CHM_OK;
}

static chm_status conv_list(conv *c, yaml_node_t *yn, int depth, const char *path,
                            chm_ynode *n) {
    int i = 0;
    for (yaml_node_item_t *it = yn->data.sequence.items.start; it < yn->data.sequence.items.top;
         it++, i++) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        chm_ynode *kid = NULL;
        chm_status rc = conv_node(c, yaml_document_get_node(c->doc, *it), depth + 1, sub, &kid);
        if (rc) return rc;
        if (!node_push(n, kid)) {
            chm_ynode_free(kid);
            return CHM_ERR(c->err, CHM_ERR_NOMEM, "out of memory reading %s", c->name);
        }
    }
    return CHM_OK;
}

/* Check one map key: a scalar, not seen before in this map. */
static chm_status conv_key(conv *c, const chm_ynode *map, yaml_node_t *kn, const char *path) {
    char where[600], sub[512];
    conv_where(c, kn->start_mark, where, sizeof where);
    if (kn->type != YAML_SCALAR_NODE)
        return CHM_ERR(c->err, CHM_ERR_PARSE, "%s: %s: expected a plain key, found a %s as key",
                       where, *path ? path : "(top level)",
                       kn->type == YAML_MAPPING_NODE ? "map" : "list");
    const char *key = (const char *)kn->data.scalar.value;
    snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
    const chm_ynode *old = chm_ynode_get(map, key);
    if (old) {
        char first[600];
        chm_ynode_where(old, c->name, true, first, sizeof first);
        return CHM_ERR(c->err, CHM_ERR_PARSE,
                       "%s: %s: expected each key once, found it again (first at %s)", where, sub,
                       first);
    }
    return CHM_OK;
}

static chm_status conv_map(conv *c, yaml_node_t *yn, int depth, const char *path,
                           chm_ynode *n) {
    for (yaml_node_pair_t *p = yn->data.mapping.pairs.start; p < yn->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
        chm_status rc = conv_key(c, n, kn, path);
        if (rc) return rc;
        char sub[512];
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", kn->data.scalar.value);
        chm_ynode *kid = NULL;
        rc = conv_node(c, yaml_document_get_node(c->doc, p->value), depth + 1, sub, &kid);
        if (rc) return rc;
        kid->key = chm_ystrdup((const char *)kn->data.scalar.value);
        kid->key_line = c->set ? 0 : (int)kn->start_mark.line + 1;
        kid->key_col = c->set ? 0 : (int)kn->start_mark.column + 1;
        if (!kid->key || !node_push(n, kid)) {
            chm_ynode_free(kid);
            return CHM_ERR(c->err, CHM_ERR_NOMEM, "out of memory reading %s", c->name);
        }
    }
    return CHM_OK;
}

static chm_status conv_node(conv *c, yaml_node_t *yn, int depth, const char *path,
                            chm_ynode **out) {
    char where[600];
    conv_where(c, yn->start_mark, where, sizeof where);
    if (depth > CHM_YTREE_MAX_DEPTH || ++c->count > CHM_YTREE_MAX_NODES)
        return CHM_ERR(c->err, CHM_ERR_PARSE,
                       "%s: %s: expected at most %d levels and %d nodes, found more (a recursive "
                       "or exploding alias?)",
                       where, *path ? path : "(top level)", CHM_YTREE_MAX_DEPTH,
                       CHM_YTREE_MAX_NODES);
    chm_ynode_kind kind = yn->type == YAML_SCALAR_NODE     ? CHM_YNODE_SCALAR
                          : yn->type == YAML_SEQUENCE_NODE ? CHM_YNODE_LIST
                                                           : CHM_YNODE_MAP;
    chm_ynode *n = node_new(kind, c->set);
    if (!n) return CHM_ERR(c->err, CHM_ERR_NOMEM, "out of memory reading %s", c->name);
    if (!c->set) {
        n->line = (int)yn->start_mark.line + 1;
        n->col = (int)yn->start_mark.column + 1;
    }
    chm_status rc = kind == CHM_YNODE_SCALAR ? conv_scalar(c, yn, n)
                    : kind == CHM_YNODE_LIST ? conv_list(c, yn, depth, path, n)
                                             : conv_map(c, yn, depth, path, n);
    if (rc) {
        chm_ynode_free(n);
        return rc;
    }
    *out = n;
    return CHM_OK;
}

/* ---- parsing ----------------------------------------------------------------- */

/* 1-based line and column of byte `off` of `text` (libyaml's reader errors give offsets only). */
static void offset_to_mark(const char *text, size_t len, size_t off, size_t *line, size_t *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* The message for a failed yaml_parser_load, in "where: what" form. */
static chm_status syntax_error(const yaml_parser_t *p, const char *text, size_t len,
                               const char *name, const char *set, chm_err *err) {
    size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;
    if (p->error == YAML_READER_ERROR) offset_to_mark(text, len, p->problem_offset, &line, &col);
    if (p->error == YAML_MEMORY_ERROR)
        return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory parsing %s", set ? set : name);
    const char *problem = p->problem ? p->problem : "unknown problem";
    char ctx[200] = "";
    if (p->context)
        snprintf(ctx, sizeof ctx, " (%s at line %zu, column %zu)", p->context,
                 p->context_mark.line + 1, p->context_mark.column + 1);
    if (set)
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "--set %s: expected a YAML scalar or flow list like [1, 2], found invalid "
                       "YAML (%s)",
                       set, problem);
    return CHM_ERR(err, CHM_ERR_PARSE, "%s:%zu:%zu: invalid YAML: %s%s", name, line, col, problem,
                   ctx);
}

/* After the first document: fail if a second one with content follows. */
static chm_status check_single_document(yaml_parser_t *p, const char *text, size_t len,
                                        const char *name, const char *set, chm_err *err) {
    yaml_document_t doc;
    if (!yaml_parser_load(p, &doc)) return syntax_error(p, text, len, name, set, err);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    chm_status rc = CHM_OK;
    if (root) {
        char where[600];
        conv c = {.name = name, .set = set};
        conv_where(&c, root->start_mark, where, sizeof where);
        rc = CHM_ERR(err, CHM_ERR_PARSE,
                     "%s: expected one YAML document, found a second one (remove the '---')",
                     where);
    }
    yaml_document_delete(&doc);
    return rc;
}

static chm_status parse_any(const char *text, size_t len, const char *name, const char *set,
                            chm_ynode **root, chm_err *err) {
    yaml_parser_t p;
    yaml_document_t doc;
    *root = NULL;
    if (!yaml_parser_initialize(&p)) return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, &doc)) {
        chm_status rc = syntax_error(&p, text, len, name, set, err);
        yaml_parser_delete(&p);
        return rc;
    }
    chm_status rc = CHM_OK;
    yaml_node_t *top = yaml_document_get_root_node(&doc);
    if (top) {
        conv c = {.doc = &doc, .name = name, .set = set, .err = err};
        rc = conv_node(&c, top, 0, set ? set : "", root);
    }
    yaml_document_delete(&doc);
    if (!rc) rc = check_single_document(&p, text, len, name, set, err);
    yaml_parser_delete(&p);
    if (rc) {
        chm_ynode_free(*root);
        *root = NULL;
    }
    return rc;
}

chm_status chm_ytree_parse(const char *text, size_t len, const char *name, chm_ynode **root,
                           chm_err *err) {
    return parse_any(text, len, name, NULL, root, err);
}

chm_status chm_ytree_parse_value(const char *value, const char *path, chm_ynode **node,
                                 chm_err *err) {
    chm_status rc = parse_any(value, strlen(value), path, path, node, err);
    if (rc) return rc;
    if (!*node) {
        /* An empty value is a null scalar, as after "key:" in a file. */
        *node = node_new(CHM_YNODE_SCALAR, path);
        if (!*node || !((*node)->text = chm_ystrdup(""))) {
            chm_ynode_free(*node);
            *node = NULL;
            return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory");
        }
        (*node)->plain = true;
    }
    if ((*node)->kind == CHM_YNODE_MAP) {
        chm_ynode_free(*node);
        *node = NULL;
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "--set %s: expected a YAML scalar or flow list like [1, 2], found a map "
                       "(set its keys one by one: --set %s.KEY=VALUE)",
                       path, path);
    }
    return CHM_OK;
}

/* ---- overrides ----------------------------------------------------------------- */

/* Split "a.b.c=value" into a checked key path and the value (CHM_ERR_CONFIG if malformed). */
static chm_status split_assignment(const char *arg, char *path, size_t size, const char **value,
                                   chm_err *err) {
    const char *eq = strchr(arg, '=');
    if (!eq)
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "--set %s: expected key.path=value, found no '=' (e.g. --set "
                       "train.lr=3e-4)",
                       arg);
    size_t len = (size_t)(eq - arg);
    bool ok = len > 0 && len < size && arg[0] != '.' && arg[len - 1] != '.';
    for (size_t i = 0; ok && i < len; i++) {
        char ch = arg[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '_' || ch == '-' || (ch == '.' && arg[i + 1] != '.');
    }
    if (!ok)
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "--set %s: expected key.path=value with a key path of dot-separated "
                       "names, found '%.*s'",
                       arg, (int)len, arg);
    memcpy(path, arg, len);
    path[len] = 0;
    *value = eq + 1;
    return CHM_OK;
}

/* The map for key `key` inside `map`, made (or made from a null) when missing. */
static chm_status child_map(chm_ynode *map, const char *key, const char *path, size_t prefix_len,
                            chm_ynode **out, chm_err *err) {
    chm_ynode *kid = chm_ynode_get(map, key);
    if (kid && kid->kind == CHM_YNODE_MAP) {
        *out = kid;
        return CHM_OK;
    }
    if (kid && !chm_ynode_is_null(kid)) {
        char found[128];
        chm_ynode_describe(kid, found, sizeof found);
        return CHM_ERR(err, CHM_ERR_CONFIG, "--set %s: expected a map at %.*s, found %s", path,
                       (int)prefix_len, path, found);
    }
    if (kid) { /* "key:" with nothing after it becomes the map */
        free(kid->text);
        kid->text = NULL;
        kid->kind = CHM_YNODE_MAP;
        *out = kid;
        return CHM_OK;
    }
    kid = node_new(CHM_YNODE_MAP, path);
    if (!kid || !(kid->key = chm_ystrdup(key)) || !node_push(map, kid)) {
        chm_ynode_free(kid);
        return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory");
    }
    *out = kid;
    return CHM_OK;
}

/* Put `val` under `key` in `map`, replacing an existing entry in place (keeps the order). */
static chm_status put_value(chm_ynode *map, const char *key, chm_ynode *val, chm_err *err) {
    if (!(val->key = chm_ystrdup(key))) return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < map->n_kids; i++) {
        if (!strcmp(map->kids[i]->key, key)) {
            chm_ynode_free(map->kids[i]);
            map->kids[i] = val;
            return CHM_OK;
        }
    }
    if (!node_push(map, val)) return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory");
    return CHM_OK;
}

chm_status chm_ytree_apply_set(chm_ynode **root, const char *assignment, chm_err *err) {
    char path[256];
    const char *value = NULL;
    chm_status rc = split_assignment(assignment, path, sizeof path, &value, err);
    if (rc) return rc;
    if (!*root && !(*root = node_new(CHM_YNODE_MAP, NULL)))
        return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory");
    if ((*root)->kind != CHM_YNODE_MAP)
        return CHM_ERR(err, CHM_ERR_CONFIG,
                       "--set %s: expected the config to be a map of sections, found a %s", path,
                       (*root)->kind == CHM_YNODE_LIST ? "list" : "scalar");
    chm_ynode *map = *root;
    const char *seg = path, *dot;
    while ((dot = strchr(seg, '.'))) {
        char key[256];
        memcpy(key, seg, (size_t)(dot - seg));
        key[dot - seg] = 0;
        rc = child_map(map, key, path, (size_t)(dot - path), &map, err);
        if (rc) return rc;
        seg = dot + 1;
    }
    chm_ynode *val = NULL;
    if ((rc = chm_ytree_parse_value(value, path, &val, err))) return rc;
    if ((rc = put_value(map, seg, val, err))) chm_ynode_free(val);
    return rc;
}
