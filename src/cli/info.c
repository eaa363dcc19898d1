/* info.c: `chimera info` (placeholder; the full report is being written). */
#include "commands.h"
#include "chimera/backend.h"

#include <stdio.h>

int chm_cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    chm_err err = {0};
    chm_backend *be = NULL;
    if (chm_backend_open("auto", NULL, &be, &err)) {
        chm_cli_error(err.msg, NULL);
        return 1;
    }
    printf("chimera %s\n%s\n", CHIMERA_VERSION, be->why);
    chm_backend_close(be);
    return 0;
}
