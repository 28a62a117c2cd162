/* Tensor element types: block layouts (ggml's, bit for bit), sizes, dequantization, reference
 * quantizers, and fp16/bf16 conversions.
 *
 * Supported for compute: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
 * (Q5_0, Q5_1, Q2_K, Q3_K and Q5_K by dequantization only: the kernels compute them exactly, with
 * F32 activations). Other ggml types have
 * known sizes (so files holding them can be bounds-checked) but dequant/kernels return
 * PWB_EUNSUP for them. */
#ifndef PWB_ENGINE_QUANT_H
#define PWB_ENGINE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"
#include "util/err.h"

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

/* fp16 scales are stored as raw IEEE half bits. */
typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;           /* x = (q - 8) * d */
typedef struct { uint16_t d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;        /* x = q * d + m */
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;                /* x = q * d */
typedef struct { uint16_t d, s; int8_t qs[QK8_1]; } block_q8_1;             /* s = d * sum(q) */
/* 8 sub-blocks of 32; 6-bit scale and min per sub-block packed in scales[12];
 * x = d * sc * q - dmin * m. qs: 4 groups of 32 bytes; low nibbles are sub-block 2g, high 2g+1. */
typedef struct { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K;
/* 5-bit: low 4 bits in qs (element j low nibble, j + 16 high nibble), bit 5 of element j in bit j
 * of qh. Q5_0: x = (q - 16) * d; Q5_1: x = q * d + m. */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
/* 16 sub-blocks of 16 with a 4-bit scale and min each (scales[i] low / high nibble);
 * x = d * sc * q - dmin * m, q 2-bit. */
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; uint16_t d, dmin; } block_q2_K;
/* 16 sub-blocks of 16 with 6-bit scales packed in scales[12]; x = d * (sc - 32) * (q - 4 * !h),
 * q 2-bit in qs, high bit h in hmask. */
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[K_SCALE_SIZE]; uint16_t d; } block_q3_K;
/* Q4_K with a fifth bit per element in qh. */
typedef struct { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
/* 16 sub-blocks of 16; x = d * scales[i] * (q - 32), q 6-bit = 4 low bits in ql, 2 high in qh. */
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } block_q6_K;

_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 layout");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 layout");
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 layout");
_Static_assert(sizeof(block_q2_K) == 84, "block_q2_K layout");
_Static_assert(sizeof(block_q3_K) == 110, "block_q3_K layout");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");

/* Elements per block (1 for plain types); 0 for an unknown type code. */
size_t quant_block_size(int type);
/* Bytes per block; 0 for an unknown type code. */
size_t quant_type_size(int type);
/* Bytes for a row of n elements; 0 if the type is unknown or n is not a multiple of the block. */
size_t quant_row_size(int type, int64_t n);
/* Bytes of a whole tensor with dims ne[0..n_dims); PWB_EINVAL/PWB_ERANGE on a bad shape, a row
 * length that is not a multiple of the block, or overflow. */
int quant_tensor_nbytes(int type, const int64_t *ne, int n_dims, size_t *out);
const char *quant_type_name(int type);     /* "Q4_K", ...; "?" when unknown */
int quant_supported(int type);             /* 1 for the compute types */
/* PWB_OK, or PWB_EUNSUP naming the tensor and its type, or PWB_EINVAL on a bad shape/size. */
int quant_check(const pwb_tensor *t, pwb_err *e);

/* Dequantizes n elements (a multiple of the block size) of type from src. Returns PWB_OK,
 * PWB_EUNSUP for an unsupported type, PWB_EINVAL for a bad n. src needs no alignment. */
int dequant_row(int type, const void *src, float *dst, int64_t n);
/* Reference quantizers (round to nearest) for F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K:
 * used by tests, conversions and the kernels' activation quantization. Same return codes. */
int quantize_row(int type, const float *src, void *dst, int64_t n);
void quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n);
void quantize_row_q8_1(const float *x, block_q8_1 *y, int64_t n);

float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);              /* round to nearest even */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);              /* round to nearest even, NaN kept */

#endif
