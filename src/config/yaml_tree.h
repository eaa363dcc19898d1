/*
 * yaml_tree.h: a small owned tree of YAML nodes (maps, lists, scalars) with
 * their source positions, built from libyaml's document API. The config loader
 * edits it (--set overrides) before it reads values out of it, which libyaml's
 * own document cannot do conveniently, and every node remembers where it came
 * from: "file:line:col" for nodes read from text, "--set key.path" for nodes an
 * override made.
 */
#ifndef CHIMERA_CONFIG_YAML_TREE_H
#define CHIMERA_CONFIG_YAML_TREE_H

#include <stdbool.h>
#include <stddef.h>

#include "chimera/error.h"

typedef enum chm_ynode_kind {
    CHM_YNODE_SCALAR,
    CHM_YNODE_LIST,
    CHM_YNODE_MAP
} chm_ynode_kind;

typedef struct chm_ynode chm_ynode;

/* One node. A map's entries are its kids, each carrying its own key. */
struct chm_ynode {
    chm_ynode_kind kind;
    char *text;           /* SCALAR: the value (owned, NUL-terminated); NULL otherwise */
    bool plain;           /* SCALAR: written unquoted, so it may be null, a bool or a number */
    int line, col;        /* 1-based position of the value; 0 when an override made the node */
    char *key;            /* key in the parent map (owned), or NULL */
    int key_line, key_col;
    char *set;            /* key path of the --set that made this node (owned), or NULL */
    chm_ynode **kids;     /* LIST items or MAP entries */
    int n_kids, cap_kids;
};

/* Largest YAML text read (bytes), deepest nesting and most nodes: a config is small,
 * and the limits stop alias bombs and recursive aliases. */
#define CHM_YTREE_MAX_BYTES (16 << 20)
#define CHM_YTREE_MAX_DEPTH 32
#define CHM_YTREE_MAX_NODES 100000

/* Parse the first document of `text` (len bytes). `name` prefixes positions in messages.
 * *root is NULL for an empty document. CHM_ERR_PARSE on bad YAML, more than one document or
 * duplicate keys; CHM_ERR_NOMEM. */
chm_status chm_ytree_parse(const char *text, size_t len, const char *name, chm_ynode **root,
                           chm_err *err);

/* Parse `value` as the value of an override of `path`: a scalar or a list (never a map).
 * The nodes are marked as made by "--set path". An empty value gives a null scalar. */
chm_status chm_ytree_parse_value(const char *value, const char *path, chm_ynode **node,
                                 chm_err *err);

/* Apply one "key.path=value" override to *root (a map, or NULL: one is made), creating missing
 * maps along the path and replacing an existing value. CHM_ERR_CONFIG on a malformed assignment
 * or a path that runs through a non-map. */
chm_status chm_ytree_apply_set(chm_ynode **root, const char *assignment, chm_err *err);

/* Free a node and everything below it. NULL is fine. */
void chm_ynode_free(chm_ynode *n);

/* True for an unquoted empty, "~" or "null" scalar. */
bool chm_ynode_is_null(const chm_ynode *n);

/* The entry of `map` with key `key`, or NULL (also when `map` is not a map). */
chm_ynode *chm_ynode_get(const chm_ynode *map, const char *key);

/* The node at dotted `path` below `root`, or NULL. When NULL, *nearest (if not NULL) gets the
 * deepest node found along the path (the root at worst), for pointing at where a key is missing. */
chm_ynode *chm_ynode_find(const chm_ynode *root, const char *path, const chm_ynode **nearest);

/* Where `n` is, for messages: "--set key.path" for an override's node, else "name:line:col" of
 * the node's key (at_key) or value; a NULL node is "name:1:1". */
void chm_ynode_where(const chm_ynode *n, const char *name, bool at_key, char *buf, size_t size);

/* A short description of a value for "found ..." texts: "a map", "a list", "an empty value",
 * 64, 'abc', or the string "64" for a quoted scalar. NULL gives "nothing". */
void chm_ynode_describe(const chm_ynode *n, char *buf, size_t size);

/* strdup (which C11 lacks); NULL when out of memory. */
char *chm_ystrdup(const char *s);

#endif
