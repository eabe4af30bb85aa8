/* Checkpoints of a parameter-server job: efps_ps_save and efps_ps_load.
 *
 * A job's optimizer state lives in two places: every worker's parts
 * (momentum, error, weight-decay momentum) and every server's parts (server
 * error). Between two steps both are at the same step boundary: a worker that
 * has pulled every key has seen every part of that step reduced, and no part
 * can be reduced again before this worker pushes. So:
 *   save: every worker writes its own parts to <path>.worker<rank>; rank 0
 *         then asks every server to write its parts to <name>.server<s> in
 *         the server's checkpoint directory (EFPS_CKPT_DIR, default its
 *         working directory), where <name> is path's last component: a worker
 *         names the file, never where a server writes (PS_MSG_SAVE, answered
 *         by PS_MSG_CKPT_DONE with the status);
 *   load: before its first push, every worker starts (the layout goes to the
 *         servers, which build their parts), replaces its parts from its file,
 *         and asks every server to load its file, waiting for the answer: no
 *         worker pushes before every server it talks to has loaded, and a
 *         server reduces a part only once every worker has pushed it.
 * Files go through lib/optim's checkpoint container (CRC, atomic rename); a
 * file of another layout, size or configuration is EFPS_ERR_MISMATCH. */
#include "ps_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_PATH_MAX (EFPS_TP_MSG_MAX - 64)

static char *suffixed(const char *path, const char *what, int rank)
{
    const size_t len = strlen(path) + 32;
    char *s = malloc(len);
    if (s != NULL)
        snprintf(s, len, "%s.%s%d", path, what, rank);
    return s;
}

static efps_status_t check_path(const char *path)
{
    if (path == NULL || *path == '\0' || strlen(path) > CKPT_PATH_MAX) {
        efps_error("checkpoint: a path of 1..%d bytes is needed", CKPT_PATH_MAX);
        return EFPS_ERR_INVALID;
    }
    return EFPS_OK;
}

/* The worker's parts as an array (its objects, not copies). */
static efps_status_t part_opts(efps_ps_t *ps, efps_worker_opt_t ***opts_p, size_t *count_p)
{
    const size_t n = efps__ps_nparts(ps);
    efps_worker_opt_t **opts = calloc(n ? n : 1, sizeof(*opts));
    if (opts == NULL)
        return EFPS_ERR_NOMEM;
    for (size_t p = 0; p < n; p++)
        opts[p] = *efps__ps_part_opt(ps, p);
    *opts_p = opts;
    *count_p = n;
    return EFPS_OK;
}

/* The name the servers get: path's last component (a worker never tells a
 * server where to write); NULL if there is none. */
static const char *server_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    return *name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ? NULL : name;
}

/* Sends type + the name to every server and waits for each one's answer. */
static efps_status_t ask_servers(efps_ps_t *ps, uint32_t type, const char *path)
{
    uint8_t msg[EFPS_TP_MSG_MAX], reply[EFPS_TP_MSG_MAX];
    const char *name = server_name(path);
    if (name == NULL) {
        efps_error("worker %d: checkpoint %s: the path must end in a file name (the servers "
                   "use it in their EFPS_CKPT_DIR)",
                   efps_ps_rank(ps), path);
        return EFPS_ERR_INVALID;
    }
    const size_t len = 4 + strlen(name) + 1;
    efps__put_le32(msg, type);
    memcpy(msg + 4, name, len - 4);
    for (int s = 0; s < efps__ps_nservers(ps); s++) {
        size_t rlen = 0;
        efps_status_t st =
            efps__ps_ask(ps, s, msg, len, PS_MSG_CKPT_DONE, reply, sizeof(reply), &rlen);
        if (st != EFPS_OK)
            return st;
        const int32_t status = rlen >= 8 ? (int32_t)efps__get_le32(reply + 4) : EFPS_ERR_PROTO;
        if (status != EFPS_OK) {
            efps_error("worker %d: server %d could not %s checkpoint %s.server%d (in its "
                       "EFPS_CKPT_DIR): %s",
                       efps_ps_rank(ps), s, type == PS_MSG_SAVE ? "save" : "load", name, s,
                       rlen > 8 ? (const char *)reply + 8 : efps_strerror(status));
            return (efps_status_t)status;
        }
    }
    return EFPS_OK;
}

/* What save and load share: the checks, this worker's file name and parts. */
static efps_status_t begin(efps_ps_t *ps, const char *path, bool start, char **file_p,
                           efps_worker_opt_t ***opts_p, size_t *n_p)
{
    efps_status_t st = ps == NULL ? EFPS_ERR_INVALID : check_path(path);
    if (st == EFPS_OK)
        st = efps__ps_between_steps(ps, start);
    if (st == EFPS_OK && start && efps__ps_pushed_any(ps)) {
        efps_error("worker %d: load checkpoint %s: only before the first push", efps_ps_rank(ps),
                   path);
        st = EFPS_ERR_STATE;
    }
    if (st != EFPS_OK)
        return st;
    if ((*file_p = suffixed(path, "worker", efps_ps_rank(ps))) == NULL)
        return EFPS_ERR_NOMEM;
    return part_opts(ps, opts_p, n_p);
}

efps_status_t efps_ps_save(efps_ps_t *ps, const char *path)
{
    efps_worker_opt_t **opts = NULL;
    size_t n = 0;
    char *file = NULL;
    efps_status_t st = begin(ps, path, false, &file, &opts, &n);
    if (st == EFPS_OK)
        st = efps_worker_opts_save(opts, n, file);
    if (st == EFPS_OK && efps_ps_rank(ps) == 0)
        st = ask_servers(ps, PS_MSG_SAVE, path);
    free(opts);
    free(file);
    return st;
}

efps_status_t efps_ps_load(efps_ps_t *ps, const char *path)
{
    efps_worker_opt_t **opts = NULL;
    size_t n = 0;
    char *file = NULL;
    efps_status_t st = begin(ps, path, true, &file, &opts, &n);
    if (st == EFPS_OK)
        st = efps_worker_opts_load(file, opts, n);
    if (st == EFPS_OK) /* the loaded objects replace the parts' */
        for (size_t p = 0; p < n; p++)
            *efps__ps_part_opt(ps, p) = opts[p];
    if (st == EFPS_OK)
        st = ask_servers(ps, PS_MSG_LOAD, path);
    free(opts);
    free(file);
    return st;
}

/* ---- the server's side ----------------------------------------------------- */

/* The file a server reads or writes for a worker's name: only a plain name
 * (no '/', not "." or ".."), inside dir (the config's ckpt_dir / EFPS_CKPT_DIR).
 * NULL with why set if not. */
static char *server_file(const char *dir, const uint8_t *m, size_t len, int server, char *why,
                         size_t cap)
{
    const char *name = (const char *)m + 4;
    if (len < 6 || m[len - 1] != '\0' || len - 5 > CKPT_PATH_MAX) {
        snprintf(why, cap, "checkpoint name: 1..%d bytes and a NUL are needed", CKPT_PATH_MAX);
        return NULL;
    }
    if (strchr(name, '/') != NULL || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        snprintf(why, cap,
                 "checkpoint name '%.64s' is not a plain file name (no '/', '.' or '..'): a "
                 "server reads and writes only in its EFPS_CKPT_DIR",
                 name);
        return NULL;
    }
    if (dir == NULL || *dir == '\0')
        dir = ".";
    const size_t n = strlen(dir) + len + 32;
    char *file = malloc(n);
    if (file == NULL)
        snprintf(why, cap, "%s", efps_strerror(EFPS_ERR_NOMEM));
    else
        snprintf(file, n, "%s/%s.server%d", dir, name, server);
    return file;
}

efps_status_t efps__ps_server_ckpt(int server, const char *dir, uint32_t type, const uint8_t *m,
                                   size_t len, efps_server_opt_t **opts, size_t count,
                                   uint8_t *reply, size_t cap, size_t *reply_len_p)
{
    efps_status_t st = EFPS_OK;
    char why[256] = "";
    char *file = server_file(dir, m, len, server, why, sizeof(why));
    if (file == NULL)
        st = EFPS_ERR_INVALID;
    else if (count > 0 && type == PS_MSG_SAVE)
        st = efps_server_opts_save(opts, count, file);
    else if (count > 0)
        st = efps_server_opts_load(file, opts, count);
    if (st == EFPS_OK)
        efps_info("server %d: %s %s (%zu part%s)", server, type == PS_MSG_SAVE ? "saved" : "loaded",
                  file, count, ps_s((long)count));
    else if (file == NULL)
        efps_error("server %d: refused a checkpoint %s: %s", server,
                   type == PS_MSG_SAVE ? "save" : "load", why);
    efps__put_le32(reply, PS_MSG_CKPT_DONE);
    efps__put_le32(reply + 4, (uint32_t)st);
    int w = snprintf((char *)reply + 8, cap - 8, "%s", why[0] ? why : efps_strerror(st));
    *reply_len_p = 8 + (size_t)(w < 0 ? 0 : w) + 1;
    free(file);
    return st;
}
