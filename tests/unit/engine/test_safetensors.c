#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/rng.h"

static void shared_path(pwb_buf *out, const char *rel)
{
    const char *shared = getenv("PWB_SHARED");
    const char *root = getenv("PWB_ROOT");
    buf_reset(out);
    if (shared && *shared)
        buf_printf(out, "%s/%s", shared, rel);
    else
        buf_printf(out, "%s/../shared/%s", root && *root ? root : ".", rel);
}

#define TINY_ST "models/tinystories-656k/model.safetensors"
#define TINY_GGUF "models/tinystories-656k/TinyStories-656K-Q8_0.gguf"

static void *exact_copy(const void *data, size_t n)
{
    void *p = NULL;
    cr_assert_eq(posix_memalign(&p, 32, n ? n : 1), 0);
    memcpy(p, data, n);
    return p;
}

/* Builds "len8 + header + data" and opens it from exact-size memory. */
static int open_st(const char *header, const void *data, size_t data_len, safetensors_file **f, void **mem,
                   pwb_err *e)
{
    size_t hl = strlen(header), n = 8 + hl + data_len;
    unsigned char *b = malloc(n);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    if (data_len)
        memcpy(b + 8 + hl, data, data_len);
    *mem = exact_copy(b, n);
    free(b);
    err_clear(e);
    return safetensors_open_memory(f, *mem, n, "crafted.safetensors", e);
}

static int try_header(const char *header, size_t data_len)
{
    unsigned char data[256] = {0};
    cr_assert(data_len <= sizeof data);
    safetensors_file *f = NULL;
    void *mem;
    pwb_err e;
    int rc = open_st(header, data, data_len, &f, &mem, &e);
    if (rc)
        cr_assert(strstr(e.msg, "crafted.safetensors") != NULL || rc == PWB_ENOMEM, "message: %s", e.msg);
    safetensors_close(f);
    free(mem);
    return rc;
}

Test(safetensors, tinystories_shapes_and_metadata)
{
    pwb_buf p;
    buf_init(&p);
    shared_path(&p, TINY_ST);
    safetensors_file *f;
    pwb_err e;
    cr_assert_eq(safetensors_open(&f, p.data, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(f->n_tensors, 20);
    cr_assert_str_eq(safetensors_get_meta(f, "model.embed_tokens.weight"), "lm_head.weight");
    cr_assert_str_eq(safetensors_get_meta(f, "format"), "pt");
    cr_assert_null(safetensors_get_meta(f, "nope"));
    const pwb_tensor *t = safetensors_find_tensor(f, "lm_head.weight");
    cr_assert(t && t->type == DT_F32 && t->n_dims == 2);
    cr_assert_eq(t->ne[0], 128);
    cr_assert_eq(t->ne[1], 2048);
    cr_assert_eq(t->nbytes, (size_t)2048 * 128 * 4);
    static const struct { const char *name; int64_t ne0, ne1; } S[] = {
        {"model.norm.weight", 128, 1},
        {"model.layers.0.input_layernorm.weight", 128, 1},
        {"model.layers.1.post_attention_layernorm.weight", 128, 1},
        {"model.layers.0.self_attn.q_proj.weight", 128, 128},
        {"model.layers.0.self_attn.k_proj.weight", 128, 64},
        {"model.layers.1.self_attn.v_proj.weight", 128, 64},
        {"model.layers.1.self_attn.o_proj.weight", 128, 128},
        {"model.layers.0.mlp.gate_proj.weight", 128, 384},
        {"model.layers.0.mlp.up_proj.weight", 128, 384},
        {"model.layers.1.mlp.down_proj.weight", 384, 128},
    };
    for (size_t i = 0; i < sizeof S / sizeof S[0]; i++) {
        t = safetensors_find_tensor(f, S[i].name);
        cr_assert_not_null(t, "%s", S[i].name);
        cr_assert_eq(t->ne[0], S[i].ne0, "%s", S[i].name);
        cr_assert_eq(t->ne[1], S[i].ne1, "%s", S[i].name);
        cr_assert_eq(t->n_dims, S[i].ne1 == 1 ? 1 : 2, "%s", S[i].name);
        cr_assert_eq((uintptr_t)t->data % 4, 0);
    }
    cr_assert_null(safetensors_find_tensor(f, "model.embed_tokens.weight"));  /* tied */
    safetensors_close(f);
    buf_free(&p);
}

/* The GGUF conversion and the safetensors file hold the same weights up to Q8_0 rounding. */
Test(safetensors, gguf_token_embd_matches_lm_head)
{
    pwb_buf p;
    buf_init(&p);
    safetensors_file *f;
    gguf_file *g;
    pwb_err e;
    shared_path(&p, TINY_ST);
    cr_assert_eq(safetensors_open(&f, p.data, &e), PWB_OK, "%s", e.msg);
    shared_path(&p, TINY_GGUF);
    cr_assert_eq(gguf_open(&g, p.data, &e), PWB_OK, "%s", e.msg);
    const pwb_tensor *a = safetensors_find_tensor(f, "lm_head.weight");
    const pwb_tensor *b = gguf_find_tensor(g, "token_embd.weight");
    cr_assert(a && b && a->ne[0] == b->ne[0] && a->ne[1] == b->ne[1]);
    float *deq = malloc(sizeof(float) * 128 * 2048);
    cr_assert_eq(dequant_row(b->type, b->data, deq, 128 * 2048), PWB_OK);
    const float *ref = a->data;
    float maxdiff = 0, maxw = 0;
    for (int i = 0; i < 128 * 2048; i++) {
        maxdiff = fmaxf(maxdiff, fabsf(deq[i] - ref[i]));
        maxw = fmaxf(maxw, fabsf(ref[i]));
    }
    cr_assert(maxdiff < 0.02f, "max |diff| %g", maxdiff);
    cr_assert(maxdiff > 0 && maxw > 1.0f);
    /* The other matrices agree too (GGUF permutes q/k rows, so compare the unpermuted v/o/mlp). */
    static const char *pairs[][2] = {{"model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight"},
                                     {"model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight"},
                                     {"model.norm.weight", "output_norm.weight"}};
    for (int k = 0; k < 3; k++) {
        a = safetensors_find_tensor(f, pairs[k][0]);
        b = gguf_find_tensor(g, pairs[k][1]);
        cr_assert(a && b && a->ne[0] == b->ne[0] && a->ne[1] == b->ne[1], "%s", pairs[k][1]);
        int64_t n = a->ne[0] * a->ne[1];
        cr_assert_eq(dequant_row(b->type, b->data, deq, n), PWB_OK);
        maxdiff = 0;
        for (int64_t i = 0; i < n; i++)
            maxdiff = fmaxf(maxdiff, fabsf(deq[i] - ((const float *)a->data)[i]));
        cr_assert(maxdiff < 0.02f, "%s: max |diff| %g", pairs[k][1], maxdiff);
    }
    free(deq);
    gguf_close(g);
    safetensors_close(f);
    buf_free(&p);
}

Test(safetensors, crafted_valid_and_unaligned)
{
    float data[6] = {1, 2, 3, 4, 5, 6};
    safetensors_file *f;
    void *mem;
    pwb_err e;
    /* The data section starts right after the header: make it land off a 4-byte boundary. */
    const char *h2 = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}, \"__metadata__\":{\"a\":\"b\"}}";
    cr_assert_neq((8 + strlen(h2)) % 4, 0);
    cr_assert_eq(open_st(h2, data, sizeof data, &f, &mem, &e), PWB_OK, "%s", e.msg);
    const pwb_tensor *t = safetensors_find_tensor(f, "w");
    cr_assert(t && t->ne[0] == 3 && t->ne[1] == 2 && t->nbytes == 24);
    cr_assert_eq((uintptr_t)t->data % 4, 0, "unaligned data must be copied");
    cr_assert_float_eq(((const float *)t->data)[4], 5.0f, 0);
    cr_assert_str_eq(safetensors_get_meta(f, "a"), "b");
    safetensors_close(f);
    free(mem);
    /* F16 and BF16, a scalar and an empty tensor */
    uint16_t hd[4] = {0x3c00, 0x4000, 0x3f80, 0x4040};
    const char *h3 = "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,1,2],\"data_offsets\":[4,8]},"
                     "\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[8,8]}}";
    cr_assert_eq(open_st(h3, hd, sizeof hd, &f, &mem, &e), PWB_OK, "%s", e.msg);
    const pwb_tensor *b = safetensors_find_tensor(f, "b");
    cr_assert(b && b->type == DT_BF16 && b->n_dims == 3 && b->ne[0] == 2 && b->ne[1] == 1 && b->ne[2] == 1);
    float out[2];
    cr_assert_eq(dequant_row(b->type, b->data, out, 2), PWB_OK);
    cr_assert_float_eq(out[1], 3.0f, 0);
    cr_assert_eq(safetensors_find_tensor(f, "z")->nbytes, 0);
    safetensors_close(f);
    free(mem);
}

Test(safetensors, hostile_headers)
{
    cr_assert_eq(try_header("{}", 0), PWB_OK);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), PWB_OK);
    /* offsets past the data */
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7), PWB_EPARSE);
    /* size does not match shape x dtype */
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16), PWB_EPARSE);
    /* begin > end, negative, fractional, huge */
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 16), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 16), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}", 16), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", 16), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", 16),
                 PWB_EPARSE);
    /* overlapping tensors */
    cr_assert_eq(try_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16), PWB_EPARSE);
    /* duplicate names (cJSON keeps both) */
    cr_assert_eq(try_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                            "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16), PWB_EPARSE);
    /* unsupported dtypes and ranks */
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8), PWB_EUNSUP);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 8), PWB_EUNSUP);
    /* malformed structure */
    cr_assert_eq(try_header("[]", 0), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":3}", 0), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\"}}", 0), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"x\"],\"data_offsets\":[0,4]}}", 4), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4), PWB_EPARSE);
    cr_assert_eq(try_header("{\"__metadata__\":{\"a\":1}}", 0), PWB_EPARSE);
    cr_assert_eq(try_header("{\"__metadata__\":[]}", 0), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":", 0), PWB_EPARSE);
    cr_assert_eq(try_header("{\"w\":{}}\0garbage", 0), PWB_EPARSE);

    /* header length field: huge, past the file, too small */
    pwb_err e;
    safetensors_file *f;
    unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    cr_assert_eq(safetensors_open_memory(&f, big, sizeof big, NULL, &e), PWB_ERANGE);
    unsigned char past[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    cr_assert_eq(safetensors_open_memory(&f, past, sizeof past, NULL, &e), PWB_EPARSE);
    cr_assert_eq(safetensors_open_memory(&f, past, 7, NULL, &e), PWB_EPARSE);
    cr_assert_eq(safetensors_open(&f, "/nonexistent.safetensors", &e), PWB_EIO);
}

Test(safetensors, truncated_and_flipped_real_file)
{
    pwb_buf p, data;
    buf_init(&p);
    buf_init(&data);
    shared_path(&p, TINY_ST);
    pwb_err e;
    cr_assert_eq(file_read_all(p.data, 1 << 24, &data, &e), PWB_OK, "%s", e.msg);
    for (size_t n = 0; n < data.len; n += n < 2300 ? 7 : 9973) {
        void *m = exact_copy(data.data, n);
        safetensors_file *f = NULL;
        int rc = safetensors_open_memory(&f, m, n, "cut.safetensors", &e);
        cr_assert_neq(rc, PWB_OK, "cut at %zu opened", n);
        cr_assert_null(f);
        free(m);
    }
    pwb_rng r;
    rng_init(&r, 99);
    for (int it = 0; it < 300; it++) {
        unsigned char *m = exact_copy(data.data, data.len);
        for (int k = 0; k < 3; k++)
            m[rng_below(&r, 2168)] ^= (unsigned char)(1u << rng_below(&r, 8));
        safetensors_file *f = NULL;
        if (safetensors_open_memory(&f, m, data.len, "flip.safetensors", &e) == PWB_OK) {
            for (size_t i = 0; i < f->n_tensors; i++) {
                volatile unsigned char sink = 0;
                const unsigned char *d = f->tensors[i].data;
                if (f->tensors[i].nbytes)
                    sink ^= d[0] ^ d[f->tensors[i].nbytes - 1];
                (void)sink;
            }
            safetensors_close(f);
        }
        free(m);
    }
    buf_free(&p);
    buf_free(&data);
}

Test(safetensors, write_read_round_trip)
{
    char dir[] = "/tmp/pwb_st_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    pwb_buf path;
    buf_init(&path);
    buf_printf(&path, "%s/adapter_model.safetensors", dir);
    float prompt[3 * 5];
    for (int i = 0; i < 15; i++)
        prompt[i] = (float)i * 0.5f - 3;
    uint16_t bf[4] = {0x3f80, 0x4000, 0x4040, 0x4080};
    pwb_tensor ts[2] = {
        {"prompt_embeddings", DT_F32, 2, {5, 3, 1, 1}, prompt, sizeof prompt},
        {"x \"quoted\"", DT_BF16, 1, {4, 1, 1, 1}, bf, sizeof bf},
    };
    const char *meta[] = {"format", "pt"};
    pwb_err e;
    cr_assert_eq(safetensors_write(path.data, ts, 2, meta, 1, &e), PWB_OK, "%s", e.msg);
    safetensors_file *f;
    cr_assert_eq(safetensors_open(&f, path.data, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq((f->data_offset) % 8, 0);
    const pwb_tensor *t = safetensors_find_tensor(f, "prompt_embeddings");
    cr_assert(t && t->type == DT_F32 && t->ne[0] == 5 && t->ne[1] == 3 && t->n_dims == 2);
    cr_assert_eq(memcmp(t->data, prompt, sizeof prompt), 0);
    t = safetensors_find_tensor(f, "x \"quoted\"");
    cr_assert(t && t->type == DT_BF16 && memcmp(t->data, bf, sizeof bf) == 0);
    cr_assert_str_eq(safetensors_get_meta(f, "format"), "pt");
    safetensors_close(f);
    pwb_tensor q = {"q", DT_Q8_0, 1, {32, 1, 1, 1}, bf, 34};
    cr_assert_eq(safetensors_write(path.data, &q, 1, NULL, 0, &e), PWB_EUNSUP);
    unlink(path.data);
    rmdir(dir);
    buf_free(&path);
}
