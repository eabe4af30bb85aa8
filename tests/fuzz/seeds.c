/* Writes the seed corpora of the fuzz targets from files the library itself
 * makes: fuzz_seeds DIR writes DIR/idx/, DIR/ckpt/, DIR/tcp/ and DIR/ps/ (the
 * config seeds are plain text, kept as they are). Each file starts with the target's mode
 * byte (see each fuzz_<name>.c). */
#include "efps/optim.h"
#include "problems.h"
#include "lib/ps/ps_int.h"
#include "nn/idx.h"
#include "transport/tcp/tcp_wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const char *dir;

static void put(const char *sub, const char *name, uint8_t mode, const void *a, size_t alen,
                const void *b, size_t blen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(&mode, 1, 1, f) != 1 || fwrite(a, 1, alen, f) != alen ||
        (blen > 0 && fwrite(b, 1, blen, f) != blen) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* An IDX ubyte file of ndims dims in buf; returns its length. */
static size_t make_idx(uint8_t *buf, int ndims, const uint32_t *dims)
{
    size_t off = 0, n = 1;
    buf[off++] = 0;
    buf[off++] = 0;
    buf[off++] = 0x08;
    buf[off++] = (uint8_t)ndims;
    for (int i = 0; i < ndims; i++) {
        for (int s = 24; s >= 0; s -= 8)
            buf[off++] = (uint8_t)(dims[i] >> s);
        n *= dims[i];
    }
    for (size_t i = 0; i < n; i++)
        buf[off++] = (uint8_t)(ndims == 1 ? i % 10 : i * 37 % 251);
    return off;
}

static size_t gz(uint8_t *out, size_t cap, const uint8_t *in, size_t len)
{
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        exit(1);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        exit(1);
    deflateEnd(&z);
    return z.total_out;
}

static void idx_seeds(void)
{
    static uint8_t img[16 + 3 * 784], lab[8 + 3], img_gz[4096], lab_gz[256], pair[8192];
    const uint32_t img_dims[3] = {3, 28, 28}, lab_dims[1] = {3};
    size_t ilen = make_idx(img, 3, img_dims), llen = make_idx(lab, 1, lab_dims);
    size_t igz = gz(img_gz, sizeof(img_gz), img, ilen), lgz = gz(lab_gz, sizeof(lab_gz), lab, llen);
    put("idx", "images", 0, img, ilen, NULL, 0);
    put("idx", "labels.gz", 0, lab_gz, lgz, NULL, 0);
    put("idx", "images.gz", 0, img_gz, igz, NULL, 0);
    /* pairs: two bytes of split, the image file, the label file */
    pair[0] = (uint8_t)ilen;
    pair[1] = (uint8_t)(ilen >> 8);
    memcpy(pair + 2, img, ilen);
    put("idx", "pair", 1, pair, 2 + ilen, lab, llen);
    pair[0] = (uint8_t)igz;
    pair[1] = (uint8_t)(igz >> 8);
    memcpy(pair + 2, img_gz, igz);
    put("idx", "pair.gz", 1, pair, 2 + igz, lab_gz, lgz);
}

/* Saves with save(obj, path), then writes it raw (mode) and as a bare
 * payload (mode | 4, which fuzz_ckpt wraps in a container again). */
static void ckpt_seed(const char *name, uint8_t mode, efps_status_t st)
{
    char path[4096], raw[4200];
    snprintf(path, sizeof(path), "%s/tmp.ckpt", dir);
    if (st != EFPS_OK) {
        fprintf(stderr, "fuzz_seeds: cannot save %s\n", name);
        exit(1);
    }
    FILE *f = fopen(path, "rb");
    static uint8_t buf[1 << 20];
    size_t len = f != NULL ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f == NULL || len < 28 || len == sizeof(buf))
        exit(1);
    fclose(f);
    unlink(path);
    put("ckpt", name, mode, buf, len, NULL, 0);
    snprintf(raw, sizeof(raw), "%s.payload", name);
    put("ckpt", raw, mode | 4, buf + 24, len - 28, NULL, 0);
}

static void ckpt_seeds(void)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tmp.ckpt", dir);
    const efps_optim_config_t bs = {.compressor = EFPS_COMP_BLOCKSIGN,
                                    .block = 4,
                                    .momentum = 0.9f,
                                    .nesterov = 1,
                                    .weight_decay = 1e-4f};
    efps_worker_opt_t *w;
    efps_server_opt_t *s;
    efps_sim_t *sim;
    if (efps_worker_opt_create(&bs, 10, &w) != EFPS_OK ||
        efps_server_opt_create(&bs, 10, 3, &s) != EFPS_OK)
        exit(1);
    ckpt_seed("worker", 0, efps_worker_opt_save(w, path));
    efps_worker_opt_destroy(w);
    ckpt_seed("server", 1, efps_server_opt_save(s, path));
    efps_server_opt_destroy(s);
    /* sets, as efps_ps_save writes them: parts of 10 and 7 elements */
    efps_worker_opt_t *ws[2];
    efps_server_opt_t *ss[2];
    const size_t n[2] = {10, 7};
    for (int i = 0; i < 2; i++)
        if (efps_worker_opt_create(&bs, n[i], &ws[i]) != EFPS_OK ||
            efps_server_opt_create(&bs, n[i], 3, &ss[i]) != EFPS_OK)
            exit(1);
    ckpt_seed("worker_set", 8, efps_worker_opts_save(ws, 2, path));
    ckpt_seed("server_set", 9, efps_server_opts_save(ss, 2, path));
    for (int i = 0; i < 2; i++) {
        efps_worker_opt_destroy(ws[i]);
        efps_server_opt_destroy(ss[i]);
    }
    /* a simulation two steps in: non-zero state everywhere */
    sim_problem_t *p;
    if (sim_problem_lsq_create(6, 32, 4, 0.1f, 7, &p) != EFPS_OK)
        exit(1);
    float x0[6];
    sim_problem_init(p, x0);
    if (efps_sim_create(&bs, 6, 2, x0, sim_problem_grad, p, 11, &sim) != EFPS_OK ||
        efps_sim_step(sim, 0.1f) != EFPS_OK || efps_sim_step(sim, 0.1f) != EFPS_OK)
        exit(1);
    ckpt_seed("sim", 2, efps_sim_save(sim, path));
    efps_sim_destroy(sim);
    sim_problem_destroy(p);
}

/* Appends a frame (header, then len payload bytes) to buf at *off. */
static void frame(uint8_t *buf, size_t *off, tcp_hdr_t h)
{
    tcp_hdr_encode(&h, buf + *off);
    *off += TCP_HDR_LEN;
    for (uint32_t i = 0; i < h.length; i++)
        buf[(*off)++] = (uint8_t)(i * 13 + 1);
}

static void tcp_seeds(void)
{
    static uint8_t buf[4096];
    size_t off = 0;
    /* a connection as an acceptor reads it: CONNECT with private data and a
     * timeout, a MSG, a WRITE, a PING, a BYE */
    tcp_hdr_t connect = tcp_hdr_make(TCP_F_CONNECT, 40);
    connect.imm = 30000;
    frame(buf, &off, connect);
    frame(buf, &off, tcp_hdr_make(TCP_F_MSG, 100));
    tcp_hdr_t write = tcp_hdr_make(TCP_F_WRITE, 64);
    write.imm = 7;
    write.region = 3;
    write.secret = 0x0123456789abcdefull;
    write.offset = 128;
    frame(buf, &off, write);
    frame(buf, &off, tcp_hdr_make(TCP_F_PING, 0));
    frame(buf, &off, tcp_hdr_make(TCP_F_BYE, 0));
    put("tcp", "session", 0, buf, off, NULL, 0);
    /* an open connection: writes and messages */
    off = 0;
    frame(buf, &off, write);
    frame(buf, &off, tcp_hdr_make(TCP_F_MSG, 1));
    frame(buf, &off, tcp_hdr_make(TCP_F_MSG, 300));
    put("tcp", "open", 1, buf, off, NULL, 0);
}

/* Appends a length-prefixed message (as fuzz_ps reads them). */
static void ps_msg(uint8_t *buf, size_t *off, const uint8_t *m, size_t len)
{
    buf[(*off)++] = (uint8_t)len;
    buf[(*off)++] = (uint8_t)(len >> 8);
    memcpy(buf + *off, m, len);
    *off += len;
}

/* A LAYOUT as a worker sends it (worker.c send_layout), then its keys in
 * KEYS messages of at most PS_KEYS_PER_MSG: key k has k * 37 + 5 elements. */
static size_t ps_layout_seed(uint8_t *buf, uint32_t comp, uint64_t block, uint64_t part_bytes,
                             uint32_t nkeys)
{
    static uint8_t m[EFPS_TP_MSG_MAX];
    size_t off = 0;
    efps__put_le32(m, PS_MSG_LAYOUT);
    efps__put_le32(m + 4, comp);
    efps__put_le64(m + 8, block);
    efps__put_le64(m + 16, part_bytes);
    efps__put_le64(m + 24, nkeys);
    const efps_tp_rkey_t rkey = {.base = 0x1234567890abcdefull,
                                 .length = 1 << 20,
                                 .key = 2,
                                 .transport = 1,
                                 .access = EFPS_TP_ACCESS_REMOTE_WRITE};
    efps_tp_rkey_pack(&rkey, m + 32);
    ps_msg(buf, &off, m, 32 + EFPS_TP_RKEY_PACKED);
    for (uint32_t i = 0; i < nkeys; i += PS_KEYS_PER_MSG) {
        uint32_t cnt = nkeys - i < PS_KEYS_PER_MSG ? nkeys - i : PS_KEYS_PER_MSG;
        efps__put_le32(m, PS_MSG_KEYS);
        efps__put_le32(m + 4, cnt);
        for (uint32_t k = 0; k < cnt; k++) {
            uint8_t *e = m + 8 + PS_KEY_WIRE * k;
            efps__put_le32(e, i + k);
            efps__put_le64(e + 4, (uint64_t)(i + k) * 37 + 5);
            efps__put_le64(e + 12, block);
        }
        ps_msg(buf, &off, m, 8 + PS_KEY_WIRE * cnt);
    }
    return off;
}

static void ps_seeds(void)
{
    static uint8_t buf[16384];
    ps_hello_t hello = {
        .magic = PS_MAGIC, .version = PS_PROTO_VERSION, .role = 1, .rank = 2, .num_workers = 4};
    for (int i = 0; i < PS_NONCE; i++)
        hello.nonce[i] = (uint8_t)(i * 29 + 3);
    put("ps", "hello", 0, &hello, sizeof(hello), NULL, 0);
    uint8_t auth[4 + PS_MAC];
    efps__put_le32(auth, PS_MSG_AUTH);
    for (int i = 0; i < PS_MAC; i++)
        auth[4 + i] = (uint8_t)(i * 7 + 1);
    put("ps", "auth", 1, auth, sizeof(auth), NULL, 0);
    /* 1 server, blocksign blocks of 4, 3 keys; 3 servers, sign, 130 keys */
    put("ps", "layout", 2, buf, ps_layout_seed(buf, EFPS_COMP_BLOCKSIGN, 4, 256, 3), NULL, 0);
    put("ps", "layout130", 2 | 2 << 2, buf, ps_layout_seed(buf, EFPS_COMP_SIGN, 0, 4096, 130), NULL,
        0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR\n");
        return 2;
    }
    dir = argv[1];
    idx_seeds();
    ckpt_seeds();
    tcp_seeds();
    ps_seeds();
    return 0;
}
