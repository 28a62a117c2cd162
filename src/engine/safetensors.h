/* Hugging Face safetensors reader (and a small F32/F16/BF16 writer for soft-prompt artifacts).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON header
 * {"name": {"dtype": "F32", "shape": [r, c], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data section (offsets are relative to it).
 * Only F32, F16 and BF16 load; other dtypes fail with PWB_EUNSUP naming the tensor and file.
 * Every tensor's byte range must lie inside the file, match shape x dtype size exactly, and not
 * overlap another tensor.
 *
 * Tensors are exposed as pwb_tensor in GGUF order: ne[0] is the LAST safetensors dimension, so a
 * [rows, cols] matrix has ne[0] = cols, ne[1] = rows, as GGUF stores it. If the data section is not
 * aligned for its element type, it is copied once into aligned memory owned by the file. */
#ifndef PWB_ENGINE_SAFETENSORS_H
#define PWB_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"
#include "util/err.h"
#include "util/file.h"

#define SAFETENSORS_MAX_HEADER (100u << 20)
#define SAFETENSORS_MAX_TENSORS 65536

/* Read-only after open. */
typedef struct safetensors_file {
    char *path;
    file_map map;
    const unsigned char *base;
    size_t size;
    size_t data_offset;             /* 8 + header length */
    size_t n_tensors;
    pwb_tensor *tensors;            /* in header order; names owned here */
    size_t n_meta;
    char **meta_keys;               /* __metadata__ (string values only, as the format requires) */
    char **meta_vals;
    void *aligned_copy_;            /* private */
} safetensors_file;

int safetensors_open(safetensors_file **out, const char *path, pwb_err *e);
/* data is not copied and must outlive the file; name is for messages (may be NULL). */
int safetensors_open_memory(safetensors_file **out, const void *data, size_t n, const char *name,
                            pwb_err *e);
void safetensors_close(safetensors_file *f);

const pwb_tensor *safetensors_find_tensor(const safetensors_file *f, const char *name);
/* __metadata__ value, or NULL. */
const char *safetensors_get_meta(const safetensors_file *f, const char *key);

/* Writes tensors (F32, F16 or BF16, GGUF-order ne as above) and optional metadata pairs
 * (meta[2*i] = key, meta[2*i+1] = value) atomically to path. The header is padded with spaces to
 * a multiple of 8 bytes, as the reference implementation does. */
int safetensors_write(const char *path, const pwb_tensor *tensors, size_t n,
                      const char *const *meta, size_t n_meta, pwb_err *e);

#endif
