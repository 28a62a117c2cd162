/* GGUF v2/v3 reader (ggml's model file format): metadata key/values, tensor infos, tensor data.
 *
 * The file is mapped read-only (gguf_open) or read from caller memory (gguf_open_memory, which
 * must outlive the gguf_file). Everything is validated at open: counts are capped, every string,
 * array and tensor byte range is checked against the file size, tensor data must be aligned.
 * Metadata strings and numeric arrays are copied out at open (NUL-terminated, naturally aligned),
 * so the getters below hand out ordinary C pointers owned by the gguf_file.
 *
 * Tensor types: any ggml type whose block layout is known (see quant.h) loads; types the kernels
 * do not implement (anything but F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) fail with
 * PWB_EUNSUP when used (quant_check, dequant_row, kernel_*). A type code with no known layout
 * fails at open with PWB_EUNSUP naming the tensor and the file. */
#ifndef PWB_ENGINE_GGUF_H
#define PWB_ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"
#include "util/err.h"
#include "util/file.h"

/* Metadata value types (gguf_metadata_value_type). */
enum gguf_vtype {
    GGUF_T_U8 = 0,
    GGUF_T_I8 = 1,
    GGUF_T_U16 = 2,
    GGUF_T_I16 = 3,
    GGUF_T_U32 = 4,
    GGUF_T_I32 = 5,
    GGUF_T_F32 = 6,
    GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8,
    GGUF_T_ARRAY = 9,
    GGUF_T_U64 = 10,
    GGUF_T_I64 = 11,
    GGUF_T_F64 = 12,
    GGUF_T_COUNT_
};

/* Limits for hostile files (generous for real models: a 256k-token vocabulary is fine). */
#define GGUF_MAX_KV        65536
#define GGUF_MAX_TENSORS   65536
#define GGUF_MAX_ARRAY     (1u << 24)     /* elements in one array */
#define GGUF_MAX_STRING    (1u << 24)     /* bytes in one string */
#define GGUF_MAX_NESTING   4              /* array of array of ... */
#define GGUF_MAX_NAME      256            /* tensor name bytes */

/* An array value. Exactly one of data / strs / arrs is set, by type. */
typedef struct gguf_arr {
    int type;                       /* enum gguf_vtype of the elements */
    uint64_t n;
    const void *data;               /* numeric/bool elements, native layout (bool as uint8_t) */
    const char *const *strs;        /* GGUF_T_STRING: NUL-terminated copies ... */
    const uint32_t *str_lens;       /* ... and their byte lengths (strings may hold NUL bytes) */
    const struct gguf_arr *arrs;    /* GGUF_T_ARRAY: nested arrays */
} gguf_arr;

typedef struct gguf_kv {
    const char *key;
    int type;                       /* enum gguf_vtype */
    union {
        uint64_t u64;               /* U8..U64 and BOOL, zero-extended */
        int64_t i64;                /* I8..I64, sign-extended */
        double f64;                 /* F32, F64 */
    } v;
    const char *str;                /* GGUF_T_STRING: NUL-terminated copy */
    uint32_t str_len;
    gguf_arr arr;                   /* GGUF_T_ARRAY */
} gguf_kv;

/* Read-only after open. */
typedef struct gguf_file {
    char *path;                     /* file name used in error messages */
    file_map map;                   /* mapping when opened from a path */
    const unsigned char *base;      /* the file's bytes */
    size_t size;
    uint32_t version;
    size_t alignment;               /* general.alignment, default 32 */
    size_t data_offset;             /* start of the tensor data section */
    size_t n_kv;
    gguf_kv *kv;
    size_t n_tensors;
    pwb_tensor *tensors;            /* names are owned here; data points into the file */
    void *arena_;                   /* private: metadata copies */
    void *owned_copy_;              /* private: aligned copy of unaligned memory input */
} gguf_file;

int gguf_open(gguf_file **out, const char *path, pwb_err *e);
/* name is used in error messages (may be NULL: "<memory>"). data is not copied (unless it is not
 * 32-byte aligned) and must outlive the gguf_file. */
int gguf_open_memory(gguf_file **out, const void *data, size_t n, const char *name, pwb_err *e);
void gguf_close(gguf_file *g);

/* Metadata lookup; NULL/-1 when absent. */
const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key);
/* Typed getters: the default when absent or of an incompatible type. Integer getters accept any
 * integer (or bool) type whose value fits; gguf_get_f32 accepts F32, F64 and integers. */
uint32_t gguf_get_u32(const gguf_file *g, const char *key, uint32_t def);
int32_t gguf_get_i32(const gguf_file *g, const char *key, int32_t def);
uint64_t gguf_get_u64(const gguf_file *g, const char *key, uint64_t def);
float gguf_get_f32(const gguf_file *g, const char *key, float def);
int gguf_get_bool(const gguf_file *g, const char *key, int def);
const char *gguf_get_str(const gguf_file *g, const char *key, const char *def);
/* Array values: NULL when absent or not an array. */
const gguf_arr *gguf_get_arr(const gguf_file *g, const char *key);
/* Convenience for common arrays; NULL (and *n = 0) when absent or of another element type. */
const char *const *gguf_get_arr_strs(const gguf_file *g, const char *key, size_t *n);
const float *gguf_get_arr_f32(const gguf_file *g, const char *key, size_t *n);
const int32_t *gguf_get_arr_i32(const gguf_file *g, const char *key, size_t *n);

/* Tensors: NULL when absent. */
const pwb_tensor *gguf_find_tensor(const gguf_file *g, const char *name);
const char *gguf_vtype_name(int type);

#endif
