/*
 * checkpoint_internal.h: file-system helpers and names shared by the
 * checkpoint files of src/ckpt (checkpoint.c writes, checkpoint_load.c
 * reads, checkpoint_dir.c lists, prunes and syncs). Internal to src/ckpt.
 */
#ifndef CHIMERA_CKPT_CHECKPOINT_INTERNAL_H
#define CHIMERA_CKPT_CHECKPOINT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "chimera/trainer.h"

#define CK_STATE_FILE "trainer_state.json"
#define CK_MODEL_FILE "model.safetensors"
#define CK_OPTIM_FILE "optimizer.safetensors"
#define CK_FORMAT "chimera-checkpoint"
#define CK_VERSION 1
#define CK_PREFIX_M "exp_avg."
#define CK_PREFIX_V "exp_avg_sq."
#define CK_TMP_PREFIX ".tmp-step-"
#define CK_PATH 4096

/* fsync a file or a directory by path. */
chm_status ck_fsync_path(const char *path, chm_err *err);
/* mkdir -p. */
chm_status ck_mkdirs(const char *path, chm_err *err);
/* Remove a directory and everything under it (NOT following symlinks); missing is fine. */
chm_status ck_remove_tree(const char *path, chm_err *err);
/* True when path exists (any type). */
bool ck_exists(const char *path);

/*
 * The steps of the complete checkpoints in run_dir (step-XXXXXXXX directories
 * holding trainer_state.json), ascending, malloc'd into *steps (count *n).
 * A missing run_dir gives none.
 */
chm_status ck_list_steps(const char *run_dir, int64_t **steps, int *n, chm_err *err);
/* Remove the .tmp-step-* directories of interrupted saves in run_dir. */
chm_status ck_clean_tmp(const char *run_dir, chm_err *err);
/* Keep only the newest `keep` checkpoints of run_dir. */
chm_status ck_prune(const char *run_dir, int keep, chm_err *err);

/*
 * The model's whole parameter (grads = false) or gradient buffer as one 1-D
 * view, and the element offset of its first element (parameter offsets of
 * the table are relative to the buffer's start, so a parameter sits at
 * offset - *first in the view).
 */
void ck_param_span(const chm_model *m, bool grads, chm_tensor *view, int64_t *first);

#endif
