#include "serve/adapter.h"

#include <stdlib.h>
#include <string.h>

#include "tune/method.h"
#include "tune/peft.h"
#include "util/str.h"

void adapter_set_init(adapter_set *s)
{
    memset(s, 0, sizeof *s);
    str_copy(s->items[0].name, sizeof s->items[0].name, "base");
    s->items[0].kind = ADAPTER_BASE;
    s->n = 1;
}

void adapter_set_free(adapter_set *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->items[i].dir);
        free(s->items[i].embeds);
        free(s->items[i].kv);
        lora_free(&s->items[i].lora);
    }
    memset(s, 0, sizeof *s);
}

int adapter_set_find(const adapter_set *s, const char *name)
{
    for (int i = 0; name && i < s->n; i++)
        if (strcmp(s->items[i].name, name) == 0)
            return i;
    return -1;
}

const char *adapter_kind_name(int kind)
{
    return kind == ADAPTER_SOFT     ? "prompt_tuning"
           : kind == ADAPTER_LORA   ? "lora"
           : kind == ADAPTER_PREFIX ? "prefix_tuning"
                                    : "base";
}

int adapter_positions(const adapter *a)
{
    return a->kind == ADAPTER_SOFT ? a->n_embeds : a->kind == ADAPTER_PREFIX ? a->n_kv : 0;
}

static int name_ok(const char *n, size_t len)
{
    if (len < 1 || len > ADAPTER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

int adapter_set_add(adapter_set *s, const char *spec, const model *m, pwb_err *e)
{
    const char *eq = spec ? strchr(spec, '=') : NULL;
    if (!eq || !eq[1])
        return err_set(e, PWB_EINVAL, "adapter '%s': want NAME=DIR", spec ? spec : "");
    size_t nl = (size_t)(eq - spec);
    if (!name_ok(spec, nl))
        return err_set(e, PWB_EINVAL, "adapter '%.*s': a name is 1-%d of A-Z a-z 0-9 . _ -", (int)(nl > 80 ? 80 : nl),
                       spec, ADAPTER_NAME_MAX);
    char name[ADAPTER_NAME_MAX + 1];
    memcpy(name, spec, nl);
    name[nl] = '\0';
    if (adapter_set_find(s, name) >= 0)
        return err_set(e, PWB_EINVAL, "adapter '%s': the name is taken%s", name,
                       strcmp(name, "base") == 0 ? " (\"base\" is the model without adapters)" : "");
    if (s->n >= ADAPTER_MAX)
        return err_set(e, PWB_ERANGE, "more than %d adapters", ADAPTER_MAX - 1);
    const char *dir = eq + 1;
    const int dim = m->hp.n_embd;
    int kind = peft_kind(dir, e);
    if (kind < 0)
        return err_prefix(e, "adapter '%s': ", name);
    adapter *a = &s->items[s->n];
    memset(a, 0, sizeof *a);
    int rc = PWB_OK;
    if (kind == TUNE_PROMPT) {
        peft_prompt pp;
        peft_prompt_init(&pp);
        rc = peft_load(dir, &pp, e);
        if (rc == PWB_OK && (int64_t)pp.dim != dim)
            rc = err_set(e, PWB_EINVAL, "a soft prompt of dimension %zu; the model's hidden size is %d", pp.dim, dim);
        if (rc == PWB_OK && (pp.n_tokens < 1 || pp.n_tokens > 4096))
            rc = err_set(e, PWB_ERANGE, "%zu virtual tokens", pp.n_tokens);
        if (rc == PWB_OK) {
            a->kind = ADAPTER_SOFT;
            a->embeds = pp.embeddings;
            pp.embeddings = NULL;
            a->n_embeds = (int)pp.n_tokens;
            a->dim = dim;
        }
        peft_prompt_free(&pp);
    } else if (kind == TUNE_LORA) {
        /* checks every tensor's shape against the model */
        rc = peft_lora_load(dir, m, &a->lora, e);
        if (rc == PWB_OK)
            a->kind = ADAPTER_LORA;
    } else {
        rc = peft_prefix_load(dir, m, &a->kv, &a->n_kv, e);
        if (rc == PWB_OK && (a->n_kv < 1 || a->n_kv > 4096))
            rc = err_set(e, PWB_ERANGE, "%d virtual tokens", a->n_kv);
        if (rc == PWB_OK)
            a->kind = ADAPTER_PREFIX;
    }
    if (rc == PWB_OK && !(a->dir = str_dup(dir)))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    if (rc != PWB_OK) {
        free(a->embeds);
        free(a->kv);
        lora_free(&a->lora);
        free(a->dir);
        memset(a, 0, sizeof *a);
        return err_prefix(e, "adapter '%s' (%s): ", name, dir);
    }
    str_copy(a->name, sizeof a->name, name);
    s->n++;
    return PWB_OK;
}
