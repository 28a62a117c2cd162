/* kernel_* against a naive reference: dequantize every weight row with dequant_row (checked on its
 * own in test_quant.c) and dot in double.
 *
 * Tolerance. For Q4_0/Q4_1/Q8_0/Q4_K/Q6_K weights the kernel rounds each activation to
 * d_x * round(x / d_x) with d_x = max|x| / 127 over its 32-element block, so each activation moves
 * by at most d_x / 2 and the dot product by at most sum_k |w_k| * d_x(k) / 2. That bound is exact
 * (round-to-nearest), so the test uses it, plus 1e-5 * sum_k |w_k x_k| for float rounding. It is
 * typically ~0.3 % of |y| and never loose enough to hide a wrong scale, nibble or sub-block (those
 * err by O(|y|)). Float weights (F32/F16/BF16) get only the float-rounding term. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/quant.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/rng.h"

static const int TYPES[] = {DT_F32, DT_F16, DT_BF16, DT_Q8_0, DT_Q4_0, DT_Q4_1, DT_Q4_K, DT_Q6_K};
#define NTYPES (int)(sizeof TYPES / sizeof TYPES[0])

static int is_quant(int type)
{
    return type != DT_F32 && type != DT_F16 && type != DT_BF16;
}

/* A random weight matrix of the given type. mode 0: quantized from normal floats; mode 1: random
 * block bytes with sane fp16 scales, so every bit pattern (negative Q6_K scales, high 6-bit scale
 * bits, extreme nibbles) is exercised. */
static void *make_weight(int type, int M, int K, int mode, pwb_rng *r, pwb_tensor *t)
{
    size_t rb = quant_row_size(type, K);
    unsigned char *w = NULL;
    cr_assert_eq(posix_memalign((void **)&w, 32, rb * (size_t)M + 1), 0);
    float *row = malloc(sizeof(float) * (size_t)K);
    for (int m = 0; m < M; m++) {
        for (int k = 0; k < K; k++)
            row[k] = (float)rng_normal(r) * (k % 37 == 0 ? 3.0f : 0.5f);
        cr_assert_eq(quantize_row(type, row, w + rb * (size_t)m, K), PWB_OK);
    }
    free(row);
    if (mode == 1 && is_quant(type)) {
        size_t bsz = quant_type_size(type);
        for (size_t i = 0; i < rb * (size_t)M; i++)
            w[i] = (uint8_t)rng_below(r, 256);
        for (size_t b = 0; b < rb * (size_t)M / bsz; b++) {
            unsigned char *blk = w + b * bsz;
            uint16_t d = f32_to_fp16(0.01f + 0.05f * (float)rng_uniform(r));
            uint16_t m = f32_to_fp16((float)rng_normal(r) * 0.1f);
            switch (type) {
            case DT_Q6_K: memcpy(blk + 208, &d, 2); break;
            case DT_Q4_1: memcpy(blk, &d, 2); memcpy(blk + 2, &m, 2); break;
            case DT_Q4_K: memcpy(blk, &d, 2); m = f32_to_fp16(fabsf(fp16_to_f32(m))); memcpy(blk + 2, &m, 2); break;
            default: memcpy(blk, &d, 2); break;
            }
        }
    }
    pwb_tensor tt = {"w", type, 2, {K, M, 1, 1}, w, rb * (size_t)M};
    *t = tt;
    return w;
}

/* Reference y and per-element tolerance. */
static void reference(const pwb_tensor *W, const float *x, int B, double *y, double *tol)
{
    int K = (int)W->ne[0], M = (int)W->ne[1];
    size_t rb = quant_row_size(W->type, K);
    float *wr = malloc(sizeof(float) * (size_t)K);
    for (int m = 0; m < M; m++) {
        cr_assert_eq(dequant_row(W->type, (const unsigned char *)W->data + rb * (size_t)m, wr, K), PWB_OK);
        for (int b = 0; b < B; b++) {
            const float *xb = x + (size_t)b * K;
            double s = 0, sabs = 0, qerr = 0;
            for (int k = 0; k < K; k++) {
                s += (double)wr[k] * xb[k];
                sabs += fabs((double)wr[k] * xb[k]);
            }
            if (is_quant(W->type))
                for (int k0 = 0; k0 < K; k0 += 32) {
                    double amax = 0, wsum = 0;
                    for (int k = k0; k < k0 + 32; k++) {
                        amax = fmax(amax, fabs(xb[k]));
                        wsum += fabs(wr[k]);
                    }
                    qerr += wsum * amax / 127.0 / 2.0;
                }
            y[(size_t)b * M + m] = s;
            tol[(size_t)b * M + m] = 1.0001 * qerr + 1e-5 * sabs + 1e-6;
        }
    }
    free(wr);
}

static void check_matmul(int type, int M, int K, int B, int mode, pwb_rng *r)
{
    pwb_tensor W;
    void *wmem = make_weight(type, M, K, mode, r, &W);
    float *x = malloc(sizeof(float) * (size_t)B * K);
    float *y = malloc(sizeof(float) * (size_t)B * M);
    double *ref = malloc(sizeof(double) * (size_t)B * M), *tol = malloc(sizeof(double) * (size_t)B * M);
    for (int i = 0; i < B * K; i++)
        x[i] = (float)rng_normal(r) * (i % 53 == 0 ? 5.0f : 1.0f);
    pwb_err e;
    cr_assert_eq(kernel_matmul(&W, x, B, y, &e), PWB_OK, "%s", e.msg);
    reference(&W, x, B, ref, tol);
    double se = 0, sr = 0;
    for (int i = 0; i < B * M; i++) {
        cr_assert(fabs(y[i] - ref[i]) <= tol[i], "%s M %d K %d B %d mode %d: y[%d][%d] = %.7g, reference %.7g (tol %.3g)",
                  quant_type_name(type), M, K, B, mode, i / M, i % M, y[i], ref[i], tol[i]);
        se += (y[i] - ref[i]) * (y[i] - ref[i]);
        sr += ref[i] * ref[i];
    }
    /* Over a whole output the rounding errors average out: ~0.5 % here, where every 53rd input is
     * a 5-sigma outlier that coarsens its block's int8 step. */
    if (B * M >= 64)
        cr_assert(sqrt(se / sr) < (is_quant(type) ? 2e-2 : 1e-6), "%s: relative rms error %g",
                  quant_type_name(type), sqrt(se / sr));
    free(x);
    free(y);
    free(ref);
    free(tol);
    free(wmem);
}

Test(kernels, matmul_every_type_and_shape)
{
    pwb_rng r;
    rng_init(&r, 2024);
    static const int Ks[] = {256, 512, 1536};
    static const int Ms[] = {1, 5, 70};
    static const int Bs[] = {1, 3, 17};
    for (int t = 0; t < NTYPES; t++)
        for (int ki = 0; ki < 3; ki++)
            for (int mi = 0; mi < 3; mi++)
                for (int bi = 0; bi < 3; bi++)
                    check_matmul(TYPES[t], Ms[mi], Ks[ki], Bs[bi], 0, &r);
}

Test(kernels, matmul_random_block_bytes)
{
    pwb_rng r;
    rng_init(&r, 77);
    for (int t = 0; t < NTYPES; t++)
        if (is_quant(TYPES[t])) {
            check_matmul(TYPES[t], 33, 512, 1, 1, &r);
            check_matmul(TYPES[t], 33, 512, 6, 1, &r);
        }
}

Test(kernels, matmul_small_and_odd_rows)
{
    pwb_rng r;
    rng_init(&r, 5);
    /* 32-element blocks; float types with row lengths that are not a multiple of 8 or 16 */
    static const int qtypes[] = {DT_Q8_0, DT_Q4_0, DT_Q4_1};
    for (int t = 0; t < 3; t++) {
        check_matmul(qtypes[t], 3, 32, 2, 0, &r);
        check_matmul(qtypes[t], 9, 96, 5, 0, &r);
    }
    static const int ftypes[] = {DT_F32, DT_F16, DT_BF16};
    static const int odd[] = {1, 7, 13, 24, 40};
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < 5; k++)
            check_matmul(ftypes[t], 4, odd[k], 3, 0, &r);
}

Test(kernels, threads_and_batching_do_not_change_results)
{
    pwb_rng r;
    rng_init(&r, 9);
    for (int t = 0; t < NTYPES; t++) {
        pwb_tensor W;
        void *wmem = make_weight(TYPES[t], 300, 512, 0, &r, &W);
        float *x = malloc(sizeof(float) * 8 * 512), *y1 = malloc(sizeof(float) * 8 * 300),
              *y2 = malloc(sizeof(float) * 8 * 300);
        for (int i = 0; i < 8 * 512; i++)
            x[i] = (float)rng_normal(&r);
        int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        cr_assert_eq(kernel_matmul(&W, x, 8, y1, NULL), PWB_OK);
        omp_set_num_threads(2);
        cr_assert_eq(kernel_matmul(&W, x, 8, y2, NULL), PWB_OK);
        omp_set_num_threads(saved);
        cr_assert_eq(memcmp(y1, y2, sizeof(float) * 8 * 300), 0, "%s", quant_type_name(TYPES[t]));
        /* A row's result does not depend on its batch, to the bit: row 5 alone, and rows 5-7 as a
         * batch of 3, give the same numbers as inside the batch of 8. */
        cr_assert_eq(kernel_matmul(&W, x + 5 * 512, 1, y2, NULL), PWB_OK);
        cr_assert_eq(memcmp(y1 + 5 * 300, y2, sizeof(float) * 300), 0, "%s alone", quant_type_name(TYPES[t]));
        cr_assert_eq(kernel_matmul(&W, x + 5 * 512, 3, y2, NULL), PWB_OK);
        cr_assert_eq(memcmp(y1 + 5 * 300, y2, sizeof(float) * 3 * 300), 0, "%s in 3", quant_type_name(TYPES[t]));
        free(x);
        free(y1);
        free(y2);
        free(wmem);
    }
}

Test(kernels, matmul_ex_strides)
{
    pwb_rng r;
    rng_init(&r, 11);
    pwb_tensor W;
    void *wmem = make_weight(DT_Q4_1, 20, 64, 0, &r, &W);
    float x[3 * 100], y[3 * 50], yref[3 * 20];
    for (int i = 0; i < 300; i++)
        x[i] = (float)rng_normal(&r);
    float xd[3 * 64];
    for (int b = 0; b < 3; b++)
        memcpy(xd + b * 64, x + b * 100, 64 * sizeof(float));
    for (int i = 0; i < 150; i++)
        y[i] = -999;
    cr_assert_eq(kernel_matmul_ex(&W, x, 100, 3, y, 50, NULL), PWB_OK);
    cr_assert_eq(kernel_matmul(&W, xd, 3, yref, NULL), PWB_OK);
    for (int b = 0; b < 3; b++) {
        cr_assert_eq(memcmp(y + b * 50, yref + b * 20, 20 * sizeof(float)), 0);
        cr_assert_eq(y[b * 50 + 20], -999);  /* nothing written past M */
    }
    free(wmem);
}

/* dx (accumulated onto `start` in every element) against the double-precision sum
 * start + sum_m dy[b][m] * w[m][k], within 1e-5 of the sum of magnitudes. */
static void assert_transposed_sum(const float *dy, const float *w, const float *dx, int B, int M, int K, double start,
                                  const char *what)
{
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++) {
            double s = start, sabs = start;
            for (int m = 0; m < M; m++) {
                s += (double)dy[b * M + m] * w[m * K + k];
                sabs += fabs((double)dy[b * M + m] * w[m * K + k]);
            }
            cr_assert(fabs(dx[b * K + k] - s) <= 1e-5 * sabs, "%s B %d dx[%d][%d] %g vs %g", what, B, b, k,
                      dx[b * K + k], s);
        }
}

Test(kernels, matmul_t_every_type)
{
    pwb_rng r;
    rng_init(&r, 31);
    for (int t = 0; t < NTYPES + 2; t++)
        for (int bi = 0; bi < 3; bi++) {
            /* two extra cases: float rows with odd lengths (column tails) */
            int type = t < NTYPES ? TYPES[t] : t == NTYPES ? DT_F32 : DT_F16;
            int M = t < NTYPES ? 37 : 40, K = t < NTYPES ? 512 : 13 + 8 * (t - NTYPES) * 5, B = bi == 2 ? 9 : bi ? 3 : 1;
            pwb_tensor W;
            void *wmem = make_weight(type, M, K, 0, &r, &W);
            float *dy = malloc(sizeof(float) * B * M), *dx = malloc(sizeof(float) * B * K);
            float *w = malloc(sizeof(float) * M * K);
            for (int i = 0; i < B * M; i++)
                dy[i] = (float)rng_normal(&r);
            for (int i = 0; i < B * K; i++)
                dx[i] = 1.0f;   /* accumulate onto ones */
            for (int m = 0; m < M; m++)
                dequant_row(W.type, (const unsigned char *)W.data + quant_row_size(W.type, K) * m, w + m * K, K);
            cr_assert_eq(kernel_matmul_t(&W, dy, B, dx, 1, NULL), PWB_OK);
            assert_transposed_sum(dy, w, dx, B, M, K, 1.0, quant_type_name(type));
            cr_assert_eq(kernel_matmul_t(&W, dy, B, dx, 0, NULL), PWB_OK);  /* overwrite */
            double s = 0;
            for (int m = 0; m < M; m++)
                s += (double)dy[(B - 1) * M + m] * w[m * K + 7];
            cr_assert(fabs(dx[(B - 1) * K + 7] - s) <= 1e-4 * (1 + fabs(s)));
            free(dy);
            free(dx);
            free(w);
            free(wmem);
        }
}

/* The transposed product on every ISA this CPU runs: close to the double-precision sum, and with
 * K a multiple of 8 (no scalar column tail) the same bits on each: each element is one chain of
 * FMAs over the weight rows in order, however wide the vectors. */
Test(kernels, matmul_t_every_isa_same_bits)
{
    static const char *isas[] = {"avx512", "avx2", "scalar"};
    static const int cases[][4] = {/* type, M, K, B */
                                   {DT_Q4_1, 37, 512, 9}, {DT_Q8_0, 70, 576, 5}, {DT_F32, 40, 13, 6},
                                   {DT_F32, 33, 200, 4}, {DT_F32, 65, 72, 1}, {DT_Q4_K, 9, 256, 7}};
    char saved[16];
    snprintf(saved, sizeof saved, "%s", kernel_isa());
    pwb_rng r;
    rng_init(&r, 5);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int type = cases[c][0], M = cases[c][1], K = cases[c][2], B = cases[c][3];
        pwb_tensor W;
        void *wmem = make_weight(type, M, K, 0, &r, &W);
        float *dy = malloc(sizeof(float) * B * M), *w = malloc(sizeof(float) * M * K);
        float *first = malloc(sizeof(float) * B * K), *dx = malloc(sizeof(float) * B * K);
        for (int i = 0; i < B * M; i++)
            dy[i] = (float)rng_normal(&r);
        for (int m = 0; m < M; m++)
            dequant_row(W.type, (const unsigned char *)W.data + quant_row_size(W.type, K) * m, w + m * K, K);
        int runs = 0;
        for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
            if (kernel_use_isa(isas[ii]) != PWB_OK)
                continue;
            float *out = runs ? dx : first;
            for (int i = 0; i < B * K; i++)
                out[i] = 0.5f;
            cr_assert_eq(kernel_matmul_t(&W, dy, B, out, 1, NULL), PWB_OK);
            assert_transposed_sum(dy, w, out, B, M, K, 0.5, isas[ii]);
            if (runs && K % 8 == 0)
                cr_assert_eq(memcmp(first, dx, sizeof(float) * B * K), 0, "%s %s M %d K %d B %d: other bits than %s",
                             isas[ii], quant_type_name(type), M, K, B, isas[0]);
            runs++;
        }
        cr_assert(runs >= 1);
        free(dy);
        free(w);
        free(first);
        free(dx);
        free(wmem);
    }
    cr_assert_eq(kernel_use_isa(saved), PWB_OK);
}

Test(kernels, get_row_and_f32_helpers)
{
    pwb_rng r;
    rng_init(&r, 3);
    pwb_tensor W;
    void *wmem = make_weight(DT_Q6_K, 4, 256, 0, &r, &W);
    float row[256], ref[256];
    cr_assert_eq(kernel_get_row(&W, 2, row, NULL), PWB_OK);
    dequant_row(DT_Q6_K, (const unsigned char *)W.data + 2 * 210, ref, 256);
    cr_assert_eq(memcmp(row, ref, sizeof row), 0);
    pwb_err e;
    cr_assert_eq(kernel_get_row(&W, 4, row, &e), PWB_EINVAL);
    /* every type: the (SIMD) row dequantizer agrees with dequant_row up to FMA rounding */
    for (int t = 0; t < NTYPES; t++) {
        pwb_tensor T;
        void *tm = make_weight(TYPES[t], 3, 256, 1, &r, &T);
        cr_assert_eq(kernel_get_row(&T, 1, row, &e), PWB_OK, "%s", e.msg);
        dequant_row(TYPES[t], (const unsigned char *)T.data + quant_row_size(TYPES[t], 256), ref, 256);
        for (int k = 0; k < 256; k++)
            cr_assert(fabsf(row[k] - ref[k]) <= 1e-6f * fabsf(ref[k]) + 1e-7f, "%s k %d: %g vs %g",
                      quant_type_name(TYPES[t]), k, row[k], ref[k]);
        free(tm);
    }
    cr_assert_eq(kernel_get_row(&W, -1, row, &e), PWB_EINVAL);
    free(wmem);

    /* y = x W^T and y = x W for a [3][5] matrix */
    float Wf[15], x2[2 * 5], xt[2 * 3], y[2 * 5];
    for (int i = 0; i < 15; i++)
        Wf[i] = (float)(i - 7);
    for (int i = 0; i < 10; i++)
        x2[i] = (float)i * 0.5f;
    for (int i = 0; i < 6; i++)
        xt[i] = (float)(i + 1);
    kernel_matmul_f32(Wf, 3, 5, x2, 2, y);
    for (int b = 0; b < 2; b++)
        for (int m = 0; m < 3; m++) {
            float s = 0;
            for (int k = 0; k < 5; k++)
                s += Wf[m * 5 + k] * x2[b * 5 + k];
            cr_assert_float_eq(y[b * 3 + m], s, 1e-5);
        }
    kernel_matmul_f32_t(Wf, 3, 5, xt, 2, y);
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 5; k++) {
            float s = 0;
            for (int m = 0; m < 3; m++)
                s += Wf[m * 5 + k] * xt[b * 3 + m];
            cr_assert_float_eq(y[b * 5 + k], s, 1e-5);
        }
    float a[37], b2[37];
    double s = 0;
    for (int i = 0; i < 37; i++) {
        a[i] = (float)i;
        b2[i] = 1.0f / (float)(i + 1);
        s += a[i] * b2[i];
    }
    cr_assert_float_eq(kernel_dot_f32(a, b2, 37), s, 1e-4);
    kernel_axpy_f32(a, 2.0f, b2, 37);
    cr_assert_float_eq(a[36], 36.0f + 2.0f / 37.0f, 1e-5);
}

Test(kernels, errors)
{
    unsigned char buf[64] = {0};
    float x[32] = {0}, y[4];
    pwb_err e;
    pwb_tensor q5 = {"blk.3.attn_q.weight", 20 /* IQ4_NL */, 2, {32, 1, 1, 1}, buf, 18};
    cr_assert_eq(kernel_matmul(&q5, x, 1, y, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "blk.3.attn_q.weight") != NULL, "%s", e.msg);
    cr_assert_eq(kernel_matmul_t(&q5, x, 1, y, 0, &e), PWB_EUNSUP);
    cr_assert_eq(kernel_get_row(&q5, 0, y, &e), PWB_EUNSUP);
    pwb_tensor f = {"w", DT_F32, 2, {8, 2, 1, 1}, buf, 64};
    cr_assert_eq(kernel_matmul(&f, x, -1, y, &e), PWB_EINVAL);
    cr_assert_eq(kernel_matmul_ex(&f, x, 4, 1, y, 2, &e), PWB_EINVAL);   /* ldx < K */
    cr_assert_eq(kernel_matmul(&f, x, 0, y, &e), PWB_OK);
    pwb_tensor shortw = {"w", DT_F32, 2, {8, 4, 1, 1}, buf, 64};          /* needs 128 bytes */
    cr_assert_eq(kernel_matmul(&shortw, x, 1, y, &e), PWB_EINVAL);
    cr_assert(strcmp(kernel_isa(), "avx512") == 0 || strcmp(kernel_isa(), "avx2") == 0 ||
              strcmp(kernel_isa(), "scalar") == 0);
    cr_assert_eq(kernel_use_isa("no-such-isa"), PWB_EUNSUP);
}

/* The real default model's matrices (Q4_1 and the Q8_0 tied embedding/output), if present. */
Test(kernels, smollm2_matrices_if_present)
{
    const char *root = getenv("PWB_ROOT");
    pwb_buf p;
    buf_init(&p);
    buf_printf(&p, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", root && *root ? root : ".");
    if (!file_exists(p.data)) {
        buf_free(&p);
        cr_skip_test("models/ has no SmolLM2 GGUF (make model)");
    }
    gguf_file *g;
    pwb_err e;
    cr_assert_eq(gguf_open(&g, p.data, &e), PWB_OK, "%s", e.msg);
    pwb_rng r;
    rng_init(&r, 8);
    static const char *names[] = {"blk.0.ffn_down.weight", "blk.29.attn_q.weight", "blk.7.ffn_up.weight"};
    for (int i = 0; i < 3; i++) {
        const pwb_tensor *W = gguf_find_tensor(g, names[i]);
        cr_assert_not_null(W, "%s", names[i]);
        int M = (int)W->ne[1], K = (int)W->ne[0], B = 3;
        float *x = malloc(sizeof(float) * B * K), *y = malloc(sizeof(float) * B * M);
        double *ref = malloc(sizeof(double) * B * M), *tol = malloc(sizeof(double) * B * M);
        for (int k = 0; k < B * K; k++)
            x[k] = (float)rng_normal(&r);
        cr_assert_eq(kernel_matmul(W, x, B, y, &e), PWB_OK, "%s", e.msg);
        reference(W, x, B, ref, tol);
        for (int k = 0; k < B * M; k++)
            cr_assert(fabs(y[k] - ref[k]) <= tol[k], "%s y %d: %g vs %g", names[i], k, y[k], ref[k]);
        free(x);
        free(y);
        free(ref);
        free(tol);
    }
    /* token_embd (Q8_0, 49152 x 576): an embedding row, and a few logits against it */
    const pwb_tensor *E = gguf_find_tensor(g, "token_embd.weight");
    cr_assert(E && E->type == DT_Q8_0);
    float row[576];
    cr_assert_eq(kernel_get_row(E, 12345, row, &e), PWB_OK);
    float *logits = malloc(sizeof(float) * 49152);
    cr_assert_eq(kernel_matmul(E, row, 1, logits, &e), PWB_OK);
    /* a row dotted with itself is large and positive; check it against the float dot */
    double self = 0;
    for (int k = 0; k < 576; k++)
        self += (double)row[k] * row[k];
    cr_assert(fabs(logits[12345] - self) <= 0.01 * self, "%g vs %g", logits[12345], self);
    free(logits);
    gguf_close(g);
    buf_free(&p);
}

/* kernel_matmul_exact: the dequantized weights dotted in F32, so against the double reference only
 * float rounding remains (1e-5 of sum |w x|, no activation term); strided rows; odd M, K and B
 * (partial tiles); and a row's result is the same whatever its batch, its tile and the threads. */
Test(kernels, matmul_exact_every_type)
{
    pwb_rng r;
    rng_init(&r, 21);
    static const int shapes[][3] = {{37, 64, 1}, {300, 512, 8}, {5, 96, 7}, {64, 256, 4}, {290, 1536, 5}};
    for (int t = 0; t < NTYPES; t++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int M = shapes[s][0], K = shapes[s][1], B = shapes[s][2];
            if (K % quant_block_size(TYPES[t]))
                continue;
            pwb_tensor W;
            void *wmem = make_weight(TYPES[t], M, K, s % 2, &r, &W);
            const size_t ldx = (size_t)K + 3, ldy = (size_t)M + 2;
            float *x = malloc(sizeof(float) * ldx * B), *xd = malloc(sizeof(float) * (size_t)K * B);
            float *y = malloc(sizeof(float) * ldy * B), *y1 = malloc(sizeof(float) * (size_t)M);
            double *ref = malloc(sizeof(double) * (size_t)B * M), *tol = malloc(sizeof(double) * (size_t)B * M);
            for (int b = 0; b < B; b++)
                for (int k = 0; k < K; k++)
                    xd[(size_t)b * K + k] = x[(size_t)b * ldx + k] = (float)rng_normal(&r) * (k % 53 ? 1.0f : 5.0f);
            for (size_t i = 0; i < ldy * B; i++)
                y[i] = -999;
            pwb_err e;
            cr_assert_eq(kernel_matmul_exact(&W, x, ldx, B, y, ldy, &e), PWB_OK, "%s", e.msg);
            reference(&W, xd, B, ref, tol);
            for (int b = 0; b < B; b++) {
                for (int m = 0; m < M; m++) {
                    const float *row = x + (size_t)b * ldx;
                    double sabs = 0, got = y[(size_t)b * ldy + m], want = ref[(size_t)b * M + m];
                    float wr[1536];
                    dequant_row(TYPES[t], (const unsigned char *)W.data + quant_row_size(TYPES[t], K) * (size_t)m, wr,
                                K);
                    for (int k = 0; k < K; k++)
                        sabs += fabs((double)wr[k] * row[k]);
                    cr_assert(fabs(got - want) <= 1e-5 * sabs + 1e-6, "%s M %d K %d B %d: y[%d][%d] = %.9g, want %.9g",
                              quant_type_name(TYPES[t]), M, K, B, b, m, got, want);
                }
                cr_assert_eq(y[(size_t)b * ldy + M], -999, "written past M");
            }
            /* the last row alone, on one thread, gives the same bits */
            int saved = omp_get_max_threads();
            omp_set_num_threads(1);
            cr_assert_eq(kernel_matmul_exact(&W, x + (size_t)(B - 1) * ldx, ldx, 1, y1, (size_t)M, NULL), PWB_OK);
            omp_set_num_threads(saved);
            cr_assert_eq(memcmp(y1, y + (size_t)(B - 1) * ldy, sizeof(float) * (size_t)M), 0, "%s: batch-dependent",
                         quant_type_name(TYPES[t]));
            free(x);
            free(xd);
            free(y);
            free(y1);
            free(ref);
            free(tol);
            free(wmem);
        }
    }
    pwb_tensor W;
    void *wmem = make_weight(DT_Q4_1, 4, 64, 0, &r, &W);
    float x[64], y[4];
    cr_expect_eq(kernel_matmul_exact(&W, x, 32, 1, y, 4, NULL), PWB_EINVAL, "ldx < K");
    cr_expect_eq(kernel_matmul_exact(&W, x, 64, 1, y, 3, NULL), PWB_EINVAL, "ldy < M");
    free(wmem);
}

/* Random blocks of any quantized type (including those without a quantizer here): random bytes with
 * finite fp16 scales at the type's scale offsets. */
static void *random_blocks(int type, int M, int K, pwb_rng *r, pwb_tensor *t)
{
    static const struct { int type, off[2]; } scales[] = {
        {DT_Q4_0, {0, -1}}, {DT_Q4_1, {0, 2}}, {DT_Q8_0, {0, -1}}, {DT_Q5_0, {0, -1}}, {DT_Q5_1, {0, 2}},
        {DT_Q2_K, {80, 82}}, {DT_Q3_K, {108, -1}}, {DT_Q4_K, {0, 2}}, {DT_Q5_K, {0, 2}}, {DT_Q6_K, {208, -1}},
    };
    size_t rb = quant_row_size(type, K), bsz = quant_type_size(type);
    unsigned char *w = malloc(rb * (size_t)M + 1);
    for (size_t i = 0; i < rb * (size_t)M; i++)
        w[i] = (uint8_t)rng_below(r, 256);
    for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
        if (scales[s].type != type)
            continue;
        for (size_t b = 0; b < rb * (size_t)M / bsz; b++)
            for (int f = 0; f < 2 && scales[s].off[f] >= 0; f++) {
                uint16_t h = f32_to_fp16(f == 0 ? 0.01f + 0.05f * (float)rng_uniform(r) : (float)rng_normal(r) * 0.1f);
                memcpy(w + b * bsz + scales[s].off[f], &h, 2);
            }
    }
    pwb_tensor tt = {"w", type, 2, {K, M, 1, 1}, w, rb * (size_t)M};
    *t = tt;
    return w;
}

/* The small-batch exact product (B <= 3: weights dequantized per chunk, fused with the dot, on the
 * kernel pool) on every quantized type and every SIMD path this machine runs: within F32 rounding of
 * a double reference, and bit for bit what the same rows get inside a larger batch (the panel path)
 * and on one thread. Odd row counts (partial tiles), K with a partial chunk, strided rows. */
Test(kernels, matmul_exact_small_batches_every_type_and_isa)
{
    static const int qtypes[] = {DT_Q4_0, DT_Q4_1, DT_Q8_0, DT_Q5_0, DT_Q5_1,
                                 DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K};
    static const char *isas[] = {"avx512", "avx2", "scalar"};
    static const int shapes[][2] = {{1, 32}, {5, 96}, {9, 288}, {130, 576}, {3, 256}, {7, 768}, {66, 1280}};
    char saved[16];
    snprintf(saved, sizeof saved, "%s", kernel_isa());
    pwb_rng r;
    rng_init(&r, 77);
    int n_isas = 0;
    for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
        if (kernel_use_isa(isas[ii]) != PWB_OK)
            continue;
        n_isas++;
        for (size_t t = 0; t < sizeof qtypes / sizeof qtypes[0]; t++) {
            const int type = qtypes[t];
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                const int M = shapes[s][0], K = shapes[s][1];
                if (K % (int)quant_block_size(type))
                    continue;
                pwb_tensor W;
                void *wmem = random_blocks(type, M, K, &r, &W);
                const int BB = 7;
                const size_t ldx = (size_t)K + 5, ldy = (size_t)M + 1;
                float *x = malloc(sizeof(float) * ldx * BB), *xd = malloc(sizeof(float) * (size_t)K * BB);
                float *yb = malloc(sizeof(float) * ldy * BB), *y = malloc(sizeof(float) * ldy * 3);
                double *ref = malloc(sizeof(double) * (size_t)BB * M), *tol = malloc(sizeof(double) * (size_t)BB * M);
                for (int b = 0; b < BB; b++)
                    for (int k = 0; k < K; k++)
                        xd[(size_t)b * K + k] = x[(size_t)b * ldx + k] = (float)rng_normal(&r) * (k % 41 ? 1.0f : 4.0f);
                reference(&W, xd, BB, ref, tol);
                /* the kernels' dequantization (kernel_get_row) gives dequant_row's values exactly */
                for (int m = 0; m < M; m++) {
                    float a[1280], b[1280];
                    cr_assert_eq(kernel_get_row(&W, m, a, NULL), PWB_OK);
                    dequant_row(type, (const unsigned char *)W.data + quant_row_size(type, K) * (size_t)m, b, K);
                    cr_assert_eq(memcmp(a, b, sizeof(float) * (size_t)K), 0, "%s row %d: dequantized differently",
                                 quant_type_name(type), m);
                }
                cr_assert_eq(kernel_matmul_exact(&W, x, ldx, BB, yb, ldy, NULL), PWB_OK);
                for (int B = 1; B <= 3; B++) {
                    for (int rep = 0; rep < 2; rep++) { /* all threads, then one */
                        int nth = omp_get_max_threads();
                        if (rep)
                            omp_set_num_threads(1);
                        for (size_t i = 0; i < ldy * 3; i++)
                            y[i] = -999;
                        /* rows 4-6 of the batch, so x does not start at the buffer */
                        cr_assert_eq(kernel_matmul_exact(&W, x + 4 * ldx, ldx, B, y, ldy, NULL), PWB_OK);
                        omp_set_num_threads(nth);
                        for (int b = 0; b < B; b++) {
                            for (int m = 0; m < M; m++) {
                                double got = y[(size_t)b * ldy + m], want = ref[(size_t)(4 + b) * M + m];
                                double sabs = 0;
                                float wr[1280];
                                dequant_row(type, (const unsigned char *)W.data + quant_row_size(type, K) * (size_t)m,
                                            wr, K);
                                for (int k = 0; k < K; k++)
                                    sabs += fabs((double)wr[k] * xd[(size_t)(4 + b) * K + k]);
                                cr_assert(fabs(got - want) <= 1e-5 * sabs + 1e-6,
                                          "%s %s M %d K %d B %d: y[%d][%d] = %.9g, want %.9g", isas[ii],
                                          quant_type_name(type), M, K, B, b, m, got, want);
                            }
                            cr_assert_eq(memcmp(y + (size_t)b * ldy, yb + (size_t)(4 + b) * ldy, sizeof(float) * (size_t)M),
                                         0, "%s %s M %d K %d B %d rep %d: differs from the batch of 7", isas[ii],
                                         quant_type_name(type), M, K, B, rep);
                            cr_assert_eq(y[(size_t)b * ldy + M], -999, "written past M");
                        }
                        if (B < 3)
                            cr_assert_eq(y[(size_t)B * ldy], -999, "written past B");
                    }
                }
                free(x);
                free(xd);
                free(yb);
                free(y);
                free(ref);
                free(tol);
                free(wmem);
            }
        }
    }
    cr_assert_eq(kernel_use_isa(saved), PWB_OK);
    cr_assert(n_isas >= 1);
}
