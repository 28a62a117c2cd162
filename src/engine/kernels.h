/* Compute kernels for the forward and backward passes. Parallel with OpenMP over output rows (the
 * caller sets the thread count with omp_set_num_threads / OMP_NUM_THREADS; small batches of the
 * exact product use the kernels' own thread pool with the same count); AVX2+FMA+F16C paths with a
 * portable scalar fallback, and AVX-512 exact-product tiles chosen at run time.
 *
 * Layout convention: a weight W is a pwb_tensor of shape [M rows, K cols] in GGUF order, i.e.
 * ne[0] = K (contiguous), ne[1] = M (higher dims, if any, fold into M). Activations are row-major
 * F32: x[b][k], y[b][m].
 *
 * Numerics: for Q4_0, Q4_1, Q8_0, Q4_K and Q6_K weights the activations are quantized to 8 bits
 * per 32-element block once per call (as llama.cpp does) and the dot products are integer SIMD;
 * this moves each output by at most sum_k |W[m,k]| * d_x / 2 (d_x = max|x| / 127 over the block),
 * typically 0.2-0.5 % relative, on top of the weights' own quantization. F32, F16 and BF16
 * weights are dotted in F32 (FMA). A row's result is bitwise the same whatever batch it is
 * computed in (B, its position, the thread count): scores do not depend on how work was batched.
 *
 * Threads: on a machine shared with other busy processes, OpenMP's default active waiting makes
 * every barrier a long stall; run with OMP_WAIT_POLICY=passive (or fewer threads) there. */
#ifndef PWB_ENGINE_KERNELS_H
#define PWB_ENGINE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"
#include "util/err.h"

/* y[b][m] = sum_k W[m,k] * x[b][k], for b < B. Each weight row is loaded once and dotted with all
 * B activation rows. Returns PWB_OK, PWB_EUNSUP for an unsupported dtype, PWB_EINVAL for a bad
 * shape, PWB_ENOMEM. */
int kernel_matmul(const pwb_tensor *W, const float *x, int B, float *y, pwb_err *e);
/* Same with row strides (in floats) for x and y (ldx >= K, ldy >= M). */
int kernel_matmul_ex(const pwb_tensor *W, const float *x, size_t ldx, int B, float *y, size_t ldy,
                     pwb_err *e);
/* The same product computed exactly: quantized weights are dequantized to F32 (a panel of rows
 * at a time) and dotted with the unrounded F32 activations, as a dequantized F32 copy of the model
 * would compute it. Slower than kernel_matmul for quantized weights; bitwise independent of the
 * batch like it. */
int kernel_matmul_exact(const pwb_tensor *W, const float *x, size_t ldx, int B, float *y, size_t ldy,
                        pwb_err *e);
/* Transposed product, for backpropagating to a matmul's input:
 * dx[b][k] (+)= sum_m dy[b][m] * W[m,k]. With accumulate = 0 dx is overwritten. F32 throughout:
 * weights are dequantized on the fly in 32x256 panels, dy is not quantized. */
int kernel_matmul_t(const pwb_tensor *W, const float *dy, int B, float *dx, int accumulate,
                    pwb_err *e);

/* n floats (at least one) starting on a 64-byte cache line, for activation buffers and panels: with
 * rows a multiple of 16 floats long, the kernels' vector loads then never straddle two lines (about
 * 8% of rank-scoring time). Free with free(); NULL when out of memory. */
float *kernel_alloc_f32(size_t n);

/* One row of W (e.g. an embedding) as F32: dst[k] = W[row, k], k < K. */
int kernel_get_row(const pwb_tensor *W, int64_t row, float *dst, pwb_err *e);

/* Plain F32 helpers, row-major, no quantization:
 * kernel_matmul_f32:   y[b][m] = sum_k W[m][k] * x[b][k]      (y = x W^T, W is [M][K])
 * kernel_matmul_f32_t: y[b][k] = sum_m W[m][k] * x[b][m]      (y = x W,   W is [M][K]) */
void kernel_matmul_f32(const float *W, int M, int K, const float *x, int B, float *y);
void kernel_matmul_f32_t(const float *W, int M, int K, const float *x, int B, float *y);
float kernel_dot_f32(const float *a, const float *b, int64_t n);
void kernel_axpy_f32(float *y, float a, const float *x, int64_t n);   /* y += a * x */

/* Which SIMD path the exact product uses: "avx512" (chosen at run time when the CPU has AVX-512
 * F/BW/VL/DQ and PWB_KERNELS is not "avx2"), "avx2" or "scalar" (fixed by the build). */
const char *kernel_isa(void);
/* Selects a path by name ("avx512", "avx2", "scalar" where the build has it, "avx512" only where
 * the CPU has it): for tests and benchmarks comparing them. Not thread-safe against running
 * products. Returns PWB_OK or PWB_EUNSUP. */
int kernel_use_isa(const char *name);

#endif
