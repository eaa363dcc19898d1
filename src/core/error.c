/* error.c: status names and error records (see include/chimera/error.h). */
#include "chimera/error.h"

#include <stdio.h>
#include <string.h>

const char *chm_status_name(chm_status code) {
    switch (code) {
    case CHM_OK: return "ok";
    case CHM_ERR_INVALID_ARG: return "invalid argument";
    case CHM_ERR_SHAPE: return "shape";
    case CHM_ERR_DTYPE: return "dtype";
    case CHM_ERR_NOMEM: return "out of memory";
    case CHM_ERR_IO: return "i/o";
    case CHM_ERR_PARSE: return "parse";
    case CHM_ERR_CONFIG: return "config";
    case CHM_ERR_UNSUPPORTED: return "unsupported";
    case CHM_ERR_DEVICE: return "device";
    case CHM_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}

chm_status chm_err_setv(chm_err *e, chm_status code, const char *file, int line,
                        const char *fmt, va_list ap) {
    if (!e) return code;
    e->code = code;
    e->file = file;
    e->line = line;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return code;
}

chm_status chm_err_set(chm_err *e, chm_status code, const char *file, int line,
                       const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    chm_err_setv(e, code, file, line, fmt, ap);
    va_end(ap);
    return code;
}

void chm_err_clear(chm_err *e) {
    if (!e) return;
    memset(e, 0, sizeof *e);
}
