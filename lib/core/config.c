/* The registry of EFPS_* settings (efps_internal/config.h) and core's own:
 * every layer registers its table before main; efps_config_get answers from
 * them, efps_config_vars lists them all (efps-info prints it with the value
 * in effect, docs/configuration.md is generated from it), and
 * efps_config_check_env() warns about typos. */
#include "efps_internal/config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const efps__setting_t core_settings[] = {
    {"EFPS_LOG", "warn", "log level: error|warn|info|debug|trace"},
    {NULL, NULL, NULL},
};

static efps__config_table_t core_table = {"core", EFPS__LAYER_CORE, core_settings, NULL};

/* Written only by constructors, before main and before any thread. */
static efps__config_table_t *tables;

void efps__config_register(efps__config_table_t *table)
{
    efps__config_table_t **p = &tables;
    while (*p != NULL && (*p)->order <= table->order) /* kept in layer order */
        p = &(*p)->next;
    table->next = *p;
    *p = table;
}

__attribute__((constructor(EFPS__CONFIG_PRIORITY))) static void register_core(void)
{
    efps__config_register(&core_table);
}

static pthread_once_t list_once = PTHREAD_ONCE_INIT;
static efps_config_var_t *list;
static const efps_config_var_t list_end = {NULL, NULL, NULL, NULL};

/* Every table's settings in one array, bottom layer first, made once. */
static void make_list(void)
{
    size_t n = 0, k = 0;
    for (const efps__config_table_t *t = tables; t != NULL; t = t->next)
        for (const efps__setting_t *s = t->vars; s->name != NULL; s++)
            n++;
    list = calloc(n + 1, sizeof(*list));
    if (list == NULL)
        return;
    for (const efps__config_table_t *t = tables; t != NULL; t = t->next)
        for (const efps__setting_t *s = t->vars; s->name != NULL; s++)
            list[k++] = (efps_config_var_t){s->name, s->deflt, s->help, t->layer};
}

const efps_config_var_t *efps_config_vars(void)
{
    pthread_once(&list_once, make_list);
    return list != NULL ? list : &list_end;
}

const char *efps_config_get(const char *name)
{
    for (const efps__config_table_t *t = tables; t != NULL; t = t->next) {
        for (const efps__setting_t *s = t->vars; s->name != NULL; s++) {
            if (strcmp(s->name, name) == 0) {
                const char *e = getenv(name);
                return (e != NULL && *e != '\0') ? e : s->deflt;
            }
        }
    }
    return NULL;
}

/* Levenshtein distance, bounded to short names: used only to suggest. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (lb >= 63 || la >= 63)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

int efps_config_check_env(void)
{
    extern char **environ;
    int unknown = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, "EFPS_", 5) != 0)
            continue;
        char name[64];
        size_t len = strcspn(*e, "=");
        if (len >= sizeof(name))
            len = sizeof(name) - 1;
        memcpy(name, *e, len);
        name[len] = '\0';
        if (efps_config_get(name) != NULL)
            continue;
        const char *best = NULL;
        size_t best_d = (size_t)-1;
        for (const efps_config_var_t *v = efps_config_vars(); v->name != NULL; v++) {
            size_t d = edit_distance(name, v->name);
            if (d < best_d) {
                best_d = d;
                best = v->name;
            }
        }
        efps_warn("unknown environment variable %s%s%s%s", name, best ? " (did you mean " : "",
                  best ? best : "", best ? "?)" : "");
        unknown++;
    }
    return unknown;
}
