/*
 * train_fixture.h: the tiny training config and temp-dir helpers shared by the
 * trainer and checkpoint tests (a model that trains in milliseconds on the cpu).
 */
#ifndef CHIMERA_TEST_TRAIN_FIXTURE_H
#define CHIMERA_TEST_TRAIN_FIXTURE_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chimera/config.h"
#include "ckpt/checkpoint_internal.h"
#include "testutil.h"

/* A model small enough for milliseconds per step, with every block kind. */
static const char *TINY[] = {
    "model.d_model=16", "model.n_layers=2", "model.pattern=MA", "model.heads=2",
    "model.kv_heads=1", "model.mamba.d_state=4", "model.moe.hidden=16", "model.ffn.hidden=32",
    "model.mod.layers=[1]", "train.micro_batch=2", "train.seq_len=16", "train.steps=6",
    "train.warmup=2", "train.eval_every=0", "train.save_every=0", "train.eval_batches=2"};
#define N_TINY ((int)(sizeof TINY / sizeof TINY[0]))

/* TINY plus `extra` (may be NULL). */
static inline void load_config(chm_config *cfg, const char *extra) {
    const char *sets[N_TINY + 1];
    memcpy(sets, TINY, sizeof TINY);
    sets[N_TINY] = extra;
    chm_err err = {0};
    cr_assert_eq(chm_config_load(NULL, sets, N_TINY + (extra != NULL), cfg, &err), CHM_OK, "%s",
                 err.msg);
}

/* A fresh directory /tmp/<prefix>XXXXXX (free with remove_tmpdir). */
static inline char *make_tmpdir_named(const char *prefix) {
    char tmpl[256];
    snprintf(tmpl, sizeof tmpl, "/tmp/%sXXXXXX", prefix);
    char *d = strdup(tmpl);
    cr_assert_not_null(mkdtemp(d));
    return d;
}

/* Remove a directory made by make_tmpdir_named, with its contents. */
static inline void remove_tmpdir(char *d) {
    chm_err err;
    ck_remove_tree(d, &err);
    free(d);
}

#endif
