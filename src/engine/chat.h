/* Chat templates: render {role, content} messages into the prompt text a chat model was tuned on.
 * There is no Jinja interpreter: the template family is recognised from the model's Jinja text by
 * its markers (chat_detect) or named by the user (chat_kind_from_name), and each family's layout
 * is written out in chat.c, checked against the Hugging Face templates.
 *
 * The rendered text never starts with the BOS token: encode it with tokenizer_encode(...,
 * add_special = 1, parse_special = 1) so the tokenizer adds BOS when the model wants it and the
 * turn markers become their special tokens. BOS/EOS texts that a family writes between turns
 * (Llama 2's "</s><s>", Mistral's "</s>") are part of the text. */
#ifndef PWB_ENGINE_CHAT_H
#define PWB_ENGINE_CHAT_H

#include <stddef.h>

#include "util/buf.h"
#include "util/err.h"

typedef enum chat_kind {
    CHAT_UNKNOWN = -1, /* a template whose family is not recognised */
    CHAT_NONE = 0,     /* no markers: the contents, separated by blank lines */
    CHAT_CHATML,       /* <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen2) */
    CHAT_LLAMA3,       /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_GEMMA,        /* <start_of_turn>user\n...<end_of_turn>\n, no system role */
    CHAT_MISTRAL,      /* [INST] ... [/INST]answer</s> */
    CHAT_LLAMA2        /* [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] answer </s><s>[INST] ... */
} chat_kind;

typedef struct chat_msg {
    const char *role;    /* "system", "user", "assistant" (ChatML and Llama 3 take any role) */
    const char *content; /* NULL is taken as "" */
} chat_msg;

typedef struct chat_template {
    chat_kind kind;
    char *default_system; /* system turn the template inserts when the messages have none, or NULL */
    char *bos, *eos;      /* Llama 2 / Mistral turn separators; default "<s>", "</s>" */
} chat_template;

/* Recognises the family of a Jinja chat template: CHAT_NONE for NULL or "", CHAT_UNKNOWN when no
 * family's markers are found. */
chat_kind chat_detect(const char *jinja_template);
/* "chatml", "llama3", "gemma", "mistral", "llama2", "none" (case-insensitive); CHAT_UNKNOWN else. */
chat_kind chat_kind_from_name(const char *name);
const char *chat_kind_name(chat_kind kind);

/* Sets up ct from a model's template (may be NULL) or, when override_name is non-empty, from that
 * name. Also takes the template's default system prompt (SmolLM2-Instruct: "You are a helpful AI
 * assistant named SmolLM, trained by Hugging Face"). PWB_EUNSUP for an unrecognised template,
 * PWB_EINVAL for an unknown override name. */
int chat_template_init(chat_template *ct, const char *jinja_template, const char *override_name, pwb_err *e);
/* Replaces the BOS / EOS texts (e.g. tokenizer_token_text(tok, tokenizer_eos(tok))); NULL keeps. */
int chat_template_set_tokens(chat_template *ct, const char *bos, const char *eos, pwb_err *e);
void chat_template_free(chat_template *ct);

/* Appends the rendering of msgs to out; add_generation_prompt opens the assistant's turn.
 * PWB_EINVAL for a role the family cannot place (e.g. a second system message for Gemma). */
int chat_render(const chat_template *ct, const chat_msg *msgs, size_t n, int add_generation_prompt, pwb_buf *out,
                pwb_err *e);

#endif
