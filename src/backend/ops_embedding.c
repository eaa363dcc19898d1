/* ops_embedding.c: checked wrappers of the embedding ops (placeholder: checks not written yet). */
#include "check.h"

chm_status chm_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                             const chm_tensor *table) {
    CHM_TRY(chm_check_impl(be, "embedding_fwd", be->ops->embedding_fwd != NULL));
    return be->ops->embedding_fwd(be, out, ids, table);
}

chm_status chm_embedding_bwd(chm_backend *be, const chm_tensor *dtable, const chm_tensor *dout,
                             const chm_tensor *ids) {
    CHM_TRY(chm_check_impl(be, "embedding_bwd", be->ops->embedding_bwd != NULL));
    return be->ops->embedding_bwd(be, dtable, dout, ids);
}
