/*
 * config_internal.h: the config schema table and the helpers shared by the
 * loader (config_load.c, config_check.c), the value converters
 * (config_convert.c), the writer (config_write.c) and the key suggester
 * (suggest.c). Not part of the public API.
 */
#ifndef CHIMERA_CONFIG_INTERNAL_H
#define CHIMERA_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "chimera/config.h"
#include "yaml_tree.h"

/* How a key's value is read and where it is stored. */
typedef enum cfg_type {
    CFG_INT,      /* int; range lo..hi */
    CFG_I64,      /* int64_t; range lo..hi */
    CFG_F64,      /* double; range lo..hi, ends open where lo_open/hi_open */
    CFG_BOOL,     /* bool */
    CFG_STR,      /* char * (owned); at least lo characters */
    CFG_ENUM,     /* an enum stored as int: index of the value in names[] */
    CFG_TOKENS,   /* int64_t: an integer or a string like "100B" (K/M/B/T suffixes) */
    CFG_DTRANK,   /* int: "auto" (stored as 0) or an integer in lo..hi */
    CFG_LAYERS,   /* chm_config_mod: a list of layer indices (n_layers, layers[]) */
    CFG_BETAS,    /* double[2]: a list of two numbers in lo..hi */
    CFG_PATTERN   /* char[CHM_CONFIG_MAX_LAYERS + 1]: 'A'/'M' letters */
} cfg_type;

/* One key of the schema. Sections (model, model.moe, ...) are the prefixes of the paths. */
typedef struct cfg_field {
    const char *path;          /* dotted key path, e.g. "model.moe.top_k" */
    cfg_type type;
    size_t off;                /* offset of the value in chm_config */
    bool required;
    const char *def;           /* default as YAML text; NULL: required, or resolved from others */
    double lo, hi;             /* allowed range (see cfg_type) */
    bool lo_open, hi_open;     /* CFG_F64: the end itself is excluded */
    const char *const *names;  /* CFG_ENUM: the allowed values, NULL-terminated */
} cfg_field;

extern const cfg_field chm_cfg_fields[];
extern const int chm_cfg_n_fields;
#define CFG_MAX_FIELDS 96

/* The field at `path`, or NULL. */
const cfg_field *chm_cfg_field(const char *path);

/* Index of `path` in chm_cfg_fields; -1 if none. */
int chm_cfg_field_index(const char *path);

/* True when `path` is a section: some field's path starts with "path.". "" is the top level. */
bool chm_cfg_is_section(const char *path);

/* The distinct next components of the paths below section `section` ("" = top level), in table
 * order: e.g. "model.mamba" -> d_state, d_conv, expand, dt_rank. Returns the count (<= max). */
int chm_cfg_children(const char *section, const char **names, int max);

/* What a field accepts, for "expected ..." texts: "an integer >= 1", "a number in (0, 1]". */
void chm_cfg_expected(const cfg_field *f, char *buf, size_t size);

/* State of one load: where messages point, the tree, the struct being filled. */
typedef struct cfg_ctx {
    const char *name;             /* file name or display name, for "name:line:col" */
    chm_ynode *root;              /* the tree after overrides */
    chm_config *cfg;
    chm_err *err;
    bool given[CFG_MAX_FIELDS];   /* field i had a non-null value in the tree */
} cfg_ctx;

/* Fail with "WHERE: path: <fmt>" where WHERE is node `at` (its key when at_key); the path is left
 * out when it is the --set path itself. Returns `code`. */
chm_status chm_cfg_fail(const cfg_ctx *c, const chm_ynode *at, bool at_key, const char *path,
                        chm_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

/* Fail at the value of `path`, or at the nearest key above it when it is missing. */
chm_status chm_cfg_fail_path(const cfg_ctx *c, const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Read node `n` (not NULL, not null) into field `f` of c->cfg, checking type and range. */
chm_status chm_cfg_convert(const cfg_ctx *c, const cfg_field *f, const chm_ynode *n);

/* Check cross-key consistency and fill in the derived values of c->cfg (config_check.c). */
chm_status chm_cfg_resolve(cfg_ctx *c);

/* Edit distance between a and b (insertions, deletions, substitutions, adjacent swaps). */
int chm_cfg_edit_distance(const char *a, const char *b);

/* The candidate closest to `word` if it is close enough to be a likely typo, else NULL. */
const char *chm_cfg_suggest(const char *word, const char *const *cands, int n);

#endif
