/* Open-addressing hash maps for the tokenizer: token string -> id and id pair -> merge. Both are
 * built once at load time and read concurrently afterwards, so lookups never allocate. */
#include <stdlib.h>
#include <string.h>

#include "engine/tok_internal.h"

static uint64_t hash_bytes(const char *s, size_t n)
{
    /* FNV-1a, then a final mix so that the low bits used for the slot are well spread. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

int tok_strmap_build(tok_strmap *m, size_t n, const char *const *text, const uint32_t *len)
{
    size_t cap = pow2_at_least(n * 2 + 1);
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return -1;
    memset(m->slot, 0xff, cap * sizeof *m->slot);
    m->mask = cap - 1;
    m->text = text;
    m->len = len;
    for (size_t id = 0; id < n; id++) {
        if (!text[id]) continue;
        size_t i = hash_bytes(text[id], len[id]) & m->mask;
        for (;;) {
            int32_t cur = m->slot[i];
            if (cur < 0) {
                m->slot[i] = (int32_t)id;
                break;
            }
            if (len[cur] == len[id] && memcmp(text[cur], text[id], len[id]) == 0) {
                /* Duplicate string: the later id wins, as llama.cpp's token_to_id does. */
                m->slot[i] = (int32_t)id;
                break;
            }
            i = (i + 1) & m->mask;
        }
    }
    return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *s, size_t n)
{
    if (!m->slot) return -1;
    size_t i = hash_bytes(s, n) & m->mask;
    for (;;) {
        int32_t cur = m->slot[i];
        if (cur < 0) return -1;
        if (m->len[cur] == n && memcmp(m->text[cur], s, n) == 0) return cur;
        i = (i + 1) & m->mask;
    }
}

void tok_strmap_free(tok_strmap *m)
{
    free(m->slot);
    m->slot = NULL;
}

int tok_pairmap_init(tok_pairmap *m, size_t expected)
{
    size_t cap = pow2_at_least(expected * 2 + 1);
    m->slot = calloc(cap, sizeof *m->slot);
    if (!m->slot) return -1;
    m->mask = cap - 1;
    m->count = 0;
    return 0;
}

static uint64_t pair_key(int32_t a, int32_t b)
{
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    if ((m->count + 1) * 2 > m->mask + 1) return -1; /* sized up front; never grows */
    uint64_t k = pair_key(a, b);
    size_t i = hash_u64(k) & m->mask;
    while (m->slot[i].key && m->slot[i].key != k) i = (i + 1) & m->mask;
    if (!m->slot[i].key) m->count++;
    /* A repeated pair: the later line wins, as in Hugging Face tokenizers' merge map. */
    m->slot[i].key = k;
    m->slot[i].rank = rank;
    m->slot[i].id = id;
    return 0;
}

const tok_pair_entry *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b)
{
    if (!m->slot || m->count == 0) return NULL;
    uint64_t k = pair_key(a, b);
    size_t i = hash_u64(k) & m->mask;
    for (;;) {
        const tok_pair_entry *s = &m->slot[i];
        if (s->key == k) return s;
        if (!s->key) return NULL;
        i = (i + 1) & m->mask;
    }
}

void tok_pairmap_free(tok_pairmap *m)
{
    free(m->slot);
    m->slot = NULL;
    m->count = 0;
}
