/* Internal to lib/optim: the object layouts, shared between the algorithm
 * files and the checkpoint code, and the checkpoint byte streams. */
#ifndef EFPS_OPTIM_INTERNAL_H
#define EFPS_OPTIM_INTERNAL_H

#include "efps/optim.h"

#include <string.h>

#include <stdio.h>

struct efps_worker_opt {
    efps_optim_config_t cfg;
    size_t n;
    uint64_t steps;   /* completed encode + apply pairs */
    float prev_lr;    /* eta_{t-1}; 0 before the first step */
    int pending;      /* an encode waits for its apply */
    float pending_lr; /* the lr of that encode */
    int pending_skip; /* that step was skipped (efps_worker_opt_skip) */
    float *m;         /* momentum m_i */
    float *m_next;    /* the new momentum, committed (swapped in) only on success */
    float *u;         /* Nesterov's u; NULL for heavy ball, where u = m_next */
    float *err;       /* blocksign: error e_i, gradient units */
    float *err_next;  /* blocksign: the new error, swapped in only on success */
    float *wd_m;      /* wd > 0: weight-decay momentum */
    float *dec;       /* apply scratch: the decoded update; NULL when not needed */
};

struct efps_server_opt {
    efps_optim_config_t cfg;
    size_t n;
    int workers;
    uint64_t steps;
    float prev_lr;   /* eta_{t-1}; 0 before the first step */
    float *err;      /* blocksign: server error e~, gradient units */
    float *err_next; /* blocksign: the new error, swapped in only on success */
};

/* Commits a state computed out of place: the new buffer becomes the current
 * one, the old one the scratch of the next step. */
static inline void efps__optim_commit(float **cur, float **next)
{
    float *t = *cur;
    *cur = *next;
    *next = t;
}

/* Both ends check the step size the same way. */
int efps__optim_lr_ok(float lr);

/* ---- checkpoint streams (ckpt_file.c) --------------------------------------
 * Writing runs twice over the same put calls: first with f == NULL to count
 * the payload bytes (they go in the header), then into the file, with the
 * running CRC. Everything is little-endian whatever the host. */
typedef struct {
    FILE *f;        /* NULL: count only */
    uint64_t bytes; /* written (or counted) so far */
    unsigned long crc;
    int failed; /* a write failed; later puts do nothing */
} efps_ckpt_out_t;

void efps__ckpt_put_u32(efps_ckpt_out_t *o, uint32_t v);
void efps__ckpt_put_u64(efps_ckpt_out_t *o, uint64_t v);
void efps__ckpt_put_f32(efps_ckpt_out_t *o, float v);
void efps__ckpt_put_f32s(efps_ckpt_out_t *o, const float *v, size_t count);

/* A validated payload being parsed. A get past the end marks it short and
 * returns 0s; the caller checks efps__ckpt_in_ok once at the end of a record. */
typedef struct {
    const uint8_t *p;
    size_t len, pos;
    int short_read;
} efps_ckpt_in_t;

uint32_t efps__ckpt_get_u32(efps_ckpt_in_t *in);
uint64_t efps__ckpt_get_u64(efps_ckpt_in_t *in);
float efps__ckpt_get_f32(efps_ckpt_in_t *in);
/* Copies count floats into v (which may be NULL to skip them). */
void efps__ckpt_get_f32s(efps_ckpt_in_t *in, float *v, size_t count);
/* Room for count more floats? (checked before allocating for them) */
int efps__ckpt_in_has(const efps_ckpt_in_t *in, uint64_t count, size_t elem_size);
static inline int efps__ckpt_in_ok(const efps_ckpt_in_t *in)
{
    return !in->short_read;
}

enum {
    EFPS_CKPT_WORKER = 1,
    EFPS_CKPT_SERVER = 2,
    EFPS_CKPT_SIM = 3,
    EFPS_CKPT_WORKER_SET = 4, /* ckpt_set.c: every part of a parameter-server worker */
    EFPS_CKPT_SERVER_SET = 5, /* ckpt_set.c: every part a server holds */
};

typedef void (*efps__ckpt_put_fn)(efps_ckpt_out_t *o, const void *obj);
/* Writes header + payload (put(o, obj)) + CRC to a temporary file, flushes
 * it and renames it over path. */
efps_status_t efps__ckpt_write(const char *path, uint32_t kind, efps__ckpt_put_fn put,
                               const void *obj);
/* Reads path, checks size, magic, CRC, version and kind; *payload_p (free
 * with free()) and *len_p are the payload. */
efps_status_t efps__ckpt_read(const char *path, uint32_t kind, uint8_t **payload_p, size_t *len_p);

/* Object records (ckpt_state.c), also nested inside a simulation checkpoint.
 * get_* builds a new object only from a record that is whole and consistent:
 * EFPS_ERR_CORRUPT otherwise. */
void efps__worker_opt_put(efps_ckpt_out_t *o, const void *w);
efps_status_t efps__worker_opt_get(efps_ckpt_in_t *in, efps_worker_opt_t **w_p);
void efps__server_opt_put(efps_ckpt_out_t *o, const void *s);
efps_status_t efps__server_opt_get(efps_ckpt_in_t *in, efps_server_opt_t **s_p);

/* Not NaN and not Inf, from the bits (vectorises; no libm call). */
static inline int finite_bits(float v)
{
    uint32_t b;
    memcpy(&b, &v, 4);
    return (b & 0x7f800000u) != 0x7f800000u;
}

#endif
