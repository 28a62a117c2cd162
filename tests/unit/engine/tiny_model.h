/* Shared helpers for the soft-prompt tests: data paths and a random tiny Llama model built in
 * memory (F32 weights), so the backward pass can be checked without any file. */
#ifndef PWB_TEST_TINY_MODEL_H
#define PWB_TEST_TINY_MODEL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/arch.h"
#include "engine/model.h"
#include "util/file.h"
#include "util/rng.h"

static inline const char *t_root(void)
{
    const char *r = getenv("PWB_ROOT");
    return r && r[0] ? r : ".";
}

/* $PWB_SHARED, else ../shared beside the repository. */
static inline const char *t_shared(void)
{
    static char buf[4096];
    const char *s = getenv("PWB_SHARED");
    if (s && s[0])
        return s;
    snprintf(buf, sizeof buf, "%.4000s/../shared", t_root());
    return buf;
}

/* path = base + "/" + rel into a static buffer (one at a time). */
static inline const char *t_path(const char *base, const char *rel)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%.2000s/%.2000s", base, rel);
    return buf;
}

typedef struct tiny_model {
    model m;
    model_layer layers[4];
    float *mem;
    size_t used, cap;
} tiny_model;

static inline float *tiny_alloc(tiny_model *t, size_t n)
{
    float *p = t->mem + t->used;
    t->used += n;
    return t->used <= t->cap ? p : NULL;
}

static inline pwb_tensor tiny_weight(tiny_model *t, pwb_rng *r, int rows, int cols, double sd, const char *name)
{
    float *w = tiny_alloc(t, (size_t)rows * cols);
    for (int i = 0; i < rows * cols; i++)
        w[i] = (float)(sd * rng_normal(r));
    pwb_tensor x = {name, DT_F32, 2, {cols, rows, 1, 1}, w, (size_t)rows * cols * sizeof(float)};
    return x;
}

static inline const float *tiny_norm(tiny_model *t, pwb_rng *r, int n)
{
    float *w = tiny_alloc(t, (size_t)n);
    for (int i = 0; i < n; i++)
        w[i] = (float)(1.0 + 0.2 * rng_normal(r));
    return w;
}

/* A random Llama: n_layer layers (<= 4), hidden d, heads/kv heads, vocab V, MLP ff; q/k/v biases
 * when qkv_bias (Qwen2-style). */
static inline tiny_model *tiny_model_new(uint64_t seed, int n_layer, int d, int n_head, int n_head_kv, int V, int ff,
                                         int layout, int qkv_bias)
{
    tiny_model *t = calloc(1, sizeof *t);
    int hd = d / n_head;
    t->cap = (size_t)2 * V * d + (size_t)n_layer * (2 * d * d + 2 * d * hd * n_head_kv + 3 * d * ff + 9 * d + 2 * hd) +
             4 * d;
    t->mem = malloc(t->cap * sizeof(float));
    pwb_rng r;
    rng_init(&r, seed);
    model_hparams *hp = &t->m.hp;
    snprintf(hp->arch, sizeof hp->arch, "llama");
    hp->n_layer = n_layer;
    hp->n_embd = d;
    hp->n_ff = ff;
    hp->n_head = n_head;
    hp->n_head_kv = n_head_kv;
    hp->head_dim = hd;
    hp->n_rot = hd;
    hp->n_vocab = V;
    hp->n_ctx = 128;
    hp->rope_base = 10000.0f;
    hp->norm_eps = 1e-5f;
    hp->rope_layout = layout;
    hp->qkv_bias = qkv_bias;
    t->m.tok_embd = tiny_weight(t, &r, V, d, 1.0, "token_embd");
    t->m.output = tiny_weight(t, &r, V, d, 1.0 / sqrt(d), "output");
    t->m.output_norm = tiny_norm(t, &r, d);
    for (int l = 0; l < n_layer; l++) {
        model_layer *L = &t->layers[l];
        double s = 1.0 / sqrt(d);
        L->attn_norm = tiny_norm(t, &r, d);
        L->ffn_norm = tiny_norm(t, &r, d);
        /* Larger q/k weights give peaked attention, which exercises the softmax backward. */
        L->wq = tiny_weight(t, &r, d, d, 2.0 * s, "wq");
        L->wk = tiny_weight(t, &r, hd * n_head_kv, d, 2.0 * s, "wk");
        L->wv = tiny_weight(t, &r, hd * n_head_kv, d, s, "wv");
        L->wo = tiny_weight(t, &r, d, d, s, "wo");
        L->w_gate = tiny_weight(t, &r, ff, d, s, "w_gate");
        L->w_up = tiny_weight(t, &r, ff, d, s, "w_up");
        L->w_down = tiny_weight(t, &r, d, ff, 1.0 / sqrt(ff), "w_down");
        if (qkv_bias) {
            float *b = tiny_alloc(t, (size_t)(d + 2 * hd * n_head_kv));
            for (int i = 0; i < d + 2 * hd * n_head_kv; i++)
                b[i] = (float)(0.1 * rng_normal(&r));
            L->bq = b;
            L->bk = b + d;
            L->bv = b + d + hd * n_head_kv;
        }
    }
    t->m.layers = t->layers;
    return t->used <= t->cap ? t : NULL;
}

/* Turns a tiny model into a Gemma 3-style one: per-head QK norms, post-attention and post-FFN
 * norms, GeGLU, embeddings scaled by sqrt(d), final-logit soft-capping, and layer 0 attending
 * within a window of `window` positions with its own RoPE base. */
static inline void tiny_model_gemma(tiny_model *t, uint64_t seed, int window)
{
    pwb_rng r;
    rng_init(&r, seed);
    model_hparams *hp = &t->m.hp;
    snprintf(hp->arch, sizeof hp->arch, "gemma3");
    hp->act = ACT_GELU_TANH;
    hp->embd_scale = sqrtf((float)hp->n_embd);
    hp->n_swa = window;
    hp->rope_base_swa = 100.0f;
    hp->final_softcap = 3.0f;
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &t->layers[l];
        L->q_norm = tiny_norm(t, &r, hp->head_dim);
        L->k_norm = tiny_norm(t, &r, hp->head_dim);
        L->post_attn_norm = tiny_norm(t, &r, hp->n_embd);
        L->post_ffn_norm = tiny_norm(t, &r, hp->n_embd);
        L->swa = l == 0;
    }
}

static inline void tiny_model_free(tiny_model *t)
{
    if (!t)
        return;
    free(t->mem);
    free(t);
}

#endif
