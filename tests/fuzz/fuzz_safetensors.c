/* libFuzzer entry point for the safetensors reader (not built by default):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc tests/fuzz/fuzz_safetensors.c \
 *         src/engine/safetensors.c src/engine/quant.c src/util/[a-z]*.c -lcjson -lm -o build/fuzz_safetensors
 *   build/fuzz_safetensors -max_len=8192 corpus/ */
#include <stdint.h>
#include <string.h>

#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    safetensors_file *f = NULL;
    pwb_err e;
    if (safetensors_open_memory(&f, data, size, "fuzz.safetensors", &e) != PWB_OK)
        return 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const uint8_t *p = f->tensors[i].data;
        if (f->tensors[i].nbytes)
            sink ^= p[0] ^ p[f->tensors[i].nbytes - 1];
        (void)safetensors_find_tensor(f, f->tensors[i].name);
    }
    for (size_t i = 0; i < f->n_meta; i++)
        sink ^= (uint8_t)strlen(safetensors_get_meta(f, f->meta_keys[i]));
    (void)sink;
    safetensors_close(f);
    return 0;
}
