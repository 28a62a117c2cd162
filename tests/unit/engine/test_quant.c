#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"
#include "util/rng.h"

Test(quant, sizes)
{
    cr_assert_eq(quant_block_size(DT_F32), 1);
    cr_assert_eq(quant_type_size(DT_F16), 2);
    cr_assert_eq(quant_type_size(DT_BF16), 2);
    cr_assert_eq(quant_block_size(DT_Q4_0), 32);
    cr_assert_eq(quant_type_size(DT_Q4_0), 18);
    cr_assert_eq(quant_type_size(DT_Q4_1), 20);
    cr_assert_eq(quant_type_size(DT_Q8_0), 34);
    cr_assert_eq(quant_block_size(DT_Q4_K), 256);
    cr_assert_eq(quant_type_size(DT_Q4_K), 144);
    cr_assert_eq(quant_type_size(DT_Q6_K), 210);
    cr_assert_eq(quant_block_size(4), 0);          /* removed Q4_2 */
    cr_assert_eq(quant_block_size(-1), 0);
    cr_assert_eq(quant_block_size(1000), 0);
    cr_assert_eq(quant_row_size(DT_Q4_1, 576), 18 * 20);
    cr_assert_eq(quant_row_size(DT_Q6_K, 512), 420);
    cr_assert_eq(quant_row_size(DT_Q6_K, 576), 0);  /* not a multiple of 256 */
    cr_assert_eq(quant_row_size(DT_F32, 7), 28);
    cr_assert_str_eq(quant_type_name(DT_Q4_K), "Q4_K");
    cr_assert_str_eq(quant_type_name(6), "Q5_0");
    cr_assert(quant_supported(DT_BF16));
    cr_assert(!quant_supported(16)); /* IQ2_XXS */

    size_t n;
    int64_t ne[4] = {576, 49152, 1, 1};
    cr_assert_eq(quant_tensor_nbytes(DT_Q8_0, ne, 2, &n), PWB_OK);
    cr_assert_eq(n, (size_t)18 * 34 * 49152);
    int64_t huge[4] = {1LL << 40, 1LL << 40, 1LL << 40, 1};
    cr_assert_eq(quant_tensor_nbytes(DT_F32, huge, 3, &n), PWB_ERANGE);
    int64_t neg[4] = {32, -1, 1, 1};
    cr_assert_eq(quant_tensor_nbytes(DT_F32, neg, 2, &n), PWB_EINVAL);
    int64_t odd[4] = {33, 2, 1, 1};
    cr_assert_eq(quant_tensor_nbytes(DT_Q8_0, odd, 2, &n), PWB_EINVAL);
}

Test(quant, fp16_known_values)
{
    cr_assert_eq(f32_to_fp16(1.0f), 0x3c00);
    cr_assert_eq(f32_to_fp16(-2.0f), 0xc000);
    cr_assert_eq(f32_to_fp16(65504.0f), 0x7bff);
    cr_assert_eq(f32_to_fp16(65520.0f), 0x7c00);         /* rounds up to infinity */
    cr_assert_eq(f32_to_fp16(0.1f), 0x2e66);
    cr_assert_eq(f32_to_fp16(0x1p-24f), 0x0001);          /* smallest subnormal */
    cr_assert_eq(f32_to_fp16(1.0f + 0x1p-11f), 0x3c00);   /* tie -> even */
    cr_assert_eq(f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);
    cr_assert_eq(f32_to_fp16(INFINITY), 0x7c00);
    cr_assert(isnan(fp16_to_f32(f32_to_fp16(NAN))));
    cr_assert_eq(fp16_to_f32(0x3555), 0x1.554p-2f);
    cr_assert_eq(fp16_to_f32(0x8001), -0x1p-24f);
    cr_assert(isinf(fp16_to_f32(0xfc00)) && fp16_to_f32(0xfc00) < 0);
    /* Every non-NaN half survives the round trip through float. */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue;
        cr_assert_eq(f32_to_fp16(fp16_to_f32((uint16_t)h)), h, "half 0x%04x", h);
    }
}

Test(quant, bf16_known_values)
{
    cr_assert_eq(f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(bf16_to_f32(0xc040), -3.0f);
    cr_assert_eq(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);          /* tie -> even */
    cr_assert_eq(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    cr_assert(isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

/* Hand-made blocks, values worked out from the format description. */
Test(quant, dequant_hand_made_q4_0_q4_1_q8_0)
{
    block_q4_0 b0 = {.d = 0x3800};  /* 0.5 */
    for (int j = 0; j < 16; j++)
        b0.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    cr_assert_eq(dequant_row(DT_Q4_0, &b0, y, 32), PWB_OK);
    for (int j = 0; j < 16; j++) {
        cr_assert_float_eq(y[j], (j - 8) * 0.5f, 0);
        cr_assert_float_eq(y[j + 16], (7 - j) * 0.5f, 0);
    }
    block_q4_1 b1 = {.d = 0x3400, .m = 0xbc00};  /* 0.25, -1 */
    for (int j = 0; j < 16; j++)
        b1.qs[j] = (uint8_t)(j | (15 - j) << 4);
    cr_assert_eq(dequant_row(DT_Q4_1, &b1, y, 32), PWB_OK);
    for (int j = 0; j < 16; j++) {
        cr_assert_float_eq(y[j], j * 0.25f - 1, 0);
        cr_assert_float_eq(y[j + 16], (15 - j) * 0.25f - 1, 0);
    }
    block_q8_0 b8 = {.d = 0x3000};  /* 0.125 */
    for (int j = 0; j < 32; j++)
        b8.qs[j] = (int8_t)(j * 8 - 128);
    cr_assert_eq(dequant_row(DT_Q8_0, &b8, y, 32), PWB_OK);
    for (int j = 0; j < 32; j++)
        cr_assert_float_eq(y[j], (j * 8 - 128) * 0.125f, 0);
}

Test(quant, dequant_hand_made_q4_K)
{
    /* d = 1, dmin = 0.5; sub-block j has scale sc[j] and min mn[j] (6 bits each). Sub-blocks 4..7
     * use values >= 16 so the two high bits stored in scales[0..7] matter. */
    const int sc[8] = {1, 2, 3, 4, 17, 33, 49, 63}, mn[8] = {0, 1, 2, 3, 20, 40, 50, 60};
    block_q4_K b = {.d = 0x3c00, .dmin = 0x3800};
    /* scales[0..3]: sc[0..3] | (sc[4..7] >> 4) << 6; scales[4..7]: mn[0..3] | (mn[4..7] >> 4) << 6;
     * scales[8..11]: (sc[4..7] & 15) | (mn[4..7] & 15) << 4 */
    const uint8_t packed[12] = {1 | 1 << 6, 2 | 2 << 6, 3 | 3 << 6, 4 | 3 << 6,
                                0 | 1 << 6, 1 | 2 << 6, 2 | 3 << 6, 3 | 3 << 6,
                                1 | 4 << 4, 1 | 8 << 4, 1 | 2 << 4, 15 | 12 << 4};
    memcpy(b.scales, packed, 12);
    /* qs[32g + l]: low nibble = element l of sub-block 2g, high nibble = of sub-block 2g+1 */
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            b.qs[32 * g + l] = (uint8_t)((l % 16) | ((l + g) % 16) << 4);
    float y[256];
    cr_assert_eq(dequant_row(DT_Q4_K, &b, y, 256), PWB_OK);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            int s0 = 2 * g, s1 = 2 * g + 1;
            cr_assert_float_eq(y[64 * g + l], 1.0f * sc[s0] * (l % 16) - 0.5f * mn[s0], 1e-6, "g %d l %d", g, l);
            cr_assert_float_eq(y[64 * g + 32 + l], 1.0f * sc[s1] * ((l + g) % 16) - 0.5f * mn[s1], 1e-6,
                               "g %d l %d", g, l);
        }
}

Test(quant, dequant_hand_made_q6_K)
{
    /* Element i has 6-bit value q(i) = (i * 7) % 64, stored: for half h (128 elements) and
     * l < 32, ql[64h + l] = low4(q[l]) | low4(q[l+64]) << 4, ql[64h + 32 + l] = low4(q[l+32]) |
     * low4(q[l+96]) << 4, qh[32h + l] = hi2(q[l]) | hi2(q[l+32]) << 2 | hi2(q[l+64]) << 4 |
     * hi2(q[l+96]) << 6; x = d * scales[i / 16] * (q - 32). */
    block_q6_K b;
    memset(&b, 0, sizeof b);
    b.d = 0x3800;  /* 0.5 */
    for (int s = 0; s < 16; s++)
        b.scales[s] = (int8_t)(s * 9 - 70);
    int q[256];
    for (int i = 0; i < 256; i++)
        q[i] = (i * 7) % 64;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const int *p = q + 128 * h + l;
            b.ql[64 * h + l] = (uint8_t)((p[0] & 15) | (p[64] & 15) << 4);
            b.ql[64 * h + 32 + l] = (uint8_t)((p[32] & 15) | (p[96] & 15) << 4);
            b.qh[32 * h + l] = (uint8_t)(p[0] >> 4 | (p[32] >> 4) << 2 | (p[64] >> 4) << 4 | (p[96] >> 4) << 6);
        }
    float y[256];
    cr_assert_eq(dequant_row(DT_Q6_K, &b, y, 256), PWB_OK);
    for (int i = 0; i < 256; i++)
        cr_assert_float_eq(y[i], 0.5f * b.scales[i / 16] * (q[i] - 32), 1e-6, "i %d", i);
}

/* Blocks filled from a small LCG; expected values computed by the gguf Python package's reference
 * dequantizer (gguf-py 0.19, gguf.quants.dequantize) on the same bytes. A checksum sum(|y_i|*(i+1))
 * catches any permutation; 17 sampled values pin exact numbers. */
static const struct {
    const char *name;
    uint32_t seed;
    int nblocks;
    double checksum;
    float sample[17];
} REF[] = {
    {"q4_0", 308u, 4, 3694.5977783203125, {-0.2999267578125f, -0.6998291015625f, 0.599853515625f, 0.2999267578125f, -0.6998291015625f, 0.6998291015625f, -0.6998291015625f, -0.39990234375f, 0.4998779296875f, -0.599853515625f, -0.7998046875f, 0.0f, -0.2999267578125f, -0.0999755859375f, 0.599853515625f, 0.0f, 0.0f}},
    {"q4_1", 309u, 4, 5269.51318359375, {0.0f, 0.7998046875f, 0.599853515625f, 0.2999267578125f, 0.7998046875f, 0.7998046875f, 0.6998291015625f, 0.599853515625f, 1.0997314453125f, 0.0f, 0.7998046875f, 0.999755859375f, 0.0f, 0.599853515625f, 0.999755859375f, 0.999755859375f, 0.999755859375f}},
    {"q8_0", 312u, 4, 27083.38623046875, {5.6986083984375f, 2.74932861328125f, 0.64984130859375f, -5.8985595703125f, 4.04901123046875f, -5.4986572265625f, -1.799560546875f, -4.64886474609375f, 4.44891357421875f, 3.6990966796875f, -3.59912109375f, -5.8985595703125f, 5.6986083984375f, 4.0989990234375f, 4.6988525390625f, -5.8985595703125f, -5.8985595703125f}},
    {"q4_K", 335u, 2, 2657849.1525878906, {9.14776611328125f, 24.34405517578125f, 43.33941650390625f, 12.94683837890625f, 12.94683837890625f, 39.54034423828125f, -0.94976806640625f, 14.64642333984375f, 38.04071044921875f, 23.84417724609375f, 13.6966552734375f, 3.2991943359375f, 49.73785400390625f, 62.93463134765625f, 1.94952392578125f, 35.4913330078125f, 43.8892822265625f}},
    {"q6_K", 337u, 2, 1852773.0648651123, {13.04681396484375f, 10.79736328125f, -11.6971435546875f, 7.34820556640625f, 0.524871826171875f, -14.6964111328125f, -0.84979248046875f, -0.54986572265625f, -19.4952392578125f, -32.80448913574219f, -23.44427490234375f, 12.4969482421875f, -19.24530029296875f, 1.374664306640625f, 47.58837890625f, -11.822113037109375f, -6.073516845703125f}},
};

static const struct { int type; size_t bs; int n_f16; size_t off[2]; uint16_t val[2]; } LAYOUT[] = {
    {DT_Q4_0, 18, 1, {0, 0}, {0x2E66, 0}},
    {DT_Q4_1, 20, 2, {0, 2}, {0x2E66, 0xB266}},
    {DT_Q8_0, 34, 1, {0, 0}, {0x2A66, 0}},
    {DT_Q4_K, 144, 2, {0, 2}, {0x2E66, 0x2A66}},
    {DT_Q6_K, 210, 1, {208, 0}, {0x2266, 0}},
};

Test(quant, dequant_matches_gguf_py_reference)
{
    static const int idx[17] = {0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 100, 127, 128, 130, 200, 255, -1};
    for (int t = 0; t < 5; t++) {
        size_t nbytes = LAYOUT[t].bs * (size_t)REF[t].nblocks;
        uint8_t *b = malloc(nbytes);
        uint32_t s = REF[t].seed;
        for (size_t i = 0; i < nbytes; i++) {
            s = s * 1664525u + 1013904223u;
            b[i] = (uint8_t)(s >> 24);
        }
        for (int k = 0; k < REF[t].nblocks; k++)
            for (int f = 0; f < LAYOUT[t].n_f16; f++) {
                b[k * LAYOUT[t].bs + LAYOUT[t].off[f]] = (uint8_t)(LAYOUT[t].val[f] & 0xff);
                b[k * LAYOUT[t].bs + LAYOUT[t].off[f] + 1] = (uint8_t)(LAYOUT[t].val[f] >> 8);
            }
        int n = (int)quant_block_size(LAYOUT[t].type) * REF[t].nblocks;
        float *y = malloc(sizeof(float) * (size_t)n);
        cr_assert_eq(dequant_row(LAYOUT[t].type, b, y, n), PWB_OK);
        double chk = 0;
        for (int i = 0; i < n; i++)
            chk += fabs(y[i]) * (i + 1);
        cr_assert(fabs(chk - REF[t].checksum) <= 1e-6 * REF[t].checksum, "%s checksum %.10g vs %.10g",
                  REF[t].name, chk, REF[t].checksum);
        for (int i = 0; i < 17; i++) {
            int at = idx[i] < 0 ? n - 1 : idx[i] % n;
            cr_assert_float_eq(y[at], REF[t].sample[i], 1e-5, "%s y[%d] = %.9g, want %.9g", REF[t].name, at,
                               y[at], REF[t].sample[i]);
        }
        free(y);
        free(b);
    }
}

/* Quantize random data and dequantize it back: the error must be within each format's step. */
Test(quant, round_trip_error_bounds)
{
    static const struct { int type; double max_rel_rms; } T[] = {
        {DT_F32, 0}, {DT_F16, 1e-3}, {DT_BF16, 8e-3}, {DT_Q8_0, 0.01}, {DT_Q4_0, 0.12},
        {DT_Q4_1, 0.1}, {DT_Q4_K, 0.12}, {DT_Q6_K, 0.03},
    };
    pwb_rng r;
    rng_init(&r, 7);
    const int n = 1024;
    float x[1024], y[1024];
    uint8_t buf[4096];
    for (int i = 0; i < n; i++)
        x[i] = (float)rng_normal(&r) * (i % 97 == 0 ? 4.0f : 1.0f);
    for (size_t t = 0; t < sizeof T / sizeof T[0]; t++) {
        cr_assert_eq(quantize_row(T[t].type, x, buf, n), PWB_OK);
        cr_assert_eq(dequant_row(T[t].type, buf, y, n), PWB_OK);
        double se = 0, sx = 0;
        for (int i = 0; i < n; i++) {
            se += (double)(y[i] - x[i]) * (y[i] - x[i]);
            sx += (double)x[i] * x[i];
        }
        double rel = sqrt(se / sx);
        cr_assert(rel <= T[t].max_rel_rms, "%s: relative rms error %.4g > %.4g", quant_type_name(T[t].type), rel,
                  T[t].max_rel_rms);
        if (T[t].type != DT_F32)
            cr_assert(rel > 0, "%s: suspiciously exact", quant_type_name(T[t].type));
    }
    /* Q8_0: every element within half a step of its block's scale. */
    block_q8_0 q8[32];
    quantize_row_q8_0(x, q8, n);
    dequant_row(DT_Q8_0, q8, y, n);
    for (int i = 0; i < n; i++) {
        float d = fp16_to_f32(q8[i / 32].d);
        cr_assert(fabsf(y[i] - x[i]) <= 0.5f * d + 1e-3f * fabsf(x[i]), "i %d: %g vs %g", i, y[i], x[i]);
    }
}

Test(quant, errors)
{
    float y[32];
    uint8_t b[64] = {0};
    cr_assert_eq(dequant_row(20, b, y, 32), PWB_EUNSUP); /* IQ4_NL */
    cr_assert_eq(dequant_row(99, b, y, 32), PWB_EUNSUP);
    cr_assert_eq(dequant_row(DT_Q8_0, b, y, 31), PWB_EINVAL);
    cr_assert_eq(quantize_row(DT_Q4_K, y, b, 32), PWB_EINVAL);
    pwb_tensor t = {"blk.0.ffn_down.weight", 20, 2, {32, 1, 1, 1}, b, 18};
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(quant_check(&t, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "blk.0.ffn_down.weight") && strstr(e.msg, "IQ4_NL"), "%s", e.msg);
    pwb_tensor small = {"x", DT_F32, 2, {8, 4, 1, 1}, b, 64};  /* needs 128 bytes */
    cr_assert_eq(quant_check(&small, &e), PWB_EINVAL);
}

/* Q5_0, Q5_1, Q2_K, Q3_K, Q5_K (read from files, no quantizer here): random blocks against gguf-py's
 * reference dequantization (tests/reference/make_dequant_fixture.py). */
Test(quant, dequant_matches_reference_blocks)
{
    const char *root = getenv("PWB_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/quant/dequant_ref.txt", root && root[0] ? root : ".");
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    static char hex[8192];
    char name[16];
    int nb, seen = 0;
    while (fscanf(f, "%15s %d %8191s", name, &nb, hex) == 3) {
        int type = -1;
        for (int t = 0; t < DT_COUNT_; t++)
            if (strcmp(quant_type_name(t), name) == 0)
                type = t;
        cr_assert(type >= 0 && quant_supported(type), "%s", name);
        size_t bytes = strlen(hex) / 2, n = (size_t)nb * quant_block_size(type);
        cr_assert_eq(bytes, (size_t)nb * quant_type_size(type), "%s", name);
        unsigned char *raw = malloc(bytes);
        float *got = malloc(n * sizeof *got);
        for (size_t i = 0; i < bytes; i++) {
            unsigned v;
            sscanf(hex + 2 * i, "%2x", &v);
            raw[i] = (unsigned char)v;
        }
        cr_assert_eq(dequant_row(type, raw, got, (int64_t)n), PWB_OK);
        for (size_t i = 0; i < n; i++) {
            float want;
            cr_assert_eq(fscanf(f, "%f", &want), 1);
            cr_assert(fabsf(got[i] - want) <= 1e-6f * (1.0f + fabsf(want)), "%s[%zu]: %g vs %g", name, i,
                      (double)got[i], (double)want);
        }
        cr_assert_eq(quantize_row(type, got, raw, (int64_t)n), PWB_EUNSUP);
        free(raw);
        free(got);
        seen++;
    }
    fclose(f);
    cr_assert_eq(seen, 5);
}
