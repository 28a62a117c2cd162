/* Kernel drivers: argument checks, activation quantization, OpenMP work split, and the portable
 * scalar dot products used when the build has no AVX2 (kernels_avx2.c has the SIMD ones). */
#include "engine/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels_impl.h"
#include "engine/quant.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many multiply-adds a call runs on one thread: waking the pool costs more. */
#define PAR_MIN_WORK (1 << 16)

/* The exact product's tiles and the transposed product's panel kernel: the build's (AVX2 or
 * scalar), or AVX-512 when the CPU has it. */
static struct {
    const char *isa;
    kf32_tile_fn tile;
    kf32_wide_fn wide; /* NULL: large batches use tile too */
    kfused_tile_fn fused;
    kt_panel_fn panel;
} kimpl;

#if defined(KERNELS_AVX2) && defined(__GNUC__) && defined(__x86_64__)
static int cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#endif

int kernel_use_isa(const char *name)
{
#if defined(KERNELS_AVX2) && defined(__GNUC__) && defined(__x86_64__)
    if (strcmp(name, "avx512") == 0 && cpu_has_avx512()) {
        kimpl.isa = "avx512";
        kimpl.tile = kf32_tile_avx512;
        kimpl.wide = kf32_wide_avx512;
        kimpl.fused = kfused_tile_avx512;
        kimpl.panel = kt_panel_avx512;
        return PWB_OK;
    }
#endif
#ifdef KERNELS_AVX2
    const char *base = "avx2";
#else
    const char *base = "scalar";
#endif
    if (strcmp(name, base) != 0)
        return PWB_EUNSUP;
    kimpl.isa = base;
    kimpl.tile = kf32_tile;
    kimpl.wide = NULL;
    kimpl.fused = kfused_tile;
    kimpl.panel = kt_panel;
    return PWB_OK;
}

/* Before main: the choice is made once, before any thread runs a product. */
__attribute__((constructor)) static void kimpl_init(void)
{
    const char *want = getenv("PWB_KERNELS");
    if ((want && kernel_use_isa(want) == PWB_OK) || kernel_use_isa("avx512") == PWB_OK)
        return;
    kernel_use_isa(kernel_use_isa("avx2") == PWB_OK ? "avx2" : "scalar");
}

const char *kernel_isa(void)
{
    return kimpl.isa;
}

/* ---- portable scalar fallback ---- */
#ifndef KERNELS_AVX2

void kx_quantize(const float *x, kx_block *y, int nb)
{
    for (int i = 0; i < nb; i++, x += 32) {
        float amax = 0;
        for (int l = 0; l < 32; l++)
            amax = fmaxf(amax, fabsf(x[l]));
        float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int l = 0; l < 32; l++) {
            y[i].qs[l] = (int8_t)lrintf(x[l] * id);
            sum += y[i].qs[l];
        }
        y[i].d = d;
        y[i].s = d * (float)sum;
    }
}

void kdot_q4_0(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const block_q4_0 *b = w;
    for (int j = 0; j < nx; j++) {
        float acc = 0;
        for (int i = 0; i < nb; i++) {
            const kx_block *xb = x + j * xs + i;
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += ((b[i].qs[l] & 0xf) - 8) * xb->qs[l] + ((b[i].qs[l] >> 4) - 8) * xb->qs[l + 16];
            acc += fp16_to_f32(b[i].d) * xb->d * (float)s;
        }
        out[j] = acc;
    }
}

void kdot_q4_1(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const block_q4_1 *b = w;
    for (int j = 0; j < nx; j++) {
        float acc = 0;
        for (int i = 0; i < nb; i++) {
            const kx_block *xb = x + j * xs + i;
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += (b[i].qs[l] & 0xf) * xb->qs[l] + (b[i].qs[l] >> 4) * xb->qs[l + 16];
            acc += fp16_to_f32(b[i].d) * xb->d * (float)s + fp16_to_f32(b[i].m) * xb->s;
        }
        out[j] = acc;
    }
}

void kdot_q8_0(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const block_q8_0 *b = w;
    for (int j = 0; j < nx; j++) {
        float acc = 0;
        for (int i = 0; i < nb; i++) {
            const kx_block *xb = x + j * xs + i;
            int s = 0;
            for (int l = 0; l < 32; l++)
                s += b[i].qs[l] * xb->qs[l];
            acc += fp16_to_f32(b[i].d) * xb->d * (float)s;
        }
        out[j] = acc;
    }
}

void kdot_q4_K(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const block_q4_K *b = w;
    for (int j = 0; j < nx; j++) {
        float acc = 0;
        for (int s = 0; s < nb / 8; s++) {
            float d = fp16_to_f32(b[s].d), dmin = fp16_to_f32(b[s].dmin);
            const uint8_t *q = b[s].scales;
            for (int sb = 0; sb < 8; sb++) {
                int sc, mn;
                if (sb < 4) {
                    sc = q[sb] & 63;
                    mn = q[sb + 4] & 63;
                } else {
                    sc = (q[sb + 4] & 0xf) | ((q[sb - 4] >> 6) << 4);
                    mn = (q[sb + 4] >> 4) | ((q[sb] >> 6) << 4);
                }
                const kx_block *xb = x + j * xs + 8 * s + sb;
                const uint8_t *qs = b[s].qs + 32 * (sb / 2);
                int shift = (sb & 1) * 4, dot = 0;
                for (int l = 0; l < 32; l++)
                    dot += ((qs[l] >> shift) & 0xf) * xb->qs[l];
                acc += d * (float)sc * xb->d * (float)dot - dmin * (float)mn * xb->s;
            }
        }
        out[j] = acc;
    }
}

void kdot_q6_K(const void *w, const kx_block *x, size_t xs, int nx, int nb, float *out)
{
    const block_q6_K *b = w;
    for (int j = 0; j < nx; j++) {
        float acc = 0;
        for (int s = 0; s < nb / 8; s++) {
            float d = fp16_to_f32(b[s].d);
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = b[s].ql + 64 * h, *qh = b[s].qh + 32 * h;
                const int8_t *sc = b[s].scales + 8 * h;
                for (int k = 0; k < 4; k++) {
                    const kx_block *xb = x + j * xs + 8 * s + 4 * h + k;
                    int dot[2] = {0, 0};
                    for (int l = 0; l < 32; l++) {
                        int lo = k & 1 ? ql[l + 32] : ql[l];
                        lo = k & 2 ? lo >> 4 : lo & 0xf;
                        int q = (lo | ((qh[l] >> (2 * k)) & 3) << 4) - 32;
                        dot[l / 16] += q * xb->qs[l];
                    }
                    acc += d * xb->d * (float)(sc[2 * k] * dot[0] + sc[2 * k + 1] * dot[1]);
                }
            }
        }
        out[j] = acc;
    }
}

void kdot_float(int type, const void *w, const float *x, size_t ldx, int nx, int64_t K, float *out)
{
    const unsigned char *p = w;
    for (int j = 0; j < nx; j++)
        out[j] = 0;
    for (int64_t k = 0; k < K; k++) {
        float wk;
        if (type == DT_F32) {
            wk = ((const float *)w)[k];
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * k, 2);
            wk = type == DT_F16 ? fp16_to_f32(h) : bf16_to_f32(h);
        }
        for (int j = 0; j < nx; j++)
            out[j] += wk * x[j * ldx + k];
    }
}

void kx_dequant(int type, const void *src, float *dst, int64_t n)
{
    dequant_row(type, src, dst, n);
}

void kf32_tile(const float *const w[KF_ROWS], const float *const x[KF_COLS], int64_t K, float out[KF_ROWS][KF_COLS])
{
    for (int r = 0; r < KF_ROWS; r++)
        for (int j = 0; j < KF_COLS; j++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++)
                s = fmaf(w[r][k], x[j][k], s);
            out[r][j] = s;
        }
}

void kfused_tile(int type, const void *w, size_t row_bytes, int nr, const float *const x[KF_COLS], int nx,
                 int64_t K, float out[KF_ROWS][KF_COLS])
{
    const size_t bs = quant_block_size(type), ts = quant_type_size(type);
    float buf[KF_CHUNK];
    for (int r = 0; r < nr; r++) {
        const unsigned char *row = (const unsigned char *)w + (size_t)r * row_bytes;
        float s[KF_COLS] = {0};
        for (int64_t k0 = 0; k0 < K; k0 += KF_CHUNK) {
            const int cn = K - k0 < KF_CHUNK ? (int)(K - k0) : KF_CHUNK;
            kx_dequant(type, row + (size_t)(k0 / (int64_t)bs) * ts, buf, cn);
            for (int j = 0; j < nx; j++)
                for (int k = 0; k < cn; k++)
                    s[j] = fmaf(buf[k], x[j][k0 + k], s[j]);
        }
        for (int j = 0; j < nx; j++)
            out[r][j] = s[j];
    }
}

void kt_panel(const float *const *w, int mp, const float *dy, size_t ldy, int B, float *dx, size_t ldx, int cn)
{
    for (int b = 0; b < B; b++)
        for (int r = 0; r < mp; r++) {
            float a = dy[b * ldy + r];
            for (int k = 0; k < cn; k++)
                dx[b * ldx + k] += a * w[r][k];
        }
}

#endif /* !KERNELS_AVX2 */

/* ---- drivers ---- */

#ifdef KERNELS_AVX2
static kdot8_fn quant_dot8(int type)
{
    switch (type) {
    case DT_Q4_0: return kdot8_q4_0;
    case DT_Q4_1: return kdot8_q4_1;
    case DT_Q8_0: return kdot8_q8_0;
    case DT_Q4_K: return kdot8_q4_K;
    case DT_Q6_K: return kdot8_q6_K;
    default: return NULL;
    }
}

static kdot4r_fn quant_dot4r(int type)
{
    switch (type) {
    case DT_Q4_0: return kdot4r_q4_0;
    case DT_Q4_1: return kdot4r_q4_1;
    case DT_Q8_0: return kdot4r_q8_0;
    case DT_Q4_K: return kdot4r_q4_K;
    case DT_Q6_K: return kdot4r_q6_K;
    default: return NULL;
    }
}
#else
static kdot_fn quant_dot(int type)
{
    switch (type) {
    case DT_Q4_0: return kdot_q4_0;
    case DT_Q4_1: return kdot_q4_1;
    case DT_Q8_0: return kdot_q8_0;
    case DT_Q4_K: return kdot_q4_K;
    case DT_Q6_K: return kdot_q6_K;
    default: return NULL;
    }
}
#endif

/* Validates W and returns its row count M and row length K. */
static int check_weight(const pwb_tensor *W, int64_t *M, int64_t *K, pwb_err *e)
{
    int rc = quant_check(W, e);
    if (rc)
        return rc;
    *K = W->ne[0];
    *M = W->ne[1] * W->ne[2] * W->ne[3];
    if (*K <= 0 || *M <= 0 || *M > INT32_MAX || *K > INT32_MAX)
        return err_set(e, PWB_EINVAL, "tensor '%s': empty or oversized matrix", W->name ? W->name : "?");
    return PWB_OK;
}

/* Threads for a small-batch product on the kernel pool: all of OpenMP's when the work is worth it. */
static int pool_threads(int par)
{
#ifdef _OPENMP
    if (par)
        return omp_get_max_threads();
#endif
    return 1;
}

#ifdef KERNELS_AVX2
/* One activation row (decoding) against 4 weight rows at a time, on the kernel pool: a decode step
 * runs ~200 such products of tens of microseconds, too short for OpenMP's sleeping threads. */
typedef struct dot4r_job {
    kdot4r_fn dot4r;
    const unsigned char *w;
    size_t row_bytes;
    int64_t M;
    const kx_block *xq;
    int nb;
    float *y;
} dot4r_job;

static void dot4r_part(void *arg, int64_t g0, int64_t g1)
{
    const dot4r_job *j = arg;
    for (int64_t g = g0; g < g1; g++) {
        const int64_t m = 4 * g;
        const int nr = j->M - m < 4 ? (int)(j->M - m) : 4;
        float out[4];
        j->dot4r(j->w + (size_t)m * j->row_bytes, j->row_bytes, nr, j->xq, j->nb, out);
        for (int r = 0; r < nr; r++)
            j->y[m + r] = out[r];
    }
}
#endif

/* Quantized weights: each activation row is quantized once, then every output row reuses it. */
static int matmul_quant(const pwb_tensor *W, int64_t M, int64_t K, const float *x, size_t ldx, int B, float *y,
                        size_t ldy, int par, pwb_err *e)
{
    const size_t row_bytes = quant_row_size(W->type, K);
    const unsigned char *wdata = W->data;
    const int nb = (int)(K / 32);
    kx_block *xq = malloc((size_t)B * (size_t)nb * sizeof *xq);
#ifdef KERNELS_AVX2
    /* Batches go through 8-row tiles, which also want the activations' scales and sums
     * block-major (dT, sT; rows padded to a multiple of 8 with zeros). One row goes 4 weight rows
     * at a time. Both compute each row's result bit for bit the same way. */
    kdot8_fn dot8 = quant_dot8(W->type);
    kdot4r_fn dot4r = quant_dot4r(W->type);
    const int Bp = (B + 7) / 8 * 8;
    float *dT = B > 1 ? calloc((size_t)nb * (size_t)Bp * 2, sizeof(float)) : NULL;
    float *sT = dT ? dT + (size_t)nb * Bp : NULL;
    if (!xq || (B > 1 && !dT)) {
        free(xq);
        free(dT);
        return err_set(e, PWB_ENOMEM, "kernel_matmul: out of memory");
    }
    const int64_t n_groups = (M + 3) / 4;
    if (B == 1) {
        kx_quantize(x, xq, nb);
        dot4r_job j = {dot4r, wdata, row_bytes, M, xq, nb, y};
        kpool_run(dot4r_part, &j, n_groups, pool_threads(par));
        free(xq);
        return PWB_OK;
    }
    /* One parallel region per call: on a busy machine every fork, join or barrier is a chance to
     * wait for a descheduled thread. */
#pragma omp parallel if (par)
    {
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            kx_block *xb = xq + (size_t)b * nb;
            kx_quantize(x + (size_t)b * ldx, xb, nb);
            for (int i = 0; dT && i < nb; i++) {
                dT[(size_t)i * Bp + b] = xb[i].d;
                sT[(size_t)i * Bp + b] = xb[i].s;
            }
        }
        if (B == 1) {
#pragma omp for schedule(static)
            for (int64_t g = 0; g < n_groups; g++) {
                int64_t m = 4 * g;
                int nr = M - m < 4 ? (int)(M - m) : 4;
                float out[4];
                dot4r(wdata + (size_t)m * row_bytes, row_bytes, nr, xq, nb, out);
                for (int r = 0; r < nr; r++)
                    y[m + r] = out[r];
            }
        } else {
#pragma omp for schedule(static)
            for (int64_t m = 0; m < M; m++) {
                const void *wr = wdata + (size_t)m * row_bytes;
                float out[8];
                for (int b0 = 0; b0 < B; b0 += 8) {
                    int nx = B - b0 < 8 ? B - b0 : 8;
                    dot8(wr, xq + (size_t)b0 * nb, (size_t)nb, nx, nb, dT + b0, sT + b0, (size_t)Bp, out);
                    for (int j = 0; j < nx; j++)
                        y[(size_t)(b0 + j) * ldy + m] = out[j];
                }
            }
        }
    }
    free(dT);
#else
    kdot_fn dot = quant_dot(W->type);
    if (!xq)
        return err_set(e, PWB_ENOMEM, "kernel_matmul: out of memory");
#pragma omp parallel if (par)
    {
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++)
            kx_quantize(x + (size_t)b * ldx, xq + (size_t)b * nb, nb);
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
            const void *wr = wdata + (size_t)m * row_bytes;
            float out[KX_TILE];
            for (int b0 = 0; b0 < B; b0 += KX_TILE) {
                int nx = B - b0 < KX_TILE ? B - b0 : KX_TILE;
                dot(wr, xq + (size_t)b0 * nb, (size_t)nb, nx, nb, out);
                for (int j = 0; j < nx; j++)
                    y[(size_t)(b0 + j) * ldy + m] = out[j];
            }
        }
    }
#endif
    free(xq);
    return PWB_OK;
}

/* The checks every y = x W^T entry point makes; M and K come back. */
static int check_product(const pwb_tensor *W, const float *x, size_t ldx, int B, const float *y, size_t ldy,
                         int64_t *M, int64_t *K, const char *fn, pwb_err *e)
{
    int rc = check_weight(W, M, K, e);
    if (rc)
        return rc;
    if (B < 0 || (B > 0 && (!x || !y)) || ldx < (size_t)*K || ldy < (size_t)*M)
        return err_set(e, PWB_EINVAL, "%s: bad arguments for '%s'", fn, W->name ? W->name : "?");
    return PWB_OK;
}

int kernel_matmul_ex(const pwb_tensor *W, const float *x, size_t ldx, int B, float *y, size_t ldy,
                     pwb_err *e)
{
    int64_t M, K;
    int rc = check_product(W, x, ldx, B, y, ldy, &M, &K, "kernel_matmul", e);
    if (rc || B == 0)
        return rc;
    size_t row_bytes = quant_row_size(W->type, K);
    const unsigned char *wdata = W->data;
    int par = (double)M * (double)K * B >= PAR_MIN_WORK;

    if (quant_block_size(W->type) == 1) {
        /* F32 / F16 / BF16: float dot products, no activation quantization. */
#pragma omp parallel for schedule(static) if (par)
        for (int64_t m = 0; m < M; m++) {
            const void *wr = wdata + (size_t)m * row_bytes;
            for (int b0 = 0; b0 < B; b0 += KX_TILE) {
                int nx = B - b0 < KX_TILE ? B - b0 : KX_TILE;
                float out[KX_TILE];
                kdot_float(W->type, wr, x + (size_t)b0 * ldx, ldx, nx, K, out);
                for (int j = 0; j < nx; j++)
                    y[(size_t)(b0 + j) * ldy + m] = out[j];
            }
        }
        return PWB_OK;
    }
#ifdef KERNELS_AVX2
    const int int8_dot = quant_dot8(W->type) != NULL;
#else
    const int int8_dot = quant_dot(W->type) != NULL;
#endif
    /* A type without an 8-bit-activation kernel (Q5_0, the K-quants below Q4_K) is computed
     * exactly: dequantized rows dotted with F32 activations. */
    if (!int8_dot)
        return kernel_matmul_exact(W, x, ldx, B, y, ldy, e);
    return matmul_quant(W, M, K, x, ldx, B, y, ldy, par, e);
}

/* Rows of W dequantized per panel into a per-thread buffer (at most KF_PANEL_FLOATS floats, at
 * least one tile of rows), then KF_ROWS x KF_WIDE (where the ISA has that tile) and KF_ROWS x KF_COLS
 * tiles of F32 dot products. 128 KiB panels: each panel streams the whole batch's activations past
 * it once, so larger panels mean fewer passes, while it still sits in L2 (rank scoring: 64 KiB
 * panels 8.8 examples/s, 128 KiB 9.0-9.4, 256 KiB 9.4, 512 KiB 8.4). */
#define KF_PANEL_FLOATS (32 * 1024)
#define KF_PANEL_MAX_ROWS 256

/* Small batches (B <= KF_COLS, decoding): no panel; each tile of KF_ROWS weight rows is
 * dequantized a chunk at a time and dotted with only the B real activation rows, on the kernel
 * pool. */
typedef struct small_job {
    int type;
    const unsigned char *w;
    size_t row_bytes;
    int64_t M, K;
    const float *x;
    size_t ldx;
    int B;
    float *y;
    size_t ldy;
} small_job;

static void small_part(void *arg, int64_t t0, int64_t t1)
{
    const small_job *j = arg;
    const float *xr[KF_COLS];
    for (int c = 0; c < KF_COLS; c++)
        xr[c] = j->x + (size_t)(c < j->B ? c : 0) * j->ldx;
    for (int64_t g = t0; g < t1; g++) {
        const int64_t m0 = g * KF_ROWS;
        const int nr = j->M - m0 < KF_ROWS ? (int)(j->M - m0) : KF_ROWS;
        float out[KF_ROWS][KF_COLS];
        kimpl.fused(j->type, j->w + (size_t)m0 * j->row_bytes, j->row_bytes, nr, xr, j->B, j->K, out);
        for (int c = 0; c < j->B; c++)
            for (int r = 0; r < nr; r++)
                j->y[(size_t)c * j->ldy + (size_t)(m0 + r)] = out[r][c];
    }
}

int kernel_matmul_exact(const pwb_tensor *W, const float *x, size_t ldx, int B, float *y, size_t ldy,
                        pwb_err *e)
{
    int64_t M, K;
    int rc = check_product(W, x, ldx, B, y, ldy, &M, &K, "kernel_matmul_exact", e);
    if (rc || B == 0)
        return rc;
    if (quant_block_size(W->type) == 1)
        return kernel_matmul_ex(W, x, ldx, B, y, ldy, e); /* float weights: already exact */
    const size_t row_bytes = quant_row_size(W->type, K);
    const unsigned char *wdata = W->data;
    if (B <= KF_COLS) {
        small_job j = {W->type, wdata, row_bytes, M, K, x, ldx, B, y, ldy};
        kpool_run(small_part, &j, (M + KF_ROWS - 1) / KF_ROWS, pool_threads((double)M * (double)K * B >= PAR_MIN_WORK));
        return PWB_OK;
    }
    int64_t panel_rows = KF_PANEL_FLOATS / K / KF_ROWS * KF_ROWS;
    if (panel_rows < KF_ROWS)
        panel_rows = KF_ROWS;
    if (panel_rows > KF_PANEL_MAX_ROWS)
        panel_rows = KF_PANEL_MAX_ROWS;
    const int64_t n_panels = (M + panel_rows - 1) / panel_rows;
    int par = (double)M * (double)K * B >= PAR_MIN_WORK, failed = 0;
#pragma omp parallel if (par) reduction(| : failed)
    {
        float *panel = kernel_alloc_f32((size_t)(panel_rows * K));
        if (!panel)
            failed = 1;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_panels; p++) {
            if (failed)
                continue;
            const int64_t m0 = p * panel_rows, mp = M - m0 < panel_rows ? M - m0 : panel_rows;
            const float *rows[KF_PANEL_MAX_ROWS];
            for (int64_t r = 0; r < mp; r++) {
                kx_dequant(W->type, wdata + (size_t)(m0 + r) * row_bytes, panel + (size_t)(r * K), K);
                rows[r] = panel + (size_t)(r * K);
            }
            /* Activation tiles outside, weight rows inside: a tile's few activation rows stay in
             * L1 while the panel (in L2) streams past them; the other way round, a long batch's
             * activations were fetched from L3 once per 4 weight rows. */
            for (int b0 = 0; b0 < B;) {
                /* KF_WIDE rows at a time where the ISA has that tile, then KF_COLS */
                const int cols = kimpl.wide && B - b0 >= KF_WIDE ? KF_WIDE : KF_COLS;
                const int nb = B - b0 < cols ? B - b0 : cols;
                const float *xr[KF_WIDE];
                for (int j = 0; j < cols; j++)
                    xr[j] = x + (size_t)(b0 + (j < nb ? j : 0)) * ldx;
                for (int64_t r0 = 0; r0 < mp; r0 += KF_ROWS) {
                    const int nr = mp - r0 < KF_ROWS ? (int)(mp - r0) : KF_ROWS;
                    const float *w[KF_ROWS];
                    float out6[KF_ROWS][KF_WIDE], out3[KF_ROWS][KF_COLS];
                    for (int r = 0; r < KF_ROWS; r++)
                        w[r] = rows[r0 + (r < nr ? r : 0)];
                    if (cols == KF_WIDE)
                        kimpl.wide(w, xr, K, out6);
                    else
                        kimpl.tile(w, xr, K, out3);
                    const float *out = cols == KF_WIDE ? &out6[0][0] : &out3[0][0]; /* [KF_ROWS][cols] */
                    for (int j = 0; j < nb; j++)
                        for (int r = 0; r < nr; r++)
                            y[(size_t)(b0 + j) * ldy + (size_t)(m0 + r0 + r)] = out[r * cols + j];
                }
                b0 += nb;
            }
        }
        free(panel);
    }
    if (failed)
        return err_set(e, PWB_ENOMEM, "kernel_matmul_exact: out of memory");
    return PWB_OK;
}

int kernel_matmul(const pwb_tensor *W, const float *x, int B, float *y, pwb_err *e)
{
    if (!W)
        return err_set(e, PWB_EINVAL, "kernel_matmul: no weight");
    int64_t K = W->ne[0], M = W->ne[1] * W->ne[2] * W->ne[3];
    return kernel_matmul_ex(W, x, K > 0 ? (size_t)K : 0, B, y, M > 0 ? (size_t)M : 0, e);
}

/* Panels of KT_PANEL_FLOATS (32 KiB, in L1) are dequantized into a per-thread buffer and multiplied
 * into dx with a register-tiled kernel. Narrow and tall panels: KT_MIN_COLS columns (or one block of
 * the K-quants, 256) by as many rows as fit, since every panel loads and stores its columns of dx
 * once for all its rows (128 x 64 against 32 x 256: a soft-prompt step 1.94 -> 1.73 s). A dx element
 * still sums over the rows in order, so the split does not change a bit. */
#define KT_PANEL_FLOATS 8192
#define KT_MIN_COLS 64
#define KT_MAX_ROWS (KT_PANEL_FLOATS / KT_MIN_COLS)

int kernel_matmul_t(const pwb_tensor *W, const float *dy, int B, float *dx, int accumulate, pwb_err *e)
{
    int64_t M, K;
    int rc = check_weight(W, &M, &K, e);
    if (rc)
        return rc;
    if (B < 0 || (B > 0 && (!dy || !dx)))
        return err_set(e, PWB_EINVAL, "kernel_matmul_t: bad arguments for '%s'", W->name ? W->name : "?");
    if (B == 0)
        return PWB_OK;
    if (!accumulate)
        memset(dx, 0, (size_t)B * (size_t)K * sizeof *dx);
    const int64_t bs = (int64_t)quant_block_size(W->type), nblk = K / bs;
    const size_t row_bytes = quant_row_size(W->type, K), tsize = quant_type_size(W->type);
    const unsigned char *wdata = W->data;
    const int is_f32 = W->type == DT_F32;
    const int64_t kt_cols = bs > KT_MIN_COLS ? bs : KT_MIN_COLS, kt_rows = KT_PANEL_FLOATS / kt_cols;
    int par = (double)M * (double)K * B >= PAR_MIN_WORK;
    int failed = 0;
    /* Each thread owns a range of columns (whole blocks), so dx needs no reduction. */
#pragma omp parallel if (par) reduction(| : failed)
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        int64_t kb0 = nblk * t / nt, kb1 = nblk * (t + 1) / nt;
        int64_t k_end = kb1 * bs;
        float *panel = is_f32 ? NULL : kernel_alloc_f32(KT_PANEL_FLOATS);
        if (!is_f32 && !panel)
            failed = 1;
        const float *rows[KT_MAX_ROWS];
        for (int64_t kc = kb0 * bs; !failed && kc < k_end; kc += kt_cols) {
            int cn = (int)(k_end - kc < kt_cols ? k_end - kc : kt_cols);  /* a multiple of bs */
            for (int64_t m0 = 0; m0 < M; m0 += kt_rows) {
                int mp = (int)(M - m0 < kt_rows ? M - m0 : kt_rows);
                for (int r = 0; r < mp; r++) {
                    const unsigned char *src = wdata + (size_t)(m0 + r) * row_bytes + (size_t)(kc / bs) * tsize;
                    if (is_f32) {
                        rows[r] = (const float *)(const void *)src;
                    } else {
                        kx_dequant(W->type, src, panel + (size_t)(r * kt_cols), cn);
                        rows[r] = panel + (size_t)(r * kt_cols);
                    }
                }
                kimpl.panel(rows, mp, dy + m0, (size_t)M, B, dx + kc, (size_t)K, cn);
            }
        }
        free(panel);
    }
    if (failed)
        return err_set(e, PWB_ENOMEM, "kernel_matmul_t: out of memory");
    return PWB_OK;
}

float *kernel_alloc_f32(size_t n)
{
    return aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) / 64 * 64);
}

int kernel_get_row(const pwb_tensor *W, int64_t row, float *dst, pwb_err *e)
{
    int64_t M, K;
    int rc = check_weight(W, &M, &K, e);
    if (rc)
        return rc;
    if (row < 0 || row >= M)
        return err_set(e, PWB_EINVAL, "tensor '%s': row %lld out of range [0, %lld)", W->name ? W->name : "?",
                       (long long)row, (long long)M);
    const unsigned char *src = (const unsigned char *)W->data + (size_t)row * quant_row_size(W->type, K);
    kx_dequant(W->type, src, dst, K);
    return PWB_OK;
}

/* ---- plain F32 helpers ---- */

void kernel_matmul_f32(const float *W, int M, int K, const float *x, int B, float *y)
{
    pwb_tensor t = {"f32", DT_F32, 2, {K, M, 1, 1}, W, (size_t)M * (size_t)K * sizeof(float)};
    kernel_matmul(&t, x, B, y, NULL);
}

void kernel_matmul_f32_t(const float *W, int M, int K, const float *x, int B, float *y)
{
    pwb_tensor t = {"f32", DT_F32, 2, {K, M, 1, 1}, W, (size_t)M * (size_t)K * sizeof(float)};
    kernel_matmul_t(&t, x, B, y, 0, NULL);
}

float kernel_dot_f32(const float *a, const float *b, int64_t n)
{
    float out;
    kdot_float(DT_F32, a, b, 0, 1, n, &out);
    return out;
}

void kernel_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    /* Simple enough for the compiler to vectorize at -O2 -march=native. */
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}
