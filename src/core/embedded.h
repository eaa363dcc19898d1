/*
 * embedded.h: text files compiled into the binary (cmake/embed_files.cmake),
 * so that `chimera train` with no arguments needs nothing from the disk.
 */
#ifndef CHIMERA_CORE_EMBEDDED_H
#define CHIMERA_CORE_EMBEDDED_H

#include <stddef.h>

/* One embedded file: its name without extension, its bytes (NUL-terminated) and length. */
typedef struct chm_embedded_file {
    const char *name;
    const char *text;
    size_t size;
} chm_embedded_file;

/* The files of configs/ (one per .yaml file), ending with a {NULL} entry. */
extern const chm_embedded_file chm_embedded_configs[];

/* The embedded config named `name` ("test", "tiny", ...), or NULL. */
const chm_embedded_file *chm_embedded_config(const char *name);

#endif
