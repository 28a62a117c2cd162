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

/* ---- Q4_0: x = (q - 8) * d.  dot = d_w * (d_x * sum(q * qx) - 8 * s_x) ---- */

INLINE void dot_q4_0_n(const block_q4_0 *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    __m256 acc[KX_TILE];
    float corr[KX_TILE];
    for (int j = 0; j < nx; j++) {
        acc[j] = _mm256_setzero_ps();
        corr[j] = 0;
    }
    for (int i = 0; i < nb; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)w[i].qs);
        __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lowmask);
        float dw = h2f(w[i].d);
        for (int j = 0; j < nx; j++) {
            const kx_block *xb = x + j * xs + i;
            __m256 p = mul_sum_us8(qw, _mm256_loadu_si256((const __m256i *)xb->qs));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), p, acc[j]);
            corr[j] += dw * xb->s;
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum_ps(acc[j]) - 8.0f * corr[j];
}

/* ---- Q4_1: x = q * d + m.  dot = d_w * d_x * sum(q * qx) + m_w * s_x ---- */

INLINE void dot_q4_1_n(const block_q4_1 *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    __m256 acc[KX_TILE];
    float corr[KX_TILE];
    for (int j = 0; j < nx; j++) {
        acc[j] = _mm256_setzero_ps();
        corr[j] = 0;
    }
    for (int i = 0; i < nb; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)w[i].qs);
        __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lowmask);
        float dw = h2f(w[i].d), mw = h2f(w[i].m);
        for (int j = 0; j < nx; j++) {
            const kx_block *xb = x + j * xs + i;
            __m256 p = mul_sum_us8(qw, _mm256_loadu_si256((const __m256i *)xb->qs));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), p, acc[j]);
            corr[j] += mw * xb->s;
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum_ps(acc[j]) + corr[j];
}

/* ---- Q8_0: signed x signed through |w| and sign(x, w) ---- */

INLINE void dot_q8_0_n(const block_q8_0 *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    __m256 acc[KX_TILE];
    for (int j = 0; j < nx; j++)
        acc[j] = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m256i qw = _mm256_loadu_si256((const __m256i *)w[i].qs);
        __m256i aw = _mm256_sign_epi8(qw, qw);
        float dw = h2f(w[i].d);
        for (int j = 0; j < nx; j++) {
            const kx_block *xb = x + j * xs + i;
            __m256i qx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb->qs), qw);
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), mul_sum_us8(aw, qx), acc[j]);
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum_ps(acc[j]);
}

/* ---- Q4_K: sub-block j of 32 = activation block j; x = d*sc_j*q - dmin*m_j ---- */

INLINE void q4k_scales(const uint8_t *q, uint8_t sc[8], uint8_t mn[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t)((q[j + 8] & 0xf) | ((q[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

INLINE void dot_q4_K_n(const block_q4_K *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const __m256i lowmask = _mm256_set1_epi8(0xf);
    __m256 acc[KX_TILE];
    float corr[KX_TILE];
    for (int j = 0; j < nx; j++) {
        acc[j] = _mm256_setzero_ps();
        corr[j] = 0;
    }
    for (int s = 0; s < nb / 8; s++) {
        const block_q4_K *b = &w[s];
        float d = h2f(b->d), dmin = h2f(b->dmin);
        uint8_t sc[8], mn[8];
        q4k_scales(b->scales, sc, mn);
        for (int g = 0; g < 4; g++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * g));
            __m256i lo = _mm256_and_si256(q, lowmask);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), lowmask);
            float d_lo = d * sc[2 * g], d_hi = d * sc[2 * g + 1];
            float m_lo = dmin * mn[2 * g], m_hi = dmin * mn[2 * g + 1];
            for (int j = 0; j < nx; j++) {
                const kx_block *xa = x + j * xs + 8 * s + 2 * g, *xb = xa + 1;
                __m256 pa = mul_sum_us8(lo, _mm256_loadu_si256((const __m256i *)xa->qs));
                __m256 pb = mul_sum_us8(hi, _mm256_loadu_si256((const __m256i *)xb->qs));
                acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d_lo * xa->d), pa, acc[j]);
                acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d_hi * xb->d), pb, acc[j]);
                corr[j] += m_lo * xa->s + m_hi * xb->s;
            }
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum_ps(acc[j]) - corr[j];
}

/* ---- Q6_K: sub-blocks of 16 with int8 scales; x = d * sc * (q - 32) ---- */

INLINE __m256i scale_pair(const int8_t *sc)
{
    return _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
}

INLINE void dot_q6_K_n(const block_q6_K *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const __m256i m4 = _mm256_set1_epi8(0xf), m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
    __m256 acc[KX_TILE];
    for (int j = 0; j < nx; j++)
        acc[j] = _mm256_setzero_ps();
    for (int s = 0; s < nb / 8; s++) {
        const block_q6_K *b = &w[s];
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
            __m256i scv[4];
            for (int k = 0; k < 4; k++) {
                q[k] = _mm256_sub_epi8(q[k], off);
                scv[k] = scale_pair(sc + 2 * k);
            }
            for (int j = 0; j < nx; j++) {
                const kx_block *xb = x + j * xs + 8 * s + 4 * h;
                for (int k = 0; k < 4; k++) {
                    __m256i qx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb[k].qs), q[k]);
                    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(q[k], q[k]), qx);
                    __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, scv[k]));
                    acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb[k].d), p, acc[j]);
                }
            }
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum_ps(acc[j]);
}

/* Instantiate each dot with a compile-time nx so the batch loops unroll into registers. */
#define DISPATCH(NAME, BLOCK)                                                                      \
    void kdot_##NAME(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out)      \
    {                                                                                              \
        const BLOCK *wb = w;                                                                       \
        switch (nx) {                                                                              \
        case 1: dot_##NAME##_n(wb, x, xs, 1, nb, out); break;                                      \
        case 2: dot_##NAME##_n(wb, x, xs, 2, nb, out); break;                                      \
        case 3: dot_##NAME##_n(wb, x, xs, 3, nb, out); break;                                      \
        default: dot_##NAME##_n(wb, x, xs, 4, nb, out); break;                                     \
        }                                                                                          \
    }
DISPATCH(q4_0, block_q4_0)
DISPATCH(q4_1, block_q4_1)
DISPATCH(q8_0, block_q8_0)
DISPATCH(q4_K, block_q4_K)
DISPATCH(q6_K, block_q6_K)

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
    for (int j = 0; j < nx; j++)
        a0[j] = a1[j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m256 w0 = load8(type, w, k), w1 = load8(type, w, k + 8);
        for (int j = 0; j < nx; j++) {
            a0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + j * ldx + k), a0[j]);
            a1[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + j * ldx + k + 8), a1[j]);
        }
    }
    for (; k + 8 <= K; k += 8) {
        __m256 w0 = load8(type, w, k);
        for (int j = 0; j < nx; j++)
            a0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + j * ldx + k), a0[j]);
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum_ps(_mm256_add_ps(a0[j], a1[j]));
    for (; k < K; k++) {
        float wk = load1(type, w, k);
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

#else
typedef int kernels_avx2_empty_; /* ISO C forbids an empty translation unit */
#endif
