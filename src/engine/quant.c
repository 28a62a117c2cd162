/* Block layouts follow ggml (ggml-common.h / ggml-quants.c) exactly, so GGUF tensors are read
 * as stored. The quantizers are simple round-to-nearest ones (no importance search): good enough
 * for tests, conversions and activations, not meant to produce model files. */
#include "engine/quant.h"

#include <math.h>
#include <string.h>

#ifdef __F16C__
#include <immintrin.h>
#endif

/* ---- type table (ggml_type codes; removed codes have size 0) ---- */

typedef struct type_info {
    const char *name;
    uint16_t block;     /* elements per block */
    uint16_t size;      /* bytes per block */
} type_info;

static const type_info TYPES[DT_COUNT_] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},       [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},    [6] = {"Q5_0", 32, 22},    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},    [9] = {"Q8_1", 32, 36},    [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110}, [12] = {"Q4_K", 256, 144}, [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292}, [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},[18] = {"IQ3_XXS", 256, 98},[19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18}, [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136},[24] = {"I8", 1, 1},      [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},      [27] = {"I64", 1, 8},      [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56}, [30] = {"BF16", 1, 2},     [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66}, [39] = {"MXFP4", 32, 17},
};

static const type_info *info(int type)
{
    if (type < 0 || type >= DT_COUNT_ || TYPES[type].block == 0)
        return NULL;
    return &TYPES[type];
}

size_t quant_block_size(int type)
{
    const type_info *t = info(type);
    return t ? t->block : 0;
}

size_t quant_type_size(int type)
{
    const type_info *t = info(type);
    return t ? t->size : 0;
}

size_t quant_row_size(int type, int64_t n)
{
    const type_info *t = info(type);
    if (!t || n < 0 || n % t->block)
        return 0;
    uint64_t nb = (uint64_t)n / t->block;
    if (nb > SIZE_MAX / t->size)
        return 0;
    return (size_t)nb * t->size;
}

int quant_tensor_nbytes(int type, const int64_t *ne, int n_dims, size_t *out)
{
    const type_info *t = info(type);
    if (!t)
        return PWB_EUNSUP;
    if (n_dims < 0 || n_dims > TENSOR_MAX_DIMS)
        return PWB_EINVAL;
    for (int d = 0; d < n_dims; d++)
        if (ne[d] < 0)
            return PWB_EINVAL;
    int64_t n0 = n_dims > 0 ? ne[0] : 1;
    if (n0 % t->block)
        return PWB_EINVAL;
    uint64_t total = (uint64_t)(n0 / t->block) * t->size;  /* n0 < 2^62: no overflow */
    for (int d = 1; d < n_dims; d++) {
        if (ne[d] != 0 && total > SIZE_MAX / (uint64_t)ne[d])
            return PWB_ERANGE;
        total *= (uint64_t)ne[d];
    }
    if (total > SIZE_MAX)
        return PWB_ERANGE;
    *out = (size_t)total;
    return PWB_OK;
}

const char *quant_type_name(int type)
{
    const type_info *t = info(type);
    return t ? t->name : "?";
}

int quant_supported(int type)
{
    switch (type) {
    case DT_F32: case DT_F16: case DT_BF16: case DT_Q8_0: case DT_Q4_0: case DT_Q4_1: case DT_Q5_0:
    case DT_Q5_1: case DT_Q2_K: case DT_Q3_K: case DT_Q4_K: case DT_Q5_K: case DT_Q6_K:
        return 1;
    default:
        return 0;
    }
}

int quant_check(const pwb_tensor *t, pwb_err *e)
{
    if (!t)
        return err_set(e, PWB_EINVAL, "missing tensor");
    const char *name = t->name ? t->name : "?";
    if (!quant_supported(t->type))
        return err_set(e, PWB_EUNSUP, "tensor '%s': type %s (%d) is not supported (F32, F16, BF16, Q8_0, "
                       "Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K are)", name, quant_type_name(t->type), t->type);
    size_t n;
    int rc = quant_tensor_nbytes(t->type, t->ne, TENSOR_MAX_DIMS, &n);
    if (rc || n > t->nbytes || (n && !t->data))
        return err_set(e, PWB_EINVAL, "tensor '%s': shape [%lld, %lld, %lld, %lld] does not fit its %zu data bytes",
                       name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                       t->nbytes);
    return PWB_OK;
}

/* ---- fp16 / bf16 ---- */

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float fp16_to_f32(uint16_t h)
{
#ifdef __F16C__
    return _cvtsh_ss(h);  /* exact, like the portable code below */
#endif
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
    if (exp == 0) {
        float f = (float)mant * 0x1p-24f;    /* zero or subnormal */
        return sign ? -f : f;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | mant << 13);
    return bits_f32(sign | (exp + 112) << 23 | mant << 13);
}

/* Rounding through float arithmetic (after M. Dukhan's FP16 library): scaling into the half range
 * makes the FPU do the round-to-nearest-even. */
uint16_t f32_to_fp16(float f)
{
#ifdef __F16C__
    return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#endif
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    uint32_t w = f32_bits(f);
    uint32_t shl1_w = w + w;
    uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xff000000u;
    if (bias < 0x71000000u)
        bias = 0x71000000u;
    base = bits_f32((bias >> 1) + 0x07800000u) + base;
    uint32_t bits = f32_bits(base);
    uint32_t exp_bits = (bits >> 13) & 0x00007c00u;
    uint32_t mant_bits = bits & 0x00000fffu;
    uint32_t nonsign = exp_bits + mant_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}

float bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* ---- dequantization ---- */

/* 6-bit scale and min of sub-block j (0..7) of a Q4_K block. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void deq_q4_0(const block_q4_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK4_0) {
        float d = fp16_to_f32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = (float)((x[i].qs[j] & 0xf) - 8) * d;
            y[j + QK4_0 / 2] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void deq_q4_1(const block_q4_1 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK4_1) {
        float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = (float)(x[i].qs[j] & 0xf) * d + m;
            y[j + QK4_1 / 2] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}

/* The fifth bits of a Q5_0/Q5_1 block: element j's in bit j of qh, element j + 16's in bit j + 16. */
static void q5_values(const uint8_t qh4[4], const uint8_t *qs, int q[QK5_0])
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    for (int j = 0; j < QK5_0 / 2; j++) {
        q[j] = (qs[j] & 0xf) | (int)(((qh >> j) << 4) & 0x10);
        q[j + QK5_0 / 2] = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
    }
}

static void deq_q5_0(const block_q5_0 *x, float *y, int64_t nb)
{
    int q[QK5_0];
    for (int64_t i = 0; i < nb; i++, y += QK5_0) {
        float d = fp16_to_f32(x[i].d);
        q5_values(x[i].qh, x[i].qs, q);
        for (int j = 0; j < QK5_0; j++)
            y[j] = (float)(q[j] - 16) * d;
    }
}

static void deq_q5_1(const block_q5_1 *x, float *y, int64_t nb)
{
    int q[QK5_1];
    for (int64_t i = 0; i < nb; i++, y += QK5_1) {
        float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
        q5_values(x[i].qh, x[i].qs, q);
        for (int j = 0; j < QK5_1; j++)
            y[j] = (float)q[j] * d + m;
    }
}

/* Q2_K and Q3_K: 2-bit values in 4 shifts of 32-byte groups; sub-block scale per 16 values. */
static void deq_q2_K(const block_q2_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128, q += 32)
            for (int shift = 0; shift < 8; shift += 2)
                for (int half = 0; half < 2; half++) {
                    uint8_t sc = x[i].scales[is++];
                    float dl = d * (float)(sc & 0xf), ml = dmin * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
                }
    }
}

static void deq_q3_K(const block_q3_K *x, float *y, int64_t nb)
{
    const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
    for (int64_t i = 0; i < nb; i++) {
        float d = fp16_to_f32(x[i].d);
        /* 16 6-bit scales: low 4 bits in bytes 0..7 (nibbles), high 2 bits in bytes 8..11. */
        uint32_t aux[4];
        memcpy(aux, x[i].scales, 12);
        uint32_t tmp = aux[2];
        aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
        aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
        int8_t scales[16];
        memcpy(scales, aux, sizeof scales);
        const uint8_t *q = x[i].qs, *hm = x[i].hmask;
        uint8_t m = 1;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128, q += 32)
            for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1))
                for (int half = 0; half < 2; half++) {
                    float dl = d * (float)(scales[is++] - 32);
                    for (int l = 16 * half; l < 16 * half + 16; l++)
                        *y++ = dl * (float)(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
                }
    }
}

static void deq_q8_0(const block_q8_0 *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK8_0) {
        float d = fp16_to_f32(x[i].d);
        for (int j = 0; j < QK8_0; j++)
            y[j] = (float)x[i].qs[j] * d;
    }
}

/* One 256-element block of Q4_K (qh NULL) or Q5_K (qh: the fifth bits, two per 64 elements). */
static void deq_k4_block(float d, float dmin, const uint8_t *scales, const uint8_t *q, const uint8_t *qh, float *y)
{
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
        uint8_t sc, m;
        scale_min_k4(is, scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        scale_min_k4(is + 1, scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (float)((q[l] & 0xf) + (qh && (qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (float)((q[l] >> 4) + (qh && (qh[l] & u2) ? 16 : 0)) - m2;
    }
}

static void deq_q4_K(const block_q4_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK_K)
        deq_k4_block(fp16_to_f32(x[i].d), fp16_to_f32(x[i].dmin), x[i].scales, x[i].qs, NULL, y);
}

static void deq_q5_K(const block_q5_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += QK_K)
        deq_k4_block(fp16_to_f32(x[i].d), fp16_to_f32(x[i].dmin), x[i].scales, x[i].qs, x[i].qh, y);
}

static void deq_q6_K(const block_q6_K *x, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = fp16_to_f32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xf) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * sc[is + 0] * (float)q1;
                y[l + 32] = d * sc[is + 2] * (float)q2;
                y[l + 64] = d * sc[is + 4] * (float)q3;
                y[l + 96] = d * sc[is + 6] * (float)q4;
            }
        }
    }
}

int dequant_row(int type, const void *src, float *dst, int64_t n)
{
    size_t bs = quant_block_size(type);
    if (!quant_supported(type))
        return PWB_EUNSUP;
    if (n < 0 || n % (int64_t)bs)
        return PWB_EINVAL;
    const unsigned char *s = src;
    int64_t nb = n / (int64_t)bs;
    switch (type) {
    case DT_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case DT_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = fp16_to_f32(h);
        }
        break;
    case DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
        }
        break;
    /* Blocks hold only uint16/uint8 fields: 2-byte alignment, which every tensor start and every
     * block boundary of a valid file satisfies. */
    case DT_Q4_0: deq_q4_0(src, dst, nb); break;
    case DT_Q4_1: deq_q4_1(src, dst, nb); break;
    case DT_Q8_0: deq_q8_0(src, dst, nb); break;
    case DT_Q5_0: deq_q5_0(src, dst, nb); break;
    case DT_Q5_1: deq_q5_1(src, dst, nb); break;
    case DT_Q2_K: deq_q2_K(src, dst, nb); break;
    case DT_Q3_K: deq_q3_K(src, dst, nb); break;
    case DT_Q4_K: deq_q4_K(src, dst, nb); break;
    case DT_Q5_K: deq_q5_K(src, dst, nb); break;
    case DT_Q6_K: deq_q6_K(src, dst, nb); break;
    }
    return PWB_OK;
}

/* ---- quantization ---- */

void quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++)
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void quantize_row_q8_1(const float *x, block_q8_1 *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        float amax = 0;
        for (int j = 0; j < QK8_1; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = f32_to_fp16(d);
        y[i].s = f32_to_fp16(d * (float)sum);
    }
}

static void quant_q4_0(const float *x, block_q4_0 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK4_0) {
        float amax = 0, max = 0;   /* the value of largest magnitude, with its sign */
        for (int j = 0; j < QK4_0; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int a = (int)fminf(15.0f, fmaxf(0.0f, roundf(x[j] * id) + 8));
            int b = (int)fminf(15.0f, fmaxf(0.0f, roundf(x[j + QK4_0 / 2] * id) + 8));
            y[i].qs[j] = (uint8_t)(a | b << 4);
        }
    }
}

static void quant_q4_1(const float *x, block_q4_1 *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK4_1) {
        float min = x[0], max = x[0];
        for (int j = 1; j < QK4_1; j++) {
            min = fminf(min, x[j]);
            max = fmaxf(max, x[j]);
        }
        float d = (max - min) / 15.0f, id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        y[i].m = f32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            int a = (int)fminf(15.0f, fmaxf(0.0f, roundf((x[j] - min) * id)));
            int b = (int)fminf(15.0f, fmaxf(0.0f, roundf((x[j + QK4_1 / 2] - min) * id)));
            y[i].qs[j] = (uint8_t)(a | b << 4);
        }
    }
}

static void quant_q4_K(const float *x, block_q4_K *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float scales[8], mins[8], max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            float lo = 0, hi = 0;   /* min <= 0 so that x = d*q - m has m >= 0 */
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }
            scales[j] = (hi - lo) / 15.0f;
            mins[j] = -lo;
            max_scale = fmaxf(max_scale, scales[j]);
            max_min = fmaxf(max_min, mins[j]);
        }
        float d = max_scale / 63.0f, dmin = max_min / 63.0f;
        y[i].d = f32_to_fp16(d);
        y[i].dmin = f32_to_fp16(dmin);
        d = fp16_to_f32(y[i].d);        /* quantize against the stored values */
        dmin = fp16_to_f32(y[i].dmin);
        uint8_t ls[8], lm[8];
        for (int j = 0; j < 8; j++) {
            ls[j] = (uint8_t)fminf(63.0f, roundf(d ? scales[j] / d : 0));
            lm[j] = (uint8_t)fminf(63.0f, roundf(dmin ? mins[j] / dmin : 0));
        }
        memset(y[i].scales, 0, sizeof y[i].scales);
        for (int j = 0; j < 8; j++) {
            if (j < 4) {
                y[i].scales[j] = ls[j];
                y[i].scales[j + 4] = lm[j];
            } else {
                y[i].scales[j + 4] = (uint8_t)((ls[j] & 0xf) | (lm[j] & 0xf) << 4);
                y[i].scales[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
                y[i].scales[j] |= (uint8_t)((lm[j] >> 4) << 6);
            }
        }
        uint8_t L[QK_K];
        for (int j = 0; j < 8; j++) {
            float sd = d * ls[j], sm = dmin * lm[j];
            for (int l = 0; l < 32; l++) {
                float q = sd ? roundf((x[32 * j + l] + sm) / sd) : 0;
                L[32 * j + l] = (uint8_t)fminf(15.0f, fmaxf(0.0f, q));
            }
        }
        for (int j = 0; j < QK_K; j += 64)
            for (int l = 0; l < 32; l++)
                y[i].qs[j / 2 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
    }
}

static void quant_q6_K(const float *x, block_q6_K *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float scales[16], max_abs_scale = 0;
        for (int j = 0; j < 16; j++) {
            float amax = 0;
            for (int l = 0; l < 16; l++)
                amax = fmaxf(amax, fabsf(x[16 * j + l]));
            scales[j] = amax / 31.0f;
            max_abs_scale = fmaxf(max_abs_scale, scales[j]);
        }
        float d = max_abs_scale / 127.0f;
        y[i].d = f32_to_fp16(d);
        d = fp16_to_f32(y[i].d);
        uint8_t L[QK_K];
        for (int j = 0; j < 16; j++) {
            int s = (int)fminf(127.0f, roundf(d ? scales[j] / d : 0));
            y[i].scales[j] = (int8_t)s;
            float sd = d * (float)s;
            for (int l = 0; l < 16; l++) {
                float q = sd ? roundf(x[16 * j + l] / sd) : 0;
                L[16 * j + l] = (uint8_t)(fminf(31.0f, fmaxf(-32.0f, q)) + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; l++) {
                const uint8_t *q = L + j + l;
                ql[l] = (uint8_t)((q[0] & 0xf) | (q[64] & 0xf) << 4);
                ql[l + 32] = (uint8_t)((q[32] & 0xf) | (q[96] & 0xf) << 4);
                qh[l] = (uint8_t)((q[0] >> 4) | (q[32] >> 4) << 2 | (q[64] >> 4) << 4 | (q[96] >> 4) << 6);
            }
    }
}

int quantize_row(int type, const float *src, void *dst, int64_t n)
{
    size_t bs = quant_block_size(type);
    /* Types read from files only have no quantizer here. */
    if (!quant_supported(type) || type == DT_Q5_0 || type == DT_Q5_1 || type == DT_Q2_K || type == DT_Q3_K ||
        type == DT_Q5_K)
        return PWB_EUNSUP;
    if (n < 0 || n % (int64_t)bs)
        return PWB_EINVAL;
    unsigned char *d = dst;
    int64_t nb = n / (int64_t)bs;
    switch (type) {
    case DT_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case DT_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = f32_to_fp16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        break;
    case DT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = f32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        break;
    case DT_Q4_0: quant_q4_0(src, dst, nb); break;
    case DT_Q4_1: quant_q4_1(src, dst, nb); break;
    case DT_Q8_0: quantize_row_q8_0(src, dst, n); break;
    case DT_Q4_K: quant_q4_K(src, dst, nb); break;
    case DT_Q6_K: quant_q6_K(src, dst, nb); break;
    }
    return PWB_OK;
}
