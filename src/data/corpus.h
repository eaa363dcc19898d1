/*
 * corpus.h: the compiled form of the default-corpus grammar, shared by
 * corpus_grammar.c (the word lists and templates) and corpus.c (the sampler).
 */
#ifndef CHIMERA_DATA_CORPUS_H
#define CHIMERA_DATA_CORPUS_H

#include <stddef.h>

#include "chimera/data.h"

/* A run of an alternative: literal bytes, or a reference to another rule. */
typedef struct chm_corpus_piece {
    int rule;          /* index of the referenced rule, or -1 for a literal */
    const char *lit;   /* literal bytes (rule == -1) */
    size_t len;
} chm_corpus_piece;

/* One alternative, ready to sample. */
typedef struct chm_corpus_alt {
    int n_pieces;
    const chm_corpus_piece *pieces;
    double cum;        /* cumulative probability up to and including this one */
    double bits;       /* -log2 p */
} chm_corpus_alt;

/* A rule ready to sample. */
typedef struct chm_corpus_rule {
    int n;
    const chm_corpus_alt *alts;
} chm_corpus_rule;

/*
 * The compiled grammar (built once, thread-safe); NULL if the built-in tables are
 * inconsistent (a bug: an unknown {NAME} or a bad weight). *n_rules gets the count.
 */
const chm_corpus_rule *chm_corpus_compiled(int *n_rules);

/* Fill the per-byte fields of f from its documents, bytes and bits. */
void chm_corpus_floor_finish(chm_corpus_floor *f);

#endif
