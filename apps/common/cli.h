/* The command-line conventions of every efps program, in one place.
 *
 * A bad argument is one line on stderr naming the argument, the value and
 * what is allowed, then exit status 2:
 *     efps-server: --workers 0: an integer from 1 to 65536; see --help
 *     efps-train: EFPS_COMPRESSOR=foo: one of none, sign, blocksign; see --help
 * `name` is the flag as the user typed it ("--workers", "-w") or the
 * environment variable it came from ("EFPS_BLOCK"): a flag is followed by a
 * space, a variable by '='.
 *
 * The parsers are checked (the whole text, no sign where none is allowed,
 * range, overflow: efps__parse_* of efps_internal/util.h, the one copy the
 * library uses too); these print the message and return CLI_USAGE, 0 on
 * success. Not thread-safe (cli_init sets a global name). */
#ifndef EFPS_APPS_CLI_H
#define EFPS_APPS_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#define CLI_USAGE 2 /* exit status for a bad command line */

/* The program's name in every message ("efps-train"). */
void cli_init(const char *prog);
const char *cli_prog(void);

/* Prints "PROG: NAME VALUE: allowed...; see --help" and returns CLI_USAGE. */
int cli_bad(const char *name, const char *value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parse or complain (the message says the range); 0 or CLI_USAGE. */
int cli_long(const char *name, const char *text, long lo, long hi, long *v_p);
int cli_u64(const char *name, const char *text, uint64_t lo, uint64_t hi, uint64_t *v_p);
int cli_double(const char *name, const char *text, double lo, double hi, double *v_p);
/* text must be one of the NULL-terminated words; *idx_p its index. */
int cli_word(const char *name, const char *text, const char *const *words, int *idx_p);

/* getopt_long's '?' (unknown option) and ':' (missing value), reported in
 * the same one-line style; returns CLI_USAGE. Call with opterr = 0 and an
 * optstring starting with ':'. */
int cli_getopt_error(int c, char **argv);
/* The option as the user typed it: "--name" (li: getopt_long's longindex,
 * reset to -1 before each call) or "-c". Valid until the next call. */
const char *cli_opt_name(const struct option *lo, int li, int c);
/* A positional argument where none is taken. */
int cli_unexpected(const char *arg);

/* "worker" for 1, "workers" otherwise: printf("%d %s", n, cli_plural(n, "worker", "workers")). */
const char *cli_plural(long n, const char *one, const char *many);

#endif
