/* Tokenizer internals shared by tokenizer.c, tok_json.c, tok_pretok.c, tok_bpe.c, tok_map.c and
 * tok_bytes.c. Not part of the engine's public interface. */
#ifndef PWB_ENGINE_TOK_INTERNAL_H
#define PWB_ENGINE_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "engine/tokenizer.h"
#include "util/buf.h"
#include "util/err.h"

#define TOK_MAX_VOCAB (1u << 22)          /* 4M tokens: far above any real vocabulary */
#define TOK_MAX_TOKEN_LEN 4096u           /* bytes in one token string */
#define TOK_MAX_MERGES (1u << 23)
#define TOK_MAX_INPUT ((size_t)64 << 20)  /* bytes of text per encode call */
#define TOK_MAX_PRETOK 8                  /* steps in a pre-tokenizer sequence */

/* ---- hash maps (tok_map.c) ---- */

/* token string -> id; keys point into the tokenizer's own storage. */
typedef struct tok_strmap {
    int32_t *slot;      /* id or -1 */
    size_t mask;
    const char *const *text;
    const uint32_t *len;
} tok_strmap;

int tok_strmap_build(tok_strmap *m, size_t n, const char *const *text, const uint32_t *len);
int32_t tok_strmap_get(const tok_strmap *m, const char *s, size_t n);
void tok_strmap_free(tok_strmap *m);

/* (left id, right id) -> (rank, merged id). */
typedef struct tok_pair_entry {
    uint64_t key;       /* (left << 32 | right) + 1; 0 = empty */
    int32_t rank;
    int32_t id;
} tok_pair_entry;

typedef struct tok_pairmap {
    tok_pair_entry *slot;
    size_t mask;
    size_t count;
} tok_pairmap;

int tok_pairmap_init(tok_pairmap *m, size_t expected);
int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
const tok_pair_entry *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b);
void tok_pairmap_free(tok_pairmap *m);

/* ---- bytes (tok_bytes.c); UTF-8 itself is util/utf8.h ---- */

/* GPT-2's byte -> code point map and its inverse (-1 for code points not in the map). */
uint32_t tok_byte_to_cp(unsigned char b);
int tok_cp_to_byte(uint32_t cp);

/* ---- pre-tokenizers (tok_pretok.c) ---- */

enum tok_pretok_kind {
    PT_REGEX,       /* split by a regex, matches and gaps kept (HF "Isolated") or gaps only (invert) */
    PT_DIGITS,      /* HF Digits: Unicode numbers isolated, one by one or as runs */
    PT_BYTELEVEL,   /* HF ByteLevel: optional prefix space, then the GPT-2 regex (use_regex) */
    PT_METASPACE    /* HF Metaspace: spaces -> U+2581, optional prefix, optional split */
};

typedef struct tok_pretok {
    int kind;
    pcre2_code *re;         /* PT_REGEX, PT_DIGITS, PT_BYTELEVEL with use_regex */
    int removed;            /* PT_REGEX: matches are dropped (HF "Removed") */
    int add_prefix_space;   /* PT_BYTELEVEL */
    int prepend;            /* PT_METASPACE: 0 never, 1 first, 2 always */
    int split;              /* PT_METASPACE */
} tok_pretok;

enum tok_pre_preset { PRE_GPT2, PRE_SMOLLM, PRE_LLAMA3, PRE_QWEN2 };
int tok_pretok_regex(tok_pretok *p, const char *pattern, size_t n, pwb_err *e);
int tok_pretok_digits(tok_pretok *p, int individual, pwb_err *e);
int tok_pretok_bytelevel(tok_pretok *p, int add_prefix_space, int use_regex, pwb_err *e);
void tok_pretok_free(tok_pretok *p);
/* Fills steps for a GGUF tokenizer.ggml.pre name; returns the count or -1 (unknown name). */
int tok_pretok_preset(tok_pretok *steps, const char *name, pwb_err *e);

/* ---- the tokenizer ---- */

enum tok_mode {
    TOK_BYTELEVEL,   /* GPT-2 style BPE over bytes mapped to code points */
    TOK_CHARBPE,     /* HF BPE over code points with byte fallback (SentencePiece-like tokenizer.json) */
    TOK_SPM          /* llama.cpp SentencePiece merging by score (GGUF "llama") */
};

enum tok_attr {
    TA_SPECIAL = 1,      /* control / special: skipped by decode unless render_special */
    TA_BYTE = 2,         /* <0xXX> byte-fallback token */
    TA_USER = 4,         /* user-defined / non-special added token */
    TA_UNUSED = 8,
    TA_WHOLE = 16        /* BPE of the token's own text gives the token: a piece equal to it is done */
};

typedef struct tok_added {
    const char *text;    /* pattern to match (normalized form when normalized) */
    uint32_t len;
    int32_t id;
    uint8_t special, lstrip, rstrip, single_word, normalized;
} tok_added;

struct tokenizer {
    int mode;
    size_t n_vocab;
    char **text;             /* token strings as stored in the vocabulary */
    uint32_t *len;
    float *score;            /* TOK_SPM merge priorities */
    uint8_t *attr;
    char **piece;            /* decoded bytes of each token */
    uint32_t *piece_len;
    tok_strmap vocab;
    tok_pairmap merges;
    int32_t byte_tok[256];   /* TOK_BYTELEVEL: id of each byte's mapped char; else <0xXX> ids; -1 none */
    char byte_mapped[256][3];/* TOK_BYTELEVEL: UTF-8 of each byte's mapped code point (1-2 bytes, NUL) */

    tok_added *added;        /* sorted longest first, so the first hit at a position is the longest */
    size_t n_added;
    int first_byte[2][256];  /* [normalized]: some added pattern starts with this byte */

    int32_t bos, eos, unk, pad;
    int32_t bpe_unk;         /* what BPE emits for a character it has no token for (-1: drop it) */
    int add_bos, add_eos;

    /* normalizer (tokenizer.json): Prepend(U+2581) and Replace(" " -> U+2581) */
    char *norm_prepend;
    char *norm_from, *norm_to;
    int norm_nfc; /* NFC first (utf8proc) */
    int has_normalizer;
    int spm_prefix;          /* TOK_SPM: prefix each text fragment with U+2581 */

    tok_pretok pre[TOK_MAX_PRETOK];
    int n_pre;

    int byte_fallback, fuse_unk, ignore_merges;
    int dec_strip_space;     /* decoder drops up to this many leading spaces of the output */
    int dec_bytelevel;       /* decoder maps code points back to bytes */
    int dec_metaspace;       /* decoder turns U+2581 into a space */
    int dec_ms_first;        /* HF Metaspace decoder: the first token's U+2581s are dropped */
};

/* Allocates the per-token arrays (all zero / NULL). */
int tok_alloc(tokenizer *t, size_t n_vocab, pwb_err *e);
/* Sets token id's string (copied). */
int tok_set_text(tokenizer *t, int32_t id, const char *s, size_t n, pwb_err *e);
/* After texts, attrs, scores, merges and added tokens are in place: builds the vocab map, byte
 * tables, decode pieces and the added-token index. */
int tok_finish(tokenizer *t, pwb_err *e);
/* Adds one added-token pattern (copied). */
int tok_add_pattern(tokenizer *t, const char *s, size_t n, int32_t id, int special, int lstrip, int rstrip,
                    int single_word, int normalized, pwb_err *e);
/* Adds merge (a, b) of the given rank once the vocab map is built (tok_build_vocab); a merge
 * whose parts or result are not tokens is skipped (returns 1). */
int tok_build_vocab(tokenizer *t, pwb_err *e);
int tok_add_merge(tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank);
/* Applies the tokenizer.json normalizer (NFC, Prepend, Replace) to s, appending to out. */
int tok_normalize(const tokenizer *t, const char *s, size_t n, pwb_buf *out);
void tok_destroy(tokenizer *t);

/* Scratch space for one encode call (the tokenizer itself is read-only while encoding). */
typedef struct tok_sym {
    int32_t id;
    int32_t prev, next;
    uint32_t start, n;       /* bytes in the piece (TOK_SPM) */
} tok_sym;

typedef struct tok_heap_item {
    uint64_t key;            /* smaller pops first */
    int32_t pos;             /* left symbol */
    int32_t right;           /* right symbol (TOK_SPM); right id when queued (BPE) */
    int32_t id;              /* merged id (BPE) or merged byte size (TOK_SPM) */
    int32_t left;            /* left id when queued (BPE) */
} tok_heap_item;

typedef struct tok_work {
    int32_t *out;
    size_t n_out, cap_out;
    tok_sym *sym;
    size_t cap_sym;
    tok_heap_item *heap;
    size_t n_heap, cap_heap;
    pcre2_match_data *md;
    pwb_buf norm;
    pwb_buf tmp[TOK_MAX_PRETOK];
    pwb_buf mapped;
    int failed;              /* ENOMEM somewhere */
} tok_work;

int tok_push(tok_work *w, int32_t id);
/* Runs the pre-tokenizer steps from step k over s and the model over each piece. */
int tok_pretokenize(const tokenizer *t, tok_work *w, int k, const char *s, size_t n, int first);
/* The models: append ids of one pre-tokenized piece. */
int tok_bpe_piece(const tokenizer *t, tok_work *w, const char *s, size_t n);
/* Marks TA_WHOLE on every token that BPE maps to itself (once, at load). */
int tok_mark_whole(tokenizer *t, pwb_err *e);
void tok_work_init(tok_work *w);
void tok_work_free(tok_work *w);
int tok_spm_piece(const tokenizer *t, tok_work *w, const char *s, size_t n);

#endif
