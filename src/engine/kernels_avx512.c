/* AVX-512 (F, BW, VL, DQ) versions of the exact product's two tiles, compiled with a target
 * attribute whatever -march says and chosen at run time (kernels.c), so a binary built for AVX2
 * machines uses them where the CPU has them and never executes them where it does not.
 *
 * Both tiles sum each (weight row, activation row) pair over 16 lanes, k ascending, and end in the
 * same horizontal sum, so kfused_tile_avx512 and kf32_tile_avx512 give the same bits and a row's
 * result stays independent of its batch. (They differ from the AVX2 tiles' 8-lane order by F32
 * summation rounding; one process uses one set.)
 *
 * Small batches dequantize in registers: a Q4_0 / Q4_1 block's 16 possible values are one vector
 * (fma(d, q, m) for q = 0..15, the same F32 values kx_dequant stores), and vpermps picks each
 * element's value by its nibble. */
#include "engine/kernels_impl.h"

#if defined(KERNELS_AVX2) && defined(__GNUC__) && defined(__x86_64__)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
#include <immintrin.h>

#include <string.h>

#include "engine/quant.h"

#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* A fixed reduction tree, so both tiles end alike. */
INLINE float hsum16(__m512 v)
{
    __m256 s = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

INLINE float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* One step of the exact tiles: a[r][j] += w[r][wk..] * x[j][xk..] over one vector, rows NX of x
 * (NX <= KF_WIDE; unused accumulators are dead code once inlined). */
INLINE void tile_step(__m512 a[KF_ROWS][KF_WIDE], const float *const w[KF_ROWS], int64_t wk,
                      const float *const *x, int64_t xk, int NX)
{
    __m512 xv[KF_WIDE];
    UNROLL
    for (int j = 0; j < NX; j++) {
        xv[j] = _mm512_loadu_ps(x[j] + xk);
        /* loads in registers: GCC would otherwise fold each into every FMA that uses it */
        __asm__("" : "+v"(xv[j]));
    }
    UNROLL
    for (int r = 0; r < KF_ROWS; r++) {
        __m512 wv = _mm512_loadu_ps(w[r] + wk);
        __asm__("" : "+v"(wv));
        UNROLL
        for (int j = 0; j < NX; j++)
            a[r][j] = _mm512_fmadd_ps(wv, xv[j], a[r][j]);
    }
}

/* Both F32 tiles: out[r * ldo + j] for NX activation rows. */
INLINE void f32_tile_n(const float *const w[KF_ROWS], const float *const *x, int64_t K, float *out, int NX)
{
    __m512 a[KF_ROWS][KF_WIDE];
    memset(a, 0, sizeof a); /* kept in registers */
    int64_t k = 0;
    for (; k + 16 <= K; k += 16)
        tile_step(a, w, k, x, k, NX);
    UNROLL
    for (int r = 0; r < KF_ROWS; r++)
        UNROLL
        for (int j = 0; j < NX; j++) {
            float s = hsum16(a[r][j]);
            for (int64_t t = k; t < K; t++)
                s = __builtin_fmaf(w[r][t], x[j][t], s);
            out[r * NX + j] = s;
        }
}

void kf32_tile_avx512(const float *const w[KF_ROWS], const float *const x[KF_COLS], int64_t K,
                      float out[KF_ROWS][KF_COLS])
{
    f32_tile_n(w, x, K, &out[0][0], KF_COLS);
}

void kf32_wide_avx512(const float *const w[KF_ROWS], const float *const x[KF_WIDE], int64_t K,
                      float out[KF_ROWS][KF_WIDE])
{
    f32_tile_n(w, x, K, &out[0][0], KF_WIDE);
}

/* One 32-element block of row r as two vectors of 16 F32 weights (elements 0-15, 16-31). */
INLINE void deq_block(int type, const unsigned char *row, int64_t i, __m512 *lo, __m512 *hi)
{
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    switch (type) {
    case DT_Q4_1: {
        const block_q4_1 *b = (const block_q4_1 *)(const void *)row + i;
        __m512 lut = _mm512_fmadd_ps(_mm512_set1_ps(h2f(b->d)), iota, _mm512_set1_ps(h2f(b->m)));
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b->qs));
        *lo = _mm512_permutexvar_ps(q, lut); /* vpermps reads the index's low 4 bits: the low nibble */
        *hi = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), lut);
        break;
    }
    case DT_Q4_0: {
        const block_q4_0 *b = (const block_q4_0 *)(const void *)row + i;
        __m512 lut = _mm512_fmadd_ps(_mm512_set1_ps(h2f(b->d)), _mm512_sub_ps(iota, _mm512_set1_ps(8.0f)),
                                     _mm512_setzero_ps());
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b->qs));
        *lo = _mm512_permutexvar_ps(q, lut);
        *hi = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), lut);
        break;
    }
    default: { /* DT_Q8_0 */
        const block_q8_0 *b = (const block_q8_0 *)(const void *)row + i;
        __m512 d = _mm512_set1_ps(h2f(b->d)), z = _mm512_setzero_ps();
        __m512i q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->qs));
        __m512i q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 16)));
        *lo = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(q0), z);
        *hi = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(q1), z);
        break;
    }
    }
}

INLINE void fused512_n(int type, const void *w, size_t rb, int nr, const float *const x[KF_COLS], int NX,
                       int64_t K, float out[KF_ROWS][KF_COLS])
{
    const unsigned char *rw[KF_ROWS];
    for (int r = 0; r < KF_ROWS; r++)
        rw[r] = (const unsigned char *)w + (size_t)(r < nr ? r : 0) * rb;
    __m512 a[KF_ROWS][KF_WIDE];
    memset(a, 0, sizeof a); /* kept in registers */
    /* the rows KF_PREFETCH_TILES tiles ahead (kernels_impl.h), fetched in step with this tile */
    const int64_t bs = (int64_t)quant_block_size(type), ts = (int64_t)quant_type_size(type);
    const char *next = (const char *)w + (size_t)(KF_PREFETCH_TILES * KF_ROWS) * rb;
    if (type == DT_Q4_0 || type == DT_Q4_1 || type == DT_Q8_0) {
        for (int64_t i = 0; i < K / 32; i++) {
            kx_prefetch_span(next + i * KF_ROWS * ts, KF_ROWS * ts);
            __m512 x0[KF_COLS], x1[KF_COLS];
            UNROLL
            for (int j = 0; j < NX; j++) {
                x0[j] = _mm512_loadu_ps(x[j] + 32 * i);
                x1[j] = _mm512_loadu_ps(x[j] + 32 * i + 16);
            }
            UNROLL
            for (int r = 0; r < KF_ROWS; r++) {
                __m512 lo, hi;
                deq_block(type, rw[r], i, &lo, &hi);
                UNROLL
                for (int j = 0; j < NX; j++) {
                    a[r][j] = _mm512_fmadd_ps(lo, x0[j], a[r][j]);
                    a[r][j] = _mm512_fmadd_ps(hi, x1[j], a[r][j]);
                }
            }
        }
    } else {
        /* Other types: a chunk of each row through kx_dequant, in L1. */
        float buf[KF_ROWS][KF_CHUNK] __attribute__((aligned(64)));
        for (int64_t k0 = 0; k0 < K; k0 += KF_CHUNK) {
            const int cn = K - k0 < KF_CHUNK ? (int)(K - k0) : KF_CHUNK;
            kx_prefetch_span(next + k0 / bs * ts * KF_ROWS, cn / bs * ts * KF_ROWS);
            for (int r = 0; r < KF_ROWS; r++)
                kx_dequant(type, rw[r] + (size_t)(k0 / bs * ts), buf[r], cn);
            const float *const bw[KF_ROWS] = {buf[0], buf[1], buf[2], buf[3]};
            for (int k = 0; k < cn; k += 16)
                tile_step(a, bw, k, x, k0 + k, NX);
        }
    }
    UNROLL
    for (int r = 0; r < KF_ROWS; r++)
        UNROLL
        for (int j = 0; j < NX; j++)
            out[r][j] = hsum16(a[r][j]);
}

void kfused_tile_avx512(int type, const void *w, size_t row_bytes, int nr, const float *const x[KF_COLS], int nx,
                        int64_t K, float out[KF_ROWS][KF_COLS])
{
    switch (nx) {
    case 1: fused512_n(type, w, row_bytes, nr, x, 1, K, out); break;
    case 2: fused512_n(type, w, row_bytes, nr, x, 2, K, out); break;
    default: fused512_n(type, w, row_bytes, nr, x, 3, K, out); break;
    }
}

/* dx[b][k..k+16*NV) += sum_r dy[b][r] * w[r][same] for r < mp, NB batch rows held in registers
 * across the panel; the last vector may be masked (cn not a multiple of 16). Each element is the
 * same chain of FMAs over r as in the AVX2 panel, so both give the same bits. */
INLINE void panel_tile512(const float *const *w, int mp, const float *dy, size_t ldy, float *dx, size_t ldx, int k,
                          int NB, int NV, __mmask16 last)
{
    __m512 acc[4][4];
    UNROLL
    for (int b = 0; b < NB; b++)
        UNROLL
        for (int v = 0; v < NV; v++)
            acc[b][v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xffff, dx + b * ldx + k + 16 * v);
    for (int r = 0; r < mp; r++) {
        __m512 wv[4];
        UNROLL
        for (int v = 0; v < NV; v++)
            wv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xffff, w[r] + k + 16 * v);
        UNROLL
        for (int b = 0; b < NB; b++) {
            __m512 d = _mm512_set1_ps(dy[b * ldy + r]);
            UNROLL
            for (int v = 0; v < NV; v++)
                acc[b][v] = _mm512_fmadd_ps(d, wv[v], acc[b][v]);
        }
    }
    UNROLL
    for (int b = 0; b < NB; b++)
        UNROLL
        for (int v = 0; v < NV; v++)
            _mm512_mask_storeu_ps(dx + b * ldx + k + 16 * v, v == NV - 1 ? last : 0xffff, acc[b][v]);
}

/* One block of NB batch rows across all cn columns: 64 at a time, then 16, then a masked tail. */
INLINE void panel_rows512(const float *const *w, int mp, const float *dy, size_t ldy, float *dx, size_t ldx, int cn,
                          int NB)
{
    int k = 0;
    for (; k + 64 <= cn; k += 64)
        panel_tile512(w, mp, dy, ldy, dx, ldx, k, NB, 4, 0xffff);
    for (; k + 16 <= cn; k += 16)
        panel_tile512(w, mp, dy, ldy, dx, ldx, k, NB, 1, 0xffff);
    if (k < cn)
        panel_tile512(w, mp, dy, ldy, dx, ldx, k, NB, 1, (__mmask16)((1u << (cn - k)) - 1));
}

void kt_panel_avx512(const float *const *w, int mp, const float *dy, size_t ldy, int B, float *dx, size_t ldx,
                     int cn)
{
    int b = 0;
    for (; b + 4 <= B; b += 4)
        panel_rows512(w, mp, dy + b * ldy, ldy, dx + b * ldx, ldx, cn, 4);
    for (; b < B; b++)
        panel_rows512(w, mp, dy + b * ldy, ldy, dx + b * ldx, ldx, cn, 1);
}

#pragma GCC pop_options

#else
typedef int kernels_avx512_empty_; /* ISO C forbids an empty translation unit */
#endif
