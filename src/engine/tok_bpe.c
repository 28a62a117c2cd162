/* The two merge algorithms, each on one pre-tokenized piece:
 *  - BPE by merge rank, exactly as Hugging Face tokenizers' Word::merge_all (a heap of candidate
 *    pairs ordered by rank, then position; stale entries skipped);
 *  - SentencePiece-style merging by score, as llama.cpp's llm_tokenizer_spm (repeatedly merge the
 *    adjacent pair whose concatenation is a token with the highest score, leftmost first). */
#include <stdlib.h>
#include <string.h>

#include "engine/tok_internal.h"
#include "util/utf8.h"

int tok_push(tok_work *w, int32_t id)
{
    if (w->n_out == w->cap_out) {
        size_t cap = w->cap_out ? w->cap_out * 2 : 64;
        int32_t *p = realloc(w->out, cap * sizeof *p);
        if (!p) return w->failed = -1;
        w->out = p;
        w->cap_out = cap;
    }
    w->out[w->n_out++] = id;
    return 0;
}

static int reserve_sym(tok_work *w, size_t n)
{
    if (n <= w->cap_sym) return 0;
    size_t cap = w->cap_sym ? w->cap_sym : 64;
    while (cap < n) cap *= 2;
    tok_sym *p = realloc(w->sym, cap * sizeof *p);
    if (!p) return w->failed = -1;
    w->sym = p;
    w->cap_sym = cap;
    return 0;
}

static int heap_push(tok_work *w, uint64_t key, int32_t pos, int32_t right, int32_t id, int32_t left)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 64;
        tok_heap_item *p = realloc(w->heap, cap * sizeof *p);
        if (!p) return w->failed = -1;
        w->heap = p;
        w->cap_heap = cap;
    }
    tok_heap_item *h = w->heap;
    size_t i = w->n_heap++;
    tok_heap_item it = {key, pos, right, id, left};
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent].key <= key) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = it;
    return 0;
}

static tok_heap_item heap_pop(tok_work *w)
{
    tok_heap_item *h = w->heap;
    tok_heap_item top = h[0];
    tok_heap_item last = h[--w->n_heap];
    size_t n = w->n_heap, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1].key < h[c].key) c++;
        if (last.key <= h[c].key) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}

static void add_sym(tok_work *w, size_t *ns, int32_t id, uint32_t start, uint32_t len)
{
    tok_sym *s = &w->sym[*ns];
    s->id = id;
    s->start = start;
    s->n = len;
    s->prev = (int32_t)*ns - 1;
    s->next = (int32_t)*ns + 1;
    (*ns)++;
}

static int push_bpe_pair(const tokenizer *t, tok_work *w, int32_t pos)
{
    const tok_sym *a = &w->sym[pos];
    if (a->next < 0) return 0;
    int32_t right = w->sym[a->next].id;
    const tok_pair_entry *pe = tok_pairmap_get(&t->merges, a->id, right);
    if (!pe) return 0;
    return heap_push(w, ((uint64_t)(uint32_t)pe->rank << 32) | (uint32_t)pos, pos, right, pe->id, a->id);
}

#define TOK_WHOLE_MAX 64

/* The token whose text is the whole piece, or -1. */
static int whole_piece(const tokenizer *t, tok_work *w, const char *s, size_t n)
{
    if (t->mode != TOK_BYTELEVEL) return tok_strmap_get(&t->vocab, s, n);
    pwb_buf *m = &w->mapped;
    buf_reset(m);
    if (buf_reserve(m, 2 * n)) return w->failed = -1, -1;
    for (size_t i = 0; i < n; i++) {
        const char *mb = t->byte_mapped[(unsigned char)s[i]];
        m->data[m->len++] = mb[0];
        if (mb[1]) m->data[m->len++] = mb[1];
    }
    return tok_strmap_get(&t->vocab, m->data, m->len);
}

int tok_bpe_piece(const tokenizer *t, tok_work *w, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    if (t->ignore_merges || n <= TOK_WHOLE_MAX) {
        /* A piece that is a token BPE maps to itself needs no merging (most words are). */
        int32_t id = whole_piece(t, w, s, n);
        if (w->failed) return -1;
        if (id >= 0 && (t->ignore_merges || (t->attr[id] & TA_WHOLE))) return tok_push(w, id);
    }
    if (reserve_sym(w, n + 1)) return -1;
    size_t ns = 0;
    int32_t unk_len = -1; /* pending unknown run (fuse_unk), -1 when none */
    uint32_t unk_start = 0;
    for (size_t i = 0; i < n;) {
        size_t k = t->mode == TOK_BYTELEVEL ? 1 : utf8_len(u + i, n - i);
        if (k == 0) k = 1; /* input is repaired before this point; stay safe anyway */
        int32_t id = t->mode == TOK_BYTELEVEL ? t->byte_tok[u[i]] : tok_strmap_get(&t->vocab, s + i, k);
        if (id >= 0) {
            if (unk_len >= 0) add_sym(w, &ns, t->bpe_unk, unk_start, (uint32_t)unk_len);
            unk_len = -1;
            add_sym(w, &ns, id, (uint32_t)i, (uint32_t)k);
        } else {
            int fell_back = 0;
            if (t->byte_fallback) {
                size_t j;
                for (j = 0; j < k && t->byte_tok[u[i + j]] >= 0; j++) {}
                if (j == k) {
                    /* As HF does, a pending unknown run is not flushed before byte tokens. */
                    for (j = 0; j < k; j++) add_sym(w, &ns, t->byte_tok[u[i + j]], (uint32_t)(i + j), 1);
                    fell_back = 1;
                }
            }
            if (!fell_back && t->bpe_unk >= 0) {
                if (unk_len >= 0 && t->fuse_unk) unk_len += (int32_t)k;
                else {
                    if (unk_len >= 0) add_sym(w, &ns, t->bpe_unk, unk_start, (uint32_t)unk_len);
                    unk_start = (uint32_t)i;
                    unk_len = (int32_t)k;
                }
            }
        }
        i += k;
    }
    if (unk_len >= 0) add_sym(w, &ns, t->bpe_unk, unk_start, (uint32_t)unk_len);
    if (ns == 0) return 0;
    tok_sym *sym = w->sym;
    sym[ns - 1].next = -1;

    w->n_heap = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        if (push_bpe_pair(t, w, (int32_t)i)) return -1;
    while (w->n_heap) {
        tok_heap_item top = heap_pop(w);
        tok_sym *a = &w->sym[top.pos];
        if (a->n == 0 || a->next < 0) continue;
        int32_t r = a->next;
        tok_sym *b = &w->sym[r];
        /* Stale entry: the pair at pos changed since it was queued. HF compares the merged id
         * of the pair there now; the lookup is needed only when the pair is not the queued one. */
        if (a->id != top.left || b->id != top.right) {
            const tok_pair_entry *pe = tok_pairmap_get(&t->merges, a->id, b->id);
            if (!pe || pe->id != top.id) continue;
        }
        a->id = top.id;
        a->n += b->n;
        a->next = b->next;
        b->n = 0;
        if (b->next >= 0) w->sym[b->next].prev = top.pos;
        if (a->prev >= 0 && push_bpe_pair(t, w, a->prev)) return -1;
        if (push_bpe_pair(t, w, top.pos)) return -1;
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next)
        if (tok_push(w, w->sym[i].id)) return -1;
    return 0;
}

/* Larger score first, then smaller left position: a monotone map of the float into the key. */
static uint64_t spm_key(float score, int32_t left)
{
    uint32_t bits;
    memcpy(&bits, &score, sizeof bits);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return ((uint64_t)(0xFFFFFFFFu - bits) << 32) | (uint32_t)left;
}

static int spm_try_bigram(const tokenizer *t, tok_work *w, const char *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return 0;
    const tok_sym *a = &w->sym[l], *b = &w->sym[r];
    uint32_t size = a->n + b->n;
    int32_t id = tok_strmap_get(&t->vocab, s + a->start, size);
    if (id < 0 || (t->attr[id] & (TA_SPECIAL | TA_BYTE | TA_USER | TA_UNUSED))) return 0;
    return heap_push(w, spm_key(t->score[id], l), l, r, (int32_t)size, -1);
}

int tok_spm_piece(const tokenizer *t, tok_work *w, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    if (reserve_sym(w, n + 1)) return -1;
    size_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(u + i, n - i);
        if (k == 0) k = 1;
        add_sym(w, &ns, -1, (uint32_t)i, (uint32_t)k);
        i += k;
    }
    if (ns == 0) return 0;
    w->sym[ns - 1].next = -1;
    w->n_heap = 0;
    for (size_t i = 1; i < ns; i++)
        if (spm_try_bigram(t, w, s, (int32_t)i - 1, (int32_t)i)) return -1;
    while (w->n_heap) {
        tok_heap_item top = heap_pop(w);
        tok_sym *a = &w->sym[top.pos], *b = &w->sym[top.right];
        if (a->n == 0 || b->n == 0 || a->n + b->n != (uint32_t)top.id) continue;
        a->n += b->n;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0) w->sym[b->next].prev = top.pos;
        if (spm_try_bigram(t, w, s, a->prev, top.pos)) return -1;
        if (spm_try_bigram(t, w, s, top.pos, a->next)) return -1;
    }
    int last_unk = 0;
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const tok_sym *y = &w->sym[i];
        int32_t id = tok_strmap_get(&t->vocab, s + y->start, y->n);
        if (id >= 0) {
            if (tok_push(w, id)) return -1;
            last_unk = 0;
            continue;
        }
        uint32_t j;
        for (j = 0; j < y->n && t->byte_tok[u[y->start + j]] >= 0; j++) {}
        if (j == y->n) {
            for (j = 0; j < y->n; j++)
                if (tok_push(w, t->byte_tok[u[y->start + j]])) return -1;
            last_unk = 0;
        } else if (t->unk >= 0 && !last_unk) {
            /* Consecutive unknown characters become one <unk>, as HF's fuse_unk does. */
            if (tok_push(w, t->unk)) return -1;
            last_unk = 1;
        }
    }
    return 0;
}

void tok_work_init(tok_work *w)
{
    memset(w, 0, sizeof *w);
    buf_init(&w->norm);
    buf_init(&w->mapped);
    for (int i = 0; i < TOK_MAX_PRETOK; i++) buf_init(&w->tmp[i]);
}

void tok_work_free(tok_work *w)
{
    free(w->out);
    free(w->sym);
    free(w->heap);
    if (w->md) pcre2_match_data_free(w->md);
    buf_free(&w->norm);
    for (int i = 0; i < TOK_MAX_PRETOK; i++) buf_free(&w->tmp[i]);
    buf_free(&w->mapped);
    memset(w, 0, sizeof *w);
}

int tok_mark_whole(tokenizer *t, pwb_err *e)
{
    if (t->mode == TOK_SPM || t->ignore_merges) return PWB_OK;
    tok_work w;
    tok_work_init(&w);
    for (size_t id = 0; id < t->n_vocab; id++) {
        /* The bytes the token stands for: its decoded piece (byte-level) or its text. */
        const char *s = t->mode == TOK_BYTELEVEL ? t->piece[id] : t->text[id];
        size_t n = t->mode == TOK_BYTELEVEL ? t->piece_len[id] : t->len[id];
        if (!s || !n || n > TOK_WHOLE_MAX || (t->attr[id] & (TA_SPECIAL | TA_USER | TA_BYTE))) continue;
        w.n_out = 0;
        if (tok_bpe_piece(t, &w, s, n) || w.failed) {
            tok_work_free(&w);
            return err_set(e, PWB_ENOMEM, "tokenizer: out of memory");
        }
        if (w.n_out == 1 && w.out[0] == (int32_t)id) t->attr[id] |= TA_WHOLE;
    }
    tok_work_free(&w);
    return PWB_OK;
}
