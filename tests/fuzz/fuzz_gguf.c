/* libFuzzer entry point for the GGUF reader (not built by default):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc tests/fuzz/fuzz_gguf.c \
 *         src/engine/gguf.c src/engine/quant.c src/util/[a-z]*.c -lcjson -lm -o build/fuzz_gguf
 *   build/fuzz_gguf -max_len=65536 corpus/    (seed corpus: any small .gguf files) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/quant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *g = NULL;
    pwb_err e;
    if (gguf_open_memory(&g, data, size, "fuzz.gguf", &e) != PWB_OK)
        return 0;
    /* Walk what a loader would: metadata, arrays, every tensor's first and last row. */
    for (size_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        (void)gguf_get_u32(g, kv->key, 0);
        (void)gguf_get_f32(g, kv->key, 0);
        (void)gguf_get_str(g, kv->key, NULL);
        if (kv->type == GGUF_T_ARRAY && kv->arr.type == GGUF_T_STRING)
            for (uint64_t j = 0; j < kv->arr.n; j++)
                (void)strlen(kv->arr.strs[j]);
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        const pwb_tensor *t = &g->tensors[i];
        if (quant_check(t, NULL) != PWB_OK || t->ne[0] > 4096 || t->nbytes == 0)
            continue;
        float *row = malloc(sizeof(float) * (size_t)t->ne[0]);
        size_t rb = quant_row_size(t->type, t->ne[0]);
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        if (row && rb) {
            dequant_row(t->type, t->data, row, t->ne[0]);
            dequant_row(t->type, (const uint8_t *)t->data + rb * (size_t)(rows - 1), row, t->ne[0]);
        }
        free(row);
    }
    gguf_close(g);
    return 0;
}
