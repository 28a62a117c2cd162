#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/quant.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/rng.h"

/* ---- paths to the shared models ---- */

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

static void root_path(pwb_buf *out, const char *rel)
{
    const char *root = getenv("PWB_ROOT");
    buf_reset(out);
    buf_printf(out, "%s/%s", root && *root ? root : ".", rel);
}

#define TINY "models/tinystories-656k/TinyStories-656K-Q8_0.gguf"
#define SMOL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

/* ---- a tiny GGUF writer for crafted inputs ---- */

static void put_u32(pwb_buf *b, uint32_t v)
{
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    buf_append(b, c, 4);
}

static void put_u64(pwb_buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_str(pwb_buf *b, const char *s)
{
    put_u64(b, strlen(s));
    buf_append(b, s, strlen(s));
}

static void put_header(pwb_buf *b, uint64_t n_tensors, uint64_t n_kv)
{
    buf_reset(b);
    buf_append(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static void put_kv_u32(pwb_buf *b, const char *key, uint32_t v)
{
    put_str(b, key);
    put_u32(b, GGUF_T_U32);
    put_u32(b, v);
}

static void pad_to(pwb_buf *b, size_t align)
{
    while (b->len % align)
        buf_putc(b, 0);
}

/* Exact-size, 32-byte aligned heap copies, so gguf_open_memory parses them in place and
 * AddressSanitizer sees any read past the end. */
static void *exact_copy(const void *data, size_t n)
{
    void *p = NULL;
    cr_assert_eq(posix_memalign(&p, 32, n ? n : 1), 0);
    memcpy(p, data, n);
    return p;
}

static void *last_copy;

static int open_buf(const pwb_buf *b, gguf_file **g, pwb_err *e)
{
    free(last_copy);
    last_copy = exact_copy(b->data, b->len);
    err_clear(e);
    return gguf_open_memory(g, last_copy, b->len, "crafted.gguf", e);
}

static void release_buf(void)
{
    free(last_copy);
    last_copy = NULL;
}

/* ---- the real files ---- */

Test(gguf, tinystories_metadata_and_tensors)
{
    pwb_buf p;
    buf_init(&p);
    shared_path(&p, TINY);
    gguf_file *g;
    pwb_err e;
    cr_assert_eq(gguf_open(&g, p.data, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(g->version, 3);
    cr_assert_eq(g->n_kv, 34);
    cr_assert_eq(g->n_tensors, 20);
    cr_assert_eq(g->alignment, 32);
    cr_assert_eq(g->data_offset % 32, 0);
    cr_assert_str_eq(gguf_get_str(g, "tokenizer.ggml.model", NULL), "llama");
    cr_assert_str_eq(gguf_get_str(g, "general.architecture", NULL), "llama");
    cr_assert_str_eq(gguf_get_str(g, "general.license", NULL), "apache-2.0");
    cr_assert_eq(gguf_get_u32(g, "general.file_type", 0), 7);
    cr_assert_eq(gguf_get_u32(g, "tokenizer.ggml.bos_token_id", 99), 1);
    cr_assert_eq(gguf_get_i32(g, "tokenizer.ggml.eos_token_id", 99), 2);
    cr_assert_eq(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", 0), 1);
    cr_assert_eq(gguf_get_u32(g, "llama.embedding_length", 0), 128);
    cr_assert_eq(gguf_get_u32(g, "no.such.key", 1234), 1234);
    cr_assert_str_eq(gguf_get_str(g, "llama.embedding_length", "dflt"), "dflt");  /* wrong type */
    size_t n;
    const char *const *toks = gguf_get_arr_strs(g, "tokenizer.ggml.tokens", &n);
    cr_assert_eq(n, 2048);
    cr_assert_str_eq(toks[0], "<unk>");
    cr_assert_str_eq(toks[1], "<|start_story|>");
    const float *scores = gguf_get_arr_f32(g, "tokenizer.ggml.scores", &n);
    cr_assert(scores && n == 2048);
    const int32_t *types = gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &n);
    cr_assert(types && n == 2048);
    cr_assert_eq(types[1], 3);  /* control */
    cr_assert_null(gguf_get_arr_f32(g, "tokenizer.ggml.tokens", &n));  /* wrong element type */
    cr_assert_eq(n, 0);

    int n_q8 = 0, n_f32 = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const pwb_tensor *t = &g->tensors[i];
        n_q8 += t->type == DT_Q8_0;
        n_f32 += t->type == DT_F32;
        cr_assert_eq(((const unsigned char *)t->data - g->base) % 32, 0);
        cr_assert_eq(quant_check(t, &e), PWB_OK, "%s", e.msg);
    }
    cr_assert_eq(n_q8, 15);
    cr_assert_eq(n_f32, 5);
    const pwb_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    cr_assert_not_null(emb);
    cr_assert_eq(emb->type, DT_Q8_0);
    cr_assert_eq(emb->n_dims, 2);
    cr_assert_eq(emb->ne[0], 128);
    cr_assert_eq(emb->ne[1], 2048);
    cr_assert_eq(emb->nbytes, (size_t)2048 * 4 * 34);
    const pwb_tensor *k = gguf_find_tensor(g, "blk.1.attn_k.weight");
    cr_assert(k && k->ne[0] == 128 && k->ne[1] == 64);
    cr_assert_null(gguf_find_tensor(g, "nope"));
    gguf_close(g);
    buf_free(&p);
}

Test(gguf, smollm2_if_present)
{
    pwb_buf p;
    buf_init(&p);
    root_path(&p, SMOL);
    if (!file_exists(p.data)) {
        buf_free(&p);
        cr_skip_test("models/ has no SmolLM2 GGUF (make model)");
    }
    gguf_file *g;
    pwb_err e;
    cr_assert_eq(gguf_open(&g, p.data, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(g->n_kv, 33);
    cr_assert_eq(g->n_tensors, 272);
    cr_assert_eq(gguf_get_u32(g, "llama.block_count", 0), 30);
    cr_assert_eq(gguf_get_u32(g, "llama.embedding_length", 0), 576);
    cr_assert_eq(gguf_get_u32(g, "llama.attention.head_count_kv", 0), 3);
    cr_assert_float_eq(gguf_get_f32(g, "llama.rope.freq_base", 0), 100000.0f, 1e-3);
    cr_assert_float_eq(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", 0), 1e-5f, 1e-9);
    cr_assert_str_eq(gguf_get_str(g, "tokenizer.ggml.model", NULL), "gpt2");
    cr_assert_str_eq(gguf_get_str(g, "tokenizer.ggml.pre", NULL), "smollm");
    const char *tmpl = gguf_get_str(g, "tokenizer.chat_template", "");
    cr_assert(strstr(tmpl, "<|im_start|>") != NULL);
    size_t n;
    cr_assert_not_null(gguf_get_arr_strs(g, "tokenizer.ggml.tokens", &n));
    cr_assert_eq(n, 49152);
    const char *const *merges = gguf_get_arr_strs(g, "tokenizer.ggml.merges", &n);
    cr_assert_eq(n, 48900);
    cr_assert(strchr(merges[0], ' ') != NULL);
    const gguf_arr *langs = gguf_get_arr(g, "general.languages");
    cr_assert(langs && langs->type == GGUF_T_STRING && langs->n == 1);
    cr_assert_str_eq(langs->strs[0], "en");
    int counts[DT_COUNT_] = {0};
    for (size_t i = 0; i < g->n_tensors; i++) {
        counts[g->tensors[i].type]++;
        cr_assert_eq(quant_check(&g->tensors[i], &e), PWB_OK, "%s", e.msg);
    }
    cr_assert_eq(counts[DT_Q4_1], 210);
    cr_assert_eq(counts[DT_F32], 61);
    cr_assert_eq(counts[DT_Q8_0], 1);
    const pwb_tensor *down = gguf_find_tensor(g, "blk.0.ffn_down.weight");
    cr_assert(down && down->type == DT_Q4_1 && down->ne[0] == 1536 && down->ne[1] == 576);
    gguf_close(g);
    buf_free(&p);
}

/* ---- crafted files: every value type, nesting, alignment ---- */

static void build_all_types(pwb_buf *b, uint32_t align)
{
    put_header(b, 2, 16);
    put_kv_u32(b, "general.alignment", align);
    put_str(b, "u8"); put_u32(b, GGUF_T_U8); buf_putc(b, (char)200);
    put_str(b, "i8"); put_u32(b, GGUF_T_I8); buf_putc(b, (char)-5);
    put_str(b, "u16"); put_u32(b, GGUF_T_U16); buf_append(b, "\x34\x12", 2);
    put_str(b, "i16"); put_u32(b, GGUF_T_I16); buf_append(b, "\xfe\xff", 2);
    put_str(b, "i32"); put_u32(b, GGUF_T_I32); put_u32(b, (uint32_t)-70000);
    put_str(b, "u64"); put_u32(b, GGUF_T_U64); put_u64(b, 1ull << 40);
    put_str(b, "i64"); put_u32(b, GGUF_T_I64); put_u64(b, (uint64_t)-3);
    put_str(b, "f32"); put_u32(b, GGUF_T_F32); put_u32(b, 0x3fc00000);        /* 1.5 */
    put_str(b, "f64"); put_u32(b, GGUF_T_F64); put_u64(b, 0x4004000000000000ull); /* 2.5 */
    put_str(b, "yes"); put_u32(b, GGUF_T_BOOL); buf_putc(b, 1);
    put_str(b, "s"); put_u32(b, GGUF_T_STRING); put_str(b, "hello");
    /* a string with an embedded NUL */
    put_str(b, "nul"); put_u32(b, GGUF_T_STRING); put_u64(b, 3); buf_append(b, "a\0b", 3);
    put_str(b, "arr.u16"); put_u32(b, GGUF_T_ARRAY); put_u32(b, GGUF_T_U16); put_u64(b, 3);
    buf_append(b, "\x01\x00\x02\x00\x03\x00", 6);
    /* array of arrays of strings: [["a", "bc"], []] */
    put_str(b, "arr.nested"); put_u32(b, GGUF_T_ARRAY); put_u32(b, GGUF_T_ARRAY); put_u64(b, 2);
    put_u32(b, GGUF_T_STRING); put_u64(b, 2); put_str(b, "a"); put_str(b, "bc");
    put_u32(b, GGUF_T_STRING); put_u64(b, 0);
    put_str(b, "arr.empty"); put_u32(b, GGUF_T_ARRAY); put_u32(b, GGUF_T_F32); put_u64(b, 0);
    /* tensors: F32 [4, 2] at 0 and Q8_0 [32, 1] at the next aligned offset */
    put_str(b, "a"); put_u32(b, 2); put_u64(b, 4); put_u64(b, 2); put_u32(b, DT_F32); put_u64(b, 0);
    put_str(b, "q"); put_u32(b, 1); put_u64(b, 32); put_u32(b, DT_Q8_0); put_u64(b, align > 32 ? align : 64);
    pad_to(b, align);
    for (int i = 0; i < 8; i++) {
        float f = (float)i;
        buf_append(b, &f, 4);
    }
    while (b->len % align || b->len % 64)
        buf_putc(b, 0);
    block_q8_0 q = {.d = 0x3c00};
    for (int i = 0; i < 32; i++)
        q.qs[i] = (int8_t)i;
    buf_append(b, &q, sizeof q);
}

Test(gguf, crafted_every_value_type)
{
    pwb_buf b;
    buf_init(&b);
    build_all_types(&b, 64);
    gguf_file *g;
    pwb_err e;
    cr_assert_eq(open_buf(&b, &g, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(g->alignment, 64);
    cr_assert_eq(g->n_kv, 16);
    cr_assert_eq(gguf_get_u32(g, "u8", 0), 200);
    cr_assert_eq(gguf_get_i32(g, "i8", 0), -5);
    cr_assert_eq(gguf_get_u32(g, "i8", 7), 7);       /* negative does not fit a u32 */
    cr_assert_eq(gguf_get_u32(g, "u16", 0), 0x1234);
    cr_assert_eq(gguf_get_i32(g, "i16", 0), -2);
    cr_assert_eq(gguf_get_i32(g, "i32", 0), -70000);
    cr_assert_eq(gguf_get_u64(g, "u64", 0), 1ull << 40);
    cr_assert_eq(gguf_get_u32(g, "u64", 9), 9);      /* too large for a u32 */
    cr_assert_eq(gguf_find_kv(g, "i64")->v.i64, -3);
    cr_assert_float_eq(gguf_get_f32(g, "f32", 0), 1.5f, 0);
    cr_assert_float_eq(gguf_get_f32(g, "f64", 0), 2.5f, 0);
    cr_assert_float_eq(gguf_get_f32(g, "i16", 0), -2.0f, 0);
    cr_assert_eq(gguf_get_bool(g, "yes", 0), 1);
    cr_assert_str_eq(gguf_get_str(g, "s", NULL), "hello");
    const gguf_kv *nul = gguf_find_kv(g, "nul");
    cr_assert_eq(nul->str_len, 3);
    cr_assert_eq(memcmp(nul->str, "a\0b", 4), 0);
    const gguf_arr *a = gguf_get_arr(g, "arr.u16");
    cr_assert(a && a->type == GGUF_T_U16 && a->n == 3);
    cr_assert_eq(((const uint16_t *)a->data)[2], 3);
    const gguf_arr *nest = gguf_get_arr(g, "arr.nested");
    cr_assert(nest && nest->type == GGUF_T_ARRAY && nest->n == 2);
    cr_assert(nest->arrs[0].type == GGUF_T_STRING && nest->arrs[0].n == 2);
    cr_assert_str_eq(nest->arrs[0].strs[1], "bc");
    cr_assert_eq(nest->arrs[0].str_lens[1], 2);
    cr_assert_eq(nest->arrs[1].n, 0);
    size_t n = 99;
    gguf_get_arr_f32(g, "arr.empty", &n);
    cr_assert_eq(n, 0);
    const pwb_tensor *t = gguf_find_tensor(g, "a");
    cr_assert(t && t->type == DT_F32 && t->ne[0] == 4 && t->ne[1] == 2 && t->nbytes == 32);
    cr_assert_float_eq(((const float *)t->data)[5], 5.0f, 0);
    const pwb_tensor *q = gguf_find_tensor(g, "q");
    cr_assert(q && q->nbytes == 34);
    cr_assert_eq(((const block_q8_0 *)q->data)->qs[31], 31);
    cr_assert_eq(((const unsigned char *)q->data - g->base - g->data_offset), 64);
    gguf_close(g);
    buf_free(&b);
    release_buf();
}

/* ---- hostile input ---- */

static int open_bytes(const void *data, size_t n, pwb_err *e)
{
    void *copy = exact_copy(data, n);
    gguf_file *g = NULL;
    err_clear(e);
    int rc = gguf_open_memory(&g, copy, n, "hostile.gguf", e);
    if (rc == PWB_OK) {
        /* touch everything the file hands out */
        for (size_t i = 0; i < g->n_tensors; i++) {
            const unsigned char *p = g->tensors[i].data;
            volatile unsigned char sink = 0;
            if (g->tensors[i].nbytes)
                sink ^= p[0] ^ p[g->tensors[i].nbytes - 1];
            (void)sink;
        }
        gguf_close(g);
    } else {
        cr_assert_null(g);
        cr_assert(e->msg[0] != '\0');
    }
    free(copy);
    return rc;
}

Test(gguf, truncated_real_file_fails_cleanly)
{
    pwb_buf p, data;
    buf_init(&p);
    buf_init(&data);
    shared_path(&p, TINY);
    pwb_err e;
    cr_assert_eq(file_read_all(p.data, 1 << 24, &data, &e), PWB_OK, "%s", e.msg);
    gguf_file *g;
    cr_assert_eq(gguf_open_memory(&g, data.data, data.len, "x", &e), PWB_OK);
    size_t header_end = g->data_offset, last_end = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        size_t end = (size_t)((const unsigned char *)g->tensors[i].data - g->base) + g->tensors[i].nbytes;
        last_end = end > last_end ? end : last_end;
    }
    gguf_close(g);
    /* every cut in the first 2 KiB, then a stride through the header and the data */
    for (size_t n = 0; n < last_end; n += n < 2048 ? 1 : n < header_end ? 61 : 4999) {
        int rc = open_bytes(data.data, n, &e);
        cr_assert_neq(rc, PWB_OK, "truncated at %zu bytes but opened", n);
        cr_assert(rc == PWB_EPARSE, "cut at %zu: %s", n, e.msg);
        cr_assert(strstr(e.msg, "hostile.gguf") != NULL, "message names the file: %s", e.msg);
    }
    buf_free(&p);
    buf_free(&data);
}

Test(gguf, flipped_bytes_never_crash)
{
    pwb_buf p, data;
    buf_init(&p);
    buf_init(&data);
    shared_path(&p, TINY);
    pwb_err e;
    cr_assert_eq(file_read_all(p.data, 1 << 24, &data, &e), PWB_OK, "%s", e.msg);
    /* Corrupt only the first 64 KiB (header and metadata); run over a copy of that prefix plus
     * the rest, and check nothing crashes. Some corruptions are harmless (a token's text). */
    pwb_rng r;
    rng_init(&r, 1234);
    unsigned char *copy = malloc(data.len);
    int failures = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(copy, data.data, data.len);
        int flips = 1 + (int)rng_below(&r, 4);
        for (int f = 0; f < flips; f++) {
            size_t at = it % 3 == 0 ? rng_below(&r, 64) : rng_below(&r, 65536);
            copy[at] ^= (unsigned char)(1u << rng_below(&r, 8));
        }
        failures += open_bytes(copy, data.len, &e) != PWB_OK;
    }
    cr_assert(failures > 0);
    free(copy);
    buf_free(&p);
    buf_free(&data);
}

Test(gguf, absurd_counts_and_sizes)
{
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    gguf_file *g;

    put_header(&b, 0, 1ull << 60);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_ERANGE, "%s", e.msg);
    put_header(&b, 1ull << 40, 0);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_ERANGE, "%s", e.msg);
    put_header(&b, 1000, 1000);     /* within the caps, but cannot fit in the bytes */
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);

    put_header(&b, 0, 1);           /* string length past the end */
    put_u64(&b, 1ull << 62);
    buf_append(&b, "abcdefghijklmnop", 16);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);

    put_header(&b, 0, 1);           /* huge array */
    put_str(&b, "a"); put_u32(&b, GGUF_T_ARRAY); put_u32(&b, GGUF_T_U64); put_u64(&b, 1ull << 61);
    put_u64(&b, 0);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_ERANGE, "%s", e.msg);

    put_header(&b, 0, 1);           /* array length within the cap, bytes missing */
    put_str(&b, "a"); put_u32(&b, GGUF_T_ARRAY); put_u32(&b, GGUF_T_STRING); put_u64(&b, 1000000);
    put_str(&b, "x");
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);

    put_header(&b, 0, 1);           /* nesting bomb */
    put_str(&b, "a"); put_u32(&b, GGUF_T_ARRAY);
    for (int i = 0; i < 40; i++) {
        put_u32(&b, GGUF_T_ARRAY);
        put_u64(&b, 1);
    }
    put_u32(&b, GGUF_T_U8); put_u64(&b, 0);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);

    put_header(&b, 0, 1);           /* unknown value type */
    put_str(&b, "a"); put_u32(&b, 77); put_u64(&b, 0);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);

    put_header(&b, 0, 2);           /* duplicate key */
    put_kv_u32(&b, "k", 1);
    put_kv_u32(&b, "k", 2);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);

    put_header(&b, 0, 1);           /* alignment not a power of two */
    put_kv_u32(&b, "general.alignment", 48);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);

    put_header(&b, 0, 1);           /* bool must be 0/1 */
    put_str(&b, "b"); put_u32(&b, GGUF_T_BOOL); buf_putc(&b, 7);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);
    buf_free(&b);
    release_buf();
}

static int one_tensor(pwb_buf *b, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off, size_t data_bytes,
                      gguf_file **g, pwb_err *e)
{
    put_header(b, 1, 0);
    put_str(b, "t");
    put_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        put_u64(b, ne[d]);
    put_u32(b, type);
    put_u64(b, off);
    pad_to(b, 32);
    for (size_t i = 0; i < data_bytes; i++)
        buf_putc(b, 0);
    return open_buf(b, g, e);
}

Test(gguf, bad_tensor_infos)
{
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    gguf_file *g;
    uint64_t ne[5] = {32, 2, 1, 1, 1};
    cr_assert_eq(one_tensor(&b, 2, ne, DT_F32, 0, 256, &g, &e), PWB_OK, "%s", e.msg);
    gguf_close(g);
    cr_assert_eq(one_tensor(&b, 2, ne, DT_F32, 0, 255, &g, &e), PWB_EPARSE, "%s", e.msg);   /* past EOF */
    cr_assert(strstr(e.msg, "crafted.gguf") && strstr(e.msg, "'t'"), "%s", e.msg);
    cr_assert_eq(one_tensor(&b, 2, ne, DT_F32, 4, 512, &g, &e), PWB_EPARSE, "%s", e.msg);   /* misaligned */
    cr_assert_eq(one_tensor(&b, 5, ne, DT_F32, 0, 256, &g, &e), PWB_EPARSE, "%s", e.msg);   /* 5 dims */
    cr_assert_eq(one_tensor(&b, 2, ne, 99, 0, 256, &g, &e), PWB_EUNSUP, "%s", e.msg);       /* unknown type */
    cr_assert(strstr(e.msg, "99") != NULL, "%s", e.msg);
    cr_assert_eq(one_tensor(&b, 2, ne, 4, 0, 256, &g, &e), PWB_EUNSUP, "%s", e.msg);        /* removed type */
    uint64_t odd[2] = {33, 1};
    cr_assert_eq(one_tensor(&b, 2, odd, DT_Q8_0, 0, 256, &g, &e), PWB_EPARSE, "%s", e.msg); /* 33 % 32 */
    uint64_t big[4] = {1ull << 40, 1ull << 40, 1ull << 40, 1};
    cr_assert_eq(one_tensor(&b, 3, big, DT_F32, 0, 64, &g, &e), PWB_EPARSE, "%s", e.msg);  /* overflow */
    uint64_t neg[2] = {(uint64_t)-32, 1};
    cr_assert_eq(one_tensor(&b, 2, neg, DT_F32, 0, 64, &g, &e), PWB_EPARSE, "%s", e.msg);
    uint64_t far[2] = {32, 1};
    cr_assert_eq(one_tensor(&b, 2, far, DT_F32, 1ull << 63, 64, &g, &e), PWB_EPARSE, "%s", e.msg);
    /* An unsupported but known type loads; using it is refused. */
    uint64_t q5[2] = {32, 1};
    cr_assert_eq(one_tensor(&b, 2, q5, 20 /* IQ4_NL */, 0, 32, &g, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(quant_check(gguf_find_tensor(g, "t"), &e), PWB_EUNSUP);
    gguf_close(g);

    /* overlapping tensors */
    put_header(&b, 2, 0);
    put_str(&b, "a"); put_u32(&b, 1); put_u64(&b, 64); put_u32(&b, DT_F32); put_u64(&b, 0);
    put_str(&b, "b"); put_u32(&b, 1); put_u64(&b, 8); put_u32(&b, DT_F32); put_u64(&b, 32);
    pad_to(&b, 32);
    for (int i = 0; i < 512; i++)
        buf_putc(&b, 0);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);
    cr_assert(strstr(e.msg, "overlap") != NULL, "%s", e.msg);

    /* duplicate tensor names */
    put_header(&b, 2, 0);
    put_str(&b, "a"); put_u32(&b, 1); put_u64(&b, 8); put_u32(&b, DT_F32); put_u64(&b, 0);
    put_str(&b, "a"); put_u32(&b, 1); put_u64(&b, 8); put_u32(&b, DT_F32); put_u64(&b, 32);
    pad_to(&b, 32);
    for (int i = 0; i < 64; i++)
        buf_putc(&b, 0);
    cr_assert_eq(open_buf(&b, &g, &e), PWB_EPARSE, "%s", e.msg);
    buf_free(&b);
    release_buf();
}

Test(gguf, bad_magic_and_versions)
{
    pwb_err e;
    gguf_file *g;
    cr_assert_eq(gguf_open_memory(&g, "GGUF", 4, NULL, &e), PWB_EPARSE);
    cr_assert_eq(gguf_open_memory(&g, "GGML\3\0\0\0", 8, NULL, &e), PWB_EPARSE);
    cr_assert_eq(gguf_open_memory(&g, "GGUF\1\0\0\0", 8, NULL, &e), PWB_EUNSUP);
    cr_assert_eq(gguf_open_memory(&g, "GGUF\0\0\0\3", 8, NULL, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "big-endian") != NULL);
    cr_assert_eq(gguf_open_memory(&g, "", 0, NULL, &e), PWB_EPARSE);
    cr_assert_eq(gguf_open(&g, "/nonexistent/model.gguf", &e), PWB_EIO);
    cr_assert(strstr(e.msg, "/nonexistent/model.gguf") != NULL);
}
