/*
 * fuzz_trainer_state.c: libFuzzer target for trainer_state.json, the state
 * file of a checkpoint (chm_checkpoint_open: format and version, the files
 * it lists with their sizes and sha256, the counters, the embedded config).
 * The checkpoint directory also holds a fixed model.safetensors whose size
 * and sha256 the seeds list, so inputs get past the checksum check.
 */
#include "fuzz_util.h"

#include <sys/stat.h>

#include "chimera/trainer.h"

/* The fixed file the seeds' "files" entry describes (20 bytes; sha256 in the seeds). */
static const char MODEL_BYTES[] = "chimera fuzz model.\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/ck", fz_dir());
    mkdir(dir, 0777);
    fz_write("ck/" CK_MODEL_FILE, MODEL_BYTES, sizeof MODEL_BYTES - 1, path, sizeof path);
    fz_write("ck/" CK_STATE_FILE, data, size, path, sizeof path);
    chm_checkpoint *c = NULL;
    chm_err err = {0};
    chm_status rc = chm_checkpoint_open(dir, &c, &err);
    fz_report("trainer_state", rc == CHM_OK, err.msg);
    if (rc == CHM_OK) {
        const chm_checkpoint_state *st = chm_checkpoint_get_state(c);
        const chm_config *cfg = chm_checkpoint_config(c);
        if (!st || !cfg || !chm_checkpoint_backend(c) || strcmp(chm_checkpoint_dir(c), dir) != 0)
            abort();
        chm_checkpoint_close(c);
    } else if (c != NULL || !strstr(err.msg, dir)) {
        fprintf(stderr, "a refusal must name the checkpoint: %s\n", err.msg);
        abort();
    }
    /* Anything the input made in the directory goes before the next input. */
    chm_err ignore;
    ck_remove_tree(dir, &ignore);
    return 0;
}
