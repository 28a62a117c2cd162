/* Tokenizer core: construction from a GGUF vocabulary (tok_vocab_spec), the encode pipeline
 * (added tokens -> normalizer -> added tokens -> pre-tokenizer -> model) and decoding.
 * tokenizer.json loading is in tok_json.c, pre-tokenizers in tok_pretok.c, the merge algorithms
 * in tok_bpe.c. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tok_internal.h"
#include "engine/tokenizer.h"
#include "util/log.h"
#include "util/str.h"
#include "util/utf8.h"

static const char METASPACE[] = "\xE2\x96\x81"; /* U+2581, SentencePiece's visible space */

int tok_alloc(tokenizer *t, size_t n, pwb_err *e)
{
    if (n == 0 || n > TOK_MAX_VOCAB) return err_set(e, PWB_ERANGE, "tokenizer: %zu tokens (limit %u)", n, TOK_MAX_VOCAB);
    t->n_vocab = n;
    t->text = calloc(n, sizeof *t->text);
    t->len = calloc(n, sizeof *t->len);
    t->score = calloc(n, sizeof *t->score);
    t->attr = calloc(n, sizeof *t->attr);
    t->piece = calloc(n, sizeof *t->piece);
    t->piece_len = calloc(n, sizeof *t->piece_len);
    t->bos = t->eos = t->unk = t->pad = t->bpe_unk = -1;
    for (int i = 0; i < 256; i++) t->byte_tok[i] = -1;
    if (!t->text || !t->len || !t->score || !t->attr || !t->piece || !t->piece_len)
        return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
    return PWB_OK;
}

int tok_set_text(tokenizer *t, int32_t id, const char *s, size_t n, pwb_err *e)
{
    if (id < 0 || (size_t)id >= t->n_vocab) return err_set(e, PWB_ERANGE, "tokenizer: token id %d out of range", id);
    if (n > TOK_MAX_TOKEN_LEN) return err_set(e, PWB_ERANGE, "tokenizer: token %d is %zu bytes long", id, n);
    char *c = malloc(n + 1);
    if (!c) return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
    memcpy(c, s, n);
    c[n] = 0;
    free(t->text[id]);
    t->text[id] = c;
    t->len[id] = (uint32_t)n;
    return PWB_OK;
}

int tok_build_vocab(tokenizer *t, pwb_err *e)
{
    tok_strmap_free(&t->vocab);
    if (tok_strmap_build(&t->vocab, t->n_vocab, (const char *const *)t->text, t->len))
        return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
    return PWB_OK;
}

int tok_add_merge(tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank)
{
    int32_t ia = tok_strmap_get(&t->vocab, a, na), ib = tok_strmap_get(&t->vocab, b, nb);
    if (ia < 0 || ib < 0 || na + nb > TOK_MAX_TOKEN_LEN) return 1;
    char joined[2 * TOK_MAX_TOKEN_LEN];
    memcpy(joined, a, na);
    memcpy(joined + na, b, nb);
    int32_t ij = tok_strmap_get(&t->vocab, joined, na + nb);
    if (ij < 0) return 1;
    return tok_pairmap_put(&t->merges, ia, ib, rank, ij) ? -1 : 0;
}

int tok_add_pattern(tokenizer *t, const char *s, size_t n, int32_t id, int special, int lstrip, int rstrip,
                    int single_word, int normalized, pwb_err *e)
{
    if (n == 0) return PWB_OK;
    if (n > TOK_MAX_TOKEN_LEN) return err_set(e, PWB_ERANGE, "tokenizer: added token %d too long", id);
    tok_added *p = realloc(t->added, (t->n_added + 1) * sizeof *p);
    if (!p) return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
    t->added = p;
    char *c = malloc(n + 1);
    if (!c) return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
    memcpy(c, s, n);
    c[n] = 0;
    tok_added *a = &t->added[t->n_added++];
    memset(a, 0, sizeof *a);
    a->text = c;
    a->len = (uint32_t)n;
    a->id = id;
    a->special = (uint8_t)!!special;
    a->lstrip = (uint8_t)!!lstrip;
    a->rstrip = (uint8_t)!!rstrip;
    a->single_word = (uint8_t)!!single_word;
    a->normalized = (uint8_t)!!normalized;
    return PWB_OK;
}

static int cmp_added(const void *x, const void *y)
{
    const tok_added *a = x, *b = y;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* "<0xAB>" -> 0xAB, else -1. */
static int byte_token_value(const char *s, size_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int set_piece(tokenizer *t, int32_t id, const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (!c) return -1;
    if (n) memcpy(c, s, n);
    c[n] = 0;
    t->piece[id] = c;
    t->piece_len[id] = (uint32_t)n;
    return 0;
}

/* What a token decodes to, before the whole-output steps (lossy UTF-8, leading-space strip). */
static int make_piece(tokenizer *t, int32_t id, pwb_buf *b)
{
    const char *s = t->text[id];
    size_t n = t->len[id];
    buf_reset(b);
    if (!s) return set_piece(t, id, "", 0);
    if (t->mode != TOK_BYTELEVEL && (t->attr[id] & TA_BYTE)) {
        char c = (char)byte_token_value(s, n);
        return set_piece(t, id, &c, 1);
    }
    if (t->dec_bytelevel) {
        /* HF ByteLevel decoder: every char back to its byte, or the token's own bytes when some
         * char is outside the map (added tokens with spaces, say). */
        const unsigned char *u = (const unsigned char *)s;
        size_t i = 0;
        while (i < n) {
            size_t k = utf8_len(u + i, n - i);
            int byte = k ? tok_cp_to_byte(utf8_cp(u + i, k)) : -1;
            if (byte < 0) break;
            if (buf_putc(b, (char)byte)) return -1;
            i += k;
        }
        if (i == n) return set_piece(t, id, b->data, b->len);
        return set_piece(t, id, s, n);
    }
    if (t->dec_metaspace) {
        for (size_t i = 0; i < n; i++) {
            if (i + 3 <= n && memcmp(s + i, METASPACE, 3) == 0) {
                if (buf_putc(b, ' ')) return -1;
                i += 2;
            } else if (buf_putc(b, s[i])) return -1;
        }
        return set_piece(t, id, b->data, b->len);
    }
    return set_piece(t, id, s, n);
}

int tok_finish(tokenizer *t, pwb_err *e)
{
    if (!t->vocab.slot && tok_build_vocab(t, e)) return e ? e->code : PWB_ENOMEM;
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
    if (t->mode == TOK_BYTELEVEL) {
        for (int b = 0; b < 256; b++) {
            char u[4];
            size_t k = utf8_put(tok_byte_to_cp((unsigned char)b), u);
            t->byte_tok[b] = tok_strmap_get(&t->vocab, u, k);
            memset(t->byte_mapped[b], 0, sizeof t->byte_mapped[b]);
            memcpy(t->byte_mapped[b], u, k); /* code points < U+0144: at most 2 bytes */
        }
    } else {
        for (size_t id = 0; id < t->n_vocab; id++) {
            if (!t->text[id]) continue;
            int v = byte_token_value(t->text[id], t->len[id]);
            if (v < 0) continue;
            t->attr[id] |= TA_BYTE;
            if (t->byte_tok[v] < 0) t->byte_tok[v] = (int32_t)id;
        }
    }
    pwb_buf b;
    buf_init(&b);
    for (size_t id = 0; id < t->n_vocab; id++) {
        if (make_piece(t, (int32_t)id, &b)) {
            buf_free(&b);
            return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
        }
    }
    buf_free(&b);
    if (t->n_added) qsort(t->added, t->n_added, sizeof *t->added, cmp_added);
    memset(t->first_byte, 0, sizeof t->first_byte);
    for (size_t i = 0; i < t->n_added; i++)
        t->first_byte[t->added[i].normalized][(unsigned char)t->added[i].text[0]] = 1;
    int32_t *special[] = {&t->bos, &t->eos, &t->unk, &t->pad};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
        if (*special[i] < -1 || (*special[i] >= 0 && (size_t)*special[i] >= t->n_vocab)) *special[i] = -1;
    return tok_mark_whole(t, e);
}

void tok_destroy(tokenizer *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n_vocab; i++) {
        if (t->text) free(t->text[i]);
        if (t->piece) free(t->piece[i]);
    }
    free(t->text);
    free(t->len);
    free(t->score);
    free(t->attr);
    free(t->piece);
    free(t->piece_len);
    tok_strmap_free(&t->vocab);
    tok_pairmap_free(&t->merges);
    for (size_t i = 0; i < t->n_added; i++) free((char *)t->added[i].text);
    free(t->added);
    free(t->norm_prepend);
    free(t->norm_from);
    free(t->norm_to);
    for (int i = 0; i < t->n_pre; i++) tok_pretok_free(&t->pre[i]);
    free(t);
}

void tokenizer_free(tokenizer *t)
{
    tok_destroy(t);
}

/* ---- construction from GGUF metadata ---- */

int tokenizer_from_spec(tokenizer **out, const tok_vocab_spec *spec, pwb_err *e)
{
    *out = NULL;
    if (!spec || !spec->model || !spec->tokens) return err_set(e, PWB_EINVAL, "tokenizer: incomplete vocabulary spec");
    int mode;
    if (!strcmp(spec->model, "gpt2")) mode = TOK_BYTELEVEL;
    else if (!strcmp(spec->model, "llama")) mode = TOK_SPM;
    else return err_set(e, PWB_EUNSUP, "tokenizer: tokenizer.ggml.model '%.64s' not supported (gpt2, llama)", spec->model);
    if (mode == TOK_BYTELEVEL && (!spec->merges || spec->n_merges == 0))
        return err_set(e, PWB_EMODEL, "tokenizer: gpt2 vocabulary without tokenizer.ggml.merges");
    if (spec->n_merges > TOK_MAX_MERGES) return err_set(e, PWB_ERANGE, "tokenizer: %zu merges", spec->n_merges);

    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
    t->mode = mode;
    int rc = tok_alloc(t, spec->n_tokens, e);
    if (rc) goto fail;
    for (size_t i = 0; i < spec->n_tokens; i++) {
        if (!spec->tokens[i]) {
            rc = err_set(e, PWB_EMODEL, "tokenizer: token %zu missing", i);
            goto fail;
        }
        if ((rc = tok_set_text(t, (int32_t)i, spec->tokens[i], strlen(spec->tokens[i]), e))) goto fail;
        int ty = spec->types ? spec->types[i] : 1;
        if (ty == 2 || ty == 3) t->attr[i] |= TA_SPECIAL;
        else if (ty == 4) t->attr[i] |= TA_USER;
        else if (ty == 5) t->attr[i] |= TA_UNUSED;
    }
    /* Scores drive SentencePiece merging. A vocabulary converted from a HF BPE tokenizer.json
     * carries one flat score (TinyStories: all -1000); its ids are then in merge order, so -id
     * reproduces the merge ranks. */
    int flat = 1;
    if (spec->scores)
        for (size_t i = 1; i < spec->n_tokens && flat; i++) flat = spec->scores[i] == spec->scores[0];
    for (size_t i = 0; i < spec->n_tokens; i++) t->score[i] = flat ? -(float)i : spec->scores[i];

    t->bos = spec->bos;
    t->eos = spec->eos;
    t->unk = spec->unk;
    t->pad = spec->pad;
    t->add_bos = spec->add_bos;
    t->add_eos = spec->add_eos;
    if ((rc = tok_build_vocab(t, e))) goto fail;

    if (mode == TOK_BYTELEVEL) {
        t->dec_bytelevel = 1;
        int np = tok_pretok_preset(t->pre, spec->pre, e);
        if (np == -1) {
            rc = err_set(e, PWB_EUNSUP,
                         "tokenizer: tokenizer.ggml.pre '%.64s' not supported (default, gpt2, smollm, llama-bpe, "
                         "llama3, qwen2)", spec->pre);
            goto fail;
        }
        if (np < 0) {
            rc = e ? e->code : PWB_EPARSE;
            goto fail;
        }
        t->n_pre = np;
        /* llama.cpp takes a piece that is a whole token as it is for Llama 3 (HF ignore_merges). */
        t->ignore_merges = spec->pre && (!strcmp(spec->pre, "llama-bpe") || !strcmp(spec->pre, "llama3") ||
                                         !strcmp(spec->pre, "llama-v3"));
        if (tok_pairmap_init(&t->merges, spec->n_merges)) {
            rc = err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
        size_t skipped = 0;
        for (size_t i = 0; i < spec->n_merges; i++) {
            const char *m = spec->merges[i];
            const char *sp = m && m[0] ? strchr(m + 1, ' ') : NULL; /* as llama.cpp: find(' ', 1) */
            if (!sp) {
                skipped++;
                continue;
            }
            int r = tok_add_merge(t, m, (size_t)(sp - m), sp + 1, strlen(sp + 1), (int32_t)i);
            if (r < 0) {
                rc = err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
                goto fail;
            }
            skipped += (size_t)r;
        }
        if (skipped) log_debug("tokenizer: %zu merges name tokens not in the vocabulary; skipped", skipped);
    } else {
        t->dec_metaspace = 1;
        t->spm_prefix = !spec->no_space_prefix;
        t->dec_strip_space = t->spm_prefix;
        t->fuse_unk = 1;
    }
    /* Control and unknown tokens are split out of text when parse_special is set, user-defined ones
     * always (llama.cpp's tokenizer_st_partition). */
    for (size_t i = 0; i < spec->n_tokens; i++) {
        int ty = spec->types ? spec->types[i] : 1;
        if (ty != 2 && ty != 3 && ty != 4) continue;
        if ((rc = tok_add_pattern(t, t->text[i], t->len[i], (int32_t)i, ty != 4, 0, 0, 0, 0, e))) goto fail;
    }
    if ((rc = tok_finish(t, e))) goto fail;
    *out = t;
    return PWB_OK;
fail:
    tok_destroy(t);
    return rc ? rc : PWB_EMODEL;
}

/* ---- encoding ---- */

static int is_ascii_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static int is_word_byte(unsigned char c)
{
    return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* Leftmost-longest added token in s[from, n) among those of the given normalized kind. The
 * reported span includes the whitespace absorbed by lstrip / rstrip. */
static int find_added(const tokenizer *t, int norm, int parse_special, const char *s, size_t n, size_t from,
                      size_t *ms, size_t *me, int32_t *id)
{
    if (!t->n_added) return 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = from; i < n; i++) {
        if (!t->first_byte[norm][u[i]]) continue;
        for (size_t j = 0; j < t->n_added; j++) {
            const tok_added *a = &t->added[j];
            if (a->normalized != norm || (a->special && !parse_special)) continue;
            if (a->len > n - i || (unsigned char)a->text[0] != u[i] || memcmp(a->text, s + i, a->len)) continue;
            size_t end = i + a->len;
            if (a->single_word && ((i > 0 && is_word_byte(u[i - 1])) || (end < n && is_word_byte(u[end]))))
                continue;
            size_t st = i;
            if (a->lstrip)
                while (st > from && is_ascii_space(u[st - 1])) st--;
            if (a->rstrip)
                while (end < n && is_ascii_space(u[end])) end++;
            *ms = st;
            *me = end;
            *id = a->id;
            return 1;
        }
    }
    return 0;
}

static int normalize_rest(const tokenizer *t, const char *s, size_t n, pwb_buf *out)
{
    /* HF Prepend only touches non-empty strings. */
    if (n && t->norm_prepend && buf_puts(out, t->norm_prepend)) return -1;
    size_t fl = t->norm_from ? strlen(t->norm_from) : 0;
    if (!fl) return buf_append(out, s, n);
    for (size_t i = 0; i < n;) {
        if (i + fl <= n && memcmp(s + i, t->norm_from, fl) == 0) {
            if (buf_puts(out, t->norm_to)) return -1;
            i += fl;
        } else {
            if (buf_putc(out, s[i])) return -1;
            i++;
        }
    }
    return 0;
}

int tok_normalize(const tokenizer *t, const char *s, size_t n, pwb_buf *out)
{
    if (!t->norm_nfc) return normalize_rest(t, s, n, out);
    /* Invalid UTF-8 goes on unchanged (utf8_nfc returns 1): the model handles its bytes. */
    pwb_buf nfc;
    buf_init(&nfc);
    int rc = utf8_nfc(&nfc, s, n) < 0 ? -1 : normalize_rest(t, nfc.data ? nfc.data : "", nfc.len, out);
    buf_free(&nfc);
    return rc;
}

/* Second stage: normalizer, then the added tokens that match normalized text, then the
 * pre-tokenizer and the model. first: the fragment starts the input (Metaspace "first"). */
static int encode_fragment(const tokenizer *t, tok_work *w, const char *s, size_t n, int first, int parse_special)
{
    if (t->mode == TOK_SPM) {
        /* llama.cpp: spaces become U+2581 and each text fragment gets one in front. */
        pwb_buf *b = &w->norm;
        buf_reset(b);
        if (t->spm_prefix && buf_append(b, METASPACE, 3)) return -1;
        for (size_t i = 0; i < n; i++)
            if (s[i] == ' ' ? buf_append(b, METASPACE, 3) : buf_putc(b, s[i])) return -1;
        return tok_pretokenize(t, w, 0, b->data, b->len, first);
    }
    if (t->has_normalizer) {
        buf_reset(&w->norm);
        if (tok_normalize(t, s, n, &w->norm)) return -1;
        s = w->norm.data;
        n = w->norm.len;
    }
    size_t pos = 0, ms, me;
    int32_t id;
    while (pos < n && find_added(t, 1, parse_special, s, n, pos, &ms, &me, &id)) {
        if (ms > pos && tok_pretokenize(t, w, 0, s + pos, ms - pos, first && pos == 0)) return -1;
        if (tok_push(w, id)) return -1;
        pos = me;
    }
    return pos < n ? tok_pretokenize(t, w, 0, s + pos, n - pos, first && pos == 0) : 0;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t n, int add_special, int parse_special,
                     int32_t **ids, size_t *n_ids, pwb_err *e)
{
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && n)) {
        err_set(e, PWB_EINVAL, "tokenizer_encode: bad arguments");
        return -1;
    }
    if (n > TOK_MAX_INPUT) {
        err_set(e, PWB_ERANGE, "tokenizer_encode: %zu bytes of text (limit %zu)", n, TOK_MAX_INPUT);
        return -1;
    }
    tok_work w;
    tok_work_init(&w);
    pwb_buf fixed;
    buf_init(&fixed);
    int rc = 0;
    w.md = pcre2_match_data_create(1, NULL);
    if (!w.md) rc = -1;
    /* Hugging Face tokenizers takes a Python str: invalid bytes arrive as U+FFFD, one per
     * maximal invalid subpart. Do the same so that everything after sees valid UTF-8. */
    const unsigned char *u = (const unsigned char *)text;
    for (size_t i = 0; !rc && i < n;) {
        size_t k = utf8_len(u + i, n - i);
        if (k) {
            i += k;
            continue;
        }
        if (utf8_lossy(&fixed, text, n)) rc = -1;
        text = fixed.data;
        n = fixed.len;
        break;
    }
    if (!rc && add_special && t->add_bos && t->bos >= 0) rc = tok_push(&w, t->bos);
    size_t pos = 0, ms, me;
    int32_t id;
    while (!rc && pos < n && find_added(t, 0, parse_special, text, n, pos, &ms, &me, &id)) {
        if (ms > pos) rc = encode_fragment(t, &w, text + pos, ms - pos, pos == 0, parse_special);
        if (!rc) rc = tok_push(&w, id);
        pos = me;
    }
    if (!rc && pos < n) rc = encode_fragment(t, &w, text + pos, n - pos, pos == 0, parse_special);
    if (!rc && add_special && t->add_eos && t->eos >= 0) rc = tok_push(&w, t->eos);
    buf_free(&fixed);
    if (rc || w.failed) {
        int oom = w.failed != 0;
        tok_work_free(&w);
        err_set(e, oom ? PWB_ENOMEM : PWB_EPARSE, "tokenizer_encode: %s",
                oom ? "out of memory" : "pre-tokenizer regex failed");
        return -1;
    }
    if (w.n_out > INT_MAX) {
        tok_work_free(&w);
        err_set(e, PWB_ERANGE, "tokenizer_encode: too many tokens");
        return -1;
    }
    *ids = w.out;
    *n_ids = w.n_out;
    if (!*ids) *ids = malloc(sizeof(int32_t)); /* callers may free(); never hand back NULL on success */
    w.out = NULL;
    tok_work_free(&w);
    if (!*ids) {
        err_set(e, PWB_ENOMEM, "tokenizer_encode: out of memory");
        return -1;
    }
    return (int)*n_ids;
}

/* ---- decoding ---- */

int tokenizer_token_piece(const tokenizer *t, int32_t id, int render_special, pwb_buf *out)
{
    if (!t || id < 0 || (size_t)id >= t->n_vocab) return PWB_EINVAL;
    if ((t->attr[id] & TA_SPECIAL) && !render_special) return PWB_OK;
    return buf_append(out, t->piece[id], t->piece_len[id]) ? PWB_ENOMEM : PWB_OK;
}

int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, int render_special, pwb_buf *out)
{
    if (!t || !out || (!ids && n)) return PWB_EINVAL;
    pwb_buf raw;
    buf_init(&raw);
    int rc = PWB_OK, emitted = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_vocab) {
            rc = PWB_EINVAL;
            break;
        }
        if ((t->attr[id] & TA_SPECIAL) && !render_special) continue;
        if (t->mode != TOK_BYTELEVEL && (t->attr[id] & TA_BYTE)) {
            /* HF ByteFallback: a run of byte tokens that is not valid UTF-8 becomes one U+FFFD per
             * byte token. */
            size_t j = i, start = raw.len;
            while (j < n && ids[j] >= 0 && (size_t)ids[j] < t->n_vocab && (t->attr[ids[j]] & TA_BYTE)) {
                if (buf_append(&raw, t->piece[ids[j]], t->piece_len[ids[j]])) rc = PWB_ENOMEM;
                j++;
            }
            if (!rc && !utf8_valid(raw.data + start, raw.len - start)) {
                raw.len = start;
                for (size_t k = i; k < j && !rc; k++)
                    if (buf_append(&raw, "\xEF\xBF\xBD", 3)) rc = PWB_ENOMEM;
            }
            i = j - 1;
            emitted = 1;
            continue;
        }
        if (t->dec_ms_first && !emitted) {
            /* HF's Metaspace decoder drops every U+2581 of the first token. */
            const char *s = t->text[id] ? t->text[id] : "";
            for (size_t k = 0; k < t->len[id] && !rc; k++) {
                if (k + 3 <= t->len[id] && memcmp(s + k, METASPACE, 3) == 0) k += 2;
                else if (buf_putc(&raw, s[k])) rc = PWB_ENOMEM;
            }
        } else if (buf_append(&raw, t->piece[id], t->piece_len[id])) rc = PWB_ENOMEM;
        emitted = 1;
    }
    size_t start = out->len;
    if (!rc && utf8_lossy(out, raw.data ? raw.data : "", raw.len)) rc = PWB_ENOMEM;
    buf_free(&raw);
    if (rc) return rc;
    /* HF Strip decoder / llama.cpp: the space the encoder put in front is dropped again. */
    for (int k = 0; k < t->dec_strip_space && out->len > start && out->data[start] == ' '; k++) {
        memmove(out->data + start, out->data + start + 1, out->len - start - 1);
        out->len--;
        out->data[out->len] = 0;
    }
    return PWB_OK;
}

/* ---- accessors ---- */

size_t tokenizer_n_vocab(const tokenizer *t)
{
    return t ? t->n_vocab : 0;
}

int32_t tokenizer_bos(const tokenizer *t)
{
    return t ? t->bos : -1;
}

int32_t tokenizer_eos(const tokenizer *t)
{
    return t ? t->eos : -1;
}

int32_t tokenizer_token_id(const tokenizer *t, const char *token)
{
    if (!t || !token) return -1;
    return tok_strmap_get(&t->vocab, token, strlen(token));
}

const char *tokenizer_token_text(const tokenizer *t, int32_t id)
{
    if (!t || id < 0 || (size_t)id >= t->n_vocab) return NULL;
    return t->text[id] ? t->text[id] : "";
}

int tokenizer_is_special(const tokenizer *t, int32_t id)
{
    if (!t || id < 0 || (size_t)id >= t->n_vocab) return 0;
    return (t->attr[id] & TA_SPECIAL) != 0;
}
