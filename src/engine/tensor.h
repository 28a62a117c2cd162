/* A view of one weight tensor inside a mapped model file (GGUF or safetensors). The data is
 * not owned: it points into the mapping, or into a buffer the model owns (converted weights). */
#ifndef PWB_ENGINE_TENSOR_H
#define PWB_ENGINE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

/* Type codes are GGUF's (ggml_type), so GGUF tensors need no translation. */
enum pwb_dtype {
    DT_F32 = 0,
    DT_F16 = 1,
    DT_Q4_0 = 2,
    DT_Q4_1 = 3,
    DT_Q5_0 = 6,
    DT_Q5_1 = 7,
    DT_Q8_0 = 8,
    DT_Q2_K = 10,
    DT_Q3_K = 11,
    DT_Q4_K = 12,
    DT_Q5_K = 13,
    DT_Q6_K = 14,
    DT_BF16 = 30,
    DT_COUNT_ = 40
};

#define TENSOR_MAX_DIMS 4

typedef struct pwb_tensor {
    const char *name;           /* owned by the file it came from */
    int type;                   /* enum pwb_dtype */
    int n_dims;
    int64_t ne[TENSOR_MAX_DIMS];/* GGUF order: ne[0] is the contiguous (row) length */
    const void *data;
    size_t nbytes;
} pwb_tensor;

#endif
