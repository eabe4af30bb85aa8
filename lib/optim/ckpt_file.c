/* The checkpoint container: "EFPSCKPT" | u32 version | u32 kind |
 * u64 payload bytes | payload | u32 CRC-32 of all that precedes it.
 * Little-endian throughout. Written to a temporary file and renamed, so a
 * reader sees either the old checkpoint or the whole new one; read whole and
 * checked before anyone parses a byte of the payload. */
#include "optim_internal.h"
#include "efps_internal/util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const char magic[8] = {'E', 'F', 'P', 'S', 'C', 'K', 'P', 'T'};
#define HEADER_BYTES  24
#define TRAILER_BYTES 4

/* ---- writing ---------------------------------------------------------------- */

static void put_bytes(efps_ckpt_out_t *o, const void *p, size_t len)
{
    if (o->failed)
        return;
    o->bytes += len;
    if (o->f == NULL)
        return;
    o->crc = crc32_z(o->crc, p, len);
    if (fwrite(p, 1, len, o->f) != len)
        o->failed = 1;
}

void efps__ckpt_put_u32(efps_ckpt_out_t *o, uint32_t v)
{
    uint8_t b[4];
    efps__put_le32(b, v);
    put_bytes(o, b, 4);
}

void efps__ckpt_put_u64(efps_ckpt_out_t *o, uint64_t v)
{
    efps__ckpt_put_u32(o, (uint32_t)v);
    efps__ckpt_put_u32(o, (uint32_t)(v >> 32));
}

void efps__ckpt_put_f32(efps_ckpt_out_t *o, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    efps__ckpt_put_u32(o, u);
}

void efps__ckpt_put_f32s(efps_ckpt_out_t *o, const float *v, size_t count)
{
    uint8_t chunk[4096];
    while (count > 0) {
        const size_t k = count < sizeof(chunk) / 4 ? count : sizeof(chunk) / 4;
        for (size_t i = 0; i < k; i++) {
            uint32_t u;
            memcpy(&u, &v[i], 4);
            efps__put_le32(chunk + 4 * i, u);
        }
        put_bytes(o, chunk, 4 * k);
        v += k;
        count -= k;
    }
}

static void put_header(efps_ckpt_out_t *o, uint32_t kind, uint64_t payload)
{
    put_bytes(o, magic, sizeof(magic));
    efps__ckpt_put_u32(o, EFPS_CKPT_VERSION);
    efps__ckpt_put_u32(o, kind);
    efps__ckpt_put_u64(o, payload);
}

/* Makes the rename itself durable; a failure here loses nothing already
 * written, so it is only worth a warning. */
static void sync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        if (fsync(fd) != 0)
            efps_warn("checkpoint %s: fsync of its directory: %s", path, strerror(errno));
        close(fd);
    }
    free(copy);
}

static efps_status_t write_tmp(FILE *f, uint32_t kind, efps__ckpt_put_fn put, const void *obj,
                               const char *path)
{
    efps_ckpt_out_t count = {0};
    put(&count, obj);
    efps_ckpt_out_t o = {.f = f, .crc = crc32_z(0L, Z_NULL, 0)};
    put_header(&o, kind, count.bytes);
    put(&o, obj);
    const uint32_t crc = (uint32_t)o.crc;
    efps__ckpt_put_u32(&o, crc);
    if (o.failed || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        efps_error("checkpoint %s: write failed: %s", path, strerror(errno));
        return EFPS_ERR_IO;
    }
    return EFPS_OK;
}

efps_status_t efps__ckpt_write(const char *path, uint32_t kind, efps__ckpt_put_fn put,
                               const void *obj)
{
    if (path == NULL || *path == '\0') {
        efps_error("checkpoint: no path given");
        return EFPS_ERR_INVALID;
    }
    const size_t len = strlen(path);
    char *tmp = malloc(len + sizeof(".tmp.XXXXXX"));
    if (tmp == NULL)
        return EFPS_ERR_NOMEM;
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp.XXXXXX", sizeof(".tmp.XXXXXX"));
    efps_status_t st = EFPS_ERR_IO;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        efps_error("checkpoint %s: cannot create a temporary file: %s", path, strerror(errno));
        goto err_free_tmp;
    }
    FILE *f = fdopen(fd, "wb");
    if (f == NULL) {
        efps_error("checkpoint %s: fdopen: %s", path, strerror(errno));
        close(fd);
        goto err_unlink;
    }
    st = write_tmp(f, kind, put, obj, path);
    if (fclose(f) != 0 && st == EFPS_OK) {
        efps_error("checkpoint %s: close failed: %s", path, strerror(errno));
        st = EFPS_ERR_IO;
    }
    if (st != EFPS_OK)
        goto err_unlink;
    if (rename(tmp, path) != 0) {
        efps_error("checkpoint %s: rename from %s failed: %s", path, tmp, strerror(errno));
        st = EFPS_ERR_IO;
        goto err_unlink;
    }
    sync_dir_of(path);
    free(tmp);
    return EFPS_OK;

err_unlink:
    unlink(tmp);
err_free_tmp:
    free(tmp);
    return st;
}

/* ---- reading ---------------------------------------------------------------- */

static const uint8_t *take(efps_ckpt_in_t *in, size_t len)
{
    if (in->short_read || in->len - in->pos < len) {
        in->short_read = 1;
        return NULL;
    }
    const uint8_t *p = in->p + in->pos;
    in->pos += len;
    return p;
}

uint32_t efps__ckpt_get_u32(efps_ckpt_in_t *in)
{
    const uint8_t *b = take(in, 4);
    return b ? efps__get_le32(b) : 0;
}

uint64_t efps__ckpt_get_u64(efps_ckpt_in_t *in)
{
    const uint8_t *b = take(in, 8);
    return b ? efps__get_le64(b) : 0;
}

float efps__ckpt_get_f32(efps_ckpt_in_t *in)
{
    const uint32_t u = efps__ckpt_get_u32(in);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

int efps__ckpt_in_has(const efps_ckpt_in_t *in, uint64_t count, size_t elem_size)
{
    return !in->short_read && count <= (in->len - in->pos) / elem_size;
}

void efps__ckpt_get_f32s(efps_ckpt_in_t *in, float *v, size_t count)
{
    if (!efps__ckpt_in_has(in, count, 4)) {
        in->short_read = 1;
        return;
    }
    const uint8_t *b = take(in, 4 * count);
    if (v == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        const uint32_t u = efps__get_le32(b + 4 * i);
        memcpy(&v[i], &u, 4);
    }
}

/* The whole file into memory (*size_p bytes, free()). */
static efps_status_t slurp(const char *path, uint8_t **buf_p, size_t *size_p)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        efps_error("checkpoint %s: cannot open: %s", path, strerror(errno));
        return EFPS_ERR_IO;
    }
    efps_status_t st = EFPS_ERR_IO;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        efps_error("checkpoint %s: not a regular file", path);
        goto out_close;
    }
    const size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL) {
        efps_error("checkpoint %s: out of memory for %zu bytes", path, size);
        st = EFPS_ERR_NOMEM;
        goto out_close;
    }
    /* One more byte than expected is asked for, to notice a file that grew. */
    if (fread(buf, 1, size, f) != size || fgetc(f) != EOF || ferror(f)) {
        efps_error("checkpoint %s: read failed or the file changed while read", path);
        free(buf);
        goto out_close;
    }
    *buf_p = buf;
    *size_p = size;
    st = EFPS_OK;
out_close:
    fclose(f);
    return st;
}

static efps_status_t check_container(const char *path, const uint8_t *buf, size_t size,
                                     uint32_t kind)
{
    if (size < HEADER_BYTES + TRAILER_BYTES || memcmp(buf, magic, sizeof(magic)) != 0) {
        efps_error("checkpoint %s: not an efps checkpoint (%zu bytes, bad magic or too short)",
                   path, size);
        return EFPS_ERR_CORRUPT;
    }
    const uint64_t payload = efps__get_le64(buf + 16);
    if (payload != size - HEADER_BYTES - TRAILER_BYTES) {
        efps_error("checkpoint %s: truncated or extended: %zu bytes, header says %llu", path, size,
                   (unsigned long long)(payload + HEADER_BYTES + TRAILER_BYTES));
        return EFPS_ERR_CORRUPT;
    }
    const uint32_t want = efps__get_le32(buf + size - TRAILER_BYTES);
    const uint32_t got = (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), buf, size - TRAILER_BYTES);
    if (want != got) {
        efps_error("checkpoint %s: CRC mismatch (file %08x, computed %08x): corrupted", path, want,
                   got);
        return EFPS_ERR_CORRUPT;
    }
    const uint32_t version = efps__get_le32(buf + 8);
    if (version != EFPS_CKPT_VERSION) {
        efps_error("checkpoint %s: format version %u, this library reads version %u", path, version,
                   EFPS_CKPT_VERSION);
        return EFPS_ERR_UNSUPPORTED;
    }
    static const char *const kinds[] = {"?",          "worker",        "server",
                                        "simulation", "set of worker", "set of server"};
    const uint32_t have = efps__get_le32(buf + 12);
    if (have != kind) {
        efps_error("checkpoint %s: holds a %s state, not a %s one", path,
                   have <= EFPS_CKPT_SERVER_SET ? kinds[have] : "unknown", kinds[kind]);
        return EFPS_ERR_MISMATCH;
    }
    return EFPS_OK;
}

efps_status_t efps__ckpt_read(const char *path, uint32_t kind, uint8_t **payload_p, size_t *len_p)
{
    if (path == NULL) {
        efps_error("checkpoint: no path given");
        return EFPS_ERR_INVALID;
    }
    uint8_t *buf = NULL;
    size_t size = 0;
    efps_status_t st = slurp(path, &buf, &size);
    if (st != EFPS_OK)
        return st;
    st = check_container(path, buf, size, kind);
    if (st != EFPS_OK) {
        free(buf);
        return st;
    }
    /* The payload moves to the front so the caller frees one pointer. */
    const size_t len = size - HEADER_BYTES - TRAILER_BYTES;
    memmove(buf, buf + HEADER_BYTES, len);
    *payload_p = buf;
    *len_p = len;
    return EFPS_OK;
}
