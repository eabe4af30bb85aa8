/* The registry of EFPS_* settings (lib/core/config.c). Each layer declares
 * its own settings, in a table in the file that reads them, and registers
 * that table before main with a constructor, the way UCX's components
 * register their config tables with ucs. So core names no setting of a
 * layer above it, efps_config_vars() lists every layer's (efps-info and
 * docs/configuration.md enumerate it), and a program linked statically with
 * part of libefps.a knows the settings of the part it has.
 *
 * Internal: not installed, not part of the ABI (see util.h). */
#ifndef EFPS_INTERNAL_CONFIG_H
#define EFPS_INTERNAL_CONFIG_H

#include "efps/core.h"

/* One setting of a layer's table. */
typedef struct {
    const char *name;  /* "EFPS_LOG" */
    const char *deflt; /* default value as text, "" for none */
    const char *help;  /* one line */
} efps__setting_t;

/* A layer's table: layer and order say where efps_config_vars() lists it
 * (bottom layer first); next is the registry's. */
typedef struct efps__config_table {
    const char *layer;           /* "core", "compress", "transport", "ps", ... */
    int order;                   /* EFPS__LAYER_* */
    const efps__setting_t *vars; /* terminated by a NULL name */
    struct efps__config_table *next;
} efps__config_table_t;

enum {
    EFPS__LAYER_CORE = 0,
    EFPS__LAYER_COMPRESS = 1,
    EFPS__LAYER_OPTIM = 2,
    EFPS__LAYER_TRANSPORT = 3,
    EFPS__LAYER_PS = 4,
    EFPS__LAYER_BINDINGS = 5, /* read by a binding, declared so it is not "unknown" */
};

/* Registers a table (kept, not copied). Call it from a constructor of this
 * priority, so that every table is in before any other constructor could
 * ask for a setting:
 *     __attribute__((constructor(EFPS__CONFIG_PRIORITY))) static void reg(void)
 *     { efps__config_register(&table); } */
#define EFPS__CONFIG_PRIORITY 101
void efps__config_register(efps__config_table_t *table);

#endif
