/* Prints docs/configuration.md from the library's table of EFPS_* variables
 * (efps_config_vars), so the reference cannot drift from the code:
 *     build/tests/integration/docs/config_md > docs/configuration.md
 * The test docs_configuration_current fails when the checked-in file differs. */
#include "efps/core.h"

#include <stdio.h>
#include <string.h>

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

int main(void)
{
    puts("# Configuration reference\n"
         "\n"
         "<!-- Generated from lib/core/config.c by tests/integration/docs/config_md.c;\n"
         "     do not edit: regenerate with\n"
         "     build/tests/integration/docs/config_md > docs/configuration.md -->\n"
         "\n"
         "Every setting of the library is an `EFPS_*` environment variable declared\n"
         "once, with its default and meaning, in `lib/core/config.c`. An `EFPS_*`\n"
         "variable that is not in this table is warned about, with the closest real\n"
         "name. Where a program also has a flag for a setting, the flag wins, then\n"
         "the variable, then (for ranks and sizes) the launcher's variables\n"
         "(mpirun `OMPI_COMM_WORLD_RANK`/`_SIZE`, Slurm `SLURM_PROCID`/`SLURM_NTASKS`,\n"
         "torchrun `RANK`/`WORLD_SIZE`), then the default below. A bad value is an\n"
         "error that names the variable, as a bad flag names the flag.\n"
         "\n"
         "| variable | default | meaning |\n"
         "|---|---|---|");
    for (const efps_config_var_t *v = efps_config_vars(); v->name != NULL; v++) {
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
    return 0;
}
