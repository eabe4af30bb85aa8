/* Template for the SIMD variants, included once by kernels_avx2.c and once by
 * kernels_avx512.c inside their target pragma, so each copy is compiled for
 * that ISA (as libdeflate stamps its SIMD variants). The includer defines
 * src_t, p_at, scales_walk, commit_walk, the bit-vector type vbits_t and VBYTES,
 * the W-lane float vector vec_t with vset1, vselect, vload (first len
 * lanes, zero beyond), vadd, vmul and vdiv, and load_bits and emit (out = v or out += v in the
 * first len lanes). */

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

/* The server's p for blocks [k0, k1) into pbuf, worker by worker: pbuf =
 * decode(packed[0]), then pbuf += decode(packed[w]) in rank order (the same
 * roundings as summing each element's m values in turn), then pbuf =
 * fl(pbuf / m) + fl(b*err). Each pass streams one sign stream with its
 * block's two values hoisted, over a buffer that stays in L1. */
static void red_fill(const src_t *c, size_t k0, size_t k1, float *pbuf)
{
    const size_t base = k0 * c->B, end = k1 * c->B < c->n ? k1 * c->B : c->n;
    for (int w = 0; w < c->m; w++) {
        const float *sc = (const float *)c->packed[w];
        const uint8_t *sg = (const uint8_t *)c->packed[w] + c->signs_off;
        for (size_t blk = k0; blk < k1; blk++) {
            const size_t lo = blk * c->B, hi = lo + c->B < c->n ? lo + c->B : c->n;
            const vec_t vp = vset1(sc[blk]), vn = vset1(-sc[blk]);
            size_t i = lo;
            if (i & 7) { /* up to the next sign byte */
                const size_t len = unit_len(i, hi);
                emit(pbuf + (i - base), len, vselect(load_bits(sg, i, len), vp, vn), w > 0);
                i += len;
            }
            /* whole vectors: two loops, so neither tests w in its body */
            if (w == 0)
                for (; i + W <= hi; i += W)
                    emit(pbuf + (i - base), W, vselect(load_bits(sg, i, W), vp, vn), 0);
            else
                for (; i + W <= hi; i += W)
                    emit(pbuf + (i - base), W, vselect(load_bits(sg, i, W), vp, vn), 1);
            if (i < hi)
                emit(pbuf + (i - base), hi - i, vselect(load_bits(sg, i, hi - i), vp, vn), w > 0);
        }
    }
    const vec_t vm = vset1((float)c->m), vb = vset1(c->b);
    for (size_t i = base; i < end; i += W) {
        const size_t len = end - i < W ? end - i : W;
        const vec_t sum = vload(pbuf + (i - base), len), e = vload(c->err + i, len);
        emit(pbuf + (i - base), len, vadd(vdiv(sum, vm), vmul(vb, e)), 0);
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
        const float as = alpha * scales[blk]; /* -(alpha*s) == alpha*(-s): same bits */
        const vec_t vp = vset1(as), vn = vset1(-as);
        for (size_t i = lo; i < hi;) {
            const size_t len = unit_len(i, hi);
            emit(out + i, len, vselect(load_bits(signs, i, len), vp, vn), add);
            i += len;
        }
    }
}

static void sign_decode(const void *packed, size_t n, float alpha, float *out, int add)
{
    const vec_t vp = vset1(alpha), vn = vset1(-alpha);
    for (size_t i = 0; i < n; i += W) {
        const size_t len = n - i < W ? n - i : W;
        emit(out + i, len, vselect(load_bits(packed, i, len), vp, vn), add);
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
