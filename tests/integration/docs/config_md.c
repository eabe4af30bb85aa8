/* Prints docs/configuration.md from the library's EFPS_* settings
 * (efps_config_vars: every layer's own table), so the reference cannot
 * drift from the code:
 *     build/tests/integration/docs/config_md > docs/configuration.md
 * The test docs_configuration_current fails when the checked-in file
 * differs. Linked with libefps.so, which holds every layer's table. */
#include "efps/core.h"

#include <stdio.h>
#include <string.h>

/* Where each layer declares its settings; a layer missing here is an error,
 * so a new one gets its line. */
static const char *const layers[][2] = {
    {"core", "lib/core/config.c"},
    {"compress", "lib/compress/compress.c"},
    {"transport", "transport/transport.c"},
    {"ps", "lib/ps/config.c"},
    {"bindings", "lib/ps/config.c (read by bindings/python before it loads libefps)"},
};

static const char *declared_in(const char *layer)
{
    for (size_t i = 0; i < sizeof(layers) / sizeof(layers[0]); i++)
        if (strcmp(layers[i][0], layer) == 0)
            return layers[i][1];
    return NULL;
}

/* A table cell: '|' would end the cell early. */
static void cell(const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '|')
            fputs("\\|", stdout);
        else
            putchar(*s);
    }
}

static void row(const efps_config_var_t *v)
{
    printf("| `%s` | ", v->name);
    if (*v->deflt != '\0') {
        putchar('`');
        cell(v->deflt);
        putchar('`');
    }
    fputs(" | ", stdout);
    cell(v->help);
    puts(" |");
}

int main(void)
{
    puts("# Configuration reference\n"
         "\n"
         "<!-- Generated from the settings tables of the library's layers by\n"
         "     tests/integration/docs/config_md.c; do not edit: regenerate with\n"
         "     build/tests/integration/docs/config_md > docs/configuration.md -->\n"
         "\n"
         "Every setting of the library is an `EFPS_*` environment variable declared\n"
         "once, with its default and meaning, by the layer that reads it (one section\n"
         "per layer below, bottom layer first). An `EFPS_*` variable that no layer\n"
         "declares is warned about, with the closest real name. Where a program also\n"
         "has a flag or a config-struct field for a setting (`efps_ps_config_t`,\n"
         "`efps_tp_attr_t`), the flag or field wins, then the variable, then (for\n"
         "ranks and sizes) the launcher's variables (mpirun\n"
         "`OMPI_COMM_WORLD_RANK`/`_SIZE`, Slurm `SLURM_PROCID`/`SLURM_NTASKS`,\n"
         "torchrun `RANK`/`WORLD_SIZE`), then the default below. A bad value is an\n"
         "error that names the variable, as a bad flag names the flag. `efps-info`\n"
         "prints every value in effect and where it came from.");
    const char *layer = "";
    for (const efps_config_var_t *v = efps_config_vars(); v->name != NULL; v++) {
        if (strcmp(v->layer, layer) != 0) {
            layer = v->layer;
            const char *file = declared_in(layer);
            if (file == NULL) {
                fprintf(stderr, "config_md: layer '%s' has no line in config_md.c's layers\n",
                        layer);
                return 1;
            }
            printf("\n## %s\n\nDeclared in `%s`.\n\n| variable | default | meaning |\n"
                   "|---|---|---|\n",
                   layer, file);
        }
        row(v);
    }
    return 0;
}
