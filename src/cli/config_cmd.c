/* config_cmd.c: `chimera config` (placeholder until the config loader lands). */
#include "commands.h"

#include <stddef.h>

int chm_cmd_config(int argc, char **argv) {
    (void)argc;
    (void)argv;
    chm_cli_error("the config loader is not written yet", NULL);
    return 1;
}
