#include "engine/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/arch.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "util/file.h"
#include "util/json.h"
#include "util/log.h"
#include "util/str.h"

/* Owned state behind model.impl_. */
typedef struct model_impl {
    gguf_file *gguf;
    safetensors_file *st;
    float *vecs;          /* norms and biases converted to F32 */
    size_t vecs_len, vecs_cap;
    char tok_kind[32];
    int dtype_count[DT_COUNT_];
} model_impl;

#define TOKJSON_MAX (64u << 20)

static int fits_int(int64_t v, int64_t lo, int64_t hi)
{
    return v >= lo && v <= hi;
}

/* Converts a 1-D tensor of n elements to F32 into the model's vector pool. Offsets are stored
 * (the pool may move while loading) and turned into pointers once loading is done. */
static int vec_take(model_impl *im, const pwb_tensor *t, int64_t n, const char *what, size_t *off,
                    pwb_err *e)
{
    if (!t)
        return err_set(e, PWB_EMODEL, "missing tensor %s", what);
    int64_t nel = 1;
    for (int i = 0; i < t->n_dims; i++)
        nel *= t->ne[i];
    if (nel != n)
        return err_set(e, PWB_EMODEL, "tensor %s has %lld elements, expected %lld", t->name,
                       (long long)nel, (long long)n);
    if (quant_check(t, e) != PWB_OK)
        return e ? e->code : PWB_EMODEL;
    if (im->vecs_len + (size_t)n > im->vecs_cap) {
        size_t cap = im->vecs_cap ? im->vecs_cap * 2 : 4096;
        while (cap < im->vecs_len + (size_t)n)
            cap *= 2;
        float *p = realloc(im->vecs, cap * sizeof *p);
        if (!p)
            return err_set(e, PWB_ENOMEM, "out of memory");
        im->vecs = p;
        im->vecs_cap = cap;
    }
    if (dequant_row(t->type, t->data, im->vecs + im->vecs_len, n) != PWB_OK)
        return err_set(e, PWB_EUNSUP, "tensor %s: cannot convert type %s", t->name,
                       quant_type_name(t->type));
    *off = im->vecs_len;
    im->vecs_len += (size_t)n;
    return PWB_OK;
}

/* A matrix weight: must be 2-D [rows, cols] in GGUF order with a compute type. */
static int mat_take(const pwb_tensor *t, int64_t cols, int64_t rows, const char *what, pwb_tensor *out,
                    pwb_err *e)
{
    if (!t)
        return err_set(e, PWB_EMODEL, "missing tensor %s", what);
    if (t->n_dims < 2 || t->ne[0] != cols || t->ne[1] != rows || (t->n_dims > 2 && t->ne[2] != 1))
        return err_set(e, PWB_EMODEL, "tensor %s has shape [%lld, %lld], expected [%lld, %lld]", t->name,
                       (long long)t->ne[1], (long long)t->ne[0], (long long)rows, (long long)cols);
    if (quant_check(t, e) != PWB_OK)
        return e ? e->code : PWB_EMODEL;
    if (!quant_supported(t->type))
        return err_set(e, PWB_EUNSUP, "tensor %s: type %s is not supported", t->name,
                       quant_type_name(t->type));
    *out = *t;
    return PWB_OK;
}

static int64_t tensor_nel(const pwb_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++)
        n *= t->ne[i];
    return n;
}

/* Shape checks common to both formats; fills derived fields. */
static int hparams_check(model_hparams *hp, const char *src, pwb_err *e)
{
    if (!fits_int(hp->n_layer, 1, MODEL_MAX_LAYERS) || !fits_int(hp->n_embd, 1, MODEL_MAX_EMBD) ||
        !fits_int(hp->n_head, 1, MODEL_MAX_HEADS) || !fits_int(hp->n_head_kv, 1, hp->n_head) ||
        !fits_int(hp->n_ff, 1, 16 * MODEL_MAX_EMBD))
        return err_set(e, PWB_EMODEL, "%s: implausible dimensions (layers %d, embd %d, heads %d/%d, ff %d)",
                       src, hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->n_ff);
    if (hp->n_head % hp->n_head_kv != 0)
        return err_set(e, PWB_EMODEL, "%s: %d heads is not a multiple of %d kv heads", src, hp->n_head,
                       hp->n_head_kv);
    if (hp->head_dim <= 0) {
        if (hp->n_embd % hp->n_head != 0)
            return err_set(e, PWB_EMODEL, "%s: hidden size %d not divisible by %d heads", src, hp->n_embd,
                           hp->n_head);
        hp->head_dim = hp->n_embd / hp->n_head;
    }
    if (hp->head_dim > MODEL_MAX_HEAD_DIM || hp->head_dim % 2 != 0)
        return err_set(e, PWB_EMODEL, "%s: unsupported head size %d", src, hp->head_dim);
    if (hp->n_rot <= 0 || hp->n_rot > hp->head_dim)
        hp->n_rot = hp->head_dim;
    if (hp->n_rot % 2 != 0)
        return err_set(e, PWB_EMODEL, "%s: odd rope dimension %d", src, hp->n_rot);
    if (!(hp->rope_base > 0.0f) || !isfinite(hp->rope_base))
        hp->rope_base = 10000.0f;
    if (!(hp->norm_eps > 0.0f) || !isfinite(hp->norm_eps) || hp->norm_eps > 1.0f)
        hp->norm_eps = 1e-5f;
    if (hp->n_ctx <= 0)
        hp->n_ctx = 2048;
    return PWB_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Tensors by role (arch.h), the same for both formats */

typedef const pwb_tensor *(*find_fn)(const void *file, const char *name);

/* Vector slots kept per layer (offsets into the pool until loading is done). */
#define VEC_SLOTS AR_COUNT_
#define VEC_OUTPUT_NORM(nl) ((size_t)(nl) * VEC_SLOTS)

static int is_matrix_role(int r)
{
    return r == AR_Q || r == AR_K || r == AR_V || r == AR_O || r == AR_GATE || r == AR_UP || r == AR_DOWN;
}

static int is_bias_role(int r)
{
    return r == AR_Q_BIAS || r == AR_K_BIAS || r == AR_V_BIAS;
}

static pwb_tensor *layer_matrix(model_layer *L, int r)
{
    switch (r) {
    case AR_Q: return &L->wq;
    case AR_K: return &L->wk;
    case AR_V: return &L->wv;
    case AR_O: return &L->wo;
    case AR_GATE: return &L->w_gate;
    case AR_UP: return &L->w_up;
    default: return &L->w_down;
    }
}

/* Every layer tensor of names: matrices checked in place, vectors converted into the pool (HF
 * norm weights w stored as 1 + w when the row says so). offs: [n_layer * VEC_SLOTS + 1]. */
static int load_layers(model *m, model_impl *im, const arch_names *nm, find_fn find,
                       const void *file, int norm_shift, size_t *offs, pwb_err *e)
{
    model_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd, hd = hp->head_dim, ff = hp->n_ff;
    const int64_t q_out = (int64_t)hp->n_head * hd, kv_out = (int64_t)hp->n_head_kv * hd;
    /* [cols, rows] of matrices, length of vectors */
    const int64_t dims[AR_COUNT_][2] = {
        [AR_ATTN_NORM] = {d, 0}, [AR_Q] = {d, q_out}, [AR_K] = {d, kv_out}, [AR_V] = {d, kv_out},
        [AR_O] = {q_out, d}, [AR_Q_BIAS] = {q_out, 0}, [AR_K_BIAS] = {kv_out, 0}, [AR_V_BIAS] = {kv_out, 0},
        [AR_Q_NORM] = {hd, 0}, [AR_K_NORM] = {hd, 0}, [AR_POST_ATTN_NORM] = {d, 0}, [AR_FFN_NORM] = {d, 0},
        [AR_GATE] = {d, ff}, [AR_UP] = {d, ff}, [AR_DOWN] = {ff, d}, [AR_POST_FFN_NORM] = {d, 0},
    };
    char name[GGUF_MAX_NAME + 64];
    int rc;
    for (size_t i = 0; i < (size_t)hp->n_layer * VEC_SLOTS + 1; i++)
        offs[i] = SIZE_MAX;
    if ((rc = vec_take(im, find(file, nm->output_norm), d, nm->output_norm, &offs[VEC_OUTPUT_NORM(hp->n_layer)],
                       e)) != PWB_OK)
        return rc;
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        for (int r = 0; r < AR_COUNT_; r++) {
            if (!nm->layer[r])
                continue;
            snprintf(name, sizeof name, "%s%d.%s", nm->layer_prefix, l, nm->layer[r]);
            const pwb_tensor *t = find(file, name);
            if (is_matrix_role(r)) {
                if ((rc = mat_take(t, dims[r][0], dims[r][1], name, layer_matrix(L, r), e)) != PWB_OK)
                    return rc;
                continue;
            }
            if (!t && is_bias_role(r))
                continue;
            size_t *o = &offs[(size_t)l * VEC_SLOTS + (size_t)r];
            if ((rc = vec_take(im, t, dims[r][0], name, o, e)) != PWB_OK)
                return rc;
            if (is_bias_role(r))
                hp->qkv_bias = 1;
            else if (norm_shift)
                for (int64_t i = 0; i < dims[r][0]; i++)
                    im->vecs[*o + (size_t)i] += 1.0f;
        }
    }
    if (norm_shift)
        for (int64_t i = 0; i < d; i++)
            im->vecs[offs[VEC_OUTPUT_NORM(hp->n_layer)] + (size_t)i] += 1.0f;
    return PWB_OK;
}

/* Flags of the row into the hyperparameters and layers (after the dimensions are known). */
static void apply_row(model *m, const arch_row *row)
{
    model_hparams *hp = &m->hp;
    hp->act = row->act;
    hp->embd_scale = row->embd_scale ? sqrtf((float)hp->n_embd) : 0.0f;
    if (!(hp->rope_base_swa > 0.0f) || !isfinite(hp->rope_base_swa))
        hp->rope_base_swa = row->rope_base_swa > 0.0f ? row->rope_base_swa : hp->rope_base;
    if (hp->n_swa > 0 && row->swa_period > 0)
        for (int l = 0; l < hp->n_layer; l++)
            m->layers[l].swa = (l + 1) % row->swa_period != 0;
}

/* ---------------------------------------------------------------------------------------------
 * GGUF */

static int gguf_tokenizer(model *m, model_impl *im, pwb_err *e)
{
    const gguf_file *g = im->gguf;
    tok_vocab_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.model = gguf_get_str(g, "tokenizer.ggml.model", NULL);
    if (!sp.model)
        return err_set(e, PWB_EMODEL, "%s: no tokenizer.ggml.model in the metadata", m->path);
    sp.pre = gguf_get_str(g, "tokenizer.ggml.pre", NULL);
    sp.tokens = gguf_get_arr_strs(g, "tokenizer.ggml.tokens", &sp.n_tokens);
    if (!sp.tokens || sp.n_tokens == 0)
        return err_set(e, PWB_EMODEL, "%s: no tokenizer.ggml.tokens", m->path);
    size_t n;
    sp.scores = gguf_get_arr_f32(g, "tokenizer.ggml.scores", &n);
    if (sp.scores && n != sp.n_tokens)
        return err_set(e, PWB_EMODEL, "%s: %zu token scores for %zu tokens", m->path, n, sp.n_tokens);
    sp.types = gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &n);
    if (sp.types && n != sp.n_tokens)
        return err_set(e, PWB_EMODEL, "%s: %zu token types for %zu tokens", m->path, n, sp.n_tokens);
    sp.merges = gguf_get_arr_strs(g, "tokenizer.ggml.merges", &sp.n_merges);
    sp.bos = gguf_get_i32(g, "tokenizer.ggml.bos_token_id", -1);
    sp.eos = gguf_get_i32(g, "tokenizer.ggml.eos_token_id", -1);
    sp.unk = gguf_get_i32(g, "tokenizer.ggml.unknown_token_id", -1);
    sp.pad = gguf_get_i32(g, "tokenizer.ggml.padding_token_id", -1);
    /* llama.cpp's defaults when the key is absent: SentencePiece vocabularies add BOS. */
    int spm = strcmp(sp.model, "llama") == 0;
    sp.add_bos = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", spm);
    sp.add_eos = gguf_get_bool(g, "tokenizer.ggml.add_eos_token", 0);
    sp.no_space_prefix = !gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", 1); /* Gemma: false */
    str_copy(im->tok_kind, sizeof im->tok_kind, sp.model);
    int rc = tokenizer_from_spec(&m->tok, &sp, e);
    if (rc != PWB_OK)
        return err_prefix(e, "%s: tokenizer: ", m->path);
    const char *tpl = gguf_get_str(g, "tokenizer.chat_template", NULL);
    if (tpl) {
        m->chat_template = str_dup(tpl);
        if (!m->chat_template)
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    return PWB_OK;
}

static const pwb_tensor *gguf_find(const void *file, const char *name)
{
    return gguf_find_tensor(file, name);
}

static int load_gguf(model *m, model_impl *im, size_t **vec_offs, pwb_err *e)
{
    int rc = gguf_open(&im->gguf, m->path, e);
    if (rc != PWB_OK)
        return rc;
    const gguf_file *g = im->gguf;
    m->format = MODEL_FMT_GGUF;
    m->file_bytes = g->size;
    model_hparams *hp = &m->hp;
    const char *arch = gguf_get_str(g, "general.architecture", NULL);
    if (!arch)
        return err_set(e, PWB_EMODEL, "%s: no general.architecture", m->path);
    const arch_row *row = arch_find_gguf(arch);
    if (!row) {
        char list[128];
        arch_list(list, sizeof list);
        return err_set(e, PWB_EUNSUP, "%s: architecture '%s' is not supported (%s)", m->path, arch, list);
    }
    str_copy(hp->arch, sizeof hp->arch, arch);
    char key[128];
#define GKEY(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    hp->n_layer = (int)gguf_get_u32(g, GKEY("block_count"), 0);
    hp->n_embd = (int)gguf_get_u32(g, GKEY("embedding_length"), 0);
    hp->n_ff = (int)gguf_get_u32(g, GKEY("feed_forward_length"), 0);
    hp->n_head = (int)gguf_get_u32(g, GKEY("attention.head_count"), 0);
    hp->n_head_kv = (int)gguf_get_u32(g, GKEY("attention.head_count_kv"), (uint32_t)hp->n_head);
    hp->head_dim = (int)gguf_get_u32(g, GKEY("attention.key_length"), 0);
    hp->n_rot = (int)gguf_get_u32(g, GKEY("rope.dimension_count"), 0);
    hp->n_ctx = (int)gguf_get_u32(g, GKEY("context_length"), 0);
    hp->rope_base = gguf_get_f32(g, GKEY("rope.freq_base"), 10000.0f);
    hp->norm_eps = gguf_get_f32(g, GKEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    if (row->swa_period > 0) {
        uint32_t w = gguf_get_u32(g, GKEY("attention.sliding_window"), 0);
        hp->n_swa = w > (uint32_t)INT32_MAX ? INT32_MAX : (int)w;
        hp->rope_base_swa = gguf_get_f32(g, GKEY("rope.freq_base_swa"), 0.0f);
    }
    hp->final_softcap = gguf_get_f32(g, GKEY("final_logit_softcapping"), 0.0f);
    if (!isfinite(hp->final_softcap) || hp->final_softcap < 0.0f)
        return err_set(e, PWB_EMODEL, "%s: bad final_logit_softcapping", m->path);
    if (gguf_get_f32(g, GKEY("attn_logit_softcapping"), 0.0f) != 0.0f)
        return err_set(e, PWB_EUNSUP, "%s: attention logit soft-capping is not supported", m->path);
    if (gguf_find_kv(g, GKEY("rope.scaling.type")) &&
        strcmp(gguf_get_str(g, key, "none"), "none") != 0)
        return err_set(e, PWB_EUNSUP, "%s: RoPE scaling '%s' is not supported", m->path,
                       gguf_get_str(g, key, "?"));
#undef GKEY
    /* Huge values become negative ints above; hparams_check rejects them. */
    rc = hparams_check(hp, m->path, e);
    if (rc != PWB_OK)
        return rc;
    if (gguf_find_tensor(g, "rope_freqs.weight"))
        return err_set(e, PWB_EUNSUP, "%s: per-dimension RoPE frequencies (Llama 3.1 scaling) are not supported",
                       m->path);
    hp->rope_layout = row->rope_gguf;

    const arch_names *nm = row->gguf;
    const pwb_tensor *te = gguf_find_tensor(g, nm->embd);
    if (!te || te->n_dims < 2)
        return err_set(e, PWB_EMODEL, "%s: missing tensor %s", m->path, nm->embd);
    if (!fits_int(te->ne[1], 1, MODEL_MAX_VOCAB))
        return err_set(e, PWB_EMODEL, "%s: implausible vocabulary size %lld", m->path, (long long)te->ne[1]);
    hp->n_vocab = (int)te->ne[1];
    if ((rc = mat_take(te, hp->n_embd, hp->n_vocab, nm->embd, &m->tok_embd, e)) != PWB_OK)
        return err_prefix(e, "%s: ", m->path);
    const pwb_tensor *out = gguf_find_tensor(g, nm->output);
    hp->tied = out == NULL;
    if ((rc = mat_take(out ? out : te, hp->n_embd, hp->n_vocab, nm->output, &m->output, e)) != PWB_OK)
        return err_prefix(e, "%s: ", m->path);

    size_t *offs = calloc((size_t)hp->n_layer * VEC_SLOTS + 1, sizeof *offs);
    if (!offs)
        return err_set(e, PWB_ENOMEM, "out of memory");
    *vec_offs = offs;
    if ((rc = load_layers(m, im, nm, gguf_find, g, 0, offs, e)) != PWB_OK)
        return err_prefix(e, "%s: ", m->path);
    apply_row(m, row);
    for (size_t i = 0; i < g->n_tensors; i++)
        m->n_params += tensor_nel(&g->tensors[i]);
    for (size_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].type >= 0 && g->tensors[i].type < DT_COUNT_)
            im->dtype_count[g->tensors[i].type]++;
    return gguf_tokenizer(m, im, e);
}

/* ---------------------------------------------------------------------------------------------
 * Hugging Face folder */

static int json_dim(const cJSON *cfg, const char *key, int def, const char *src, int *out, pwb_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return PWB_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 2147483647.0) ||
        v->valuedouble != floor(v->valuedouble))
        return err_set(e, PWB_EMODEL, "%s: '%s' must be a non-negative integer", src, key);
    *out = (int)v->valuedouble;
    return PWB_OK;
}

static const pwb_tensor *st_find(const void *st, const char *name)
{
    return safetensors_find_tensor(st, name);
}

/* The chat template of a Hugging Face folder lives in tokenizer_config.json, as a string or as a
 * list of {name, template} (the "default" one wins). */
static int hf_chat_template(model *m, const char *dir, pwb_err *e)
{
    pwb_buf p;
    buf_init(&p);
    if (file_join(&p, dir, "tokenizer_config.json") || !p.data) {
        buf_free(&p);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    if (!file_exists(p.data)) {
        buf_free(&p);
        return PWB_OK;
    }
    cJSON *j = json_parse_file(p.data, JSON_MAX_FILE, e);
    buf_free(&p);
    if (!j)
        return e ? e->code : PWB_EPARSE;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    const char *s = NULL;
    if (cJSON_IsString(t)) {
        s = t->valuestring;
    } else if (cJSON_IsArray(t)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, t)
        {
            const char *nm = json_str(it, "name", NULL), *tp = json_str(it, "template", NULL);
            if (tp && (!s || (nm && strcmp(nm, "default") == 0)))
                s = tp;
        }
    }
    if (s && !(m->chat_template = str_dup(s))) {
        cJSON_Delete(j);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    cJSON_Delete(j);
    return PWB_OK;
}

static int load_hf(model *m, model_impl *im, const char *dir, size_t **vec_offs, pwb_err *e)
{
    pwb_buf p;
    buf_init(&p);
    int rc = PWB_OK;
    cJSON *cfg = NULL;
    m->format = MODEL_FMT_HF;
    if (file_join(&p, dir, "config.json"))
        return err_set(e, PWB_ENOMEM, "out of memory");
    cfg = json_parse_file(p.data, 1u << 20, e);
    if (!cfg) {
        buf_free(&p);
        return e ? e->code : PWB_EPARSE;
    }
    const char *src = "config.json";
    model_hparams *hp = &m->hp;
    const char *mt = json_str(cfg, "model_type", "llama");
    const arch_row *row = arch_find_hf(mt);
    if (!row) {
        char list[128];
        arch_list(list, sizeof list);
        rc = err_set(e, PWB_EUNSUP, "%s: model_type '%s' is not supported (%s)", p.data, mt, list);
        goto done;
    }
    str_copy(hp->arch, sizeof hp->arch, row->gguf_arch);
    int vocab = 0;
    if ((rc = json_dim(cfg, "num_hidden_layers", 0, src, &hp->n_layer, e)) ||
        (rc = json_dim(cfg, "hidden_size", 0, src, &hp->n_embd, e)) ||
        (rc = json_dim(cfg, "intermediate_size", 0, src, &hp->n_ff, e)) ||
        (rc = json_dim(cfg, "num_attention_heads", 0, src, &hp->n_head, e)) ||
        (rc = json_dim(cfg, "num_key_value_heads", hp->n_head, src, &hp->n_head_kv, e)) ||
        (rc = json_dim(cfg, "head_dim", 0, src, &hp->head_dim, e)) ||
        (rc = json_dim(cfg, "max_position_embeddings", 0, src, &hp->n_ctx, e)) ||
        (rc = json_dim(cfg, "vocab_size", 0, src, &vocab, e)))
        goto done;
    hp->rope_base = (float)json_num(cfg, "rope_theta", 10000.0);
    hp->norm_eps = (float)json_num(cfg, "rms_norm_eps", 1e-6);
    if (row->swa_period > 0) {
        if ((rc = json_dim(cfg, "sliding_window", 0, src, &hp->n_swa, e)))
            goto done;
        hp->rope_base_swa = (float)json_num(cfg, "rope_local_base_freq", 0.0);
        double qs = json_num(cfg, "query_pre_attn_scalar", 0.0);
        if (qs > 0.0)
            hp->attn_scale = (float)(1.0 / sqrt(qs));
    }
    hp->final_softcap = (float)json_num(cfg, "final_logit_softcapping", 0.0);
    if (!isfinite(hp->final_softcap) || hp->final_softcap < 0.0f || json_num(cfg, "attn_logit_softcapping", 0.0) != 0.0) {
        rc = err_set(e, PWB_EUNSUP, "%s: this logit soft-capping is not supported", p.data);
        goto done;
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        rc = err_set(e, PWB_EUNSUP, "%s: rope_scaling is not supported", p.data);
        goto done;
    }
    if ((rc = hparams_check(hp, p.data, e)) != PWB_OK)
        goto done;
    hp->rope_layout = ROPE_HALF;
    int tie_cfg = json_bool(cfg, "tie_word_embeddings", 0);

    buf_reset(&p);
    if (file_join(&p, dir, "model.safetensors")) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = safetensors_open(&im->st, p.data, e)) != PWB_OK)
        goto done;
    const safetensors_file *st = im->st;
    m->file_bytes = st->size;
    const arch_names *nm = row->hf;
    const pwb_tensor *emb = st_find(st, nm->embd);
    const pwb_tensor *head = st_find(st, nm->output);
    /* Tied checkpoints store one of the two; the __metadata__ may name the alias. */
    if (!emb) {
        const char *alias = safetensors_get_meta(st, nm->embd);
        emb = alias ? st_find(st, alias) : head;
    }
    if (!emb) {
        rc = err_set(e, PWB_EMODEL, "%s: missing tensor %s", p.data, nm->embd);
        goto done;
    }
    if (emb->n_dims < 2 || !fits_int(emb->ne[1], 1, MODEL_MAX_VOCAB)) {
        rc = err_set(e, PWB_EMODEL, "%s: bad embedding shape", p.data);
        goto done;
    }
    hp->n_vocab = (int)emb->ne[1];
    if (vocab && vocab != hp->n_vocab)
        log_msg(LOG_DEBUG, "%s: vocab_size %d but embedding has %d rows", src, vocab, hp->n_vocab);
    if ((rc = mat_take(emb, hp->n_embd, hp->n_vocab, nm->embd, &m->tok_embd, e)))
        goto prefix;
    if (!head || (tie_cfg && head == emb))
        head = emb;
    hp->tied = head == emb || head->data == emb->data;
    if ((rc = mat_take(head, hp->n_embd, hp->n_vocab, nm->output, &m->output, e)))
        goto prefix;

    size_t *offs = calloc((size_t)hp->n_layer * VEC_SLOTS + 1, sizeof *offs);
    if (!offs) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    *vec_offs = offs;
    if ((rc = load_layers(m, im, row->hf, st_find, st, row->hf_norm_shift, offs, e)))
        goto prefix;
    apply_row(m, row);
    /* Layer kinds named one by one override the row's period. */
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(cfg, "layer_types");
    if (hp->n_swa > 0 && cJSON_IsArray(lt) && cJSON_GetArraySize(lt) == hp->n_layer)
        for (int l = 0; l < hp->n_layer; l++) {
            const cJSON *it = cJSON_GetArrayItem(lt, l);
            m->layers[l].swa = cJSON_IsString(it) && strcmp(it->valuestring, "sliding_attention") == 0;
        }
    for (size_t i = 0; i < st->n_tensors; i++) {
        m->n_params += tensor_nel(&st->tensors[i]);
        if (st->tensors[i].type >= 0 && st->tensors[i].type < DT_COUNT_)
            im->dtype_count[st->tensors[i].type]++;
    }

    buf_reset(&p);
    if (file_join(&p, dir, "tokenizer.json")) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = tokenizer_from_json(&m->tok, p.data, e)) != PWB_OK)
        goto done;
    str_copy(im->tok_kind, sizeof im->tok_kind, "tokenizer.json");
    rc = hf_chat_template(m, dir, e);
    goto done;
prefix:
    err_prefix(e, "%s: ", p.data);
done:
    cJSON_Delete(cfg);
    buf_free(&p);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Entry points */

static int path_is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char magic[4] = {0};
    size_t n = fread(magic, 1, 4, f);
    fclose(f);
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

int model_load(model **out, const char *path, pwb_err *e)
{
    *out = NULL;
    if (!path || !*path)
        return err_set(e, PWB_EINVAL, "no model path given");
    model *m = calloc(1, sizeof *m);
    model_impl *im = calloc(1, sizeof *im);
    if (!m || !im) {
        free(m);
        free(im);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    m->impl_ = im;
    m->path = str_dup(path);
    if (!m->path) {
        model_free(m);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    int rc;
    size_t *offs = NULL;
    pwb_buf dir;
    buf_init(&dir);
    int is_dir = file_is_dir(path);
    int is_gguf = !is_dir && path_is_gguf(path);
    if (!is_dir && !is_gguf && !file_exists(path)) {
        rc = err_set(e, PWB_EIO, "%s: no such file or folder%s", path,
                     strstr(path, "SmolLM2-135M-Instruct") ? " (`make model` fetches it into models/)" : "");
        goto fail;
    }
    if (!is_dir && !is_gguf && !str_ends(path, ".safetensors")) {
        rc = err_set(e, PWB_EUNSUP, "%s: neither a GGUF file nor a Hugging Face folder", path);
        goto fail;
    }
    /* Layers are needed before the loaders run; peek at the layer count first. */
    if (is_gguf) {
        gguf_file *g = NULL;
        if ((rc = gguf_open(&g, path, e)) != PWB_OK)
            goto fail;
        const char *arch = gguf_get_str(g, "general.architecture", "llama");
        char key[96];
        snprintf(key, sizeof key, "%s.block_count", arch);
        uint32_t nl = gguf_get_u32(g, key, 0);
        gguf_close(g);
        if (nl == 0 || nl > MODEL_MAX_LAYERS) {
            rc = err_set(e, PWB_EMODEL, "%s: missing or implausible %s", path, key);
            goto fail;
        }
        m->layers = calloc(nl, sizeof *m->layers);
    } else {
        if (is_dir)
            buf_puts(&dir, path);
        else
            file_dirname(path, &dir);
        m->layers = calloc(MODEL_MAX_LAYERS, sizeof *m->layers);
    }
    if (!m->layers) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto fail;
    }
    rc = is_gguf ? load_gguf(m, im, &offs, e) : load_hf(m, im, dir.data, &offs, e);
    if (rc != PWB_OK)
        goto fail;
    /* The vector pool has stopped moving: resolve offsets to pointers. */
    int nl = m->hp.n_layer;
    m->output_norm = im->vecs + offs[VEC_OUTPUT_NORM(nl)];
    for (int l = 0; l < nl; l++) {
        const size_t *o = &offs[(size_t)l * VEC_SLOTS];
        model_layer *L = &m->layers[l];
#define VEC(r) (o[r] == SIZE_MAX ? NULL : im->vecs + o[r])
        L->attn_norm = VEC(AR_ATTN_NORM);
        L->ffn_norm = VEC(AR_FFN_NORM);
        L->bq = VEC(AR_Q_BIAS);
        L->bk = VEC(AR_K_BIAS);
        L->bv = VEC(AR_V_BIAS);
        L->q_norm = VEC(AR_Q_NORM);
        L->k_norm = VEC(AR_K_NORM);
        L->post_attn_norm = VEC(AR_POST_ATTN_NORM);
        L->post_ffn_norm = VEC(AR_POST_FFN_NORM);
#undef VEC
    }
    if (tokenizer_n_vocab(m->tok) > (size_t)m->hp.n_vocab) {
        rc = err_set(e, PWB_EMODEL, "%s: tokenizer has %zu tokens but the model only %d", path,
                     tokenizer_n_vocab(m->tok), m->hp.n_vocab);
        goto fail;
    }
    free(offs);
    buf_free(&dir);
    *out = m;
    return PWB_OK;
fail:
    free(offs);
    buf_free(&dir);
    model_free(m);
    return rc;
}

void model_free(model *m)
{
    if (!m)
        return;
    model_impl *im = m->impl_;
    if (im) {
        gguf_close(im->gguf);
        safetensors_close(im->st);
        free(im->vecs);
        free(im);
    }
    tokenizer_free(m->tok);
    free(m->chat_template);
    free(m->layers);
    free(m->path);
    free(m);
}

int model_embed_token(const model *m, int32_t id, float *dst, pwb_err *e)
{
    int rc = kernel_get_row(&m->tok_embd, id, dst, e);
    if (rc == PWB_OK && m->hp.embd_scale > 0.0f)
        for (int i = 0; i < m->hp.n_embd; i++)
            dst[i] *= m->hp.embd_scale;
    return rc;
}

void model_summarize(const model *m, model_summary *s)
{
    const model_impl *im = m->impl_;
    memset(s, 0, sizeof *s);
    s->format = m->format == MODEL_FMT_GGUF ? "gguf" : "safetensors";
    s->arch = m->hp.arch;
    s->n_params = m->n_params;
    s->file_bytes = m->file_bytes;
    memcpy(s->dtype_count, im->dtype_count, sizeof s->dtype_count);
    s->tokenizer_kind = im->tok_kind;
    s->template_kind = chat_kind_name(chat_detect(m->chat_template));
}

int model_info(const model *m, pwb_buf *out)
{
    model_summary s;
    model_summarize(m, &s);
    const model_hparams *hp = &m->hp;
    int rc = 0;
    rc |= buf_printf(out, "model       %s\n", m->path);
    rc |= buf_printf(out, "format      %s, %.1f MiB\n", s.format, (double)s.file_bytes / (1024.0 * 1024.0));
    rc |= buf_printf(out, "arch        %s, %d layers, hidden %d, ff %d, heads %d (kv %d, dim %d)\n", hp->arch,
                     hp->n_layer, hp->n_embd, hp->n_ff, hp->n_head, hp->n_head_kv, hp->head_dim);
    rc |= buf_printf(out, "vocab       %d, context %d, rope base %g (%s), rms eps %g%s%s\n", hp->n_vocab,
                     hp->n_ctx, (double)hp->rope_base, hp->rope_layout == ROPE_HALF ? "rotate-half" : "adjacent pairs",
                     (double)hp->norm_eps, hp->tied ? ", tied embeddings" : "", hp->qkv_bias ? ", qkv bias" : "");
    int n_swa = 0;
    for (int l = 0; l < hp->n_layer; l++)
        n_swa += m->layers[l].swa;
    const model_layer *L0 = &m->layers[0];
    if (hp->act || hp->embd_scale > 0.0f || L0->q_norm || L0->post_attn_norm || n_swa || hp->final_softcap > 0.0f) {
        rc |= buf_printf(out, "layer      %s%s%s", hp->act == ACT_GELU_TANH ? " GeGLU (tanh GELU)" : " SwiGLU",
                         L0->q_norm ? ", QK norm" : "", L0->post_attn_norm ? ", post-norms" : "");
        if (hp->embd_scale > 0.0f)
            rc |= buf_printf(out, ", embeddings x%.4g", (double)hp->embd_scale);
        if (n_swa)
            rc |= buf_printf(out, ", sliding window %d on %d of %d layers (rope base %g)", hp->n_swa, n_swa,
                             hp->n_layer, (double)hp->rope_base_swa);
        if (hp->final_softcap > 0.0f)
            rc |= buf_printf(out, ", logit soft-cap %g", (double)hp->final_softcap);
        rc |= buf_puts(out, "\n");
    }
    rc |= buf_printf(out, "params      %lld (%.1fM)\n", (long long)s.n_params, (double)s.n_params / 1e6);
    rc |= buf_puts(out, "dtypes     ");
    for (int t = 0; t < DT_COUNT_; t++)
        if (s.dtype_count[t])
            rc |= buf_printf(out, " %s x%d", quant_type_name(t), s.dtype_count[t]);
    rc |= buf_printf(out, "\ntokenizer   %s, %zu tokens (bos %d, eos %d)\n", s.tokenizer_kind,
                     tokenizer_n_vocab(m->tok), tokenizer_bos(m->tok), tokenizer_eos(m->tok));
    rc |= buf_printf(out, "chat        %s\n", s.template_kind);
    return rc ? PWB_ENOMEM : PWB_OK;
}
