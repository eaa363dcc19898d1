/*
 * inference.c: a trained model back from a checkpoint, for `chimera sample`
 * and `chimera eval` (chimera/trainer.h).
 */
#include "trainer_internal.h"

#include <string.h>

#include "ckpt/checkpoint_internal.h"

chm_status chm_train_open_checkpoint_model(const char *path, const char *backend, int64_t batch,
                                           chm_checkpoint **ck, chm_backend **be, chm_model **m,
                                           chm_err *err) {
    char dir[TR_PATH], state[TR_PATH + 32];
    *ck = NULL, *be = NULL, *m = NULL;
    snprintf(state, sizeof state, "%s/" CK_STATE_FILE, path);
    snprintf(dir, sizeof dir, "%s", path);
    if (!ck_exists(state)) {
        bool found;
        chm_status rc = chm_checkpoint_latest(path, false, dir, sizeof dir, &found, err);
        if (rc) return rc;
        if (!found)
            return CHM_ERR(err, CHM_ERR_IO, "%s: neither a checkpoint (no " CK_STATE_FILE
                           ") nor a run directory holding one", path);
    }
    chm_status rc = chm_checkpoint_open(dir, ck, err);
    if (rc == CHM_OK) rc = chm_train_backend_open(backend, 0, true, be, err);
    if (rc) return rc;
    const chm_config *cfg = chm_checkpoint_config(*ck);
    chm_model_options mo = {.dtype = CHM_F32, .batch = batch > 0 ? batch : cfg->train.micro_batch,
                            .seq_len = cfg->train.seq_len};
    rc = chm_model_create(&cfg->model, *be, &mo, m, err);
    if (rc == CHM_OK) rc = chm_checkpoint_load_model(*ck, *m, err);
    return rc;
}
