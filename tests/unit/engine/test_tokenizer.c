/* Tokenizer tests: exact id equality with Hugging Face tokenizers on SmolLM2's and TinyStories'
 * tokenizer.json (fixtures from tests/reference/make_tokenizer_fixtures.py over SST-2 dev,
 * GSM8K test and edge cases), the GGUF vocabulary path against the same ids, decoding, and
 * hostile input. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/sha256.h"
#include "util/str.h"
#include "util/timer.h"
#include "util/utf8.h"

/* ---- paths ---- */

static void shared_path(pwb_buf *out, const char *rel)
{
    const char *s = getenv("PWB_SHARED");
    pwb_buf dir;
    buf_init(&dir);
    if (s && s[0]) buf_puts(&dir, s);
    else {
        const char *root = getenv("PWB_ROOT");
        buf_printf(&dir, "%s/../shared", root && root[0] ? root : ".");
    }
    file_join(out, dir.data, rel);
    buf_free(&dir);
}

static void root_path(pwb_buf *out, const char *rel)
{
    const char *root = getenv("PWB_ROOT");
    file_join(out, root && root[0] ? root : ".", rel);
}

static tokenizer *load_json(const char *rel)
{
    pwb_buf p;
    buf_init(&p);
    shared_path(&p, rel);
    if (!file_exists(p.data)) cr_skip_test("%s not found (set PWB_SHARED)", p.data);
    tokenizer *t = NULL;
    pwb_err e;
    err_clear(&e);
    int rc = tokenizer_from_json(&t, p.data, &e);
    cr_assert_eq(rc, PWB_OK, "tokenizer_from_json(%s): %s", p.data, e.msg);
    buf_free(&p);
    return t;
}

#define SMOLLM2_JSON "models/smollm2-tokenizer/tokenizer.json"
#define TINY_JSON "models/tinystories-656k/tokenizer.json"
#define TINY_GGUF "models/tinystories-656k/TinyStories-656K-Q8_0.gguf"

/* ---- reporting ---- */

static void escape(pwb_buf *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && o->len < 400; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') buf_puts(o, "\\n");
        else if (c == '\t') buf_puts(o, "\\t");
        else if (c == '\\' || c == '"') buf_printf(o, "\\%c", c);
        else if (c < 0x20 || c == 0x7f) buf_printf(o, "\\x%02x", c);
        else buf_putc(o, (char)c);
    }
    if (n && o->len >= 400) buf_puts(o, "...");
}

static void ids_window(pwb_buf *o, const tokenizer *t, const int32_t *ids, size_t n, size_t at)
{
    size_t lo = at > 3 ? at - 3 : 0, hi = at + 4 < n ? at + 4 : n;
    buf_puts(o, lo ? "... " : "");
    for (size_t i = lo; i < hi; i++) {
        const char *tx = tokenizer_token_text(t, ids[i]);
        buf_printf(o, "%s%d\"", i == at ? "*" : "", ids[i]);
        escape(o, tx ? tx : "?", tx ? strlen(tx) : 1);
        buf_puts(o, "\" ");
    }
    if (hi < n) buf_puts(o, "...");
}

typedef struct check_ctx {
    const tokenizer *t;
    const char *what;
    size_t lines, ids, fails;
    pwb_buf first;           /* first mismatch, described */
} check_ctx;

static void check_init(check_ctx *c, const tokenizer *t, const char *what)
{
    memset(c, 0, sizeof *c);
    c->t = t;
    c->what = what;
    buf_init(&c->first);
}

/* Encodes text and compares with want; then decodes want and compares with want_text. */
static void check_one(check_ctx *c, size_t line, const char *text, size_t n, int add_special, int parse_special,
                      const int32_t *want, size_t n_want, const char *want_text, size_t n_want_text)
{
    int32_t *ids = NULL;
    size_t n_ids = 0;
    pwb_err e;
    err_clear(&e);
    int rc = tokenizer_encode(c->t, text, n, add_special, parse_special, &ids, &n_ids, &e);
    c->lines++;
    c->ids += n_want;
    size_t at = 0;
    while (rc >= 0 && at < n_ids && at < n_want && ids[at] == want[at]) at++;
    int bad = rc < 0 || n_ids != n_want || at < n_want;
    pwb_buf dec;
    buf_init(&dec);
    int bad_dec = 0;
    if (!bad && want_text) {
        tokenizer_decode(c->t, want, n_want, 0, &dec);
        bad_dec = dec.len != n_want_text || memcmp(dec.data ? dec.data : "", want_text, n_want_text) != 0;
    }
    if ((bad || bad_dec) && c->fails++ == 0) {
        pwb_buf *o = &c->first;
        buf_printf(o, "%s line %zu (add_special %d, parse_special %d): text \"", c->what, line, add_special,
                   parse_special);
        escape(o, text, n);
        if (rc < 0) buf_printf(o, "\"\n  encode failed: %s", e.msg);
        else if (bad) {
            buf_printf(o, "\"\n  first difference at id %zu of %zu (got %zu ids)\n  want: ", at, n_want, n_ids);
            ids_window(o, c->t, want, n_want, at);
            buf_puts(o, "\n  got:  ");
            ids_window(o, c->t, ids, n_ids, at);
        } else {
            buf_puts(o, "\"\n  decode want \"");
            escape(o, want_text, n_want_text);
            buf_puts(o, "\"\n  decode got  \"");
            escape(o, dec.data ? dec.data : "", dec.len);
            buf_puts(o, "\"");
        }
    }
    buf_free(&dec);
    free(ids);
}

static void check_done(check_ctx *c)
{
    cr_log_info("%s: %zu texts, %zu ids, %zu mismatches", c->what, c->lines, c->ids, c->fails);
    cr_expect_eq(c->fails, 0, "%zu of %zu texts differ from Hugging Face tokenizers; first:\n%s", c->fails,
                 c->lines, c->first.data ? c->first.data : "");
    buf_free(&c->first);
}

static size_t ids_from_json(const cJSON *arr, int32_t **out)
{
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    *out = malloc((n ? n : 1) * sizeof **out);
    cr_assert_not_null(*out);
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) (*out)[i++] = (int32_t)it->valuedouble;
    return n;
}

/* ---- dataset fixtures: header line, then [ids] or [ids, "decoded"] per record ---- */

typedef struct texts {
    char **s;
    size_t n;
} texts;

static void texts_free(texts *x)
{
    for (size_t i = 0; i < x->n; i++) free(x->s[i]);
    free(x->s);
}

static void texts_add(texts *x, const char *s, size_t n)
{
    x->s = realloc(x->s, (x->n + 1) * sizeof *x->s);
    cr_assert_not_null(x->s);
    x->s[x->n] = malloc(n + 1);
    memcpy(x->s[x->n], s, n);
    x->s[x->n][n] = 0;
    x->n++;
}

/* Reads the dataset named in the fixture header, after checking its sha256. */
static void read_texts(const cJSON *hdr, texts *out)
{
    const char *rel = json_str(hdr, "source", ""), *fmt = json_str(hdr, "format", "");
    const char *field = json_str(hdr, "field", "");
    pwb_buf p, data;
    buf_init(&p);
    buf_init(&data);
    shared_path(&p, rel);
    if (!file_exists(p.data)) cr_skip_test("%s not found (set PWB_SHARED)", p.data);
    char hex[65];
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(file_sha256(p.data, hex, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(hex, json_str(hdr, "sha256", ""), "%s changed since the fixture was made", p.data);
    cr_assert_eq(file_read_all(p.data, 64u << 20, &data, &e), PWB_OK, "%s", e.msg);
    memset(out, 0, sizeof *out);
    char *s = data.data, *end = data.data + data.len;
    int skip = json_int(hdr, "skip_header", 0);
    while (s < end) {
        char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
        if (n && skip) skip--;
        else if (n && !strcmp(fmt, "tsv")) {
            char *tab = memchr(s, '\t', n);
            texts_add(out, s, tab ? (size_t)(tab - s) : n);
        } else if (n) {
            cJSON *j = json_parse(s, n, rel, &e);
            cr_assert_not_null(j, "%s", e.msg);
            const char *q = json_str(j, field, NULL);
            cr_assert_not_null(q, "%s: no field %s", rel, field);
            texts_add(out, q, strlen(q));
            cJSON_Delete(j);
        }
        s += n + 1;
    }
    buf_free(&p);
    buf_free(&data);
}

static void run_dataset_fixture(const tokenizer *t, const char *fixture, const char *what)
{
    pwb_buf p, data;
    buf_init(&p);
    buf_init(&data);
    root_path(&p, fixture);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(file_read_all(p.data, 16u << 20, &data, &e), PWB_OK, "%s", e.msg);
    char *s = data.data, *end = data.data + data.len;
    char *nl = memchr(s, '\n', data.len);
    cr_assert_not_null(nl);
    cJSON *hdr = json_parse(s, (size_t)(nl - s), fixture, &e);
    cr_assert_not_null(hdr, "%s", e.msg);
    texts tx;
    read_texts(hdr, &tx);
    cr_assert_eq(tx.n, (size_t)json_int(hdr, "count", -1), "%s: dataset has %zu records", fixture, tx.n);
    int add_special = json_int(hdr, "add_special", 1), parse_special = json_int(hdr, "parse_special", 1);
    check_ctx c;
    check_init(&c, t, what);
    size_t line = 1, rec = 0;
    for (s = nl + 1; s < end; line++) {
        nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
        if (n) {
            cJSON *row = json_parse(s, n, fixture, &e);
            cr_assert(cJSON_IsArray(row), "%s:%zu: %s", fixture, line + 1, e.msg);
            cr_assert_lt(rec, tx.n);
            int32_t *want;
            size_t nw = ids_from_json(cJSON_GetArrayItem(row, 0), &want);
            const cJSON *d = cJSON_GetArrayItem(row, 1);
            const char *dt = cJSON_IsString(d) ? d->valuestring : tx.s[rec];
            check_one(&c, line + 1, tx.s[rec], strlen(tx.s[rec]), add_special, parse_special, want, nw, dt,
                      strlen(dt));
            free(want);
            cJSON_Delete(row);
            rec++;
        }
        s += n + 1;
    }
    cr_expect_eq(rec, tx.n, "%s: %zu rows for %zu records", fixture, rec, tx.n);
    check_done(&c);
    texts_free(&tx);
    cJSON_Delete(hdr);
    buf_free(&p);
    buf_free(&data);
}

/* ---- edge-case fixtures: {"text"|"hex", "ids", "add_special", "parse_special",
 *      "decoded"|"decoded_hex"} ---- */

static int unhex(const char *h, pwb_buf *out)
{
    size_t n = strlen(h);
    if (n % 2) return -1;
    for (size_t i = 0; i < n; i += 2) {
        unsigned v;
        if (sscanf(h + i, "%2x", &v) != 1) return -1;
        buf_putc(out, (char)v);
    }
    return 0;
}

static void run_edge_fixture(const tokenizer *t, const char *fixture, const char *what)
{
    pwb_buf p, data, raw;
    buf_init(&p);
    buf_init(&data);
    buf_init(&raw);
    root_path(&p, fixture);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(file_read_all(p.data, 16u << 20, &data, &e), PWB_OK, "%s", e.msg);
    check_ctx c;
    check_init(&c, t, what);
    char *s = data.data, *end = data.data + data.len;
    for (size_t line = 1; s < end; line++) {
        char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
        if (n) {
            cJSON *row = json_parse(s, n, fixture, &e);
            cr_assert_not_null(row, "%s", e.msg);
            if (line == 1 && cJSON_GetObjectItemCaseSensitive(row, "patch")) { /* variant header */
                cJSON_Delete(row);
                s += n + 1;
                continue;
            }
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(row, "text");
            buf_reset(&raw);
            if (cJSON_IsString(text)) {
                buf_append(&raw, text->valuestring, strlen(text->valuestring));
            } else {
                cr_assert_eq(unhex(json_str(row, "hex", ""), &raw), 0, "%s:%zu: bad hex", fixture, line);
            }
            int32_t *want;
            size_t nw = ids_from_json(cJSON_GetObjectItemCaseSensitive(row, "ids"), &want);
            pwb_buf dec;
            buf_init(&dec);
            if (json_str(row, "decoded_hex", NULL))
                cr_assert_eq(unhex(json_str(row, "decoded_hex", ""), &dec), 0, "%s:%zu: bad hex", fixture, line);
            else buf_puts(&dec, json_str(row, "decoded", ""));
            check_one(&c, line, raw.data ? raw.data : "", raw.len, json_int(row, "add_special", 1),
                      json_int(row, "parse_special", 1), want, nw, dec.data ? dec.data : "", dec.len);
            buf_free(&dec);
            free(want);
            cJSON_Delete(row);
        }
        s += n + 1;
    }
    check_done(&c);
    buf_free(&p);
    buf_free(&data);
    buf_free(&raw);
}

Test(tokenizer_hf, smollm2_sst2)
{
    tokenizer *t = load_json(SMOLLM2_JSON);
    run_dataset_fixture(t, "tests/fixtures/tokenizer/smollm2-sst2.jsonl", "smollm2 sst2");
    tokenizer_free(t);
}

Test(tokenizer_hf, smollm2_gsm8k)
{
    tokenizer *t = load_json(SMOLLM2_JSON);
    run_dataset_fixture(t, "tests/fixtures/tokenizer/smollm2-gsm8k.jsonl", "smollm2 gsm8k");
    tokenizer_free(t);
}

Test(tokenizer_hf, smollm2_edge)
{
    tokenizer *t = load_json(SMOLLM2_JSON);
    run_edge_fixture(t, "tests/fixtures/tokenizer/smollm2-edge.jsonl", "smollm2 edge");
    tokenizer_free(t);
}

Test(tokenizer_hf, tinystories_sst2)
{
    tokenizer *t = load_json(TINY_JSON);
    run_dataset_fixture(t, "tests/fixtures/tokenizer/tinystories-sst2.jsonl", "tinystories sst2");
    tokenizer_free(t);
}

Test(tokenizer_hf, tinystories_gsm8k)
{
    tokenizer *t = load_json(TINY_JSON);
    run_dataset_fixture(t, "tests/fixtures/tokenizer/tinystories-gsm8k.jsonl", "tinystories gsm8k");
    tokenizer_free(t);
}

Test(tokenizer_hf, tinystories_edge)
{
    tokenizer *t = load_json(TINY_JSON);
    run_edge_fixture(t, "tests/fixtures/tokenizer/tinystories-edge.jsonl", "tinystories edge");
    tokenizer_free(t);
}

/* ---- variants: the same vocabularies with other pre-tokenizers (Llama 3 and Qwen2 regexes,
 *      ignore_merges, ByteLevel prefix space, Metaspace), patched as the fixture header says ---- */

static void replace_keys(cJSON *dst, const cJSON *patch)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, patch) {
        cJSON *copy = cJSON_Duplicate(it, 1);
        cr_assert_not_null(copy);
        if (cJSON_HasObjectItem(dst, it->string)) cJSON_ReplaceItemInObjectCaseSensitive(dst, it->string, copy);
        else cJSON_AddItemToObject(dst, it->string, copy);
    }
}

static tokenizer *load_variant(const char *fixture, char *tmp_path, size_t cap)
{
    pwb_buf p, data;
    buf_init(&p);
    buf_init(&data);
    root_path(&p, fixture);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(file_read_all(p.data, 16u << 20, &data, &e), PWB_OK, "%s", e.msg);
    cJSON *hdr = json_parse(data.data, (size_t)(strchr(data.data, '\n') - data.data), fixture, &e);
    cr_assert_not_null(hdr, "%s", e.msg);
    buf_reset(&p);
    shared_path(&p, json_str(hdr, "tokenizer", ""));
    if (!file_exists(p.data)) cr_skip_test("%s not found (set PWB_SHARED)", p.data);
    cJSON *j = json_parse_file(p.data, JSON_MAX_FILE, &e);
    cr_assert_not_null(j, "%s", e.msg);
    replace_keys(j, cJSON_GetObjectItemCaseSensitive(hdr, "patch"));
    replace_keys(cJSON_GetObjectItemCaseSensitive(j, "model"), cJSON_GetObjectItemCaseSensitive(hdr, "model"));
    char dir[] = "/tmp/pwb_tokv_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    snprintf(tmp_path, cap, "%s/tokenizer.json", dir);
    char *text = cJSON_PrintUnformatted(j);
    cr_assert_not_null(text);
    cr_assert_eq(file_write_atomic(tmp_path, text, strlen(text), &e), PWB_OK, "%s", e.msg);
    free(text);
    tokenizer *t = NULL;
    cr_assert_eq(tokenizer_from_json(&t, tmp_path, &e), PWB_OK, "%s: %s", fixture, e.msg);
    cJSON_Delete(j);
    cJSON_Delete(hdr);
    buf_free(&p);
    buf_free(&data);
    return t;
}

static void run_variant(const char *name)
{
    char fixture[128], tmp[256];
    snprintf(fixture, sizeof fixture, "tests/fixtures/tokenizer/variant-%s.jsonl", name);
    tokenizer *t = load_variant(fixture, tmp, sizeof tmp);
    run_edge_fixture(t, fixture, name);
    tokenizer_free(t);
    remove(tmp);
    *strrchr(tmp, '/') = 0;
    rmdir(tmp);
}

Test(tokenizer_variant, llama3) { run_variant("llama3"); }
Test(tokenizer_variant, qwen2) { run_variant("qwen2"); }
Test(tokenizer_variant, gpt2prefix) { run_variant("gpt2prefix"); }
Test(tokenizer_variant, metaspace) { run_variant("metaspace"); }
Test(tokenizer_variant, metaspace_split) { run_variant("metaspace-split"); }

/* ---- GGUF vocabularies: tokenizer_from_spec over the files' own metadata ---- */

static tokenizer *load_gguf_vocab_pre(const char *path, gguf_file **gf, const char *pre_override)
{
    if (!file_exists(path)) cr_skip_test("%s not found", path);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(gguf_open(gf, path, &e), PWB_OK, "%s", e.msg);
    const gguf_file *g = *gf;
    tok_vocab_spec sp;
    memset(&sp, 0, sizeof sp);
    size_t n;
    sp.model = gguf_get_str(g, "tokenizer.ggml.model", NULL);
    sp.pre = pre_override ? pre_override : gguf_get_str(g, "tokenizer.ggml.pre", NULL);
    sp.tokens = gguf_get_arr_strs(g, "tokenizer.ggml.tokens", &sp.n_tokens);
    sp.scores = gguf_get_arr_f32(g, "tokenizer.ggml.scores", &n);
    sp.types = gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &n);
    sp.merges = gguf_get_arr_strs(g, "tokenizer.ggml.merges", &sp.n_merges);
    sp.bos = gguf_get_i32(g, "tokenizer.ggml.bos_token_id", -1);
    sp.eos = gguf_get_i32(g, "tokenizer.ggml.eos_token_id", -1);
    sp.unk = gguf_get_i32(g, "tokenizer.ggml.unknown_token_id", -1);
    sp.pad = gguf_get_i32(g, "tokenizer.ggml.padding_token_id", -1);
    sp.add_bos = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", !strcmp(sp.model ? sp.model : "", "llama"));
    sp.add_eos = gguf_get_bool(g, "tokenizer.ggml.add_eos_token", 0);
    sp.no_space_prefix = !gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", 1);
    tokenizer *t = NULL;
    cr_assert_eq(tokenizer_from_spec(&t, &sp, &e), PWB_OK, "%s: %s", path, e.msg);
    return t;
}

static tokenizer *load_gguf_vocab(const char *path, gguf_file **gf)
{
    return load_gguf_vocab_pre(path, gf, NULL);
}

Test(tokenizer_gguf, tinystories_matches_json)
{
    pwb_buf p;
    buf_init(&p);
    shared_path(&p, TINY_GGUF);
    gguf_file *g = NULL;
    tokenizer *t = load_gguf_vocab(p.data, &g);
    cr_assert_eq(tokenizer_n_vocab(t), 2048);
    cr_assert_eq(tokenizer_bos(t), 1);
    cr_assert_eq(tokenizer_eos(t), 2);
    cr_assert(tokenizer_is_special(t, 1));
    /* Flat scores (-1000 everywhere): merging follows token ids, which are in merge order. */
    run_dataset_fixture(t, "tests/fixtures/tokenizer/tinystories-sst2.jsonl", "tinystories gguf sst2");
    run_dataset_fixture(t, "tests/fixtures/tokenizer/tinystories-gsm8k.jsonl", "tinystories gguf gsm8k");
    tokenizer_free(t);
    gguf_close(g);
    buf_free(&p);
}

Test(tokenizer_gguf, smollm2_matches_json)
{
    pwb_buf p;
    buf_init(&p);
    root_path(&p, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    gguf_file *g = NULL;
    tokenizer *t = load_gguf_vocab(p.data, &g);
    cr_assert_eq(tokenizer_n_vocab(t), 49152);
    cr_assert_eq(tokenizer_token_id(t, "<|im_end|>"), 2);
    run_dataset_fixture(t, "tests/fixtures/tokenizer/smollm2-sst2.jsonl", "smollm2 gguf sst2");
    run_dataset_fixture(t, "tests/fixtures/tokenizer/smollm2-gsm8k.jsonl", "smollm2 gguf gsm8k");
    run_edge_fixture(t, "tests/fixtures/tokenizer/smollm2-edge.jsonl", "smollm2 gguf edge");
    tokenizer_free(t);
    gguf_close(g);
    buf_free(&p);
}

/* Gemma 3's SentencePiece vocabulary (262,144 pieces, byte fallback, no space prefix, user-defined
 * pieces such as runs of spaces and newlines) against llama.cpp's tokenizer
 * (tests/reference/make_gemma_tokenizer_fixtures.py). Needs make model MODEL=gemma3-270m. */
Test(tokenizer_gguf, gemma3_matches_llama_cpp, .timeout = 600)
{
    pwb_buf p;
    buf_init(&p);
    root_path(&p, "models/gemma-3-270m-q4_k_m.gguf");
    if (!file_exists(p.data)) cr_skip_test("models/ has no Gemma 3 GGUF (make model MODEL=gemma3-270m)");
    gguf_file *g = NULL;
    tokenizer *t = load_gguf_vocab(p.data, &g);
    cr_assert_eq(tokenizer_n_vocab(t), 262144);
    cr_assert_eq(tokenizer_bos(t), 2);
    run_dataset_fixture(t, "tests/fixtures/tokenizer/gemma3-sst2.jsonl", "gemma3 sst2");
    run_dataset_fixture(t, "tests/fixtures/tokenizer/gemma3-gsm8k.jsonl", "gemma3 gsm8k");
    run_edge_fixture(t, "tests/fixtures/tokenizer/gemma3-edge.jsonl", "gemma3 edge");
    tokenizer_free(t);
    gguf_close(g);
    buf_free(&p);
}

/* The "llama-bpe" and "qwen2" presets on SmolLM2's vocabulary against HF with those regexes. */
Test(tokenizer_gguf, presets_match_variants)
{
    pwb_buf p;
    buf_init(&p);
    root_path(&p, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    const char *pre[] = {"llama-bpe", "qwen2"}, *fix[] = {"variant-llama3.jsonl", "variant-qwen2.jsonl"};
    for (int i = 0; i < 2; i++) {
        gguf_file *g = NULL;
        tokenizer *t = load_gguf_vocab_pre(p.data, &g, pre[i]);
        char f[128];
        snprintf(f, sizeof f, "tests/fixtures/tokenizer/%s", fix[i]);
        run_edge_fixture(t, f, pre[i]);
        tokenizer_free(t);
        gguf_close(g);
    }
    buf_free(&p);
}

/* ---- behaviour ---- */

static size_t enc(const tokenizer *t, const char *s, int add_special, int parse_special, int32_t *out, size_t cap)
{
    int32_t *ids = NULL;
    size_t n = 0;
    pwb_err e;
    err_clear(&e);
    cr_assert_geq(tokenizer_encode(t, s, strlen(s), add_special, parse_special, &ids, &n, &e), 0, "%s", e.msg);
    cr_assert_leq(n, cap);
    memcpy(out, ids, n * sizeof *ids);
    free(ids);
    return n;
}

Test(tokenizer, smollm2_specials_and_accessors)
{
    tokenizer *t = load_json(SMOLLM2_JSON);
    cr_assert_eq(tokenizer_n_vocab(t), 49152);
    cr_assert_eq(tokenizer_bos(t), 1); /* from the sibling config.json */
    cr_assert_eq(tokenizer_eos(t), 2);
    cr_assert_eq(tokenizer_token_id(t, "<|im_start|>"), 1);
    cr_assert_eq(tokenizer_token_id(t, "no such token"), -1);
    cr_assert_str_eq(tokenizer_token_text(t, 2), "<|im_end|>");
    cr_assert_null(tokenizer_token_text(t, 49152));
    cr_assert(tokenizer_is_special(t, 0));
    cr_assert(!tokenizer_is_special(t, 17));
    int32_t ids[64];
    size_t n = enc(t, "<|im_start|>user", 1, 1, ids, 64);
    cr_assert_eq(n, 2);
    cr_assert_eq(ids[0], 1);
    cr_assert_eq(ids[1], 4093);
    /* parse_special off: the marker is plain text. */
    n = enc(t, "<|im_start|>", 1, 0, ids, 64);
    cr_assert_gt(n, 1);
    for (size_t i = 0; i < n; i++) cr_assert_neq(ids[i], 1);
    pwb_buf out;
    buf_init(&out);
    int32_t seq[] = {1, 4093, 198, 6004, 2};
    cr_assert_eq(tokenizer_decode(t, seq, 5, 0, &out), PWB_OK);
    cr_assert_str_eq(out.data, "user\nhi");
    buf_reset(&out);
    cr_assert_eq(tokenizer_decode(t, seq, 5, 1, &out), PWB_OK);
    cr_assert_str_eq(out.data, "<|im_start|>user\nhi<|im_end|>");
    int32_t badid = 49152;
    cr_assert_eq(tokenizer_decode(t, &badid, 1, 1, &out), PWB_EINVAL);
    buf_free(&out);
    tokenizer_free(t);
}

Test(tokenizer, tinystories_bos_bytes_and_strip)
{
    tokenizer *t = load_json(TINY_JSON);
    cr_assert_eq(tokenizer_bos(t), 1);
    cr_assert_eq(tokenizer_eos(t), 2);
    int32_t ids[64];
    size_t n = enc(t, "Once upon a time", 1, 1, ids, 64);
    cr_assert_eq(ids[0], 1);
    size_t m = enc(t, "Once upon a time", 0, 1, ids + 32, 32);
    cr_assert_eq(m + 1, n);
    cr_assert_eq(memcmp(ids + 1, ids + 32, m * sizeof *ids), 0);
    pwb_buf out;
    buf_init(&out);
    cr_assert_eq(tokenizer_decode(t, ids, n, 0, &out), PWB_OK);
    cr_assert_str_eq(out.data, "Once upon a time"); /* the encoder's leading U+2581 is dropped */
    /* Streaming pieces keep their space: "▁upon" -> " upon". */
    buf_reset(&out);
    for (size_t i = 1; i < n; i++) tokenizer_token_piece(t, ids[i], 0, &out);
    cr_assert_str_eq(out.data, " Once upon a time");
    buf_free(&out);
    tokenizer_free(t);
}

/* A tiny SentencePiece vocabulary with byte fallback, built in memory. */
Test(tokenizer, spm_byte_fallback_and_scores)
{
    const char *tokens[256 + 8];
    float scores[256 + 8];
    int32_t types[256 + 8];
    char bytes[256][8];
    size_t n = 0;
    tokens[n] = "<unk>", types[n] = 2, scores[n++] = 0;
    tokens[n] = "<s>", types[n] = 3, scores[n++] = 0;
    tokens[n] = "</s>", types[n] = 3, scores[n++] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[n] = bytes[b], types[n] = 6, scores[n++] = 0;
    }
    const char *words[] = {"\xE2\x96\x81", "a", "b", "ab", "\xE2\x96\x81" "ab"};
    float ws[] = {-1, -2, -2, -3, -4};
    for (int i = 0; i < 5; i++) tokens[n] = words[i], types[n] = 1, scores[n++] = ws[i];
    tok_vocab_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.model = "llama";
    sp.n_tokens = n;
    sp.tokens = tokens;
    sp.scores = scores;
    sp.types = types;
    sp.bos = 1, sp.eos = 2, sp.unk = 0, sp.pad = -1, sp.add_bos = 1;
    tokenizer *t = NULL;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(tokenizer_from_spec(&t, &sp, &e), PWB_OK, "%s", e.msg);
    int32_t ids[32];
    /* "ab" -> "▁ab": ("a","b") merges first (higher score), then ("▁","ab"). */
    size_t k = enc(t, "ab", 1, 1, ids, 32);
    cr_assert_eq(k, 2);
    cr_assert_eq(ids[0], 1);
    cr_assert_eq(ids[1], 259 + 4);
    /* "é" has no token: its two UTF-8 bytes come out as <0xC3> <0xA9>. */
    k = enc(t, "\xC3\xA9", 0, 1, ids, 32);
    cr_assert_eq(k, 3);
    cr_assert_eq(ids[0], 259);
    cr_assert_eq(ids[1], 3 + 0xC3);
    cr_assert_eq(ids[2], 3 + 0xA9);
    pwb_buf out;
    buf_init(&out);
    cr_assert_eq(tokenizer_decode(t, ids, k, 0, &out), PWB_OK);
    cr_assert_str_eq(out.data, "\xC3\xA9");
    /* A byte token run that is not UTF-8 decodes to U+FFFD per byte, as HF's ByteFallback. */
    int32_t lone[] = {3 + 0xC3, 3 + 0x41};
    buf_reset(&out);
    cr_assert_eq(tokenizer_decode(t, lone, 2, 0, &out), PWB_OK);
    cr_assert_str_eq(out.data, "\xEF\xBF\xBD\xEF\xBF\xBD");
    /* "</s>" is split out only when parse_special is set. */
    k = enc(t, "a</s>", 0, 1, ids, 32);
    cr_assert_eq(ids[k - 1], 2);
    k = enc(t, "a</s>", 0, 0, ids, 32);
    cr_assert_neq(ids[k - 1], 2);
    buf_free(&out);
    tokenizer_free(t);
}

Test(tokenizer, bad_specs_and_args)
{
    tokenizer *t = NULL;
    pwb_err e;
    tok_vocab_spec sp;
    memset(&sp, 0, sizeof sp);
    err_clear(&e);
    cr_assert_neq(tokenizer_from_spec(&t, &sp, &e), PWB_OK);
    const char *tokens[] = {"a", "b", "ab"};
    sp.tokens = tokens;
    sp.n_tokens = 3;
    sp.model = "bert";
    cr_assert_eq(tokenizer_from_spec(&t, &sp, &e), PWB_EUNSUP);
    sp.model = "gpt2";
    cr_assert_eq(tokenizer_from_spec(&t, &sp, &e), PWB_EMODEL); /* no merges */
    const char *merges[] = {"a b", "garbage", "", "x y"};
    sp.merges = merges;
    sp.n_merges = 4;
    sp.pre = "no-such-pre";
    cr_assert_eq(tokenizer_from_spec(&t, &sp, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "no-such-pre"));
    sp.pre = NULL;
    sp.bos = 99; /* out of range: dropped, not trusted */
    cr_assert_eq(tokenizer_from_spec(&t, &sp, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(tokenizer_bos(t), -1);
    int32_t ids[8];
    size_t n = enc(t, "ab", 1, 1, ids, 8);
    cr_assert_eq(n, 1);
    cr_assert_eq(ids[0], 2);
    int32_t *out = NULL;
    size_t nout = 0;
    cr_assert_eq(tokenizer_encode(t, NULL, 5, 0, 0, &out, &nout, &e), -1);
    cr_assert_eq(tokenizer_encode(t, "", 0, 1, 1, &out, &nout, &e), 0);
    free(out);
    tokenizer_free(t);
    tokenizer_free(NULL);
}

static void write_tmp(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(tokenizer, hostile_json)
{
    char dir[] = "/tmp/pwb_tok_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    const char *bad[] = {
        "",
        "{",
        "[]",
        "{\"model\": 3}",
        "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}, \"merges\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": \"a b\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Lowercase\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", "
        "\"pattern\": {\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": \"x\"}]}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_tmp(path, bad[i]);
        tokenizer *t = NULL;
        pwb_err e;
        err_clear(&e);
        int rc = tokenizer_from_json(&t, path, &e);
        cr_expect_neq(rc, PWB_OK, "case %zu accepted", i);
        cr_expect_null(t);
        cr_expect_neq(e.msg[0], 0, "case %zu: no message", i);
    }
    /* A minimal valid one: merges as arrays, an added token, unknown characters to <unk>. */
    write_tmp(path, "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"?\", \"fuse_unk\": true, "
                    "\"vocab\": {\"?\": 0, \"a\": 1, \"b\": 2, \"ab\": 3}, \"merges\": [[\"a\", \"b\"]]},"
                    "\"added_tokens\": [{\"id\": 4, \"content\": \"<x>\", \"special\": true}]}");
    tokenizer *t = NULL;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(tokenizer_from_json(&t, path, &e), PWB_OK, "%s", e.msg);
    int32_t ids[8];
    size_t n = enc(t, "abzz<x>a", 1, 1, ids, 8);
    cr_assert_eq(n, 4);
    cr_assert_eq(ids[0], 3);
    cr_assert_eq(ids[1], 0); /* "zz" fused */
    cr_assert_eq(ids[2], 4);
    cr_assert_eq(ids[3], 1);
    tokenizer_free(t);
    remove(path);
    rmdir(dir);
}

/* An NFC normalizer composes: "e" + U+0301 encodes as the one token for U+00E9. */
Test(tokenizer, nfc_normalizer_composes)
{
    char dir[] = "/tmp/pwb_tok_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_tmp(path, "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}]},"
                    "\"model\": {\"type\": \"BPE\", \"unk_token\": \"?\", \"vocab\": {\"?\": 0, \"e\": 1, "
                    "\"\u00e9\": 2}, \"merges\": []}}");
    tokenizer *t = NULL;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(tokenizer_from_json(&t, path, &e), PWB_OK, "%s", e.msg);
    int32_t ids[8];
    size_t n = enc(t, "e\xcc\x81", 0, 0, ids, 8);
    cr_assert_eq(n, 1);
    cr_assert_eq(ids[0], 2);
    n = enc(t, "\xc3\xa9" "e", 0, 0, ids, 8);
    cr_assert_eq(n, 2);
    cr_assert_eq(ids[0], 2);
    cr_assert_eq(ids[1], 1);
    tokenizer_free(t);
    remove(path);
    rmdir(dir);
}

/* Random bytes must never crash the encoder, and the output must decode to valid UTF-8. */
Test(tokenizer, random_bytes)
{
    tokenizer *t = load_json(SMOLLM2_JSON);
    tokenizer *u = load_json(TINY_JSON);
    uint64_t x = 88172645463325252ull;
    char s[300];
    pwb_buf out;
    buf_init(&out);
    for (int it = 0; it < 300; it++) {
        size_t n = (size_t)(it % 300);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            s[i] = (char)(it % 3 ? (char)(x & 0xff) : "<|im_start> \n\t0a\xe2\x96\x81\xff"[x % 16]);
        }
        for (int k = 0; k < 2; k++) {
            const tokenizer *tk = k ? u : t;
            int32_t *ids = NULL;
            size_t nid = 0;
            pwb_err e;
            cr_assert_geq(tokenizer_encode(tk, s, n, 1, it & 1, &ids, &nid, &e), 0, "%s", e.msg);
            buf_reset(&out);
            cr_assert_eq(tokenizer_decode(tk, ids, nid, it & 2, &out), PWB_OK);
            cr_assert(utf8_valid(out.data ? out.data : "", out.len));
            free(ids);
        }
    }
    buf_free(&out);
    tokenizer_free(t);
    tokenizer_free(u);
}

/* Throughput on SST-2 dev, single thread, per CPU second (wall time is at the mercy of whoever else
 * shares the machine); the bound is loose enough for sanitizer builds. */
Test(tokenizer, speed_sst2)
{
    tokenizer *t = load_json(SMOLLM2_JSON);
    tokenizer *u = load_json(TINY_JSON);
    pwb_buf p;
    buf_init(&p);
    root_path(&p, "tests/fixtures/tokenizer/smollm2-sst2.jsonl");
    pwb_buf data;
    buf_init(&data);
    pwb_err e;
    cr_assert_eq(file_read_all(p.data, 16u << 20, &data, &e), PWB_OK, "%s", e.msg);
    cJSON *hdr = json_parse(data.data, (size_t)(strchr(data.data, '\n') - data.data), "hdr", &e);
    texts tx;
    read_texts(hdr, &tx);
    for (int k = 0; k < 2; k++) {
        const tokenizer *tk = k ? u : t;
        size_t n_ids = 0, n_sent = 0;
        double t0 = timer_cpu(), el;
        do {
            for (size_t i = 0; i < tx.n; i++) {
                int32_t *ids = NULL;
                size_t n = 0;
                tokenizer_encode(tk, tx.s[i], strlen(tx.s[i]), 0, 1, &ids, &n, &e);
                n_ids += n;
                free(ids);
            }
            n_sent += tx.n;
            el = timer_cpu() - t0;
        } while (el < 0.3);
        cr_log_info("%s encoder on SST-2 dev: %.0f sentences/s, %.0f tokens/s (CPU time)", k ? "tinystories" : "smollm2",
                    (double)n_sent / el, (double)n_ids / el);
        cr_expect_gt((double)n_sent / el, 1000.0);
    }
    texts_free(&tx);
    cJSON_Delete(hdr);
    buf_free(&data);
    buf_free(&p);
    tokenizer_free(t);
    tokenizer_free(u);
}
