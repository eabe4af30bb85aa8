/* The shared command-line helpers of the efps programs (cli.h). */
#include "cli.h"
#include "efps_internal/util.h"

#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *prog_name = "efps";

void cli_init(const char *prog)
{
    prog_name = prog;
}

const char *cli_prog(void)
{
    return prog_name;
}

int cli_bad(const char *name, const char *value, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: %s%s%s: ", prog_name, name, name[0] == '-' ? " " : "=", value);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; see --help\n");
    return CLI_USAGE;
}

int cli_long(const char *name, const char *text, long lo, long hi, long *v_p)
{
    if (efps__parse_long(text, lo, hi, v_p))
        return 0;
    if (hi == LONG_MAX)
        return cli_bad(name, text, "an integer of at least %ld", lo);
    return cli_bad(name, text, "an integer from %ld to %ld", lo, hi);
}

int cli_u64(const char *name, const char *text, uint64_t lo, uint64_t hi, uint64_t *v_p)
{
    if (efps__parse_u64(text, lo, hi, v_p))
        return 0;
    if (hi == UINT64_MAX)
        return cli_bad(name, text, "an integer of at least %llu", (unsigned long long)lo);
    return cli_bad(name, text, "an integer from %llu to %llu", (unsigned long long)lo,
                   (unsigned long long)hi);
}

int cli_double(const char *name, const char *text, double lo, double hi, double *v_p)
{
    if (efps__parse_double(text, lo, hi, v_p))
        return 0;
    return cli_bad(name, text, "a number from %g to %g", lo, hi);
}

int cli_word(const char *name, const char *text, const char *const *words, int *idx_p)
{
    char want[160] = "";
    for (int i = 0; words[i] != NULL; i++) {
        if (strcmp(text, words[i]) == 0) {
            *idx_p = i;
            return 0;
        }
        size_t len = strlen(want);
        snprintf(want + len, sizeof(want) - len, "%s%s", i ? ", " : "", words[i]);
    }
    return cli_bad(name, text, "one of %s", want);
}

int cli_getopt_error(int c, char **argv)
{
    /* A long option's text is in argv; a short one's letter in optopt (it
     * may sit inside a cluster like -nq). */
    const char *arg = argv[optind - 1];
    if (c == ':')
        fprintf(stderr, "%s: %s: needs a value; see --help\n", prog_name, arg);
    else if (optopt != 0)
        fprintf(stderr, "%s: -%c: unknown option; see --help\n", prog_name, optopt);
    else
        fprintf(stderr, "%s: %s: unknown option; see --help\n", prog_name, arg);
    return CLI_USAGE;
}

const char *cli_opt_name(const struct option *lo, int li, int c)
{
    static char buf[64];
    if (li >= 0)
        snprintf(buf, sizeof(buf), "--%s", lo[li].name);
    else
        snprintf(buf, sizeof(buf), "-%c", c);
    return buf;
}

int cli_unexpected(const char *arg)
{
    fprintf(stderr, "%s: %s: unexpected argument (this program takes only options); see --help\n",
            prog_name, arg);
    return CLI_USAGE;
}

const char *cli_plural(long n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}
