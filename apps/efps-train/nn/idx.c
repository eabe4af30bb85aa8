/* IDX reader on zlib: gzread inflates gzip files and passes plain files
 * through, so one code path serves both. */
#include "idx.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_TYPE_UBYTE 0x08
/* Deflate's best case is 1032:1 (258-byte matches at about 2 bits each):
 * a gzip file of M bytes cannot inflate to more than this many times M. */
#define GZIP_MAX_RATIO 1032

/* zlib's message for the last error, without the "<path>: " it prepends. */
static const char *zmsg(gzFile gz, const char *path, int *zerr_p)
{
    const char *msg = gzerror(gz, zerr_p);
    size_t len = strlen(path);
    if (strncmp(msg, path, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ')
        msg += len + 2;
    return msg;
}

/* Reads exactly len bytes. EFPS_ERR_CORRUPT for a short read (truncated file
 * or damaged gzip stream), EFPS_ERR_IO for a read error. */
static efps_status_t read_exact(gzFile gz, const char *path, void *buf, size_t len,
                                const char *what)
{
    uint8_t *p = buf;
    while (len > 0) {
        unsigned chunk = len > (1u << 30) ? (1u << 30) : (unsigned)len;
        int got = gzread(gz, p, chunk);
        if (got < 0) {
            int zerr;
            const char *msg = zmsg(gz, path, &zerr);
            /* zlib inflates ahead: a damaged stream may show up on any read */
            efps_error("%s: cannot read the file: %s", path, msg);
            return zerr == Z_ERRNO ? EFPS_ERR_IO : EFPS_ERR_CORRUPT;
        }
        if (got == 0) {
            int zerr;
            const char *msg = zmsg(gz, path, &zerr);
            efps_error("%s: truncated: the file ends inside the %s%s%s", path, what,
                       zerr != Z_OK ? ": " : "", zerr != Z_OK ? msg : "");
            return EFPS_ERR_CORRUPT;
        }
        p += got;
        len -= (size_t)got;
    }
    return EFPS_OK;
}

static efps_status_t read_header(gzFile gz, const char *path, nn_idx_t *idx)
{
    uint8_t magic[4];
    efps_status_t status = read_exact(gz, path, magic, sizeof(magic), "header");
    if (status != EFPS_OK)
        return status;
    if (magic[0] != 0 || magic[1] != 0 || magic[3] == 0 || magic[3] > NN_IDX_MAX_DIMS) {
        efps_error("%s: bad magic %02x%02x%02x%02x: not an IDX file with 1 to %d dimensions", path,
                   magic[0], magic[1], magic[2], magic[3], NN_IDX_MAX_DIMS);
        return EFPS_ERR_CORRUPT;
    }
    if (magic[2] != IDX_TYPE_UBYTE) {
        efps_error("%s: element type 0x%02x is not supported (only unsigned bytes, 0x08)", path,
                   magic[2]);
        return EFPS_ERR_UNSUPPORTED;
    }
    idx->ndims = magic[3];
    idx->size = 1;
    for (int i = 0; i < idx->ndims; i++) {
        uint8_t b[4];
        status = read_exact(gz, path, b, sizeof(b), "header");
        if (status != EFPS_OK)
            return status;
        uint32_t d = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        if (d == 0 || idx->size > SIZE_MAX / d) {
            efps_error("%s: dimension %d is %u: %s", path, i, d,
                       d == 0 ? "empty" : "the data size overflows");
            return EFPS_ERR_CORRUPT;
        }
        idx->dims[i] = d;
        idx->size *= d;
    }
    return EFPS_OK;
}

/* The header is trusted only as far as the file can back it: the data it
 * declares must fit in what remains of a plain file, or in what a gzip file
 * of this size can inflate to, before anything is allocated for it. */
static efps_status_t check_size(gzFile gz, const char *path, const nn_idx_t *idx, off_t file_size)
{
    const size_t header = 4 + 4 * (size_t)idx->ndims;
    const size_t have = (size_t)file_size; /* st_size of a regular file is >= 0 */
    if (gzdirect(gz)) {
        const size_t data = have > header ? have - header : 0;
        if (idx->size <= data)
            return EFPS_OK; /* longer: check_end names that */
        efps_error("%s: the header declares %zu bytes of data but the file has %zu after its "
                   "%zu-byte header",
                   path, idx->size, data, header);
        return EFPS_ERR_CORRUPT;
    }
    if (idx->size / GZIP_MAX_RATIO < have)
        return EFPS_OK;
    efps_error("%s: the header declares %zu bytes of data but the file has %zu (gzip, which "
               "inflates at most %dx)",
               path, idx->size, have, GZIP_MAX_RATIO);
    return EFPS_ERR_CORRUPT;
}

/* The header says how long the data is: anything after it is a sign that
 * the file is not what its header claims. */
static efps_status_t check_end(gzFile gz, const char *path)
{
    uint8_t extra;
    int got = gzread(gz, &extra, 1);
    if (got == 0)
        return EFPS_OK;
    if (got < 0) {
        int zerr;
        efps_error("%s: cannot read past the data: %s", path, zmsg(gz, path, &zerr));
        return EFPS_ERR_CORRUPT;
    }
    efps_error("%s: the file is longer than its header says", path);
    return EFPS_ERR_CORRUPT;
}

efps_status_t nn_idx_read(const char *path, nn_idx_t *idx_p)
{
    nn_idx_t idx = {0};
    efps_status_t status;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        efps_error("%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return EFPS_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        efps_error("%s: cannot open: not a regular file", path);
        close(fd);
        return EFPS_ERR_IO;
    }
    gzFile gz = gzdopen(fd, "rb"); /* owns fd from here, on success */
    if (gz == NULL) {
        efps_error("%s: cannot open: out of memory", path);
        close(fd);
        return EFPS_ERR_NOMEM;
    }
    status = read_header(gz, path, &idx);
    if (status == EFPS_OK)
        status = check_size(gz, path, &idx, st.st_size);
    if (status != EFPS_OK)
        goto err_close;
    idx.data = malloc(idx.size);
    if (idx.data == NULL) {
        efps_error("%s: cannot allocate %zu bytes for the data", path, idx.size);
        status = EFPS_ERR_NOMEM;
        goto err_close;
    }
    status = read_exact(gz, path, idx.data, idx.size, "data");
    if (status != EFPS_OK)
        goto err_free_data;
    status = check_end(gz, path);
    if (status != EFPS_OK)
        goto err_free_data;
    gzclose(gz);
    *idx_p = idx;
    return EFPS_OK;

err_free_data:
    free(idx.data);
err_close:
    gzclose(gz);
    return status;
}

void nn_idx_free(nn_idx_t *idx)
{
    free(idx->data);
    idx->data = NULL;
}
