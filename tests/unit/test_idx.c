/* Data for efps-train: the IDX reader on the real Fashion-MNIST test set and
 * on malformed files made here, the dataset pairing checks, normalization,
 * the PRNG, and per-rank sharding with seeded shuffles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "nn/data.h"
#include "nn/idx.h"
#include "nn/rng.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[] = "/tmp/efps-test-idx-XXXXXX";

static int make_tmpdir(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *tmp_path(const char *name)
{
    static char path[32][512];
    static int next;
    char *p = path[next++ % 32];
    snprintf(p, sizeof(path[0]), "%s/%s", tmpdir, name);
    return p;
}

static void write_plain(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(gz), Z_OK);
}

/* An IDX ubyte file's bytes: header for dims, then fill bytes of data
 * (which may differ from what the dims promise). */
static size_t make_idx(uint8_t *buf, int ndims, const uint32_t *dims, size_t fill)
{
    size_t off = 0;
    buf[off++] = 0;
    buf[off++] = 0;
    buf[off++] = 0x08;
    buf[off++] = (uint8_t)ndims;
    for (int i = 0; i < ndims; i++) {
        buf[off++] = (uint8_t)(dims[i] >> 24);
        buf[off++] = (uint8_t)(dims[i] >> 16);
        buf[off++] = (uint8_t)(dims[i] >> 8);
        buf[off++] = (uint8_t)dims[i];
    }
    for (size_t i = 0; i < fill; i++)
        buf[off++] = (uint8_t)(i * 7 + 3);
    return off;
}

/* stderr goes to a file between capture_begin and capture_end, which
 * returns what was written there in msg. */
static int capture_begin(void)
{
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(tmp_path("stderr.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    return saved;
}

static void capture_end(int saved, char *msg, size_t cap)
{
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    FILE *f = fopen(tmp_path("stderr.txt"), "r");
    assert_non_null(f);
    size_t got = fread(msg, 1, cap - 1, f);
    msg[got] = '\0';
    fclose(f);
}

/* Runs nn_idx_read with stderr captured; returns the status, the message in msg. */
static efps_status_t read_capturing(const char *path, nn_idx_t *idx, char *msg, size_t cap)
{
    int saved = capture_begin();
    efps_status_t status = nn_idx_read(path, idx);
    capture_end(saved, msg, cap);
    return status;
}

/* Fails with want, and the one logged line names the file. */
static void assert_logged(efps_status_t got, efps_status_t want, const char *msg, const char *file,
                          const char *words)
{
    if (got != want || strstr(msg, file) == NULL || strstr(msg, words) == NULL)
        print_message("%s: got %s, logged: %s\n", file, efps_status_name(got), msg);
    assert_int_equal(got, want);
    assert_non_null(strstr(msg, file));
    assert_non_null(strstr(msg, words));
}

static void expect_error(const char *path, efps_status_t want, const char *words)
{
    nn_idx_t idx = {0};
    char msg[2048];
    efps_status_t got = read_capturing(path, &idx, msg, sizeof(msg));
    assert_logged(got, want, msg, path, words);
    assert_null(idx.data);
}

/* ---- the real Fashion-MNIST test set ----------------------------------- */

static void test_fashion_mnist_test_set(void **state)
{
    (void)state;
    nn_dataset_t ds;
    assert_int_equal(nn_dataset_load_dir(NN_FASHION_MNIST_DIR, false, NULL, &ds), EFPS_OK);
    assert_int_equal(ds.count, 10000);
    assert_int_equal(ds.rows, 28);
    assert_int_equal(ds.cols, 28);
    assert_int_equal(ds.classes, 10);
    /* the test set is balanced: 1,000 of each class */
    int per_class[256] = {0};
    for (size_t i = 0; i < ds.count; i++)
        per_class[ds.labels[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(per_class[c], 1000);
    /* the pixel mean is the one batches are normalized with */
    double sum = 0.0;
    size_t pixels = ds.count * 784;
    for (size_t i = 0; i < pixels; i++)
        sum += ds.pixels[i];
    double mean = sum / (double)pixels / 255.0;
    assert_true(fabs(mean - NN_FASHION_MNIST_MEAN) < 0.01);

    /* normalization: (p / 255 - mean) / std, labels as given */
    uint32_t idx[2] = {9999, 17};
    float x[2 * 784];
    int32_t labels[2];
    nn_dataset_batch(&ds, idx, 2, 0.5f, 0.25f, x, labels);
    assert_int_equal(labels[0], ds.labels[9999]);
    assert_int_equal(labels[1], ds.labels[17]);
    for (int j = 0; j < 784; j += 13) {
        assert_float_equal(x[j], (ds.pixels[9999 * 784 + j] / 255.0 - 0.5) / 0.25, 1e-5);
        assert_float_equal(x[784 + j], (ds.pixels[17 * 784 + j] / 255.0 - 0.5) / 0.25, 1e-5);
    }
    nn_dataset_free(&ds);
}

/* ---- well-formed files of our own, gzipped and plain -------------------- */

static void test_idx_roundtrip(void **state)
{
    (void)state;
    uint8_t buf[256];
    uint32_t dims[3] = {3, 4, 5};
    size_t len = make_idx(buf, 3, dims, 60);
    const char *plain = tmp_path("ok.idx"), *gz = tmp_path("ok.idx.gz");
    write_plain(plain, buf, len);
    write_gz(gz, buf, len);
    for (int k = 0; k < 2; k++) {
        nn_idx_t idx;
        assert_int_equal(nn_idx_read(k ? gz : plain, &idx), EFPS_OK);
        assert_int_equal(idx.ndims, 3);
        assert_int_equal(idx.dims[0], 3);
        assert_int_equal(idx.dims[2], 5);
        assert_int_equal(idx.size, 60);
        assert_memory_equal(idx.data, buf + 16, 60);
        nn_idx_free(&idx);
    }
}

/* ---- malformed files ----------------------------------------------------- */

static void test_idx_bad_magic(void **state)
{
    (void)state;
    uint8_t buf[256];
    uint32_t dims[1] = {4};
    size_t len = make_idx(buf, 1, dims, 4);
    buf[0] = 0x50; /* a text file, say */
    write_plain(tmp_path("magic1.idx"), buf, len);
    expect_error(tmp_path("magic1.idx"), EFPS_ERR_CORRUPT, "bad magic");
    make_idx(buf, 1, dims, 4);
    buf[3] = 9; /* nine dimensions */
    write_gz(tmp_path("magic2.idx.gz"), buf, len);
    expect_error(tmp_path("magic2.idx.gz"), EFPS_ERR_CORRUPT, "bad magic");
    make_idx(buf, 1, dims, 4);
    buf[2] = 0x0D; /* float elements: a real IDX type, not ours */
    write_plain(tmp_path("float.idx"), buf, len);
    expect_error(tmp_path("float.idx"), EFPS_ERR_UNSUPPORTED, "not supported");
}

static void test_idx_truncated(void **state)
{
    (void)state;
    uint8_t buf[256];
    uint32_t dims[3] = {10, 4, 4};
    /* the header promises 160 bytes, the file holds 100 */
    size_t len = make_idx(buf, 3, dims, 100);
    write_gz(tmp_path("short.idx.gz"), buf, len);
    expect_error(tmp_path("short.idx.gz"), EFPS_ERR_CORRUPT, "truncated");
    /* a plain file is measured before anything is allocated or read */
    write_plain(tmp_path("short.idx"), buf, len);
    expect_error(tmp_path("short.idx"), EFPS_ERR_CORRUPT,
                 "declares 160 bytes of data but the file has 100");
    /* cut inside the header */
    write_plain(tmp_path("header.idx"), buf, 9);
    expect_error(tmp_path("header.idx"), EFPS_ERR_CORRUPT, "header");
    /* an empty file */
    write_plain(tmp_path("empty.idx"), buf, 0);
    expect_error(tmp_path("empty.idx"), EFPS_ERR_CORRUPT, "truncated");
    /* more bytes than the header says */
    len = make_idx(buf, 3, dims, 161);
    write_gz(tmp_path("long.idx.gz"), buf, len);
    expect_error(tmp_path("long.idx.gz"), EFPS_ERR_CORRUPT, "longer");
}

static void test_idx_bad_gzip(void **state)
{
    (void)state;
    /* a gzip stream cut in half: the real test labels, first half */
    const char *src = NN_FASHION_MNIST_DIR "/t10k-labels-idx1-ubyte.gz";
    FILE *f = fopen(src, "rb");
    assert_non_null(f);
    static uint8_t whole[1 << 16];
    size_t len = fread(whole, 1, sizeof(whole), f);
    fclose(f);
    assert_true(len > 1000 && len < sizeof(whole));
    write_plain(tmp_path("cut.idx.gz"), whole, len / 2);
    expect_error(tmp_path("cut.idx.gz"), EFPS_ERR_CORRUPT, "truncated");

    /* a gzip header followed by garbage */
    uint8_t junk[64] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03};
    for (size_t i = 10; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(0xff - i * 5);
    write_plain(tmp_path("junk.idx.gz"), junk, sizeof(junk));
    expect_error(tmp_path("junk.idx.gz"), EFPS_ERR_CORRUPT, "cannot read");

    /* a damaged stream body: flip bytes in the middle of the real file */
    for (size_t i = len / 2; i < len / 2 + 16; i++)
        whole[i] ^= 0x5a;
    write_plain(tmp_path("flipped.idx.gz"), whole, len);
    nn_idx_t idx = {0};
    char msg[2048];
    assert_int_equal(read_capturing(tmp_path("flipped.idx.gz"), &idx, msg, sizeof(msg)),
                     EFPS_ERR_CORRUPT);
    assert_non_null(strstr(msg, tmp_path("flipped.idx.gz")));
}

static void test_idx_bad_dims(void **state)
{
    (void)state;
    uint8_t buf[256];
    /* a zero dimension */
    uint32_t zero[2] = {4, 0};
    size_t len = make_idx(buf, 2, zero, 0);
    write_plain(tmp_path("zero.idx"), buf, len);
    expect_error(tmp_path("zero.idx"), EFPS_ERR_CORRUPT, "dimension 1");
    /* dimensions whose product overflows */
    uint32_t huge[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 2};
    len = make_idx(buf, 4, huge, 0);
    write_plain(tmp_path("huge.idx"), buf, len);
    expect_error(tmp_path("huge.idx"), EFPS_ERR_CORRUPT, "overflows");

    /* datasets: an image file must have 3 dims, a label file 1, same count */
    uint32_t img_dims[3] = {5, 2, 3}, lab5[1] = {5}, lab4[1] = {4}, flat[2] = {5, 6};
    const char *img = tmp_path("img.idx.gz"), *lab = tmp_path("lab.idx.gz");
    write_gz(img, buf, make_idx(buf, 3, img_dims, 30));
    write_gz(lab, buf, make_idx(buf, 1, lab5, 5));
    nn_dataset_t ds;
    assert_int_equal(nn_dataset_load(img, lab, NULL, &ds), EFPS_OK);
    assert_int_equal(ds.count, 5);
    assert_int_equal(ds.rows, 2);
    assert_int_equal(ds.cols, 3);
    nn_dataset_free(&ds);

    const char *lab_short = tmp_path("lab4.idx");
    write_plain(lab_short, buf, make_idx(buf, 1, lab4, 4));
    assert_int_equal(nn_dataset_load(img, lab_short, NULL, &ds), EFPS_ERR_CORRUPT);
    const char *flat_img = tmp_path("flat.idx");
    write_plain(flat_img, buf, make_idx(buf, 2, flat, 30));
    assert_int_equal(nn_dataset_load(flat_img, lab, NULL, &ds), EFPS_ERR_CORRUPT);
    assert_int_equal(nn_dataset_load(img, img, NULL, &ds), EFPS_ERR_CORRUPT);
}

/* A header may declare anything: it is checked against the file's size
 * before the data is allocated (a 16-byte file used to ask for 3.4 TB). */
static void test_idx_declared_size(void **state)
{
    (void)state;
    uint8_t buf[256];
    uint32_t dims[3] = {60000, 65535, 880}; /* 3.46e12 bytes */
    size_t len = make_idx(buf, 3, dims, 0);
    assert_int_equal(len, 16);
    write_plain(tmp_path("big.idx"), buf, len);
    expect_error(tmp_path("big.idx"), EFPS_ERR_CORRUPT,
                 "declares 3460248000000 bytes of data but the file has 0");
    /* gzip: no more than deflate's 1032:1 of the file's size */
    write_gz(tmp_path("big.idx.gz"), buf, len);
    expect_error(tmp_path("big.idx.gz"), EFPS_ERR_CORRUPT, "declares 3460248000000 bytes");
    /* a label file that claims a billion labels and holds 4 */
    uint32_t labels[1] = {1000000000};
    len = make_idx(buf, 1, labels, 4);
    write_plain(tmp_path("labels.idx"), buf, len);
    expect_error(tmp_path("labels.idx"), EFPS_ERR_CORRUPT,
                 "declares 1000000000 bytes of data but the file has 4");
    /* a directory is no IDX file */
    expect_error(tmpdir, EFPS_ERR_IO, "not a regular file");
}

/* Loads images/labels with spec, expecting EFPS_ERR_CORRUPT and a message
 * naming the file and the words. */
static void expect_load_error(const char *img, const char *lab, const nn_data_spec_t *spec,
                              const char *file, const char *words)
{
    nn_dataset_t ds = {0};
    char msg[2048];
    int saved = capture_begin();
    efps_status_t got = nn_dataset_load(img, lab, spec, &ds);
    capture_end(saved, msg, sizeof(msg));
    assert_logged(got, EFPS_ERR_CORRUPT, msg, file, words);
    assert_null(ds.pixels);
}

/* The training set is checked against the model as the test set is: image
 * size, labels below the number of classes, as many labels as images. */
static void test_dataset_spec(void **state)
{
    (void)state;
    static uint8_t buf[16 + 6 * 40 * 40];
    const nn_data_spec_t fashion = {.rows = 28, .cols = 28, .classes = 10};
    uint32_t ok_dims[3] = {6, 28, 28}, lab6[1] = {6}, lab5[1] = {5};
    const char *img = tmp_path("img28.idx"), *lab = tmp_path("lab6.idx");
    write_plain(img, buf, make_idx(buf, 3, ok_dims, 6 * 784));
    uint8_t labels[6] = {0, 9, 3, 5, 9, 1};
    size_t len = make_idx(buf, 1, lab6, 0);
    memcpy(buf + len, labels, sizeof(labels));
    write_plain(lab, buf, len + sizeof(labels));
    nn_dataset_t ds;
    assert_int_equal(nn_dataset_load(img, lab, &fashion, &ds), EFPS_OK);
    assert_int_equal(ds.classes, 10);
    nn_dataset_free(&ds);

    /* a label of 10 for a 10-class model: file, index and value */
    labels[3] = 10;
    memcpy(buf + len, labels, sizeof(labels));
    const char *lab_bad = tmp_path("lab10.idx.gz");
    write_gz(lab_bad, buf, len + sizeof(labels));
    expect_load_error(img, lab_bad, &fashion, lab_bad, "label 3 is 10");
    labels[3] = 255;
    memcpy(buf + len, labels, sizeof(labels));
    write_gz(lab_bad, buf, len + sizeof(labels));
    expect_load_error(img, lab_bad, &fashion, lab_bad, "label 3 is 255");

    /* 2x2 and 40x40 images for a 28x28 model */
    uint32_t small[3] = {6, 2, 2}, large[3] = {6, 40, 40};
    const char *img2 = tmp_path("img2.idx"), *img40 = tmp_path("img40.idx.gz");
    write_plain(img2, buf, make_idx(buf, 3, small, 6 * 4));
    expect_load_error(img2, lab, &fashion, img2,
                      "images are 2 x 2 pixels, the model takes 28 x 28");
    write_gz(img40, buf, make_idx(buf, 3, large, 6 * 1600));
    expect_load_error(img40, lab, &fashion, img40, "images are 40 x 40 pixels");

    /* 6 images, 5 labels */
    const char *lab_short = tmp_path("lab5.idx");
    write_plain(lab_short, buf, make_idx(buf, 1, lab5, 5));
    expect_load_error(img, lab_short, &fashion, lab_short, "holds 6 images but");
}

static void test_idx_missing_file(void **state)
{
    (void)state;
    expect_error(tmp_path("does-not-exist.idx"), EFPS_ERR_IO, "cannot open");
    nn_dataset_t ds;
    assert_int_equal(nn_dataset_load_dir(tmpdir, true, NULL, &ds), EFPS_ERR_IO);
}

/* ---- PRNG ---------------------------------------------------------------- */

static void test_rng(void **state)
{
    (void)state;
    nn_rng_t a, b, c;
    nn_rng_seed(&a, 123, 0);
    nn_rng_seed(&b, 123, 0);
    nn_rng_seed(&c, 123, 1);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = nn_rng_next(&a);
        assert_true(x == nn_rng_next(&b));
        same_c += x == nn_rng_next(&c);
    }
    assert_int_equal(same_c, 0);

    /* below(): in range, every value about equally often */
    int hist[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t v = nn_rng_below(&a, 7);
        assert_true(v < 7);
        hist[v]++;
    }
    for (int k = 0; k < 7; k++)
        assert_true(hist[k] > 9500 && hist[k] < 10500);
    /* uniform() in [0, 1), normal() with mean 0 and variance 1 */
    double s = 0.0, sq = 0.0;
    for (int i = 0; i < 100000; i++) {
        double u = nn_rng_uniform(&a);
        assert_true(u >= 0.0 && u < 1.0);
        double z = nn_rng_normal(&a);
        s += z;
        sq += z * z;
    }
    assert_true(fabs(s / 100000) < 0.02);
    assert_true(fabs(sq / 100000 - 1.0) < 0.03);

    /* a shuffle is a permutation */
    uint32_t perm[1000];
    for (uint32_t i = 0; i < 1000; i++)
        perm[i] = i;
    nn_rng_shuffle_u32(&a, perm, 1000);
    uint8_t seen[1000] = {0};
    int fixed = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        assert_true(perm[i] < 1000 && !seen[perm[i]]);
        seen[perm[i]] = 1;
        fixed += perm[i] == i;
    }
    assert_true(fixed < 10);
}

/* ---- sharding ------------------------------------------------------------ */

static void test_sampler_shards(void **state)
{
    (void)state;
    const size_t total = 1003;
    const int world = 4;
    uint8_t owner[1003];
    memset(owner, 0xff, sizeof(owner));
    for (int r = 0; r < world; r++) {
        nn_sampler_t s;
        assert_int_equal(nn_sampler_init(&s, total, r, world, 16, 77), EFPS_OK);
        /* same steps per epoch on every rank: floor(floor(1003 / 4) / 16) */
        assert_int_equal(s.batches_per_epoch, 15);
        assert_true(s.count == 250 || s.count == 251);
        for (size_t i = 0; i < s.count; i++) {
            assert_true(s.shard[i] < total);
            assert_int_equal(owner[s.shard[i]], 0xff); /* disjoint */
            owner[s.shard[i]] = (uint8_t)r;
        }
        /* not a contiguous slice of the file (which may be class-ordered) */
        assert_true(s.shard[s.count - 1] - s.shard[0] > 900);
        nn_sampler_free(&s);
    }
    for (size_t i = 0; i < total; i++)
        assert_true(owner[i] < world); /* covering */
}

static void test_sampler_epochs(void **state)
{
    (void)state;
    nn_sampler_t a, b, c;
    assert_int_equal(nn_sampler_init(&a, 500, 1, 2, 10, 5), EFPS_OK);
    assert_int_equal(nn_sampler_init(&b, 500, 1, 2, 10, 5), EFPS_OK);
    assert_int_equal(nn_sampler_init(&c, 500, 1, 2, 10, 6), EFPS_OK);
    assert_int_equal(a.batches_per_epoch, 25);
    /* same seed, same shard and order; another seed, another shard */
    assert_memory_equal(a.order, b.order, a.count * sizeof(uint32_t));
    assert_true(memcmp(a.shard, c.shard, a.count * sizeof(uint32_t)) != 0);
    /* another epoch: the same examples in another order */
    uint32_t *e0 = malloc(a.count * sizeof(uint32_t));
    memcpy(e0, a.order, a.count * sizeof(uint32_t));
    nn_sampler_set_epoch(&a, 1);
    assert_true(memcmp(e0, a.order, a.count * sizeof(uint32_t)) != 0);
    uint8_t in_shard[500] = {0};
    for (size_t i = 0; i < a.count; i++)
        in_shard[a.shard[i]] = 1;
    for (size_t i = 0; i < a.count; i++)
        assert_true(in_shard[a.order[i]]);
    /* an epoch's order depends only on (seed, rank, epoch), not on history */
    nn_sampler_set_epoch(&b, 7);
    nn_sampler_set_epoch(&b, 1);
    assert_memory_equal(a.order, b.order, a.count * sizeof(uint32_t));
    nn_sampler_set_epoch(&a, 0);
    assert_memory_equal(a.order, e0, a.count * sizeof(uint32_t));
    assert_ptr_equal(nn_sampler_batch(&a, 3), a.order + 30);
    free(e0);
    nn_sampler_free(&a);
    nn_sampler_free(&b);
    nn_sampler_free(&c);

    /* no batch fits, or nonsense ranks */
    nn_sampler_t s;
    assert_int_equal(nn_sampler_init(&s, 30, 0, 4, 8, 1), EFPS_ERR_INVALID);
    assert_int_equal(nn_sampler_init(&s, 100, 4, 4, 8, 1), EFPS_ERR_INVALID);
    assert_int_equal(nn_sampler_init(&s, 100, 0, 0, 8, 1), EFPS_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fashion_mnist_test_set), cmocka_unit_test(test_idx_roundtrip),
        cmocka_unit_test(test_idx_bad_magic),          cmocka_unit_test(test_idx_truncated),
        cmocka_unit_test(test_idx_bad_gzip),           cmocka_unit_test(test_idx_bad_dims),
        cmocka_unit_test(test_idx_declared_size),      cmocka_unit_test(test_dataset_spec),
        cmocka_unit_test(test_idx_missing_file),       cmocka_unit_test(test_rng),
        cmocka_unit_test(test_sampler_shards),         cmocka_unit_test(test_sampler_epochs),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
