/* embedded.c: look-up in the tables generated from configs/ (see embedded.h). */
#include "embedded.h"

#include <string.h>

const chm_embedded_file *chm_embedded_config(const char *name) {
    for (const chm_embedded_file *f = chm_embedded_configs; f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}
