/* Small helpers shared by every layer of libefps, the programs and the
 * tests: little-endian byte order, the monotonic clock, checked number
 * parsing. One copy of each (issue 16).
 *
 * Internal: not installed (cmake/EfpsInstall.cmake installs include/efps
 * only) and not part of the ABI. It sits under include/ because that is the
 * one directory every layer, program and test has on its include path; it
 * includes nothing of efps, so any layer may use it. Everything is static
 * inline: the programs link libefps, whose efps__ functions are not
 * exported, and a few instructions are not worth a call. */
#ifndef EFPS_INTERNAL_UTIL_H
#define EFPS_INTERNAL_UTIL_H

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* ---- little-endian: the byte order of every efps wire format and file ---- */

/* The low `bytes` bytes of v at p, least significant first. */
static inline void efps__put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t efps__get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void efps__put_le32(uint8_t *p, uint32_t v)
{
    efps__put_le(p, v, 4);
}

static inline void efps__put_le64(uint8_t *p, uint64_t v)
{
    efps__put_le(p, v, 8);
}

static inline uint32_t efps__get_le32(const uint8_t *p)
{
    return (uint32_t)efps__get_le(p, 4);
}

static inline uint64_t efps__get_le64(const uint8_t *p)
{
    return efps__get_le(p, 8);
}

/* ---- the monotonic clock: timeouts and durations, never wall time ---- */

static inline uint64_t efps__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Signed, so that `deadline - efps__now_ms()` may go below zero. */
static inline int64_t efps__now_ms(void)
{
    return (int64_t)(efps__now_ns() / 1000000u);
}

static inline double efps__now_s(void)
{
    return (double)efps__now_ns() * 1e-9;
}

/* ---- checked parsing: true and *v_p set when text is entirely a number in
 * [lo, hi]; false for an empty text, trailing characters, overflow, a value
 * out of range, leading blanks or a '+' (strto* would skip or take them) and
 * a '-' where lo does not allow one. Nothing is printed: the caller names
 * the setting or flag in its own message. ---- */

static inline bool efps__parse_plain_start(const char *text, bool minus_ok)
{
    return text != NULL && *text != '\0' && !isspace((unsigned char)*text) && *text != '+' &&
           (minus_ok || *text != '-');
}

static inline bool efps__parse_long(const char *text, long lo, long hi, long *v_p)
{
    char *end;
    if (!efps__parse_plain_start(text, lo < 0))
        return false;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *v_p = v;
    return true;
}

static inline bool efps__parse_u64(const char *text, uint64_t lo, uint64_t hi, uint64_t *v_p)
{
    char *end;
    if (!efps__parse_plain_start(text, false))
        return false;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *v_p = (uint64_t)v;
    return true;
}

/* Finite values only. */
static inline bool efps__parse_double(const char *text, double lo, double hi, double *v_p)
{
    char *end;
    if (!efps__parse_plain_start(text, lo < 0))
        return false;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < lo || v > hi)
        return false;
    *v_p = v;
    return true;
}

/* strtof: a float rounds as its text says, not via a double. */
static inline bool efps__parse_float(const char *text, float lo, float hi, float *v_p)
{
    char *end;
    if (!efps__parse_plain_start(text, lo < 0))
        return false;
    errno = 0;
    float v = strtof(text, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < lo || v > hi)
        return false;
    *v_p = v;
    return true;
}

#endif
