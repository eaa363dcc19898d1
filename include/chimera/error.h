/*
 * chimera/error.h: status codes and error records.
 *
 * Library functions return a chm_status. When a call fails it also fills a
 * chm_err (when the caller passes one) with the source location that detected
 * the failure and a message that says what went wrong and what to do about it.
 * Only the CLI prints errors and chooses exit codes.
 */
#ifndef CHIMERA_ERROR_H
#define CHIMERA_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. CHM_OK is zero so that `if (rc) return rc;` reads naturally. */
typedef enum chm_status {
    CHM_OK = 0,
    CHM_ERR_INVALID_ARG,   /* a caller passed a bad argument (NULL, negative size, ...) */
    CHM_ERR_SHAPE,         /* tensor shapes do not agree with what the op needs */
    CHM_ERR_DTYPE,         /* tensor dtypes do not agree with what the op needs */
    CHM_ERR_NOMEM,         /* host or device allocation failed */
    CHM_ERR_IO,            /* reading or writing a file failed */
    CHM_ERR_PARSE,         /* a file or string could not be parsed */
    CHM_ERR_CONFIG,        /* a configuration value is invalid */
    CHM_ERR_UNSUPPORTED,   /* the backend or build does not offer this */
    CHM_ERR_DEVICE,        /* the device or driver reported a failure */
    CHM_ERR_INTERNAL       /* a bug in chimera: please report it */
} chm_status;

/* One error record: the code, where it was raised, and a human message. */
typedef struct chm_err {
    chm_status code;
    const char *file;      /* source file that raised it (static string) */
    int line;              /* source line that raised it */
    char msg[1024];        /* what went wrong, then what to do */
} chm_err;

/* Short stable name of a status code, e.g. "shape". */
const char *chm_status_name(chm_status code);

/* Fill `e` (which may be NULL) and return `code`. Use through CHM_ERR. */
chm_status chm_err_set(chm_err *e, chm_status code, const char *file, int line,
                       const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* Same as chm_err_set with a va_list. */
chm_status chm_err_setv(chm_err *e, chm_status code, const char *file, int line,
                        const char *fmt, va_list ap);

/* Reset an error record to CHM_OK with an empty message. */
void chm_err_clear(chm_err *e);

/* Raise an error from the current source location: `return CHM_ERR(err, CHM_ERR_SHAPE, "...", ...);` */
#define CHM_ERR(e, code, ...) chm_err_set((e), (code), __FILE__, __LINE__, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
