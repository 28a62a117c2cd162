/* Chat template families, written out from their Hugging Face Jinja templates:
 *  ChatML   (SmolLM2-Instruct, Qwen2)            '<|im_start|>' + role + '\n' + content + '<|im_end|>\n'
 *  Llama 3  (Meta-Llama-3-Instruct)              '<|start_header_id|>' + role + '<|end_header_id|>\n\n'
 *                                                + content|trim + '<|eot_id|>'
 *  Gemma    (gemma-2/3-it)                       '<start_of_turn>' + user|model + '\n' + content|trim
 *                                                + '<end_of_turn>\n'; system text goes in front of the
 *                                                first user turn followed by a blank line (Gemma 3)
 *  Mistral  (Mistral-7B-Instruct)                '[INST] ' + content + ' [/INST]' / content + eos
 *  Llama 2  (Llama-2-chat)                       bos + '[INST] ' + ('<<SYS>>\n' + system + '\n<</SYS>>\n\n'
 *                                                + content).strip() + ' [/INST]' / ' ' + content.strip()
 *                                                + ' ' + eos
 * The first BOS is left to the tokenizer (see chat.h). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/chat.h"
#include "util/str.h"

static const struct {
    const char *name;
    chat_kind kind;
} NAMES[] = {
    {"none", CHAT_NONE},       {"chatml", CHAT_CHATML},   {"llama3", CHAT_LLAMA3},
    {"gemma", CHAT_GEMMA},     {"mistral", CHAT_MISTRAL}, {"llama2", CHAT_LLAMA2},
};

chat_kind chat_detect(const char *tpl)
{
    if (!tpl || !tpl[0]) return CHAT_NONE;
    if (strstr(tpl, "<|im_start|>")) return CHAT_CHATML;
    if (strstr(tpl, "<|start_header_id|>") && strstr(tpl, "<|end_header_id|>")) return CHAT_LLAMA3;
    if (strstr(tpl, "<start_of_turn>")) return CHAT_GEMMA;
    if (strstr(tpl, "[INST]")) return strstr(tpl, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    return CHAT_UNKNOWN;
}

chat_kind chat_kind_from_name(const char *name)
{
    if (!name) return CHAT_UNKNOWN;
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        if (!strcasecmp(name, NAMES[i].name)) return NAMES[i].kind;
    return CHAT_UNKNOWN;
}

const char *chat_kind_name(chat_kind kind)
{
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        if (NAMES[i].kind == kind) return NAMES[i].name;
    return "unknown";
}

/* The system prompt a ChatML template writes when the conversation has none: a string literal
 * '<|im_start|>system\n...<|im_end|>' (newline written as a real newline or as "\n"). */
static char *chatml_default_system(const char *tpl)
{
    static const char mark[] = "<|im_start|>system";
    for (const char *p = strstr(tpl, mark); p; p = strstr(p + 1, mark)) {
        if (p == tpl || (p[-1] != '\'' && p[-1] != '"')) continue;
        char quote = p[-1];
        const char *s = p + sizeof mark - 1;
        if (*s == '\n') s++;
        else if (s[0] == '\\' && s[1] == 'n') s += 2;
        else continue;
        const char *end = strstr(s, "<|im_end|>");
        if (!end || memchr(s, quote, (size_t)(end - s)) || end == s) continue;
        /* Undo the Jinja string escapes that can appear in plain prose. */
        char *out = malloc((size_t)(end - s) + 1);
        if (!out) return NULL;
        size_t n = 0;
        for (const char *q = s; q < end; q++) {
            if (*q == '\\' && q + 1 < end) {
                q++;
                out[n++] = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q;
            } else out[n++] = *q;
        }
        out[n] = 0;
        return out;
    }
    return NULL;
}

int chat_template_init(chat_template *ct, const char *tpl, const char *override_name, pwb_err *e)
{
    memset(ct, 0, sizeof *ct);
    if (override_name && override_name[0]) {
        ct->kind = chat_kind_from_name(override_name);
        if (ct->kind == CHAT_UNKNOWN)
            return err_set(e, PWB_EINVAL, "chat template '%.64s' unknown (chatml, llama3, gemma, mistral, llama2, none)",
                           override_name);
    } else {
        ct->kind = chat_detect(tpl);
        if (ct->kind == CHAT_UNKNOWN)
            return err_set(e, PWB_EUNSUP,
                           "the model's chat template is not one pwb knows; name one (chatml, llama3, gemma, mistral, "
                           "llama2, none)");
    }
    if (ct->kind == CHAT_CHATML && tpl && !(override_name && override_name[0] && chat_detect(tpl) != CHAT_CHATML))
        ct->default_system = chatml_default_system(tpl);
    ct->bos = str_dup("<s>");
    ct->eos = str_dup("</s>");
    if (!ct->bos || !ct->eos) {
        chat_template_free(ct);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    return PWB_OK;
}

int chat_template_set_tokens(chat_template *ct, const char *bos, const char *eos, pwb_err *e)
{
    char *b = bos ? str_dup(bos) : NULL, *s = eos ? str_dup(eos) : NULL;
    if ((bos && !b) || (eos && !s)) {
        free(b);
        free(s);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    if (b) {
        free(ct->bos);
        ct->bos = b;
    }
    if (s) {
        free(ct->eos);
        ct->eos = s;
    }
    return PWB_OK;
}

void chat_template_free(chat_template *ct)
{
    free(ct->default_system);
    free(ct->bos);
    free(ct->eos);
    memset(ct, 0, sizeof *ct);
}

/* ---- rendering ---- */

static int is_role(const chat_msg *m, const char *role)
{
    return m->role && !strcmp(m->role, role);
}

static const char *content(const chat_msg *m)
{
    return m->content ? m->content : "";
}

/* Jinja's trim / Python's strip, over ASCII whitespace. */
static int put_trimmed(pwb_buf *o, const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    while (n && isspace((unsigned char)*s)) s++, n--;
    return buf_append(o, s, n);
}

static int bad_role(pwb_err *e, const char *family, size_t i, const chat_msg *m)
{
    return err_set(e, PWB_EINVAL, "chat template %s: message %zu has role '%.32s', which it cannot place", family, i,
                   m->role ? m->role : "(null)");
}

static int render_chatml(const chat_template *ct, const chat_msg *m, size_t n, int gen, pwb_buf *o)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (i == 0 && ct->default_system && !is_role(&m[0], "system"))
            rc |= buf_printf(o, "<|im_start|>system\n%s<|im_end|>\n", ct->default_system);
        rc |= buf_printf(o, "<|im_start|>%s\n%s<|im_end|>\n", m[i].role, content(&m[i]));
    }
    if (gen) rc |= buf_puts(o, "<|im_start|>assistant\n");
    return rc;
}

static int render_llama3(const chat_msg *m, size_t n, int gen, pwb_buf *o)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rc |= buf_printf(o, "<|start_header_id|>%s<|end_header_id|>\n\n", m[i].role);
        rc |= put_trimmed(o, content(&m[i]));
        rc |= buf_puts(o, "<|eot_id|>");
    }
    if (gen) rc |= buf_puts(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return rc;
}

static int render_gemma(const chat_msg *m, size_t n, int gen, pwb_buf *o, pwb_err *e)
{
    size_t start = 0;
    const char *sys = NULL;
    if (n && is_role(&m[0], "system")) {
        sys = content(&m[0]);
        start = 1;
    }
    int rc = 0;
    if (sys && (start >= n || !is_role(&m[start], "user"))) {
        /* No user turn to carry it: the system text becomes a user turn of its own. */
        rc |= buf_puts(o, "<start_of_turn>user\n");
        rc |= put_trimmed(o, sys);
        rc |= buf_puts(o, "<end_of_turn>\n");
        sys = NULL;
    }
    for (size_t i = start; i < n && !rc; i++) {
        const char *role = is_role(&m[i], "user") ? "user" : is_role(&m[i], "assistant") ? "model" : NULL;
        if (!role) return bad_role(e, "gemma", i, &m[i]);
        rc |= buf_printf(o, "<start_of_turn>%s\n", role);
        if (sys && i == start) {
            rc |= put_trimmed(o, sys);
            rc |= buf_puts(o, "\n\n");
        }
        rc |= put_trimmed(o, content(&m[i]));
        rc |= buf_puts(o, "<end_of_turn>\n");
    }
    if (gen) rc |= buf_puts(o, "<start_of_turn>model\n");
    return rc ? PWB_ENOMEM : PWB_OK;
}

static int render_mistral(const chat_template *ct, const chat_msg *m, size_t n, pwb_buf *o, pwb_err *e)
{
    size_t start = 0;
    const char *sys = NULL;
    if (n && is_role(&m[0], "system")) {
        sys = content(&m[0]);
        start = 1;
    }
    int rc = 0;
    for (size_t i = start; i < n && !rc; i++) {
        if (is_role(&m[i], "user")) {
            rc |= buf_puts(o, "[INST] ");
            if (sys) rc |= buf_printf(o, "%s\n\n", sys);
            sys = NULL;
            rc |= buf_printf(o, "%s [/INST]", content(&m[i]));
        } else if (is_role(&m[i], "assistant")) {
            rc |= buf_printf(o, "%s%s", content(&m[i]), ct->eos);
        } else return bad_role(e, "mistral", i, &m[i]);
    }
    return rc ? PWB_ENOMEM : PWB_OK;
}

static int render_llama2(const chat_template *ct, const chat_msg *m, size_t n, pwb_buf *o, pwb_err *e)
{
    size_t start = 0;
    const char *sys = NULL;
    if (n && is_role(&m[0], "system")) {
        sys = content(&m[0]);
        start = 1;
    }
    int rc = 0;
    size_t first = o->len;
    pwb_buf c;
    buf_init(&c);
    for (size_t i = start; i < n && !rc; i++) {
        buf_reset(&c);
        if (i == start && sys) rc |= buf_printf(&c, "<<SYS>>\n%s\n<</SYS>>\n\n", sys);
        rc |= buf_puts(&c, content(&m[i]));
        if (is_role(&m[i], "user")) {
            if (o->len > first) rc |= buf_puts(o, ct->bos);
            rc |= buf_puts(o, "[INST] ");
            rc |= put_trimmed(o, c.data ? c.data : "");
            rc |= buf_puts(o, " [/INST]");
        } else if (is_role(&m[i], "assistant")) {
            rc |= buf_putc(o, ' ');
            rc |= put_trimmed(o, c.data ? c.data : "");
            rc |= buf_printf(o, " %s", ct->eos);
        } else {
            buf_free(&c);
            return bad_role(e, "llama2", i, &m[i]);
        }
    }
    buf_free(&c);
    return rc ? PWB_ENOMEM : PWB_OK;
}

static int render_none(const chat_msg *m, size_t n, pwb_buf *o)
{
    int rc = 0, any = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = content(&m[i]);
        if (!s[0]) continue;
        if (any) rc |= buf_puts(o, "\n\n");
        rc |= buf_puts(o, s);
        any = 1;
    }
    return rc;
}

int chat_render(const chat_template *ct, const chat_msg *msgs, size_t n, int gen, pwb_buf *out, pwb_err *e)
{
    if (!ct || !out || (n && !msgs)) return err_set(e, PWB_EINVAL, "chat_render: bad arguments");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].role[0]) return err_set(e, PWB_EINVAL, "chat_render: message %zu has no role", i);
    int rc;
    switch (ct->kind) {
    case CHAT_NONE: rc = render_none(msgs, n, out) ? PWB_ENOMEM : PWB_OK; break;
    case CHAT_CHATML: rc = render_chatml(ct, msgs, n, gen, out) ? PWB_ENOMEM : PWB_OK; break;
    case CHAT_LLAMA3: rc = render_llama3(msgs, n, gen, out) ? PWB_ENOMEM : PWB_OK; break;
    case CHAT_GEMMA: rc = render_gemma(msgs, n, gen, out, e); break;
    case CHAT_MISTRAL: rc = render_mistral(ct, msgs, n, out, e); break;
    case CHAT_LLAMA2: rc = render_llama2(ct, msgs, n, out, e); break;
    default: return err_set(e, PWB_EINVAL, "chat_render: unknown template kind %d", (int)ct->kind);
    }
    if (rc == PWB_ENOMEM) err_set(e, rc, "chat_render: out of memory");
    return rc;
}
