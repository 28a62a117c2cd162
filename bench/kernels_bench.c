/* Kernel micro-benchmark: GFLOP/s of kernel_matmul for SmolLM2-135M's matrix shapes.
 * Not built by the Makefile; compile by hand with the project's flags, e.g.
 *   cc -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -Isrc $(pkg-config --cflags libcjson) \
 *      bench/kernels_bench.c src/engine/quant.c src/engine/kernels.c src/engine/kernels_avx2.c \
 *      src/util/[a-z]*.c $(pkg-config --libs libcjson) -lm -o build/kernels_bench
 *   OMP_NUM_THREADS=2 build/kernels_bench [--exact] [TYPE...]   (TYPE: Q4_1 Q8_0 Q4_0 Q4_K Q6_K F16 BF16 F32)
 * --exact times kernel_matmul_exact (F32 activations, the engine's default) instead of the
 * 8-bit-activation kernel_matmul.
 * With no TYPE (or with "model" alone) it also times a whole SmolLM2-shaped pass over distinct,
 * DRAM-resident weights, which is what decoding sees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/quant.h"
#include "util/rng.h"
#include "util/timer.h"

static const struct { const char *what; int M, K; } SHAPES[] = {
    {"attn_q/o 576x576", 576, 576},
    {"ffn_up   1536x576", 1536, 576},
    {"ffn_down 576x1536", 576, 1536},
    {"lm_head  49152x576", 49152, 576},
};

static int exact;

static int matmul(const pwb_tensor *W, const float *x, int B, float *y, pwb_err *e)
{
    if (!exact)
        return kernel_matmul(W, x, B, y, e);
    return kernel_matmul_exact(W, x, (size_t)W->ne[0], B, y, (size_t)W->ne[1], e);
}

static int type_by_name(const char *s)
{
    static const int all[] = {DT_F32, DT_F16, DT_BF16, DT_Q8_0, DT_Q4_0, DT_Q4_1, DT_Q4_K, DT_Q6_K};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, quant_type_name(all[i])) == 0)
            return all[i];
    return -1;
}

/* The machine is shared: report the fastest of many timed calls (each call's wall time, and its
 * process CPU time, which leaves out time spent descheduled), i.e. the least disturbed ones. */
static double bench_one(const pwb_tensor *W, const float *x, int B, float *y, double *per_cpu)
{
    pwb_err e;
    if (matmul(W, x, B, y, &e) != PWB_OK) {  /* also warms up */
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    double flops = 2.0 * (double)W->ne[0] * (double)W->ne[1] * B, best_w = 1e30, best_c = 1e30;
    double start = timer_wall();
    for (int call = 0; call < 2000 && timer_wall() - start < 1.5; call++) {
        double w0 = timer_wall(), c0 = timer_cpu();
        matmul(W, x, B, y, &e);
        double c = timer_cpu() - c0, w = timer_wall() - w0;
        best_w = w < best_w ? w : best_w;
        best_c = c < best_c ? c : best_c;
    }
    *per_cpu = flops / best_c / 1e9;
    return flops / best_w / 1e9;
}

/* kernel_matmul_t (dx = dy W, the backward pass to the inputs) for the Q4_1 shapes. */
static void bench_transposed(const float *x, float *y, pwb_rng *r)
{
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0] - 1; s++) {
        int M = SHAPES[s].M, K = SHAPES[s].K;
        size_t rb = quant_row_size(DT_Q4_1, K);
        unsigned char *w = malloc(rb * (size_t)M);
        float row[1536];
        for (int m = 0; m < M; m++) {
            for (int k = 0; k < K; k++)
                row[k] = (float)rng_normal(r) * 0.05f;
            quantize_row(DT_Q4_1, row, w + rb * (size_t)m, K);
        }
        pwb_tensor W = {"w", DT_Q4_1, 2, {K, M, 1, 1}, w, rb * (size_t)M};
        double g[2];
        for (int bi = 0; bi < 2; bi++) {
            int B = bi ? 32 : 1;
            double best = 1e30, start = timer_wall();
            for (int call = 0; call < 500 && timer_wall() - start < 1.0; call++) {
                double c0 = timer_cpu();
                kernel_matmul_t(&W, x, B, y, 0, NULL);
                double c = timer_cpu() - c0;
                best = c < best ? c : best;
            }
            g[bi] = 2.0 * M * K * B / best / 1e9;
        }
        printf("matmul_t Q4_1 %-20s B=1 %6.1f  B=32 %6.1f GFLOP per CPU-second\n", SHAPES[s].what, g[0], g[1]);
        free(w);
    }
}

/* A decode-like pass: SmolLM2-135M's 30 layers x 7 matrices plus the tied lm_head, all distinct
 * memory (~100 MB in Q4_1, more than the L3), so weights stream from DRAM as in a real forward. */
static void bench_model_pass(int type, int lm_type, const float *x, float *y, pwb_rng *r)
{
    static const int mats[7][2] = {{576, 576}, {192, 576}, {192, 576}, {576, 576}, {1536, 576}, {1536, 576}, {576, 1536}};
    enum { NL = 30, NM = NL * 7 + 1 };
    pwb_tensor W[NM];
    double flops1 = 0;
    for (int i = 0; i < NM; i++) {
        int lm = i == NM - 1, M = lm ? 49152 : mats[i % 7][0], K = lm ? 576 : mats[i % 7][1];
        int t = lm ? lm_type : type;
        size_t rb = quant_row_size(t, K);
        unsigned char *w = malloc(rb * (size_t)M);
        float row[1536];
        for (int m = 0; m < M; m++) {
            for (int k = 0; k < K; k++)
                row[k] = (float)rng_normal(r) * 0.05f;
            quantize_row(t, row, w + rb * (size_t)m, K);
        }
        pwb_tensor tt = {"w", t, 2, {K, M, 1, 1}, w, rb * (size_t)M};
        W[i] = tt;
        flops1 += 2.0 * M * K;
    }
    static const int Bs[] = {1, 8, 32};
    for (int bi = 0; bi < 3; bi++) {
        int B = Bs[bi];
        double best = 1e30, best_c = 1e30, start = timer_wall();
        for (int pass = 0; pass < 50 && timer_wall() - start < 3.0; pass++) {
            double t0 = timer_wall(), c0 = timer_cpu();
            for (int i = 0; i < NM; i++)
                matmul(&W[i], x, B, y, NULL);
            double t = timer_wall() - t0, c = timer_cpu() - c0;
            best = t < best ? t : best;
            best_c = c < best_c ? c : best_c;
        }
        printf("model pass %s + %s lm_head, B=%-2d: %7.2f ms/pass  %6.1f GFLOP/s  (%.0f tokens/s); "
               "%6.1f GFLOP per CPU-second\n", quant_type_name(type), quant_type_name(lm_type), B, best * 1e3,
               flops1 * B / best / 1e9, B / best, flops1 * B / best_c / 1e9);
    }
    for (int i = 0; i < NM; i++)
        free((void *)W[i].data);
}

int main(int argc, char **argv)
{
    const char *def[] = {"Q4_1", "Q8_0", "Q4_0", "Q4_K", "Q6_K", "F16", "F32"};
    if (argc > 1 && strcmp(argv[1], "--exact") == 0) {
        exact = 1;
        argv++;
        argc--;
    }
    int only_model = argc == 2 && strcmp(argv[1], "model") == 0;
    int ntypes = only_model ? 0 : argc > 1 ? argc - 1 : (int)(sizeof def / sizeof def[0]);
    const char **types = argc > 1 ? (const char **)argv + 1 : def;
    pwb_rng r;
    rng_init(&r, 42);
    int maxB = 32, maxK = 1536;
    float *x = malloc(sizeof(float) * (size_t)maxB * maxK);
    float *y = malloc(sizeof(float) * (size_t)maxB * 49152);
    for (int i = 0; i < maxB * maxK; i++)
        x[i] = (float)rng_normal(&r);
    printf("isa %s, %s; GFLOP/s = 2*M*K*B / time: fastest call by wall clock, and per CPU-second (all threads)\n"
           "%-6s %-20s %10s %10s %10s %10s\n", kernel_isa(), exact ? "exact (F32 activations)" : "8-bit activations", "type", "shape", "B=1", "B=1/cpu", "B=32", "B=32/cpu");
    for (int ti = 0; ti < ntypes; ti++) {
        int type = type_by_name(types[ti]);
        if (type < 0) {
            fprintf(stderr, "unknown type %s\n", types[ti]);
            return 2;
        }
        for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
            int M = SHAPES[s].M, K = SHAPES[s].K;
            size_t rb = quant_row_size(type, K);
            if (!rb) {
                printf("%-6s %-20s %10s\n", types[ti], SHAPES[s].what, "(K % 256)");
                continue;
            }
            unsigned char *w = malloc(rb * (size_t)M);
            float *row = malloc(sizeof(float) * (size_t)K);
            for (int m = 0; m < M; m++) {
                for (int k = 0; k < K; k++)
                    row[k] = (float)rng_normal(&r) * 0.05f;
                quantize_row(type, row, w + rb * (size_t)m, K);
            }
            pwb_tensor W = {"w", type, 2, {K, M, 1, 1}, w, rb * (size_t)M};
            double c1, c32, g1 = bench_one(&W, x, 1, y, &c1), g32 = bench_one(&W, x, 32, y, &c32);
            printf("%-6s %-20s %10.1f %10.1f %10.1f %10.1f\n", types[ti], SHAPES[s].what, g1, c1, g32, c32);
            fflush(stdout);
            free(w);
            free(row);
        }
    }
    if (argc == 1 || only_model) {
        bench_transposed(x, y, &r);
        bench_model_pass(DT_Q4_1, DT_Q8_0, x, y, &r);
    }
    free(x);
    free(y);
    return 0;
}
