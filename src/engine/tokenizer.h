/* Tokenizers: byte-level BPE (GPT-2 style, pre-tokenizer regex through PCRE2 with UTF and UCP) and
 * SentencePiece-style BPE with byte fallback; special tokens; decoding. Built from a tokenizer.json
 * or from a vocabulary read out of GGUF metadata (tok_vocab_spec). */
#ifndef PWB_ENGINE_TOKENIZER_H
#define PWB_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/err.h"

typedef struct tokenizer tokenizer;

/* What GGUF metadata holds (tokenizer.ggml.*). All strings NUL-terminated, owned by the caller. */
typedef struct tok_vocab_spec {
    const char *model;            /* tokenizer.ggml.model: "gpt2" or "llama" */
    const char *pre;              /* tokenizer.ggml.pre, e.g. "smollm", "llama-bpe", "default"; may be NULL */
    size_t n_tokens;
    const char *const *tokens;
    const float *scores;          /* may be NULL */
    const int32_t *types;         /* may be NULL: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte */
    size_t n_merges;
    const char *const *merges;    /* "a b" pairs, may be NULL for SentencePiece vocabularies */
    int32_t bos, eos, unk, pad;   /* -1 when absent */
    int add_bos, add_eos;
    int no_space_prefix;          /* tokenizer.ggml.add_space_prefix == false ("llama" only; 0 = add it) */
} tok_vocab_spec;

int tokenizer_from_spec(tokenizer **t, const tok_vocab_spec *spec, pwb_err *e);
int tokenizer_from_json(tokenizer **t, const char *tokenizer_json_path, pwb_err *e);
void tokenizer_free(tokenizer *t);

/* Encodes UTF-8 text (invalid bytes handled as Hugging Face tokenizers does). Special-token text
 * like "<|im_start|>" is recognised when parse_special is set. add_bos follows the tokenizer's
 * own setting when add_special is set. Returns the number of ids, or -1 with e set. *ids is
 * malloc'd. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t n, int add_special, int parse_special,
                     int32_t **ids, size_t *n_ids, pwb_err *e);
/* Appends the text of ids to out (special tokens rendered when render_special). As Hugging Face's
 * decode: the result is valid UTF-8 (invalid byte runs become U+FFFD) and a SentencePiece
 * tokenizer drops the one leading space its encoder added, so decode a whole sequence at once. */
int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, int render_special, pwb_buf *out);
/* Appends one token's raw bytes (no leading-space strip, no UTF-8 repair): for streaming output,
 * where a character may span several byte tokens. Special tokens add nothing unless
 * render_special. */
int tokenizer_token_piece(const tokenizer *t, int32_t id, int render_special, pwb_buf *out);
size_t tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t);
int32_t tokenizer_eos(const tokenizer *t);
/* Id of an exact token string (e.g. "<|im_end|>"), -1 if absent. */
int32_t tokenizer_token_id(const tokenizer *t, const char *token);
const char *tokenizer_token_text(const tokenizer *t, int32_t id);
int tokenizer_is_special(const tokenizer *t, int32_t id);

#endif
