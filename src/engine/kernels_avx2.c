/* AVX2 + FMA + F16C kernels. Integer dots use the llama.cpp idiom: maddubs (u8 x s8 -> pairwise
 * i16) then madd with ones or with per-sub-block scales (-> i32); each 32-element block's sum is
 * then scaled in float. */
#include "engine/kernels_impl.h"

#ifdef KERNELS_AVX2

#include <immintrin.h>
#include <string.h>

#include <math.h>

#include "engine/quant.h"

#define INLINE static inline __attribute__((always_inline))
/* -O2 does not unroll: the small fixed-count loops over batch rows must be, so the accumulators
 * stay in registers. */
#define UNROLL _Pragma("GCC unroll 8")

INLINE float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

void kx_quantize(const float *x, kx_block *y, int nb)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < nb; i++, x += 32) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                                 _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        __m256 mul = _mm256_set1_ps(id);
        /* cvtps rounds to nearest even under the default MXCSR */
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, mul));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, mul));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, mul));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, mul));
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
        i0 = _mm256_packs_epi32(i0, i1);
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i0, i2), perm);
        _mm256_storeu_si256((__m256i *)y[i].qs, i0);
        y[i].d = d;
        y[i].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}

/* Each type has a per-block step that adds one weight block's dot with nx activation rows into
 * acc[0..nx) (and a scalar correction into corr[0..nx)). The driver below runs it over a row; with
 * one activation row it alternates two accumulator sets, so consecutive blocks' FMAs do not wait
 * on each other. */

/* ==== Quantized weights ====
 *
 * For one (weight row, activation row) pair every path computes exactly this, block by block in
 * order: S_i = the integer dot product of block i (exact), then
 *     acc  = fma((float)S_i, fl(wscale_i * d_x[i]), acc)
 *     corr = fma(wmin_i, s_x[i], corr)          (Q4_0, Q4_1, Q4_K: offsets and mins)
 * and finally combines acc and corr. The lanes of a vector are either 8 activation rows against
 * one weight row (kdot8_*, batches) or 4 weight rows against one activation row (kdot4r_*,
 * decoding). Either way each lane does the same float operations in the same order, so a row's
 * result is bitwise the same whatever batch it comes in. */

INLINE __m256i madd_us8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* lane j of the result = sum of the 8 lanes of p[j] */
INLINE __m256i hsum8x8(const __m256i p[8])
{
    __m256i h01 = _mm256_hadd_epi32(p[0], p[1]), h23 = _mm256_hadd_epi32(p[2], p[3]);
    __m256i h45 = _mm256_hadd_epi32(p[4], p[5]), h67 = _mm256_hadd_epi32(p[6], p[7]);
    __m256i a = _mm256_hadd_epi32(h01, h23), b = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/* lane j of the result = sum of the 8 lanes of p[j], j < 4 */
INLINE __m128i hsum4x8(const __m256i p[4])
{
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* 16 bytes of nibbles -> 32 bytes 0..15: low nibbles first (elements 0-15), then high (16-31) */
INLINE __m256i unpack_q4(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0xf));
}

/* Q4_K: 6-bit scale and min of each of the 8 sub-blocks */
INLINE void q4k_scales(const uint8_t *q, uint8_t sc[8], uint8_t mn[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t)((q[j + 8] & 0xf) | ((q[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

/* Q6_K: the signed 6-bit values (q - 32) of quarter k (32 elements) of half h of a block */
INLINE __m256i q6k_quarter(const block_q6_K *b, int h, int k)
{
    const __m256i m4 = _mm256_set1_epi8(0xf), m2 = _mm256_set1_epi8(0x30);
    __m256i l = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k & 1)));
    __m256i hb = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
    __m256i lo = k & 2 ? _mm256_and_si256(_mm256_srli_epi16(l, 4), m4) : _mm256_and_si256(l, m4);
    __m256i hi;
    switch (k) {
    case 0: hi = _mm256_slli_epi16(hb, 4); break;
    case 1: hi = _mm256_slli_epi16(hb, 2); break;
    case 2: hi = hb; break;
    default: hi = _mm256_srli_epi16(hb, 2); break;
    }
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_and_si256(hi, m2)), _mm256_set1_epi8(32));
}

/* two 16-element sub-blocks' int8 scales: low 128 bits sc[0], high sc[1], as int16 */
INLINE __m256i scale_pair(const int8_t *sc)
{
    return _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
}

/* signed w x signed x, 32 products summed with per-16 scales */
INLINE __m256i q6k_dot(__m256i qw, __m256i qx, __m256i scales)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw)), scales);
}

INLINE __m256i q8_dot(__m256i qw, __m256i qx)
{
    return madd_us8(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
}

#define XQ(j, i) _mm256_loadu_si256((const __m256i *)x[(j) * xs + (i)].qs)

/* ---- 8 activation rows (nx of them real; dT/sT lanes past nx are zero) ---- */

INLINE void dot8_q4_0(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT,
                      const float *sT, size_t ts, __m256 *res)
{
    const block_q4_0 *wb = w;
    __m256 acc = _mm256_setzero_ps(), corr = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m256i qw = unpack_q4(wb[i].qs), p[8];
        __m256 dw = _mm256_set1_ps(h2f(wb[i].d));
        UNROLL
        for (int j = 0; j < 8; j++)
            p[j] = j < nx ? madd_us8(qw, XQ(j, i)) : _mm256_setzero_si256();
        __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
        acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw, _mm256_loadu_ps(dT + i * ts)), acc);
        corr = _mm256_fmadd_ps(dw, _mm256_loadu_ps(sT + i * ts), corr);
    }
    *res = _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), corr, acc);
}

INLINE void dot8_q4_1(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT,
                      const float *sT, size_t ts, __m256 *res)
{
    const block_q4_1 *wb = w;
    __m256 acc = _mm256_setzero_ps(), corr = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m256i qw = unpack_q4(wb[i].qs), p[8];
        __m256 dw = _mm256_set1_ps(h2f(wb[i].d)), mw = _mm256_set1_ps(h2f(wb[i].m));
        UNROLL
        for (int j = 0; j < 8; j++)
            p[j] = j < nx ? madd_us8(qw, XQ(j, i)) : _mm256_setzero_si256();
        __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
        acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw, _mm256_loadu_ps(dT + i * ts)), acc);
        corr = _mm256_fmadd_ps(mw, _mm256_loadu_ps(sT + i * ts), corr);
    }
    *res = _mm256_add_ps(acc, corr);
}

INLINE void dot8_q8_0(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT,
                      const float *sT, size_t ts, __m256 *res)
{
    const block_q8_0 *wb = w;
    (void)sT;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m256i qw = _mm256_loadu_si256((const __m256i *)wb[i].qs), p[8];
        __m256 dw = _mm256_set1_ps(h2f(wb[i].d));
        UNROLL
        for (int j = 0; j < 8; j++)
            p[j] = j < nx ? q8_dot(qw, XQ(j, i)) : _mm256_setzero_si256();
        __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
        acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw, _mm256_loadu_ps(dT + i * ts)), acc);
    }
    *res = acc;
}

INLINE void dot8_q4_K(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT,
                      const float *sT, size_t ts, __m256 *res)
{
    const block_q4_K *wb = w;
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    __m256 acc = _mm256_setzero_ps(), corr = _mm256_setzero_ps();
    for (int s = 0; s < nb / 8; s++) {
        const block_q4_K *b = &wb[s];
        float d = h2f(b->d), dmin = h2f(b->dmin);
        uint8_t sc[8], mn[8];
        q4k_scales(b->scales, sc, mn);
        for (int g = 0; g < 4; g++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
            __m256i half[2] = {_mm256_and_si256(q, lowmask), _mm256_and_si256(_mm256_srli_epi16(q, 4), lowmask)};
            UNROLL
            for (int hh = 0; hh < 2; hh++) {
                int blk = 8 * s + 2 * g + hh;
                __m256i p[8];
                UNROLL
                for (int j = 0; j < 8; j++)
                    p[j] = j < nx ? madd_us8(half[hh], XQ(j, blk)) : _mm256_setzero_si256();
                __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
                __m256 scale = _mm256_set1_ps(d * (float)sc[2 * g + hh]);
                __m256 mins = _mm256_set1_ps(dmin * (float)mn[2 * g + hh]);
                acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(scale, _mm256_loadu_ps(dT + blk * ts)), acc);
                corr = _mm256_fmadd_ps(mins, _mm256_loadu_ps(sT + blk * ts), corr);
            }
        }
    }
    *res = _mm256_sub_ps(acc, corr);
}

INLINE void dot8_q6_K(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT,
                      const float *sT, size_t ts, __m256 *res)
{
    const block_q6_K *wb = w;
    (void)sT;
    __m256 acc = _mm256_setzero_ps();
    for (int s = 0; s < nb / 8; s++) {
        const block_q6_K *b = &wb[s];
        __m256 d = _mm256_set1_ps(h2f(b->d));
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++) {
                __m256i qk = q6k_quarter(b, h, k), scv = scale_pair(b->scales + 8 * h + 2 * k), p[8];
                int blk = 8 * s + 4 * h + k;
                UNROLL
                for (int j = 0; j < 8; j++)
                    p[j] = j < nx ? q6k_dot(qk, XQ(j, blk), scv) : _mm256_setzero_si256();
                __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
                acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(d, _mm256_loadu_ps(dT + blk * ts)), acc);
            }
    }
    *res = acc;
}

/* Instantiate each with a compile-time nx so the row loop unrolls into registers. */
#define DISPATCH8(NAME)                                                                            \
    void kdot8_##NAME(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT, \
                      const float *sT, size_t ts, float *out)                                      \
    {                                                                                              \
        __m256 r;                                                                                  \
        switch (nx) {                                                                              \
        case 1: dot8_##NAME(w, x, xs, 1, nb, dT, sT, ts, &r); break;                               \
        case 2: dot8_##NAME(w, x, xs, 2, nb, dT, sT, ts, &r); break;                               \
        case 3: dot8_##NAME(w, x, xs, 3, nb, dT, sT, ts, &r); break;                               \
        case 4: dot8_##NAME(w, x, xs, 4, nb, dT, sT, ts, &r); break;                               \
        case 5: dot8_##NAME(w, x, xs, 5, nb, dT, sT, ts, &r); break;                               \
        case 6: dot8_##NAME(w, x, xs, 6, nb, dT, sT, ts, &r); break;                               \
        case 7: dot8_##NAME(w, x, xs, 7, nb, dT, sT, ts, &r); break;                               \
        default: dot8_##NAME(w, x, xs, 8, nb, dT, sT, ts, &r); break;                              \
        }                                                                                          \
        _mm256_storeu_ps(out, r);                                                                  \
    }
DISPATCH8(q4_0)
DISPATCH8(q4_1)
DISPATCH8(q8_0)
DISPATCH8(q4_K)
DISPATCH8(q6_K)

/* ---- 4 weight rows (nr of them real) against one activation row ---- */

/* Row pointers (rows past nr repeat row 0 and are discarded), and a prefetch of the next group
 * of rows spread over the steps: the hardware prefetchers follow 4 interleaved streams poorly,
 * and a model's weights stream from DRAM when decoding. */
#define ROWS4_SETUP(BLOCK, STEPS)                                                                  \
    const BLOCK *rw[4];                                                                            \
    for (int k = 0; k < 4; k++)                                                                    \
        rw[k] = (const BLOCK *)(const void *)((const char *)w + (size_t)(k < nr ? k : 0) * rb);    \
    const char *next = (const char *)w + 4 * rb;                                                   \
    size_t per_step = nr == 4 ? (4 * rb / (size_t)(STEPS) + 63) & ~(size_t)63 : 0
#define ROWS4_PREFETCH(i)                                                                          \
    for (size_t o = 0; o < per_step; o += 64)                                                      \
        _mm_prefetch(next + (size_t)(i) * per_step + o, _MM_HINT_T0)

/* 4 fp16 values (one per row) to floats */
#define H4(a, b, c, d) _mm_cvtph_ps(_mm_setr_epi16((short)(a), (short)(b), (short)(c), (short)(d), 0, 0, 0, 0))

void kdot4r_q4_0(const void *w, size_t rb, int nr, const kx_block *x, int nb, float *out)
{
    ROWS4_SETUP(block_q4_0, nb);
    __m128 acc = _mm_setzero_ps(), corr = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        ROWS4_PREFETCH(i);
        __m256i xq = _mm256_loadu_si256((const __m256i *)x[i].qs), p[4];
        UNROLL
        for (int k = 0; k < 4; k++)
            p[k] = madd_us8(unpack_q4(rw[k][i].qs), xq);
        __m128 dw = H4(rw[0][i].d, rw[1][i].d, rw[2][i].d, rw[3][i].d);
        __m128 sum = _mm_cvtepi32_ps(hsum4x8(p));
        acc = _mm_fmadd_ps(sum, _mm_mul_ps(dw, _mm_set1_ps(x[i].d)), acc);
        corr = _mm_fmadd_ps(dw, _mm_set1_ps(x[i].s), corr);
    }
    _mm_storeu_ps(out, _mm_fnmadd_ps(_mm_set1_ps(8.0f), corr, acc));
}

void kdot4r_q4_1(const void *w, size_t rb, int nr, const kx_block *x, int nb, float *out)
{
    ROWS4_SETUP(block_q4_1, nb);
    __m128 acc = _mm_setzero_ps(), corr = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        ROWS4_PREFETCH(i);
        __m256i xq = _mm256_loadu_si256((const __m256i *)x[i].qs), p[4];
        UNROLL
        for (int k = 0; k < 4; k++)
            p[k] = madd_us8(unpack_q4(rw[k][i].qs), xq);
        __m128 dw = H4(rw[0][i].d, rw[1][i].d, rw[2][i].d, rw[3][i].d);
        __m128 mw = H4(rw[0][i].m, rw[1][i].m, rw[2][i].m, rw[3][i].m);
        __m128 sum = _mm_cvtepi32_ps(hsum4x8(p));
        acc = _mm_fmadd_ps(sum, _mm_mul_ps(dw, _mm_set1_ps(x[i].d)), acc);
        corr = _mm_fmadd_ps(mw, _mm_set1_ps(x[i].s), corr);
    }
    _mm_storeu_ps(out, _mm_add_ps(acc, corr));
}

void kdot4r_q8_0(const void *w, size_t rb, int nr, const kx_block *x, int nb, float *out)
{
    ROWS4_SETUP(block_q8_0, nb);
    __m128 acc = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        ROWS4_PREFETCH(i);
        __m256i xq = _mm256_loadu_si256((const __m256i *)x[i].qs), p[4];
        UNROLL
        for (int k = 0; k < 4; k++)
            p[k] = q8_dot(_mm256_loadu_si256((const __m256i *)rw[k][i].qs), xq);
        __m128 dw = H4(rw[0][i].d, rw[1][i].d, rw[2][i].d, rw[3][i].d);
        __m128 sum = _mm_cvtepi32_ps(hsum4x8(p));
        acc = _mm_fmadd_ps(sum, _mm_mul_ps(dw, _mm_set1_ps(x[i].d)), acc);
    }
    _mm_storeu_ps(out, acc);
}

void kdot4r_q4_K(const void *w, size_t rb, int nr, const kx_block *x, int nb, float *out)
{
    ROWS4_SETUP(block_q4_K, nb / 8);
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    __m128 acc = _mm_setzero_ps(), corr = _mm_setzero_ps();
    for (int s = 0; s < nb / 8; s++) {
        ROWS4_PREFETCH(s);
        __m128 d = H4(rw[0][s].d, rw[1][s].d, rw[2][s].d, rw[3][s].d);
        __m128 dmin = H4(rw[0][s].dmin, rw[1][s].dmin, rw[2][s].dmin, rw[3][s].dmin);
        uint8_t sc[4][8], mn[4][8];
        for (int k = 0; k < 4; k++)
            q4k_scales(rw[k][s].scales, sc[k], mn[k]);
        for (int g = 0; g < 4; g++) {
            __m256i q[4];
            UNROLL
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_loadu_si256((const __m256i *)(rw[k][s].qs + 32 * g));
            UNROLL
            for (int hh = 0; hh < 2; hh++) {
                int blk = 8 * s + 2 * g + hh, j = 2 * g + hh;
                __m256i xq = _mm256_loadu_si256((const __m256i *)x[blk].qs), p[4];
                UNROLL
                for (int k = 0; k < 4; k++) {
                    __m256i half = hh ? _mm256_srli_epi16(q[k], 4) : q[k];
                    p[k] = madd_us8(_mm256_and_si256(half, lowmask), xq);
                }
                __m128 scale = _mm_mul_ps(d, _mm_cvtepi32_ps(_mm_setr_epi32(sc[0][j], sc[1][j], sc[2][j], sc[3][j])));
                __m128 mins = _mm_mul_ps(dmin, _mm_cvtepi32_ps(_mm_setr_epi32(mn[0][j], mn[1][j], mn[2][j], mn[3][j])));
                __m128 sum = _mm_cvtepi32_ps(hsum4x8(p));
                acc = _mm_fmadd_ps(sum, _mm_mul_ps(scale, _mm_set1_ps(x[blk].d)), acc);
                corr = _mm_fmadd_ps(mins, _mm_set1_ps(x[blk].s), corr);
            }
        }
    }
    _mm_storeu_ps(out, _mm_sub_ps(acc, corr));
}

void kdot4r_q6_K(const void *w, size_t rb, int nr, const kx_block *x, int nb, float *out)
{
    ROWS4_SETUP(block_q6_K, nb / 8);
    __m128 acc = _mm_setzero_ps();
    for (int s = 0; s < nb / 8; s++) {
        ROWS4_PREFETCH(s);
        __m128 d = H4(rw[0][s].d, rw[1][s].d, rw[2][s].d, rw[3][s].d);
        for (int h = 0; h < 2; h++)
            for (int kk = 0; kk < 4; kk++) {
                int blk = 8 * s + 4 * h + kk;
                __m256i xq = _mm256_loadu_si256((const __m256i *)x[blk].qs), p[4];
                UNROLL
                for (int k = 0; k < 4; k++)
                    p[k] = q6k_dot(q6k_quarter(&rw[k][s], h, kk), xq, scale_pair(rw[k][s].scales + 8 * h + 2 * kk));
                __m128 sum = _mm_cvtepi32_ps(hsum4x8(p));
                acc = _mm_fmadd_ps(sum, _mm_mul_ps(d, _mm_set1_ps(x[blk].d)), acc);
            }
    }
    _mm_storeu_ps(out, acc);
}

/* ---- float weights ---- */

INLINE __m256 load8(int type, const void *w, int64_t k)
{
    if (type == DT_F32)
        return _mm256_loadu_ps((const float *)w + k);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
    if (type == DT_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float load1(int type, const void *w, int64_t k)
{
    if (type == DT_F32)
        return ((const float *)w)[k];
    uint16_t h;
    memcpy(&h, (const uint16_t *)w + k, 2);
    return type == DT_F16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

INLINE void dot_float_n(int type, const void *w, const float *x, size_t ldx, int nx, int64_t K, float *out)
{
    /* Two accumulators per row hide the FMA latency. */
    __m256 a0[KX_TILE], a1[KX_TILE];
    UNROLL
    for (int j = 0; j < nx; j++)
        a0[j] = a1[j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m256 w0 = load8(type, w, k), w1 = load8(type, w, k + 8);
        UNROLL
        for (int j = 0; j < nx; j++) {
            a0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + j * ldx + k), a0[j]);
            a1[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + j * ldx + k + 8), a1[j]);
        }
    }
    for (; k + 8 <= K; k += 8) {
        __m256 w0 = load8(type, w, k);
        UNROLL
        for (int j = 0; j < nx; j++)
            a0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + j * ldx + k), a0[j]);
    }
    UNROLL
    for (int j = 0; j < nx; j++)
        out[j] = hsum_ps(_mm256_add_ps(a0[j], a1[j]));
    for (; k < K; k++) {
        float wk = load1(type, w, k);
        UNROLL
        for (int j = 0; j < nx; j++)
            out[j] += wk * x[j * ldx + k];
    }
}

INLINE void dot_float_t(int type, const void *w, const float *x, size_t ldx, int nx, int64_t K, float *out)
{
    switch (nx) {
    case 1: dot_float_n(type, w, x, ldx, 1, K, out); break;
    case 2: dot_float_n(type, w, x, ldx, 2, K, out); break;
    case 3: dot_float_n(type, w, x, ldx, 3, K, out); break;
    default: dot_float_n(type, w, x, ldx, 4, K, out); break;
    }
}

void kdot_float(int type, const void *w, const float *x, size_t ldx, int nx, int64_t K, float *out)
{
    /* One instance per type so load8 folds to a single instruction. */
    switch (type) {
    case DT_F32: dot_float_t(DT_F32, w, x, ldx, nx, K, out); break;
    case DT_F16: dot_float_t(DT_F16, w, x, ldx, nx, K, out); break;
    default: dot_float_t(DT_BF16, w, x, ldx, nx, K, out); break;
    }
}

/* ---- exact product: F32 weight rows (dequantized by the caller) against F32 activations ---- */

/* One step of the exact tiles: a[r][j] += w[r][wk..] * x[j][xk..] over one vector, rows NX of x. */
INLINE void tile_step(__m256 a[KF_ROWS][KF_COLS], const float *const w[KF_ROWS], int64_t wk,
                      const float *const x[KF_COLS], int64_t xk, int NX)
{
    __m256 xv[KF_COLS];
    UNROLL
    for (int j = 0; j < NX; j++) {
        xv[j] = _mm256_loadu_ps(x[j] + xk);
        /* loads in registers: GCC would otherwise fold each into every FMA that uses it */
        __asm__("" : "+v"(xv[j]));
    }
    UNROLL
    for (int r = 0; r < KF_ROWS; r++) {
        __m256 wv = _mm256_loadu_ps(w[r] + wk);
        __asm__("" : "+v"(wv));
        UNROLL
        for (int j = 0; j < NX; j++)
            a[r][j] = _mm256_fmadd_ps(wv, xv[j], a[r][j]);
    }
}

/* out[r][j] = dot(w[r], x[j]) for 4 weight rows and 3 activation rows: 7 loads per 12 FMAs. Every
 * (r, j) is summed in the same order (8 lanes over k, a fixed horizontal sum, then the tail), so
 * a product does not depend on which rows shared its tile. */
void kf32_tile(const float *const w[KF_ROWS], const float *const x[KF_COLS], int64_t K, float out[KF_ROWS][KF_COLS])
{
    __m256 a[KF_ROWS][KF_COLS];
    memset(a, 0, sizeof a); /* kept in registers */
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        tile_step(a, w, k, x, k, KF_COLS);
    UNROLL
    for (int r = 0; r < KF_ROWS; r++)
        UNROLL
        for (int j = 0; j < KF_COLS; j++) {
            float s = hsum_ps(a[r][j]);
            for (int64_t t = k; t < K; t++)
                s = fmaf(w[r][t], x[j][t], s);
            out[r][j] = s;
        }
}

/* ---- small batches: kf32_tile with the weight rows dequantized per chunk ---- */

/* The chunk loop keeps a[r][j] in registers across chunks; per (r, j) the FMAs run over k in the
 * same order as kf32_tile's and end in the same horizontal sum (K is a multiple of 32 for every
 * quantized type, so there is no tail). */
INLINE void fused_n(int type, const void *w, size_t rb, int nr, const float *const x[KF_COLS], int NX, int64_t K,
                    float out[KF_ROWS][KF_COLS])
{
    const size_t bs = quant_block_size(type), ts = quant_type_size(type);
    const unsigned char *rw[KF_ROWS];
    for (int r = 0; r < KF_ROWS; r++)
        rw[r] = (const unsigned char *)w + (size_t)(r < nr ? r : 0) * rb;
    float buf[KF_ROWS][KF_CHUNK] __attribute__((aligned(32)));
    __m256 a[KF_ROWS][KF_COLS];
    memset(a, 0, sizeof a); /* kept in registers */
    /* the rows KF_PREFETCH_TILES tiles ahead (kernels_impl.h), fetched in step with this tile */
    const char *next = (const char *)w + (size_t)(KF_PREFETCH_TILES * KF_ROWS) * rb;
    for (int64_t k0 = 0; k0 < K; k0 += KF_CHUNK) {
        const int cn = K - k0 < KF_CHUNK ? (int)(K - k0) : KF_CHUNK;
        kx_prefetch_span(next + (size_t)(k0 / (int64_t)bs) * ts * KF_ROWS, (int64_t)((size_t)cn / bs * ts * KF_ROWS));
        for (int r = 0; r < KF_ROWS; r++)
            kx_dequant(type, rw[r] + (size_t)(k0 / (int64_t)bs) * ts, buf[r], cn);
        const float *const bw[KF_ROWS] = {buf[0], buf[1], buf[2], buf[3]};
        for (int k = 0; k < cn; k += 8)
            tile_step(a, bw, k, x, k0 + k, NX);
    }
    UNROLL
    for (int r = 0; r < KF_ROWS; r++)
        UNROLL
        for (int j = 0; j < NX; j++)
            out[r][j] = hsum_ps(a[r][j]);
}

void kfused_tile(int type, const void *w, size_t row_bytes, int nr, const float *const x[KF_COLS], int nx,
                 int64_t K, float out[KF_ROWS][KF_COLS])
{
    switch (nx) {
    case 1: fused_n(type, w, row_bytes, nr, x, 1, K, out); break;
    case 2: fused_n(type, w, row_bytes, nr, x, 2, K, out); break;
    default: fused_n(type, w, row_bytes, nr, x, 3, K, out); break;
    }
}

/* ---- dequantization (F16C / AVX2) for the transposed product and embedding rows ---- */

INLINE void store_i8x32(float *dst, __m256i q, __m256 d, __m256 m)
{
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(dst, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), m));
    _mm256_storeu_ps(dst + 8, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), m));
    _mm256_storeu_ps(dst + 16, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), m));
    _mm256_storeu_ps(dst + 24, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), m));
}

/* 32 bytes 0..15 to floats d * q - m (two roundings, as dequant_row computes the K-quants) */
INLINE void store_u4x32_k(float *dst, __m256i q, __m256 d, __m256 m)
{
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int p = 0; p < 4; p++)
        _mm256_storeu_ps(dst + 8 * p, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part[p]))), m));
}

/* Q5_0's fifth bits: byte e of the result is 0x10 where bit e of the 32-bit qh is set */
INLINE __m256i q5_high_bits(const uint8_t qh4[4])
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    const __m256i which = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3,
                                           3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), which);
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

void kx_dequant(int type, const void *src, float *dst, int64_t n)
{
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    const __m256 zero = _mm256_setzero_ps();
    switch (type) {
    case DT_Q8_0:
        for (int64_t i = 0; i < n / 32; i++) {
            const block_q8_0 *b = (const block_q8_0 *)src + i;
            store_i8x32(dst + 32 * i, _mm256_loadu_si256((const __m256i *)b->qs), _mm256_set1_ps(h2f(b->d)), zero);
        }
        break;
    case DT_Q4_0:
        for (int64_t i = 0; i < n / 32; i++) {
            const block_q4_0 *b = (const block_q4_0 *)src + i;
            __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
            __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lowmask);
            store_i8x32(dst + 32 * i, _mm256_sub_epi8(qw, _mm256_set1_epi8(8)), _mm256_set1_ps(h2f(b->d)), zero);
        }
        break;
    case DT_Q4_1:
        for (int64_t i = 0; i < n / 32; i++) {
            const block_q4_1 *b = (const block_q4_1 *)src + i;
            __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
            __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lowmask);
            store_i8x32(dst + 32 * i, qw, _mm256_set1_ps(h2f(b->d)), _mm256_set1_ps(h2f(b->m)));
        }
        break;
    case DT_Q5_0:
        for (int64_t i = 0; i < n / 32; i++) {
            const block_q5_0 *b = (const block_q5_0 *)src + i;
            __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
            __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lowmask);
            qw = _mm256_or_si256(qw, q5_high_bits(b->qh));
            store_i8x32(dst + 32 * i, _mm256_sub_epi8(qw, _mm256_set1_epi8(16)), _mm256_set1_ps(h2f(b->d)), zero);
        }
        break;
    case DT_Q4_K:
        for (int64_t i = 0; i < n / 256; i++) {
            const block_q4_K *b = (const block_q4_K *)src + i;
            const float d = h2f(b->d), dmin = h2f(b->dmin);
            uint8_t sc[8], mn[8];
            q4k_scales(b->scales, sc, mn);
            for (int g = 0; g < 4; g++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
                float *y = dst + 256 * i + 64 * g;
                store_u4x32_k(y, _mm256_and_si256(q, lowmask), _mm256_set1_ps(d * sc[2 * g]),
                              _mm256_set1_ps(dmin * mn[2 * g]));
                store_u4x32_k(y + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), lowmask),
                              _mm256_set1_ps(d * sc[2 * g + 1]), _mm256_set1_ps(dmin * mn[2 * g + 1]));
            }
        }
        break;
    case DT_Q6_K:
        for (int64_t i = 0; i < n / 256; i++) {
            const block_q6_K *b = (const block_q6_K *)src + i;
            const float d = h2f(b->d);
            for (int h = 0; h < 2; h++)
                for (int k = 0; k < 4; k++) {
                    /* (d * scale) * q, as dequant_row rounds it; a scale per 16 elements */
                    const int8_t *sc = b->scales + 8 * h + 2 * k;
                    __m256i q = q6k_quarter(b, h, k);
                    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
                    __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
                    float *y = dst + 256 * i + 128 * h + 32 * k;
                    for (int p = 0; p < 4; p++)
                        _mm256_storeu_ps(y + 8 * p, _mm256_mul_ps(_mm256_set1_ps(d * sc[p / 2]),
                                                                  _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[p]))));
                }
        }
        break;
    case DT_F16:
    case DT_BF16: {
        int64_t k = 0;
        for (; k + 8 <= n; k += 8)
            _mm256_storeu_ps(dst + k, load8(type, src, k));
        for (; k < n; k++)
            dst[k] = load1(type, src, k);
        break;
    }
    default:
        dequant_row(type, src, dst, n);
        break;
    }
}

/* dx[b][0..cn) += sum_r dy[b][r] * w[r][0..cn) for r < mp, NB batch rows and NV vectors of 8
 * columns held in registers across the whole panel. */
INLINE void panel_tile(const float *const *w, int mp, const float *dy, size_t ldy, float *dx, size_t ldx, int k,
                       int NB, int NV)
{
    __m256 acc[4][4];
    UNROLL
    for (int b = 0; b < NB; b++)
        UNROLL
        for (int v = 0; v < NV; v++)
            acc[b][v] = _mm256_loadu_ps(dx + b * ldx + k + 8 * v);
    for (int r = 0; r < mp; r++) {
        __m256 wv[4];
        UNROLL
        for (int v = 0; v < NV; v++)
            wv[v] = _mm256_loadu_ps(w[r] + k + 8 * v);
        UNROLL
        for (int b = 0; b < NB; b++) {
            __m256 d = _mm256_broadcast_ss(dy + b * ldy + r);
            UNROLL
            for (int v = 0; v < NV; v++)
                acc[b][v] = _mm256_fmadd_ps(d, wv[v], acc[b][v]);
        }
    }
    UNROLL
    for (int b = 0; b < NB; b++)
        UNROLL
        for (int v = 0; v < NV; v++)
            _mm256_storeu_ps(dx + b * ldx + k + 8 * v, acc[b][v]);
}

void kt_panel(const float *const *w, int mp, const float *dy, size_t ldy, int B, float *dx, size_t ldx, int cn)
{
    int b = 0;
    for (; b + 4 <= B; b += 4) {
        int k = 0;
        for (; k + 16 <= cn; k += 16)
            panel_tile(w, mp, dy + b * ldy, ldy, dx + b * ldx, ldx, k, 4, 2);
        for (; k + 8 <= cn; k += 8)
            panel_tile(w, mp, dy + b * ldy, ldy, dx + b * ldx, ldx, k, 4, 1);
        for (; k < cn; k++)
            for (int bb = b; bb < b + 4; bb++)
                for (int r = 0; r < mp; r++)
                    dx[bb * ldx + k] += dy[bb * ldy + r] * w[r][k];
    }
    for (; b < B; b++) {
        int k = 0;
        for (; k + 32 <= cn; k += 32)
            panel_tile(w, mp, dy + b * ldy, ldy, dx + b * ldx, ldx, k, 1, 4);
        for (; k + 8 <= cn; k += 8)
            panel_tile(w, mp, dy + b * ldy, ldy, dx + b * ldx, ldx, k, 1, 1);
        for (; k < cn; k++)
            for (int r = 0; r < mp; r++)
                dx[b * ldx + k] += dy[b * ldy + r] * w[r][k];
    }
}

#else
typedef int kernels_avx2_empty_; /* ISO C forbids an empty translation unit */
#endif
