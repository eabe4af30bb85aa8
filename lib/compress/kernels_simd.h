/* Template for the SIMD variants, included once by kernels_avx2.c and once by
 * kernels_avx512.c inside their target pragma, so each copy is compiled for
 * that ISA (as libdeflate stamps its SIMD variants). The includer defines
 * src_t, p_at, scales_walk, commit_walk, the bit-vector type vbits_t and VBYTES,
 * the W-lane float vector vec_t with vset1, vsigned (lane j negated where
 * bit j is set), vload (first len lanes, zero beyond), vadd, vmul and vdiv,
 * and load_bits and emit (out = v or out += v in the first len lanes). */

static src_t job_src(const efps_job_t *j, size_t k0, size_t k1)
{
    const size_t nb = efps__nblocks(j->n, j->B);
    return (src_t){.x = j->x,
                   .err = j->err_in,
                   .a = j->a,
                   .b = j->b,
                   .packed = j->packed,
                   .m = j->m,
                   .n = j->n,
                   .B = j->B,
                   .k0 = k0,
                   .k1 = k1,
                   .signs_off = j->packed ? efps_align_up(4 * nb, EFPS_ALIGN) : 0,
                   .pbuf = j->pbuf,
                   .pbase = j->pbase};
}

static void scales(const efps_job_t *j, size_t k0, size_t k1, float *out)
{
    const src_t c = job_src(j, k0, k1);
    scales_walk(&c, out);
}

static void commit(const efps_job_t *j, size_t k0, size_t k1, const float *sc, uint8_t *signs)
{
    const src_t c = job_src(j, k0, k1);
    commit_walk(&c, j->err_out, sc, signs);
}

/* Units never straddle a sign byte they do not start: a unit starting mid-byte
 * runs to that byte's end, one starting on a byte takes up to W elements. */
EFPS_INLINE size_t unit_len(size_t i, size_t hi)
{
    const size_t len = (i & 7) ? 8 - (i & 7) : W;
    return len < hi - i ? len : hi - i;
}

/* The server's p for blocks [k0, k1) (at most EFPS_CHUNK_ELEMS elements)
 * into pbuf: for every element, the m decoded values summed in rank order
 * starting from worker 0's value, then fl(sum / m) + fl(b*err). The order per
 * element is all that the bits depend on, so the loops may run in any order
 * around it: whole tiles of RED_TILE vectors keep their sums in registers
 * while the sign streams go by (each sum stored once per RED_GROUP workers,
 * not once per worker: the cost per pushed byte does not grow with m); only
 * a block's unaligned head and short tail are summed in pbuf worker by worker.
 *
 * The chunk's sign bytes of RED_GROUP workers are first copied side by side
 * into a stack buffer: the workers' buffers often sit at the same offset in
 * their pages, so reading 8 bytes from each of 32 of them in turn evicts the
 * lines of the 8-way L1 set they share before their next 8 bytes are read. */
#define RED_TILE  8
#define RED_GROUP 32
#define RED_STAGE (EFPS_CHUNK_ELEMS / 8 + 8) /* a chunk's sign bytes, any alignment */
/* Bytes of each sign stream prefetched ahead of the chunk being reduced: the
 * hardware follows a few streams, not 32 or 64 interleaved ones. */
#define RED_PREFETCH 1024

typedef struct {
    const src_t *c;
    int g0, g1;           /* the workers of this pass */
    size_t byte0;         /* first sign byte of the chunk, at stage[.][0] */
    const uint8_t *stage; /* RED_GROUP rows of RED_STAGE bytes */
    vec_t vm;             /* m, or 1/m when m is a power of two */
    int pow2;
} red_pass_t;

/* fl(sum / m) + fl(b*err[i..]) in the first len lanes. For m a power of two,
 * 1/m is exact and sum * (1/m) is the same correctly rounded value as
 * sum / m (both round the same real number once), without the division. */
EFPS_INLINE vec_t red_finish(const red_pass_t *r, vec_t sum, size_t i, size_t len)
{
    const vec_t mean = r->pow2 ? vmul(sum, r->vm) : vdiv(sum, r->vm);
    return vadd(mean, vmul(vset1(r->c->b), vload(r->c->err + i, len)));
}

/* Worker w's nv decoded vectors of block blk from element i (a multiple of
 * 8): acc = them (first) or acc += them. The tile's sign bytes come in
 * whole words: one load per worker, not one per vector. */
EFPS_INLINE void red_add(const red_pass_t *r, int w, int first, size_t blk, size_t i, int nv,
                         vec_t *acc)
{
    const vec_t vs = vset1(((const float *)r->c->packed[w])[blk]);
    uint64_t word[(RED_TILE * W + 63) / 64] = {0};
    memcpy(word, r->stage + (size_t)(w - r->g0) * RED_STAGE + (i / 8 - r->byte0),
           (size_t)nv * W / 8);
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) {
        const unsigned bits = (unsigned)(word[v * W / 64] >> (v * W % 64)) & ((1u << W) - 1);
        const vec_t d = vsigned(bits, vs);
        acc[v] = first ? d : vadd(acc[v], d);
    }
}

/* nv whole vectors of block blk from element i (a multiple of 8), for the
 * pass's workers: the sums start from worker 0's values or from out, and go
 * back to out finished (last pass) or as they are. */
EFPS_INLINE void red_tile(const red_pass_t *r, size_t blk, size_t i, int nv, float *out)
{
    vec_t acc[RED_TILE];
    int w = r->g0;
    if (w == 0) { /* from worker 0's values, not from 0 + them (-0.0) */
        red_add(r, w++, 1, blk, i, nv, acc);
    } else {
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            acc[v] = vload(out + (size_t)v * W, W);
    }
    for (; w < r->g1; w++)
        red_add(r, w, 0, blk, i, nv, acc);
    const int last = r->g1 == r->c->m;
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++)
        emit(out + (size_t)v * W, W, last ? red_finish(r, acc[v], i + (size_t)v * W, W) : acc[v],
             0);
}

/* Elements [lo, hi) of block blk, all workers, summed in pbuf worker by
 * worker from their own buffers (a block's short head or tail). */
static void red_range(const red_pass_t *r, size_t blk, size_t lo, size_t hi, float *out)
{
    const src_t *c = r->c;
    for (int w = 0; w < c->m; w++) {
        const vec_t vs = vset1(((const float *)c->packed[w])[blk]);
        const uint8_t *sg = (const uint8_t *)c->packed[w] + c->signs_off;
        for (size_t i = lo; i < hi;) {
            const size_t len = unit_len(i, hi);
            emit(out + (i - lo), len, vsigned(load_bits(sg, i, len), vs), w > 0);
            i += len;
        }
    }
    for (size_t i = lo; i < hi; i += W) {
        const size_t len = hi - i < W ? hi - i : W;
        emit(out + (i - lo), len, red_finish(r, vload(out + (i - lo), len), i, len), 0);
    }
}

/* One pass of workers [g0, g1) over the chunk's blocks; the first pass also
 * does the short ranges, whole. */
static void red_blocks(const red_pass_t *r, size_t k0, size_t k1, float *pbuf)
{
    const src_t *c = r->c;
    const size_t base = k0 * c->B;
    for (size_t blk = k0; blk < k1; blk++) {
        const size_t lo = blk * c->B, hi = lo + c->B < c->n ? lo + c->B : c->n;
        size_t i = (lo + 7) & ~(size_t)7; /* tiles start on a sign byte */
        if (i > hi)
            i = hi;
        if (i > lo && r->g0 == 0)
            red_range(r, blk, lo, i, pbuf + (lo - base));
        for (; i + RED_TILE * W <= hi; i += RED_TILE * W)
            red_tile(r, blk, i, RED_TILE, pbuf + (i - base));
        for (; i + W <= hi; i += W)
            red_tile(r, blk, i, 1, pbuf + (i - base));
        if (i < hi && r->g0 == 0)
            red_range(r, blk, i, hi, pbuf + (i - base));
    }
}

static void red_fill(const src_t *c, size_t k0, size_t k1, float *pbuf)
{
    const size_t base = k0 * c->B, end = k1 * c->B < c->n ? k1 * c->B : c->n;
    const size_t byte0 = base / 8, byte1 = (end + 7) / 8, nbytes = (c->n + 7) / 8;
    uint8_t stage[RED_GROUP * RED_STAGE] __attribute__((aligned(64)));
    red_pass_t r = {.c = c, .byte0 = byte0, .stage = stage, .pow2 = (c->m & (c->m - 1)) == 0};
    r.vm = vset1(r.pow2 ? 1.0f / (float)c->m : (float)c->m);
    for (int g0 = 0; g0 < c->m; g0 += RED_GROUP) {
        r.g0 = g0;
        r.g1 = c->m - g0 < RED_GROUP ? c->m : g0 + RED_GROUP;
        for (int w = g0; w < r.g1; w++) {
            const uint8_t *sg = (const uint8_t *)c->packed[w] + c->signs_off;
            memcpy(stage + (size_t)(w - g0) * RED_STAGE, sg + byte0, byte1 - byte0);
            for (size_t off = byte0 + RED_PREFETCH; off < byte1 + RED_PREFETCH && off < nbytes;
                 off += 64)
                __builtin_prefetch(sg + off);
        }
        red_blocks(&r, k0, k1, pbuf);
    }
}

static void p_fill(const efps_job_t *j, size_t k0, size_t k1, float *pbuf)
{
    const src_t c = job_src(j, k0, k1);
    red_fill(&c, k0, k1, pbuf);
}

static void decode(const void *packed, size_t n, size_t B, float alpha, float *out, int add)
{
    const float *scales = efps__packed_scales(packed);
    const uint8_t *signs = efps__packed_signs(packed, n, B);
    for (size_t lo = 0, blk = 0; lo < n; lo += B, blk++) {
        const size_t hi = lo + B < n ? lo + B : n;
        const vec_t vas = vset1(alpha * scales[blk]); /* -(alpha*s) == alpha*(-s): same bits */
        for (size_t i = lo; i < hi;) {
            const size_t len = unit_len(i, hi);
            emit(out + i, len, vsigned(load_bits(signs, i, len), vas), add);
            i += len;
        }
    }
}

static void sign_decode(const void *packed, size_t n, float alpha, float *out, int add)
{
    const vec_t va = vset1(alpha);
    for (size_t i = 0; i < n; i += W) {
        const size_t len = n - i < W ? n - i : W;
        emit(out + i, len, vsigned(load_bits(packed, i, len), va), add);
    }
}

/* Majority of m bit streams, VBYTES bytes at a time, with bit-sliced
 * counters: plane[j] holds bit j of every position's count of set bits. The
 * count is compared with m/2 from the top plane down; a tie (even m) takes
 * worker 0's bit. */
static void sign_majority(const void *const *packed, int m, size_t n, uint8_t *out)
{
    const size_t nbytes = (n + 7) / 8;
    const vbits_t ones = ~(vbits_t){0};
    int nplanes = 1;
    while ((1 << nplanes) <= m)
        nplanes++;
    for (size_t off = 0; off < nbytes; off += VBYTES) {
        const size_t len = nbytes - off < VBYTES ? nbytes - off : VBYTES;
        vbits_t plane[32] = {{0}}, first = {0};
        for (int w = 0; w < m; w++) {
            vbits_t v = {0}, carry;
            memcpy(&v, (const uint8_t *)packed[w] + off, len);
            if (w == 0)
                first = v;
            carry = v;
            for (int j = 0; j < nplanes; j++) {
                const vbits_t t = plane[j] & carry;
                plane[j] ^= carry;
                carry = t;
            }
        }
        const unsigned half = (unsigned)m / 2;
        vbits_t gt = {0}, eq = ones;
        for (int j = nplanes - 1; j >= 0; j--) {
            const vbits_t tb = ((half >> j) & 1) ? ones : (vbits_t){0};
            gt |= eq & plane[j] & ~tb;
            eq &= ~(plane[j] ^ tb);
        }
        const vbits_t res = gt | ((m % 2 == 0) ? (eq & first) : (vbits_t){0});
        memcpy(out + off, &res, len);
    }
    if (n & 7)
        out[nbytes - 1] &= (uint8_t)((1u << (n & 7)) - 1);
}
