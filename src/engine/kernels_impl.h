/* Private to kernels*.c: the quantized-activation block and the per-type row dot products that
 * kernels_avx2.c (AVX2) or kernels.c (portable scalar) provide. */
#ifndef PWB_ENGINE_KERNELS_IMPL_H
#define PWB_ENGINE_KERNELS_IMPL_H

#include <stddef.h>
#include <stdint.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KERNELS_AVX2 1
#endif

/* 32 activations quantized to int8 with a float scale (finer than ggml's fp16 Q8_1 scale). */
typedef struct kx_block {
    float d;            /* x ~= d * qs */
    float s;            /* d * sum(qs): the block sum, for the weights' offsets/mins */
    int8_t qs[32];
} kx_block;

/* Quantizes nb blocks of 32 activations (round to nearest, d = max|x| / 127). */
void kx_quantize(const float *x, kx_block *y, int nb);

/* Batch rows handled per call of the portable dot functions (and of kdot_float). */
#define KX_TILE 4

/* Portable (non-AVX2) builds: out[j] = dot(weight row w, activation row j) for j < nx (nx <=
 * KX_TILE). Activation row j starts at x + j * xstride (in blocks); nb is the number of
 * 32-element blocks in the row. */
typedef void (*kdot_fn)(const void *w, const kx_block *x, size_t xstride, int nx, int nb, float *out);
void kdot_q4_0(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out);
void kdot_q4_1(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out);
void kdot_q8_0(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out);
void kdot_q4_K(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out);
void kdot_q6_K(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out);

/* AVX2 builds: one weight row against up to 8 activation rows (nx <= 8; out gets 8 values, those
 * past nx are zero). The activations' scales and sums are also laid out block-major,
 * dT[i * ts + j] / sT[i * ts + j] for block i of row j, zero for j >= nx. */
typedef void (*kdot8_fn)(const void *w, const kx_block *x, size_t xstride, int nx, int nb, const float *dT,
                         const float *sT, size_t ts, float *out);
void kdot8_q4_0(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT, const float *sT,
                size_t ts, float *out);
void kdot8_q4_1(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT, const float *sT,
                size_t ts, float *out);
void kdot8_q8_0(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT, const float *sT,
                size_t ts, float *out);
void kdot8_q4_K(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT, const float *sT,
                size_t ts, float *out);
void kdot8_q6_K(const void *w, const kx_block *x, size_t xs, int nx, int nb, const float *dT, const float *sT,
                size_t ts, float *out);
/* AVX2 builds: nr (<= 4) consecutive weight rows, row_bytes apart, against one activation row;
 * out gets 4 values. Same per-row arithmetic as kdot8_*, bit for bit. */
typedef void (*kdot4r_fn)(const void *w, size_t row_bytes, int nr, const kx_block *x, int nb, float *out);
void kdot4r_q4_0(const void *w, size_t row_bytes, int nr, const kx_block *x, int nb, float *out);
void kdot4r_q4_1(const void *w, size_t row_bytes, int nr, const kx_block *x, int nb, float *out);
void kdot4r_q8_0(const void *w, size_t row_bytes, int nr, const kx_block *x, int nb, float *out);
void kdot4r_q4_K(const void *w, size_t row_bytes, int nr, const kx_block *x, int nb, float *out);
void kdot4r_q6_K(const void *w, size_t row_bytes, int nr, const kx_block *x, int nb, float *out);

/* Dequantizes n elements (SIMD where available; same values as dequant_row). */
void kx_dequant(int type, const void *src, float *dst, int64_t n);
/* The transposed product's inner kernel: dx[b][0..cn) += sum_r dy[b][r] * w[r][0..cn) for r < mp,
 * b < B; dy rows ldy apart, dx rows ldx apart, w[r] a row of at least cn floats. */
void kt_panel(const float *const *w, int mp, const float *dy, size_t ldy, int B, float *dx, size_t ldx, int cn);

/* Float weights (F32, F16, BF16) against F32 activations: out[j] = dot(w, x + j * ldx), K elements. */
void kdot_float(int type, const void *w, const float *x, size_t ldx, int nx, int64_t K, float *out);

/* The small-batch tiles fetch the weight rows KF_PREFETCH_TILES tiles ahead (the following rows of
 * the caller's chunk), in step with their own progress: decoding reads every weight once per token
 * from L3 or DRAM, and dequantizing leaves the out-of-order window too full of arithmetic to keep
 * many loads in flight on its own (SmolLM2 decode on 2 threads: 87 -> 135 tok/s with AVX-512). */
#define KF_PREFETCH_TILES 4
static inline void kx_prefetch_span(const void *p, int64_t n)
{
    for (int64_t off = 0; off < n; off += 64)
        __builtin_prefetch((const char *)p + off, 0, 3);
}

/* The exact product's tile: out[r][j] = dot(w[r], x[j]) over K floats (KF_ROWS weight rows,
 * KF_COLS activation rows; callers pad a partial tile by repeating a row). */
#define KF_ROWS 4
#define KF_COLS 3
void kf32_tile(const float *const w[KF_ROWS], const float *const x[KF_COLS], int64_t K, float out[KF_ROWS][KF_COLS]);

/* Small batches (nx <= KF_COLS activation rows): the same tile over nr (<= KF_ROWS) quantized rows,
 * row_bytes apart, dequantized a chunk of KF_CHUNK elements at a time into L1 instead of into a
 * panel, and only the nx real columns computed. Each out[r][j] gets the same bits as
 * kx_dequant-ing the rows and calling kf32_tile, so results stay independent of the batch. */
#define KF_CHUNK 256
void kfused_tile(int type, const void *w, size_t row_bytes, int nr, const float *const x[KF_COLS], int nx,
                 int64_t K, float out[KF_ROWS][KF_COLS]);

/* The AVX-512 tiles (kernels_avx512.c), for CPUs that have AVX-512 F/BW/VL/DQ (chosen at run time
 * in kernels.c; same contracts as kf32_tile and kfused_tile, summed over 16 lanes instead of 8). */
typedef void (*kf32_tile_fn)(const float *const w[KF_ROWS], const float *const x[KF_COLS], int64_t K,
                             float out[KF_ROWS][KF_COLS]);
typedef void (*kfused_tile_fn)(int type, const void *w, size_t row_bytes, int nr, const float *const x[KF_COLS],
                               int nx, int64_t K, float out[KF_ROWS][KF_COLS]);
void kf32_tile_avx512(const float *const w[KF_ROWS], const float *const x[KF_COLS], int64_t K,
                      float out[KF_ROWS][KF_COLS]);
void kfused_tile_avx512(int type, const void *w, size_t row_bytes, int nr, const float *const x[KF_COLS], int nx,
                        int64_t K, float out[KF_ROWS][KF_COLS]);
/* The large-batch tile where the ISA has the registers for it: KF_ROWS weight rows x KF_WIDE
 * activation rows (AVX-512: 24 accumulators, 6 activation vectors and a weight vector in its 32
 * registers). Each weight vector fetched from the L2-resident panel serves 6 activation rows instead
 * of 3, which halves the panel's L2 traffic, the bound of the KF_COLS tile at large batches. Every
 * out[r][j] is the same chain of FMAs and the same horizontal sum as in kf32_tile_avx512, so the
 * same bits whichever tile computes a row. */
#define KF_WIDE 6
typedef void (*kf32_wide_fn)(const float *const w[KF_ROWS], const float *const x[KF_WIDE], int64_t K,
                             float out[KF_ROWS][KF_WIDE]);
void kf32_wide_avx512(const float *const w[KF_ROWS], const float *const x[KF_WIDE], int64_t K,
                      float out[KF_ROWS][KF_WIDE]);
typedef void (*kt_panel_fn)(const float *const *w, int mp, const float *dy, size_t ldy, int B, float *dx,
                            size_t ldx, int cn);
void kt_panel_avx512(const float *const *w, int mp, const float *dy, size_t ldy, int B, float *dx, size_t ldx,
                     int cn);

/* A persistent pool for the small-batch products: fn(arg, i0, i1) runs over [0, n) in chunks of at
 * least 8 items, 16 per thread (small enough that a thread descheduled mid-chunk on a busy machine
 * holds up little, few enough that claiming them costs little), claimed one at a time by the caller
 * and up to nt - 1 workers. Workers spin briefly
 * after each job before sleeping, so the next product of a decode step finds them awake; a worker
 * that is asleep or descheduled simply claims nothing, and the caller does its share (it waits only
 * for chunks already claimed). Runs everything on the caller when nested in an OpenMP region, when
 * another thread holds the pool, or for nt = 1. fn must give the same results whoever runs a chunk. */
typedef void (*kpool_fn)(void *arg, int64_t i0, int64_t i1);
void kpool_run(kpool_fn fn, void *arg, int64_t n, int nt);

#endif
