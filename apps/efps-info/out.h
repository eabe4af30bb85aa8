/* efps-info's output: one emitter for the text report and for --json, so
 * both say the same things. Text is "key: value" lines indented by nesting
 * (an array's objects start with "- "); JSON is one valid document. */
#ifndef EFPS_INFO_OUT_H
#define EFPS_INFO_OUT_H

#include <stdbool.h>
#include <stdio.h>

#define OUT_MAX_DEPTH 8

typedef struct {
    FILE *f;
    bool json;
    int depth;
    bool first[OUT_MAX_DEPTH]; /* JSON: nothing written yet at this depth */
    bool item[OUT_MAX_DEPTH];  /* text: an array's object whose first line is due */
    bool array[OUT_MAX_DEPTH]; /* this depth is an array */
} out_t;

void out_begin(out_t *o, FILE *f, bool json);
void out_end(out_t *o);
/* Opens an object or array under key (NULL inside an array); out_close ends it. */
void out_obj(out_t *o, const char *key);
void out_arr(out_t *o, const char *key);
void out_close(out_t *o);
/* A value: string (NULL: null), integer, boolean. */
void out_str(out_t *o, const char *key, const char *val);
void out_strf(out_t *o, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void out_int(out_t *o, const char *key, long long v);
void out_bool(out_t *o, const char *key, bool v);
/* A line of the text report only (headings, notes); nothing in JSON. */
void out_text(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
