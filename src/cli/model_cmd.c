/* model_cmd.c: placeholder until the model lands. */
#include "commands.h"

#include <stddef.h>

int chm_cmd_model(int argc, char **argv) {
    (void)argc;
    (void)argv;
    chm_cli_error("not written yet", NULL);
    return 1;
}
