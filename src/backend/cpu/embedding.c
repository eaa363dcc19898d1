/* embedding.c: placeholder until the family is written (returns CHM_ERR_UNSUPPORTED). */
#include "cpu.h"

chm_status chm_cpu_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                                 const chm_tensor *table) {
    (void)be;
    (void)out;
    (void)ids;
    (void)table;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "embedding_fwd: not written yet");
}

chm_status chm_cpu_embedding_bwd(chm_backend *be, const chm_tensor *dtable,
                                 const chm_tensor *dout, const chm_tensor *ids) {
    (void)be;
    (void)dtable;
    (void)dout;
    (void)ids;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED, "embedding_bwd: not written yet");
}
