/* Checkpoints of a set of optimizer objects in one file: every part of a
 * parameter-server worker, or every part a server holds.
 *   set : u64 count | count records (ckpt_state.c's worker or server record)
 * Loading parses and checks the whole file, and that every record has the
 * configuration and size of the object it replaces, before it replaces any:
 * a failed load leaves the caller's objects as they were. */
#include "optim_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const void *const *objs;
    size_t count;
    void (*put)(efps_ckpt_out_t *, const void *);
} set_t;

static void put_set(efps_ckpt_out_t *o, const void *arg)
{
    const set_t *s = arg;
    efps__ckpt_put_u64(o, s->count);
    for (size_t i = 0; i < s->count; i++)
        s->put(o, s->objs[i]);
}

static int same_config(const efps_optim_config_t *a, const efps_optim_config_t *b)
{
    return a->compressor == b->compressor && a->block == b->block &&
           memcmp(&a->momentum, &b->momentum, sizeof(float)) == 0 && a->nesterov == b->nesterov &&
           memcmp(&a->weight_decay, &b->weight_decay, sizeof(float)) == 0;
}

efps_status_t efps_worker_opts_save(efps_worker_opt_t *const *w, size_t count, const char *path)
{
    if (w == NULL || count == 0)
        return EFPS_ERR_INVALID;
    for (size_t i = 0; i < count; i++)
        if (w[i] == NULL || w[i]->pending) {
            efps_error("checkpoint %s: part %zu is %s", path, i,
                       w[i] == NULL ? "missing" : "between an encode and its apply");
            return w[i] == NULL ? EFPS_ERR_INVALID : EFPS_ERR_STATE;
        }
    set_t s = {(const void *const *)w, count, efps__worker_opt_put};
    return efps__ckpt_write(path, EFPS_CKPT_WORKER_SET, put_set, &s);
}

efps_status_t efps_server_opts_save(efps_server_opt_t *const *srv, size_t count, const char *path)
{
    if (srv == NULL || count == 0)
        return EFPS_ERR_INVALID;
    for (size_t i = 0; i < count; i++)
        if (srv[i] == NULL)
            return EFPS_ERR_INVALID;
    set_t s = {(const void *const *)srv, count, efps__server_opt_put};
    return efps__ckpt_write(path, EFPS_CKPT_SERVER_SET, put_set, &s);
}

/* Reads the set's records into fresh objects (got[count]); checks each with
 * match(i, obj). All or nothing. */
static efps_status_t load_set(const char *path, uint32_t kind, size_t count,
                              efps_status_t (*get)(efps_ckpt_in_t *, void **),
                              int (*match)(void *const *cur, size_t i, const void *obj),
                              void *const *cur, void (*destroy)(void *), void **got)
{
    uint8_t *payload = NULL;
    size_t len = 0;
    efps_status_t st = efps__ckpt_read(path, kind, &payload, &len);
    if (st != EFPS_OK)
        return st;
    efps_ckpt_in_t in = {.p = payload, .len = len};
    const uint64_t have = efps__ckpt_get_u64(&in);
    if (!efps__ckpt_in_ok(&in) || have != count) {
        efps_error("checkpoint %s: holds %llu parts, this model has %zu", path,
                   (unsigned long long)have, count);
        free(payload);
        return efps__ckpt_in_ok(&in) ? EFPS_ERR_MISMATCH : EFPS_ERR_CORRUPT;
    }
    size_t held = 0; /* objects built so far, in got[0..held) */
    while (held < count) {
        if ((st = get(&in, &got[held])) != EFPS_OK)
            break;
        if (!match(cur, held, got[held])) {
            efps_error("checkpoint %s: part %zu has another size or optimizer configuration "
                       "than this run's",
                       path, held);
            destroy(got[held]);
            st = EFPS_ERR_MISMATCH;
            break;
        }
        held++;
    }
    if (st == EFPS_OK && in.pos != in.len)
        st = EFPS_ERR_CORRUPT;
    if (st == EFPS_ERR_CORRUPT)
        efps_error("checkpoint %s: the state inside is malformed", path);
    if (st != EFPS_OK)
        for (size_t k = 0; k < held; k++)
            destroy(got[k]);
    free(payload);
    return st;
}

static efps_status_t get_worker(efps_ckpt_in_t *in, void **obj_p)
{
    return efps__worker_opt_get(in, (efps_worker_opt_t **)obj_p);
}

static efps_status_t get_server(efps_ckpt_in_t *in, void **obj_p)
{
    return efps__server_opt_get(in, (efps_server_opt_t **)obj_p);
}

static int worker_match(void *const *cur, size_t i, const void *obj)
{
    const efps_worker_opt_t *a = cur[i], *b = obj;
    return a->n == b->n && same_config(&a->cfg, &b->cfg);
}

static int server_match(void *const *cur, size_t i, const void *obj)
{
    const efps_server_opt_t *a = cur[i], *b = obj;
    return a->n == b->n && a->workers == b->workers && same_config(&a->cfg, &b->cfg);
}

static void destroy_worker(void *w)
{
    efps_worker_opt_destroy(w);
}

static void destroy_server(void *s)
{
    efps_server_opt_destroy(s);
}

/* On success every cur[i] is destroyed and replaced by the loaded object. */
static efps_status_t replace_all(void **cur, size_t count, void **got, void (*destroy)(void *))
{
    for (size_t i = 0; i < count; i++) {
        destroy(cur[i]);
        cur[i] = got[i];
    }
    free(got);
    return EFPS_OK;
}

/* Loads a set into cur[count]: all replaced, or none touched. */
static efps_status_t load_into(const char *path, uint32_t kind, void **cur, size_t count,
                               efps_status_t (*get)(efps_ckpt_in_t *, void **),
                               int (*match)(void *const *, size_t, const void *),
                               void (*destroy)(void *))
{
    if (cur == NULL || count == 0)
        return EFPS_ERR_INVALID;
    void **got = calloc(count, sizeof(*got));
    if (got == NULL)
        return EFPS_ERR_NOMEM;
    efps_status_t st = load_set(path, kind, count, get, match, cur, destroy, got);
    if (st != EFPS_OK) {
        free(got);
        return st;
    }
    return replace_all(cur, count, got, destroy);
}

efps_status_t efps_worker_opts_load(const char *path, efps_worker_opt_t **w, size_t count)
{
    return load_into(path, EFPS_CKPT_WORKER_SET, (void **)w, count, get_worker, worker_match,
                     destroy_worker);
}

efps_status_t efps_server_opts_load(const char *path, efps_server_opt_t **srv, size_t count)
{
    return load_into(path, EFPS_CKPT_SERVER_SET, (void **)srv, count, get_server, server_match,
                     destroy_server);
}
