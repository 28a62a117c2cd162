/* AVX2 + FMA + F16C row dot products. Integer dots use the llama.cpp idiom: maddubs (u8 x s8 ->
 * pairwise i16) then madd with ones or with per-sub-block scales (-> i32), converted to float and
 * scaled once per 32-element block. Each weight block is unpacked once per call and dotted with
 * up to KX_TILE activation rows. */
#include "engine/kernels_impl.h"

#ifdef KERNELS_AVX2

#include <immintrin.h>
#include <string.h>

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

/* sum of 32 u8 x s8 products as 8 float lanes */
INLINE __m256 mul_sum_us8(__m256i u, __m256i s)
{
    const __m256i ones = _mm256_set1_epi16(1);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones));
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

/* ---- Q4_0: x = (q - 8) * d.  dot = d_w * (d_x * sum(q * qx) - 8 * s_x) ---- */

INLINE void blk_q4_0(const void *w, const kx_block *x, size_t xs, int nx, int i, __m256 *acc, float *corr)
{
    const block_q4_0 *wb = (const block_q4_0 *)w + i;
    __m128i q = _mm_loadu_si128((const __m128i *)wb->qs);
    __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0xf));
    float dw = h2f(wb->d);
    UNROLL
    for (int j = 0; j < nx; j++) {
        const kx_block *xb = x + j * xs + i;
        __m256 p = mul_sum_us8(qw, _mm256_loadu_si256((const __m256i *)xb->qs));
        acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), p, acc[j]);
        corr[j] -= 8.0f * dw * xb->s;
    }
}

/* ---- Q4_1: x = q * d + m.  dot = d_w * d_x * sum(q * qx) + m_w * s_x ---- */

INLINE void blk_q4_1(const void *w, const kx_block *x, size_t xs, int nx, int i, __m256 *acc, float *corr)
{
    const block_q4_1 *wb = (const block_q4_1 *)w + i;
    __m128i q = _mm_loadu_si128((const __m128i *)wb->qs);
    __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0xf));
    /* d and m are adjacent halves, as are the activation block's d and s: one convert and one
     * multiply give [d_w * d_x, m_w * s_x]. */
    int32_t dm_bits;
    memcpy(&dm_bits, wb, 4);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits));
    UNROLL
    for (int j = 0; j < nx; j++) {
        const kx_block *xb = x + j * xs + i;
        __m256 p = mul_sum_us8(qw, _mm256_loadu_si256((const __m256i *)xb->qs));
        __m128 f = _mm_mul_ps(dm, _mm_castpd_ps(_mm_load_sd((const double *)(const void *)&xb->d)));
        acc[j] = _mm256_fmadd_ps(_mm256_broadcastss_ps(f), p, acc[j]);
        corr[j] += _mm_cvtss_f32(_mm_movehdup_ps(f));
    }
}

/* ---- Q8_0: signed x signed through |w| and sign(x, w) ---- */

INLINE void blk_q8_0(const void *w, const kx_block *x, size_t xs, int nx, int i, __m256 *acc, float *corr)
{
    const block_q8_0 *wb = (const block_q8_0 *)w + i;
    (void)corr;
    __m256i qw = _mm256_loadu_si256((const __m256i *)wb->qs);
    __m256i aw = _mm256_sign_epi8(qw, qw);
    float dw = h2f(wb->d);
    UNROLL
    for (int j = 0; j < nx; j++) {
        const kx_block *xb = x + j * xs + i;
        __m256i qx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb->qs), qw);
        acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), mul_sum_us8(aw, qx), acc[j]);
    }
}

/* ---- Q4_K: step i is one 256-element super-block; its sub-block j of 32 is activation block
 * 8i + j. x = d*sc_j*q - dmin*m_j ---- */

INLINE void q4k_scales(const uint8_t *q, uint8_t sc[8], uint8_t mn[8])
{
    UNROLL
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t)((q[j + 8] & 0xf) | ((q[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

INLINE void blk_q4_K(const void *w, const kx_block *x, size_t xs, int nx, int s, __m256 *acc, float *corr)
{
    const block_q4_K *b = (const block_q4_K *)w + s;
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    float d = h2f(b->d), dmin = h2f(b->dmin);
    uint8_t sc[8], mn[8];
    q4k_scales(b->scales, sc, mn);
    UNROLL
    for (int g = 0; g < 4; g++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
        __m256i lo = _mm256_and_si256(q, lowmask);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), lowmask);
        float d_lo = d * sc[2 * g], d_hi = d * sc[2 * g + 1];
        float m_lo = dmin * mn[2 * g], m_hi = dmin * mn[2 * g + 1];
        UNROLL
        for (int j = 0; j < nx; j++) {
            const kx_block *xa = x + j * xs + 8 * s + 2 * g, *xb = xa + 1;
            __m256 pa = mul_sum_us8(lo, _mm256_loadu_si256((const __m256i *)xa->qs));
            __m256 pb = mul_sum_us8(hi, _mm256_loadu_si256((const __m256i *)xb->qs));
            /* the two halves meet in one add, so the chain through acc is one op per group */
            __m256 t = _mm256_fmadd_ps(_mm256_set1_ps(d_lo * xa->d), pa, _mm256_mul_ps(_mm256_set1_ps(d_hi * xb->d), pb));
            acc[j] = _mm256_add_ps(acc[j], t);
            corr[j] -= m_lo * xa->s + m_hi * xb->s;
        }
    }
}

/* ---- Q6_K: step i is one super-block; 16 sub-blocks of 16 with int8 scales;
 * x = d * sc * (q - 32) ---- */

INLINE __m256i scale_pair(const int8_t *sc)
{
    return _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
}

INLINE void blk_q6_K(const void *w, const kx_block *x, size_t xs, int nx, int s, __m256 *acc, float *corr)
{
    const block_q6_K *b = (const block_q6_K *)w + s;
    const __m256i m4 = _mm256_set1_epi8(0xf), m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
    (void)corr;
    float d = h2f(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        const int8_t *sc = b->scales + 8 * h;
        __m256i la = _mm256_loadu_si256((const __m256i *)ql);
        __m256i lb = _mm256_loadu_si256((const __m256i *)(ql + 32));
        __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
        __m256i q[4];
        q[0] = _mm256_or_si256(_mm256_and_si256(la, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2));
        q[1] = _mm256_or_si256(_mm256_and_si256(lb, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4), _mm256_and_si256(hb, m2));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2));
        UNROLL
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_sub_epi8(q[k], off);
        UNROLL
        for (int j = 0; j < nx; j++) {
            const kx_block *xb = x + j * xs + 8 * s + 4 * h;
            __m256 p[4];
            UNROLL
            for (int k = 0; k < 4; k++) {
                __m256i qx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb[k].qs), q[k]);
                __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(q[k], q[k]), qx);
                p[k] = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, scale_pair(sc + 2 * k)));
            }
            __m256 t0 = _mm256_fmadd_ps(_mm256_set1_ps(d * xb[0].d), p[0], _mm256_mul_ps(_mm256_set1_ps(d * xb[1].d), p[1]));
            __m256 t1 = _mm256_fmadd_ps(_mm256_set1_ps(d * xb[2].d), p[2], _mm256_mul_ps(_mm256_set1_ps(d * xb[3].d), p[3]));
            acc[j] = _mm256_add_ps(acc[j], _mm256_add_ps(t0, t1));
        }
    }
}

/* Runs a block step over n_steps steps for a compile-time nx. */
#define DOT_DRIVER(NAME)                                                                           \
    INLINE void dot_##NAME##_n(const void *w, const kx_block *x, size_t xs, int nx, int n_steps,   \
                               float *out)                                                         \
    {                                                                                              \
        __m256 acc[2][KX_TILE];                                                                    \
        float corr[2][KX_TILE];                                                                    \
        UNROLL                                                                                 \
        for (int u = 0; u < 2; u++)                                                                \
            UNROLL                                                                             \
            for (int j = 0; j < nx; j++) {                                                         \
                acc[u][j] = _mm256_setzero_ps();                                                   \
                corr[u][j] = 0;                                                                    \
            }                                                                                      \
        int i = 0;                                                                                 \
        if (nx == 1)                                                                               \
            for (; i + 1 < n_steps; i += 2) {                                                      \
                blk_##NAME(w, x, xs, 1, i, acc[0], corr[0]);                                       \
                blk_##NAME(w, x, xs, 1, i + 1, acc[1], corr[1]);                                   \
            }                                                                                      \
        for (; i < n_steps; i++)                                                                   \
            blk_##NAME(w, x, xs, nx, i, acc[0], corr[0]);                                          \
        UNROLL                                                                                 \
        for (int j = 0; j < nx; j++)                                                               \
            out[j] = hsum_ps(_mm256_add_ps(acc[0][j], acc[1][j])) + corr[0][j] + corr[1][j];       \
    }
/* One activation row against 4 consecutive weight rows: 4 independent accumulator chains, and
 * the per-row call and reduction overhead shared (the B = 1 decode case). */
#define ROWS4_DRIVER(NAME, BLOCK_ELEMS)                                                            \
    void kdot4r_##NAME(const void *w, size_t row_bytes, const kx_block *x, int nb, float *out)    \
    {                                                                                              \
        int steps = nb / ((BLOCK_ELEMS) / 32);                                                     \
        __m256 acc[4];                                                                             \
        float corr[4];                                                                             \
        UNROLL                                                                                     \
        for (int r = 0; r < 4; r++) {                                                              \
            acc[r] = _mm256_setzero_ps();                                                          \
            corr[r] = 0;                                                                           \
        }                                                                                          \
        /* Prefetch the next 4 rows (a contiguous region) spread over this group's steps: the   \
         * hardware prefetchers follow 4 interleaved streams poorly. */                            \
        const char *next = (const char *)w + 4 * row_bytes;                                        \
        size_t per_step = (4 * row_bytes / (size_t)steps + 63) & ~(size_t)63;                     \
        for (int i = 0; i < steps; i++) {                                                          \
            for (size_t o = 0; o < per_step; o += 64)                                              \
                _mm_prefetch(next + (size_t)i * per_step + o, _MM_HINT_T0);                        \
            UNROLL                                                                                 \
            for (int r = 0; r < 4; r++)                                                            \
                blk_##NAME((const unsigned char *)w + r * row_bytes, x, 0, 1, i, &acc[r], &corr[r]); \
        }                                                                                          \
        __m256 h01 = _mm256_hadd_ps(acc[0], acc[1]), h23 = _mm256_hadd_ps(acc[2], acc[3]);         \
        __m256 h = _mm256_hadd_ps(h01, h23);                                                       \
        __m128 sum = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));           \
        _mm_storeu_ps(out, _mm_add_ps(sum, _mm_loadu_ps(corr)));                                   \
    }
ROWS4_DRIVER(q4_0, QK4_0)
ROWS4_DRIVER(q4_1, QK4_1)
ROWS4_DRIVER(q8_0, QK8_0)
ROWS4_DRIVER(q4_K, QK_K)
ROWS4_DRIVER(q6_K, QK_K)

DOT_DRIVER(q4_0)
DOT_DRIVER(q4_1)
DOT_DRIVER(q8_0)
DOT_DRIVER(q4_K)
DOT_DRIVER(q6_K)

/* ---- 8 batch rows at once (B >= 8): the 8 integer block sums are reduced horizontally into one
 * vector whose lanes are the batch rows, then scaled with one FMA against the activations' scales
 * stored block-major (dT[i * ts + j] = d of row j, block i). Saves the per-row convert, broadcast
 * and FMA of the generic tile. ---- */

/* lanes j of the result = sum of all 8 lanes of p[j] */
INLINE __m256i hsum8x8(const __m256i p[8])
{
    __m256i h01 = _mm256_hadd_epi32(p[0], p[1]), h23 = _mm256_hadd_epi32(p[2], p[3]);
    __m256i h45 = _mm256_hadd_epi32(p[4], p[5]), h67 = _mm256_hadd_epi32(p[6], p[7]);
    __m256i a = _mm256_hadd_epi32(h01, h23), b = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

INLINE __m256i madd_us8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

void kdot8_q4_0(const void *w, const kx_block *x, size_t xs, int nb, const float *dT, const float *sT, size_t ts,
                float *out)
{
    const block_q4_0 *wb = w;
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    __m256 acc = _mm256_setzero_ps(), corr = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)wb[i].qs);
        __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lowmask);
        __m256 dw = _mm256_set1_ps(h2f(wb[i].d));
        __m256i p[8];
        UNROLL
        for (int j = 0; j < 8; j++)
            p[j] = madd_us8(qw, _mm256_loadu_si256((const __m256i *)x[j * xs + i].qs));
        __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
        acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw, _mm256_loadu_ps(dT + i * ts)), acc);
        corr = _mm256_fmadd_ps(dw, _mm256_loadu_ps(sT + i * ts), corr);
    }
    _mm256_storeu_ps(out, _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), corr, acc));
}

void kdot8_q4_1(const void *w, const kx_block *x, size_t xs, int nb, const float *dT, const float *sT, size_t ts,
                float *out)
{
    const block_q4_1 *wb = w;
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    __m256 acc = _mm256_setzero_ps(), corr = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)wb[i].qs);
        __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lowmask);
        __m256 dw = _mm256_set1_ps(h2f(wb[i].d)), mw = _mm256_set1_ps(h2f(wb[i].m));
        __m256i p[8];
        UNROLL
        for (int j = 0; j < 8; j++)
            p[j] = madd_us8(qw, _mm256_loadu_si256((const __m256i *)x[j * xs + i].qs));
        __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
        acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw, _mm256_loadu_ps(dT + i * ts)), acc);
        corr = _mm256_fmadd_ps(mw, _mm256_loadu_ps(sT + i * ts), corr);
    }
    _mm256_storeu_ps(out, _mm256_add_ps(acc, corr));
}

void kdot8_q8_0(const void *w, const kx_block *x, size_t xs, int nb, const float *dT, const float *sT, size_t ts,
                float *out)
{
    const block_q8_0 *wb = w;
    (void)sT;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m256i qw = _mm256_loadu_si256((const __m256i *)wb[i].qs);
        __m256i aw = _mm256_sign_epi8(qw, qw);
        __m256 dw = _mm256_set1_ps(h2f(wb[i].d));
        __m256i p[8];
        UNROLL
        for (int j = 0; j < 8; j++)
            p[j] = madd_us8(aw, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)x[j * xs + i].qs), qw));
        __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
        acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw, _mm256_loadu_ps(dT + i * ts)), acc);
    }
    _mm256_storeu_ps(out, acc);
}

void kdot8_q4_K(const void *w, const kx_block *x, size_t xs, int nb, const float *dT, const float *sT, size_t ts,
                float *out)
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
                    p[j] = madd_us8(half[hh], _mm256_loadu_si256((const __m256i *)x[j * xs + blk].qs));
                __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
                acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(_mm256_set1_ps(d * sc[2 * g + hh]), _mm256_loadu_ps(dT + blk * ts)),
                                      acc);
                corr = _mm256_fmadd_ps(_mm256_set1_ps(dmin * mn[2 * g + hh]), _mm256_loadu_ps(sT + blk * ts), corr);
            }
        }
    }
    _mm256_storeu_ps(out, _mm256_sub_ps(acc, corr));
}

void kdot8_q6_K(const void *w, const kx_block *x, size_t xs, int nb, const float *dT, const float *sT, size_t ts,
                float *out)
{
    const block_q6_K *wb = w;
    const __m256i m4 = _mm256_set1_epi8(0xf), m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
    (void)sT;
    __m256 acc = _mm256_setzero_ps();
    for (int s = 0; s < nb / 8; s++) {
        const block_q6_K *b = &wb[s];
        __m256 d = _mm256_set1_ps(h2f(b->d));
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            const int8_t *sc = b->scales + 8 * h;
            __m256i la = _mm256_loadu_si256((const __m256i *)ql);
            __m256i lb = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(la, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2));
            q[1] = _mm256_or_si256(_mm256_and_si256(lb, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4), _mm256_and_si256(hb, m2));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2));
            for (int k = 0; k < 4; k++) {
                __m256i qk = _mm256_sub_epi8(q[k], off), ak = _mm256_sign_epi8(qk, qk);
                __m256i scv = scale_pair(sc + 2 * k);
                int blk = 8 * s + 4 * h + k;
                __m256i p[8];
                UNROLL
                for (int j = 0; j < 8; j++) {
                    __m256i qx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)x[j * xs + blk].qs), qk);
                    p[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(ak, qx), scv);
                }
                __m256 sum = _mm256_cvtepi32_ps(hsum8x8(p));
                acc = _mm256_fmadd_ps(sum, _mm256_mul_ps(d, _mm256_loadu_ps(dT + blk * ts)), acc);
            }
        }
    }
    _mm256_storeu_ps(out, acc);
}

/* Instantiate each dot with a compile-time nx so the batch loops unroll into registers. */
#define DISPATCH(NAME, BLOCK_ELEMS)                                                                \
    void kdot_##NAME(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out)      \
    {                                                                                              \
        int steps = nb / ((BLOCK_ELEMS) / 32);                                                     \
        switch (nx) {                                                                              \
        case 1: dot_##NAME##_n(w, x, xs, 1, steps, out); break;                                    \
        case 2: dot_##NAME##_n(w, x, xs, 2, steps, out); break;                                    \
        case 3: dot_##NAME##_n(w, x, xs, 3, steps, out); break;                                    \
        default: dot_##NAME##_n(w, x, xs, 4, steps, out); break;                                   \
        }                                                                                          \
    }
DISPATCH(q4_0, QK4_0)
DISPATCH(q4_1, QK4_1)
DISPATCH(q8_0, QK8_0)
DISPATCH(q4_K, QK_K)
DISPATCH(q6_K, QK_K)

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

/* ---- dequantization (F16C / AVX2) for the transposed product and embedding rows ---- */

INLINE void store_i8x32(float *dst, __m256i q, __m256 d, __m256 m)
{
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(dst, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), m));
    _mm256_storeu_ps(dst + 8, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), m));
    _mm256_storeu_ps(dst + 16, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), m));
    _mm256_storeu_ps(dst + 24, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), m));
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
