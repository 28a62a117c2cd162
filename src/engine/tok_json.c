/* tokenizer.json (Hugging Face tokenizers) -> tokenizer. Supported: model BPE (byte-level or with
 * byte fallback); normalizers Prepend, Replace (string pattern), NFC (taken as identity),
 * Sequence; pre-tokenizers ByteLevel, Digits, Split (Isolated/Removed), Metaspace, Sequence;
 * post-processors TemplateProcessing, Roberta/BertProcessing, ByteLevel, Sequence; decoders
 * ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence. Anything else is refused
 * with PWB_EUNSUP rather than tokenized differently from the reference. */
#include <stdlib.h>
#include <string.h>

#include "engine/tok_internal.h"
#include "util/file.h"
#include "util/json.h"
#include "util/log.h"
#include "util/str.h"

static const char METASPACE[] = "\xE2\x96\x81";

typedef struct json_ctx {
    const char *path;
    pwb_err *e;
} json_ctx;

static int unsup(json_ctx *c, const char *what, const char *type)
{
    return err_set(c->e, PWB_EUNSUP, "%s: %s '%.64s' not supported", c->path, what, type ? type : "(none)");
}

static int bad(json_ctx *c, const char *what)
{
    return err_set(c->e, PWB_EPARSE, "%s: %s", c->path, what);
}

static const char *type_of(const cJSON *o)
{
    return json_str(o, "type", NULL);
}

static int set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = str_dup(s);
    return *dst ? 0 : -1;
}

static int parse_normalizer(tokenizer *t, const cJSON *n, json_ctx *c)
{
    if (!n || cJSON_IsNull(n)) return PWB_OK;
    const char *ty = type_of(n);
    if (!ty) return bad(c, "normalizer without type");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers")) {
            int rc = parse_normalizer(t, it, c);
            if (rc) return rc;
        }
        return PWB_OK;
    }
    if (!strcmp(ty, "Prepend")) {
        const char *p = json_str(n, "prepend", NULL);
        if (!p || t->norm_prepend) return unsup(c, "normalizer", "Prepend (twice or without text)");
        t->has_normalizer = 1;
        return set_str(&t->norm_prepend, p) ? err_set(c->e, PWB_ENOMEM, "out of memory") : PWB_OK;
    }
    if (!strcmp(ty, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = json_str(pat, "String", NULL), *to = json_str(n, "content", NULL);
        if (!from || !from[0] || !to || t->norm_from) return unsup(c, "normalizer", "Replace (regex or twice)");
        t->has_normalizer = 1;
        if (set_str(&t->norm_from, from) || set_str(&t->norm_to, to)) return err_set(c->e, PWB_ENOMEM, "out of memory");
        return PWB_OK;
    }
    if (!strcmp(ty, "NFC")) {
        /* Applied before Prepend/Replace whatever its place in a Sequence: neither touches
         * what NFC composes. */
        t->norm_nfc = 1;
        t->has_normalizer = 1;
        return PWB_OK;
    }
    return unsup(c, "normalizer", ty);
}

static int add_pre(tokenizer *t, json_ctx *c, tok_pretok **out)
{
    if (t->n_pre >= TOK_MAX_PRETOK) return bad(c, "too many pre-tokenizer steps");
    *out = &t->pre[t->n_pre];
    return PWB_OK;
}

static int parse_pretok(tokenizer *t, const cJSON *p, json_ctx *c, int *bytelevel)
{
    if (!p || cJSON_IsNull(p)) return PWB_OK;
    const char *ty = type_of(p);
    if (!ty) return bad(c, "pre_tokenizer without type");
    tok_pretok *s = NULL;
    int rc;
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers")) {
            if ((rc = parse_pretok(t, it, c, bytelevel))) return rc;
        }
        return PWB_OK;
    }
    if ((rc = add_pre(t, c, &s))) return rc;
    if (!strcmp(ty, "ByteLevel")) {
        *bytelevel = 1;
        rc = tok_pretok_bytelevel(s, json_bool(p, "add_prefix_space", 0), json_bool(p, "use_regex", 1), c->e);
    } else if (!strcmp(ty, "Digits")) {
        rc = tok_pretok_digits(s, json_bool(p, "individual_digits", 0), c->e);
    } else if (!strcmp(ty, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = json_str(pat, "Regex", NULL), *lit = json_str(pat, "String", NULL);
        const char *beh = json_str(p, "behavior", "Isolated");
        if (json_bool(p, "invert", 0)) return unsup(c, "Split", "invert");
        if (strcmp(beh, "Isolated") && strcmp(beh, "Removed")) return unsup(c, "Split behavior", beh);
        if (re) rc = tok_pretok_regex(s, re, strlen(re), c->e);
        else if (lit) {
            /* A literal: quote it for PCRE2 (\Q...\E breaks if the text holds \E, so escape). */
            pwb_buf q;
            buf_init(&q);
            for (const char *x = lit; *x; x++) {
                if (strchr("\\^$.|?*+()[]{}", *x)) buf_putc(&q, '\\');
                buf_putc(&q, *x);
            }
            rc = tok_pretok_regex(s, q.data ? q.data : "", q.len, c->e);
            buf_free(&q);
        } else return bad(c, "Split without pattern");
        s->removed = !strcmp(beh, "Removed");
    } else if (!strcmp(ty, "Metaspace")) {
        const char *rep = json_str(p, "replacement", METASPACE);
        if (strcmp(rep, METASPACE)) return unsup(c, "Metaspace replacement", rep);
        memset(s, 0, sizeof *s);
        s->kind = PT_METASPACE;
        const char *scheme = json_str(p, "prepend_scheme", NULL);
        if (scheme) s->prepend = !strcmp(scheme, "always") ? 2 : !strcmp(scheme, "first") ? 1 : 0;
        else s->prepend = json_bool(p, "add_prefix_space", 1) ? 2 : 0;
        s->split = json_bool(p, "split", 1);
        rc = PWB_OK;
    } else return unsup(c, "pre_tokenizer", ty);
    if (rc) return err_prefix(c->e, "%s: ", c->path);
    t->n_pre++;
    return PWB_OK;
}

static int32_t special_id(const cJSON *specials, const char *name, const tokenizer *t)
{
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(specials, name);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(sp, "ids");
    const cJSON *first = cJSON_IsArray(ids) ? cJSON_GetArrayItem(ids, 0) : NULL;
    if (cJSON_IsNumber(first)) return (int32_t)first->valuedouble;
    return tokenizer_token_id(t, name);
}

static int parse_post(tokenizer *t, const cJSON *p, json_ctx *c)
{
    if (!p || cJSON_IsNull(p)) return PWB_OK;
    const char *ty = type_of(p);
    if (!ty) return bad(c, "post_processor without type");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "processors")) {
            int rc = parse_post(t, it, c);
            if (rc) return rc;
        }
        return PWB_OK;
    }
    if (!strcmp(ty, "ByteLevel")) return PWB_OK;
    if (!strcmp(ty, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
        int n = cJSON_GetArraySize(single), seq = -1;
        for (int i = 0; i < n; i++)
            if (cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, i), "Sequence")) seq = i;
        if (seq < 0 || seq > 1 || n - seq > 2) return unsup(c, "TemplateProcessing", "single template");
        if (seq == 1) {
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, 0), "SpecialToken");
            t->bos = special_id(specials, json_str(st, "id", ""), t);
            t->add_bos = t->bos >= 0;
        }
        if (n - seq == 2) {
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(single, n - 1), "SpecialToken");
            t->eos = special_id(specials, json_str(st, "id", ""), t);
            t->add_eos = t->eos >= 0;
        }
        return PWB_OK;
    }
    if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(p, "cls"), *sep = cJSON_GetObjectItemCaseSensitive(p, "sep");
        if (cJSON_IsNumber(cJSON_GetArrayItem(cls, 1))) {
            t->bos = (int32_t)cJSON_GetArrayItem(cls, 1)->valuedouble;
            t->add_bos = 1;
        }
        if (cJSON_IsNumber(cJSON_GetArrayItem(sep, 1))) {
            t->eos = (int32_t)cJSON_GetArrayItem(sep, 1)->valuedouble;
            t->add_eos = 1;
        }
        return PWB_OK;
    }
    return unsup(c, "post_processor", ty);
}

static int parse_decoder(tokenizer *t, const cJSON *d, json_ctx *c)
{
    if (!d || cJSON_IsNull(d)) return PWB_OK;
    const char *ty = type_of(d);
    if (!ty) return bad(c, "decoder without type");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(d, "decoders")) {
            int rc = parse_decoder(t, it, c);
            if (rc) return rc;
        }
        return PWB_OK;
    }
    if (!strcmp(ty, "ByteLevel")) t->dec_bytelevel = 1;
    else if (!strcmp(ty, "ByteFallback") || !strcmp(ty, "Fuse")) {
        /* byte tokens always decode to their byte; fusing is implicit */
    } else if (!strcmp(ty, "Replace")) {
        const char *from = json_str(cJSON_GetObjectItemCaseSensitive(d, "pattern"), "String", NULL);
        const char *to = json_str(d, "content", NULL);
        if (!from || !to || strcmp(from, METASPACE) || strcmp(to, " ")) return unsup(c, "decoder", "Replace");
        t->dec_metaspace = 1;
    } else if (!strcmp(ty, "Strip")) {
        const char *what = json_str(d, "content", " ");
        int start = json_int(d, "start", 0);
        if (strcmp(what, " ") || json_int(d, "stop", 0) != 0 || start < 0 || start > 8)
            return unsup(c, "decoder", "Strip");
        t->dec_strip_space = start;
    } else if (!strcmp(ty, "Metaspace")) {
        t->dec_metaspace = 1;
        const char *scheme = json_str(d, "prepend_scheme", NULL);
        t->dec_ms_first = scheme ? strcmp(scheme, "never") != 0 : json_bool(d, "add_prefix_space", 1);
    } else return unsup(c, "decoder", ty);
    return PWB_OK;
}

static int32_t json_id(const cJSON *v)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= TOK_MAX_VOCAB) return -1;
    return (int32_t)v->valuedouble;
}

/* bos / eos / unk / pad names from a sibling tokenizer_config.json, ids from config.json. */
static const char *token_name(const cJSON *cfg, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    return json_str(v, "content", NULL);
}

static void read_siblings(tokenizer *t, const char *path)
{
    pwb_buf dir, p;
    buf_init(&dir);
    buf_init(&p);
    file_dirname(path, &dir);
    if (!file_join(&p, dir.data, "tokenizer_config.json") && file_exists(p.data)) {
        cJSON *cfg = json_parse_file(p.data, 16u << 20, NULL);
        if (cfg) {
            const char *keys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
            int32_t *dst[] = {&t->bos, &t->eos, &t->unk, &t->pad};
            for (int i = 0; i < 4; i++) {
                const char *name = token_name(cfg, keys[i]);
                int32_t id = name ? tokenizer_token_id(t, name) : -1;
                if (*dst[i] < 0 && id >= 0) *dst[i] = id;
            }
            cJSON_Delete(cfg);
        }
    }
    buf_reset(&p);
    if (!file_join(&p, dir.data, "config.json") && file_exists(p.data)) {
        cJSON *cfg = json_parse_file(p.data, 16u << 20, NULL);
        if (cfg) {
            int32_t b = json_id(cJSON_GetObjectItemCaseSensitive(cfg, "bos_token_id"));
            int32_t s = json_id(cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id"));
            if (t->bos < 0) t->bos = b;
            if (t->eos < 0) t->eos = s;
            cJSON_Delete(cfg);
        }
    }
    buf_free(&dir);
    buf_free(&p);
}

static int load(tokenizer *t, const cJSON *root, json_ctx *c)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mty = type_of(model);
    if (!cJSON_IsObject(model)) return bad(c, "no model");
    if (mty && strcmp(mty, "BPE")) return unsup(c, "model", mty);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) return bad(c, "model.vocab is not an object");
    if (merges && !cJSON_IsArray(merges)) return bad(c, "model.merges is not an array");
    const char *csp = json_str(model, "continuing_subword_prefix", NULL);
    const char *eow = json_str(model, "end_of_word_suffix", NULL);
    if ((csp && csp[0]) || (eow && eow[0])) return unsup(c, "BPE option", csp && csp[0] ? "continuing_subword_prefix" : "end_of_word_suffix");

    int32_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = json_id(it);
        if (id < 0) return bad(c, "model.vocab: bad id");
        if (id > max_id) max_id = id;
    }
    cJSON_ArrayForEach(it, added) {
        int32_t id = json_id(cJSON_GetObjectItemCaseSensitive(it, "id"));
        if (id < 0 || !json_str(it, "content", NULL)) return bad(c, "added_tokens: bad entry");
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) return bad(c, "empty vocabulary");
    int rc = tok_alloc(t, (size_t)max_id + 1, c->e);
    if (rc) return rc;
    cJSON_ArrayForEach(it, vocab) {
        if ((rc = tok_set_text(t, json_id(it), it->string, strlen(it->string), c->e))) return rc;
    }
    /* HF looks up added tokens before the model, so their content names the id. */
    cJSON_ArrayForEach(it, added) {
        int32_t id = json_id(cJSON_GetObjectItemCaseSensitive(it, "id"));
        const char *s = json_str(it, "content", "");
        if ((rc = tok_set_text(t, id, s, strlen(s), c->e))) return rc;
        t->attr[id] |= json_bool(it, "special", 0) ? TA_SPECIAL : TA_USER;
    }

    int bytelevel = 0;
    if ((rc = parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), c))) return rc;
    if ((rc = parse_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), c, &bytelevel))) return rc;
    if ((rc = parse_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), c))) return rc;
    t->mode = bytelevel || t->dec_bytelevel ? TOK_BYTELEVEL : TOK_CHARBPE;
    t->byte_fallback = json_bool(model, "byte_fallback", 0);
    t->fuse_unk = json_bool(model, "fuse_unk", 0);
    t->ignore_merges = json_bool(model, "ignore_merges", 0);
    if ((rc = tok_build_vocab(t, c->e))) return rc;
    const char *unk = json_str(model, "unk_token", NULL);
    if (unk) t->unk = tokenizer_token_id(t, unk);
    t->bpe_unk = t->unk;
    if ((rc = parse_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), c))) return rc;

    int nm = merges ? cJSON_GetArraySize(merges) : 0;
    if ((size_t)nm > TOK_MAX_MERGES) return err_set(c->e, PWB_ERANGE, "%s: %d merges", c->path, nm);
    if (tok_pairmap_init(&t->merges, (size_t)nm)) return err_set(c->e, PWB_ENOMEM, "out of memory");
    int32_t rank = 0;
    size_t skipped = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t na, nb;
        if (cJSON_IsString(it)) {
            /* "a b": HF splits on the space; tokens of these vocabularies hold no plain space */
            const char *m = it->valuestring, *sp = strchr(m, ' ');
            if (!sp) return bad(c, "model.merges: entry without a space");
            a = m;
            na = (size_t)(sp - m);
            b = sp + 1;
            nb = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            na = strlen(a);
            nb = strlen(b);
        } else return bad(c, "model.merges: bad entry");
        int r = tok_add_merge(t, a, na, b, nb, rank++);
        if (r < 0) return err_set(c->e, PWB_ENOMEM, "out of memory");
        skipped += (size_t)r;
    }
    if (skipped) log_debug("%s: %zu merges name tokens not in the vocabulary; skipped", c->path, skipped);

    /* Added tokens: the normalized ones are matched after normalization, so their pattern is
     * their normalized content (HF: "<|end_story|>" is matched as U+2581 "<|end_story|>"). */
    pwb_buf nb;
    buf_init(&nb);
    cJSON_ArrayForEach(it, added) {
        int32_t id = json_id(cJSON_GetObjectItemCaseSensitive(it, "id"));
        const char *s = json_str(it, "content", "");
        int normalized = json_bool(it, "normalized", 0) && t->has_normalizer;
        buf_reset(&nb);
        if (normalized ? tok_normalize(t, s, strlen(s), &nb) : buf_puts(&nb, s)) {
            buf_free(&nb);
            return err_set(c->e, PWB_ENOMEM, "out of memory");
        }
        rc = tok_add_pattern(t, nb.data ? nb.data : "", nb.len, id, json_bool(it, "special", 0),
                             json_bool(it, "lstrip", 0), json_bool(it, "rstrip", 0), json_bool(it, "single_word", 0),
                             json_bool(it, "normalized", 0), c->e);
        if (rc) {
            buf_free(&nb);
            return rc;
        }
    }
    buf_free(&nb);
    return tok_finish(t, c->e);
}

int tokenizer_from_json(tokenizer **out, const char *path, pwb_err *e)
{
    *out = NULL;
    if (!path) return err_set(e, PWB_EINVAL, "tokenizer_from_json: no path");
    cJSON *root = json_parse_file(path, JSON_MAX_FILE, e);
    if (!root) return e ? e->code : PWB_EPARSE;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(root);
        return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
    }
    json_ctx c = {path, e};
    int rc = load(t, root, &c);
    cJSON_Delete(root);
    if (rc) {
        tok_destroy(t);
        return rc;
    }
    read_siblings(t, path);
    *out = t;
    return PWB_OK;
}
