/* The text / JSON emitter of efps-info (out.h). */
#include "out.h"

#include <stdarg.h>

void out_begin(out_t *o, FILE *f, bool json)
{
    *o = (out_t){.f = f, .json = json};
    o->first[0] = true;
    if (json)
        fputc('{', f);
}

void out_end(out_t *o)
{
    if (o->json)
        fputs("\n}\n", o->f);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* Everything a value or an opening needs before it: the comma and the key
 * (JSON); the indentation, the "- " of an array's object and the key (text). */
static void lead(out_t *o, const char *key)
{
    if (o->json) {
        fputs(o->first[o->depth] ? "\n" : ",\n", o->f);
        o->first[o->depth] = false;
        fprintf(o->f, "%*s", 2 * (o->depth + 1), "");
        if (key != NULL && !o->array[o->depth]) {
            json_string(o->f, key);
            fputs(": ", o->f);
        }
        return;
    }
    int indent = 2 * o->depth;
    if (o->depth > 0 && (o->item[o->depth] || (o->array[o->depth] && key == NULL))) {
        indent -= 2;
        o->item[o->depth] = false;
        fprintf(o->f, "%*s- ", indent, "");
    } else {
        fprintf(o->f, "%*s", indent, "");
    }
    if (key != NULL)
        fprintf(o->f, "%s:", key);
}

static void open(out_t *o, const char *key, bool array)
{
    if (o->json || key != NULL) /* text: an array's object shows as its "- " */
        lead(o, key);
    if (o->json)
        fputc(array ? '[' : '{', o->f);
    else if (key != NULL)
        fputc('\n', o->f);
    if (o->depth + 1 >= OUT_MAX_DEPTH)
        return;
    bool in_array = o->array[o->depth];
    o->depth++;
    o->first[o->depth] = true;
    o->array[o->depth] = array;
    /* text: an object inside an array is an item, marked by "- " */
    o->item[o->depth] = !o->json && !array && in_array;
}

void out_obj(out_t *o, const char *key)
{
    open(o, key, false);
}

void out_arr(out_t *o, const char *key)
{
    open(o, key, true);
}

void out_close(out_t *o)
{
    bool array = o->array[o->depth], empty = o->first[o->depth];
    if (o->depth > 0)
        o->depth--;
    if (!o->json)
        return;
    if (!empty)
        fprintf(o->f, "\n%*s", 2 * (o->depth + 1), "");
    fputc(array ? ']' : '}', o->f);
}

void out_str(out_t *o, const char *key, const char *val)
{
    lead(o, key);
    if (!o->json)
        fprintf(o->f, "%s%s\n", key != NULL ? " " : "", val != NULL ? val : "(none)");
    else if (val == NULL)
        fputs("null", o->f);
    else
        json_string(o->f, val);
}

void out_strf(out_t *o, const char *key, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    out_str(o, key, buf);
}

void out_int(out_t *o, const char *key, long long v)
{
    lead(o, key);
    fprintf(o->f, o->json ? "%lld" : " %lld\n", v);
}

void out_bool(out_t *o, const char *key, bool v)
{
    lead(o, key);
    fprintf(o->f, o->json ? "%s" : " %s\n",
            v ? (o->json ? "true" : "yes") : (o->json ? "false" : "no"));
}

void out_text(out_t *o, const char *fmt, ...)
{
    if (o->json)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(o->f, fmt, ap);
    va_end(ap);
}
