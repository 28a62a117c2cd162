#include "engine/forward.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/arch.h"
#include "engine/kernels.h"
#include "engine/lora.h"
#include "engine/ops.h"

/* ---------------------------------------------------------------------------------------------
 * KV cache */

int kv_cache_new(kv_cache **out, const model *m, const kv_cache *parent, int n_parent, int cap_hint,
                 pwb_err *e)
{
    *out = NULL;
    if (parent && parent->m != m)
        return err_set(e, PWB_EINVAL, "kv cache: parent belongs to another model");
    if (n_parent < 0 || (!parent && n_parent != 0) || (parent && n_parent > kv_cache_len(parent)))
        return err_set(e, PWB_EINVAL, "kv cache: prefix length %d out of range", n_parent);
    if (parent && parent->depth + 1 > KV_MAX_DEPTH)
        return err_set(e, PWB_ERANGE, "kv cache: parent chain deeper than %d", KV_MAX_DEPTH);
    kv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(e, PWB_ENOMEM, "out of memory");
    c->m = m;
    c->parent = parent;
    c->n_parent = n_parent;
    c->depth = parent ? parent->depth + 1 : 0;
    c->kv_dim = m->hp.n_head_kv * m->hp.head_dim;
    c->k = calloc((size_t)m->hp.n_layer, sizeof *c->k);
    c->v = calloc((size_t)m->hp.n_layer, sizeof *c->v);
    if (!c->k || !c->v) {
        kv_cache_free(c);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    if (cap_hint > 0 && kv_cache_reserve(c, cap_hint, e) != PWB_OK) {
        kv_cache_free(c);
        return e ? e->code : PWB_ENOMEM;
    }
    *out = c;
    return PWB_OK;
}

void kv_cache_free(kv_cache *c)
{
    if (!c)
        return;
    for (int l = 0; c->k && l < c->m->hp.n_layer; l++)
        free(c->k[l]);
    for (int l = 0; c->v && l < c->m->hp.n_layer; l++)
        free(c->v[l]);
    free(c->k);
    free(c->v);
    free(c);
}

int kv_cache_len(const kv_cache *c)
{
    return c ? c->n_parent + c->n : 0;
}

void kv_cache_truncate(kv_cache *c, int len)
{
    if (len < c->n_parent)
        len = c->n_parent;
    if (len - c->n_parent < c->n)
        c->n = len - c->n_parent;
}

int kv_cache_reserve(kv_cache *c, int extra, pwb_err *e)
{
    if (extra < 0 || (int64_t)c->n + extra > (int64_t)c->m->hp.n_ctx)
        return err_set(e, PWB_ERANGE, "sequence of %lld positions exceeds the model's context of %d",
                       (long long)c->n_parent + c->n + extra, c->m->hp.n_ctx);
    int need = c->n + extra;
    if (need <= c->cap)
        return PWB_OK;
    int cap = c->cap ? c->cap : 16;
    while (cap < need)
        cap = cap > c->m->hp.n_ctx / 2 ? c->m->hp.n_ctx : cap * 2;
    size_t row = (size_t)c->kv_dim * sizeof(float);
    for (int l = 0; l < c->m->hp.n_layer; l++) {
        float *k = realloc(c->k[l], (size_t)cap * row);
        if (!k)
            return err_set(e, PWB_ENOMEM, "out of memory (kv cache)");
        c->k[l] = k;
        float *v = realloc(c->v[l], (size_t)cap * row);
        if (!v)
            return err_set(e, PWB_ENOMEM, "out of memory (kv cache)");
        c->v[l] = v;
    }
    c->cap = cap;
    return PWB_OK;
}

int kv_cache_append(kv_cache *c, const float *kv, int n, pwb_err *e)
{
    if (n < 0 || (n && !kv))
        return err_set(e, PWB_EINVAL, "kv cache: bad keys and values");
    int rc = kv_cache_reserve(c, n, e);
    if (rc != PWB_OK)
        return rc;
    const size_t kvd = (size_t)c->kv_dim, row = (size_t)c->m->hp.n_layer * 2 * kvd;
    for (int l = 0; l < c->m->hp.n_layer; l++)
        for (int i = 0; i < n; i++) {
            memcpy(c->k[l] + (size_t)(c->n + i) * kvd, kv + (size_t)i * row + 2 * (size_t)l * kvd, kvd * sizeof(float));
            memcpy(c->v[l] + (size_t)(c->n + i) * kvd, kv + (size_t)i * row + (2 * (size_t)l + 1) * kvd,
                   kvd * sizeof(float));
        }
    c->n += n;
    return PWB_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Scratch */

#define FWD_DEFAULT_TOKENS 512
#define FWD_LOGIT_ROWS 32
/* Below this many flops a loop runs on one thread: waking the team costs more, above all when
 * the cores are shared. */
#define FWD_PAR_MIN_WORK (1 << 16) /* output-head rows per matmul: bounds the logits scratch */

struct fwd_ctx {
    const model *m;
    int max_tokens;
    int q_dim, kv_dim;
    float *x, *xn, *q, *k, *v, *att, *g, *u; /* [max_tokens][...] */
    float *cs, *cs_swa;                      /* [max_tokens][n_rot/2][2]: cos, sin (global, window layers) */
    double *inv_freq, *inv_freq_swa;         /* [n_rot/2] */
    int *t_seq, *t_j, *t_pos, *t_out;        /* per stacked token */
    int *rows;
    float *lg;                               /* [FWD_LOGIT_ROWS][n_vocab] */
    float *scores;
    size_t scores_cap;
    wprod wp;                                /* how weights multiply (weight_product) */
    int act;                                 /* the MLP activation (hp.act, or llama.cpp's GELU) */
};

void fwd_ctx_free(fwd_ctx *c)
{
    if (!c)
        return;
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->g);
    free(c->u);
    free(c->cs);
    free(c->cs_swa);
    free(c->inv_freq);
    free(c->inv_freq_swa);
    free(c->t_seq);
    free(c->t_j);
    free(c->t_pos);
    free(c->t_out);
    free(c->rows);
    free(c->lg);
    free(c->scores);
    free(c);
}

int fwd_ctx_new(fwd_ctx **out, const model *m, int max_tokens, pwb_err *e)
{
    *out = NULL;
    if (max_tokens <= 0)
        max_tokens = FWD_DEFAULT_TOKENS;
    if (max_tokens > 65536)
        max_tokens = 65536;
    const model_hparams *hp = &m->hp;
    fwd_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(e, PWB_ENOMEM, "out of memory");
    c->m = m;
    c->max_tokens = max_tokens;
    c->q_dim = hp->n_head * hp->head_dim;
    c->kv_dim = hp->n_head_kv * hp->head_dim;
    size_t T = (size_t)max_tokens;
    size_t wide = (size_t)(c->q_dim > hp->n_embd ? c->q_dim : hp->n_embd);
    c->x = kernel_alloc_f32(T * (size_t)hp->n_embd);
    c->xn = kernel_alloc_f32(T * wide);
    c->q = kernel_alloc_f32(T * (size_t)c->q_dim);
    c->k = kernel_alloc_f32(T * (size_t)c->kv_dim);
    c->v = kernel_alloc_f32(T * (size_t)c->kv_dim);
    c->att = kernel_alloc_f32(T * (size_t)c->q_dim);
    c->g = kernel_alloc_f32(T * (size_t)hp->n_ff);
    c->u = kernel_alloc_f32(T * (size_t)hp->n_ff);
    c->cs = kernel_alloc_f32(T * (size_t)hp->n_rot);
    c->cs_swa = kernel_alloc_f32(T * (size_t)hp->n_rot);
    c->inv_freq = malloc((size_t)(hp->n_rot / 2 + 1) * sizeof(double));
    c->inv_freq_swa = malloc((size_t)(hp->n_rot / 2 + 1) * sizeof(double));
    c->t_seq = malloc(T * sizeof(int));
    c->t_j = malloc(T * sizeof(int));
    c->t_pos = malloc(T * sizeof(int));
    c->t_out = malloc(T * sizeof(int));
    c->rows = malloc(T * sizeof(int));
    c->lg = kernel_alloc_f32((size_t)FWD_LOGIT_ROWS * (size_t)hp->n_vocab);
    if (!c->x || !c->xn || !c->q || !c->k || !c->v || !c->att || !c->g || !c->u || !c->cs || !c->cs_swa ||
        !c->inv_freq || !c->inv_freq_swa ||
        !c->t_seq || !c->t_j || !c->t_pos || !c->t_out || !c->rows || !c->lg) {
        fwd_ctx_free(c);
        return err_set(e, PWB_ENOMEM, "out of memory (forward scratch for %d tokens)", max_tokens);
    }
    op_rope_freqs(c->inv_freq, hp->rope_base, hp->n_rot);
    op_rope_freqs(c->inv_freq_swa, hp->rope_base_swa > 0.0f ? hp->rope_base_swa : hp->rope_base, hp->n_rot);
    c->wp.m = m;
    c->act = hp->act;
    *out = c;
    return PWB_OK;
}

void fwd_ctx_set_exact(fwd_ctx *c, int exact)
{
    c->wp.exact = exact != 0;
}

void fwd_ctx_set_ggml_gelu(fwd_ctx *c, int on)
{
    const int act = c->m->hp.act;
    c->act = on && act == ACT_GELU_TANH ? ACT_GELU_TANH_FP16 : act;
}

void fwd_ctx_set_lora(fwd_ctx *c, const struct lora *l)
{
    c->wp.lora = l;
}

const model *fwd_ctx_model(const fwd_ctx *c)
{
    return c->m;
}

/* ---------------------------------------------------------------------------------------------
 * Numerics */

void fwd_rope(float *x, int pos, const model_hparams *hp)
{
    double inv_freq[MODEL_MAX_HEAD_DIM / 2];
    float cs[MODEL_MAX_HEAD_DIM];
    op_rope_freqs(inv_freq, hp->rope_base, hp->n_rot);
    op_rope_table(cs, pos, inv_freq, hp->n_rot / 2);
    op_rope(x, 1, hp->head_dim, cs, hp->n_rot, hp->rope_layout);
}

static double logsumexp_f(const float *x, int n)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    if (!isfinite(mx))
        return mx;
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += exp((double)(x[i] - mx));
    return (double)mx + log(s);
}

/* ---------------------------------------------------------------------------------------------
 * One step: T stacked tokens. */

typedef struct step_state {
    fwd_seq *seqs;
    int *start;      /* per seq: cache length before this batch */
    int *flat_base;  /* per seq: index of its first token in the flat out map */
    int *out_of;     /* flat: output slot or -1 */
    int any_lora;    /* some sequence has its own LoRA */
} step_state;

static float attn_scale(const model_hparams *hp)
{
    return hp->attn_scale > 0.0f ? hp->attn_scale : 1.0f / sqrtf((float)hp->head_dim);
}

static void attention(fwd_ctx *c, step_state *st, int l, const int *rows, int nr)
{
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const int kv_dim = c->kv_dim, q_dim = c->q_dim;
    const int window = c->m->layers[l].swa ? hp->n_swa : 0;
    const float scale = attn_scale(hp);
    float *scores_base = c->scores;
    int64_t work = 0;
    for (int r = 0; r < nr; r++)
        work += (int64_t)(c->t_pos[rows[r]] + 1) * n_head * hd;
#pragma omp parallel for schedule(dynamic, 4) if (work >= FWD_PAR_MIN_WORK)
    for (int64_t task = 0; task < (int64_t)nr * n_head; task++) {
        int r = (int)(task / n_head), h = (int)(task % n_head);
        int t = rows[r];
        const kv_cache *leaf = st->seqs[c->t_seq[t]].kv;
        int npos = c->t_pos[t] + 1;
        int kvh = h / group;
        float *sc = scores_base + (size_t)omp_get_thread_num() * c->scores_cap;
        /* Segments of the parent chain, collected leaf first and handed over root first, so
         * positions are summed in the same order whether or not a prefix was reused (bitwise
         * equal results matter: the kernels quantize activations, which amplifies the last bit). */
        attn_seg rev[KV_MAX_DEPTH + 1], seg[KV_MAX_DEPTH + 1];
        int nseg = 0;
        const kv_cache *sg = leaf;
        int top = npos;
        while (top > 0 && nseg <= KV_MAX_DEPTH) {
            while (sg->n_parent >= top)
                sg = sg->parent;
            rev[nseg] = (attn_seg){sg->k[l] + (size_t)kvh * hd, sg->v[l] + (size_t)kvh * hd, (size_t)kv_dim,
                                   NULL, NULL, 0, sg->n_parent, top};
            nseg++;
            top = sg->n_parent;
        }
        for (int g = 0; g < nseg; g++)
            seg[g] = rev[nseg - 1 - g];
        if (window > 0)
            nseg = op_attn_window(seg, nseg, npos - window);
        op_attn(c->q + (size_t)r * q_dim + (size_t)h * hd, seg, nseg, hd, scale, sc,
                c->att + (size_t)r * q_dim + (size_t)h * hd);
    }
}

static void add_rows(float *x, const float *y, int rows, int d)
{
#pragma omp parallel for schedule(static) if ((int64_t)rows * d >= 4 * FWD_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * d;
        const float *o = y + (size_t)r * d;
        for (int i = 0; i < d; i++)
            xr[i] += o[i];
    }
}

/* The sequences' own LoRA terms on a product's output y [nr][out] from its input x [nr][in]: one
 * call per run of rows (stacked in sequence order) that share an adapter. */
static int seq_lora(const fwd_ctx *c, const step_state *st, int layer, int slot, const float *x, int nr, float *y,
                    pwb_err *e)
{
    if (!st->any_lora || slot >= WS_OUTPUT)
        return PWB_OK;
    for (int r0 = 0, r1; r0 < nr; r0 = r1) {
        const struct lora *l = st->seqs[c->t_seq[c->rows[r0]]].lora;
        for (r1 = r0 + 1; r1 < nr && st->seqs[c->t_seq[c->rows[r1]]].lora == l; r1++)
            ;
        const lora_mat *t = l ? lora_at(l, layer, slot) : NULL;
        if (!t)
            continue;
        int rc = lora_fwd(l, layer, slot, x + (size_t)r0 * t->in, (size_t)t->in, r1 - r0, y + (size_t)r0 * t->out,
                          (size_t)t->out, 0, e);
        if (rc != PWB_OK)
            return rc;
    }
    return PWB_OK;
}

#define MM(layer, slot, X, B, Y)                                                                              \
    do {                                                                                                      \
        int rc_ = weight_product(&c->wp, (layer), (slot), WP_FWD, (X), (B), (Y), 0, e);                       \
        if (rc_ == PWB_OK)                                                                                    \
            rc_ = seq_lora(c, st, (layer), (slot), (X), (B), (Y), e);                                         \
        if (rc_ != PWB_OK)                                                                                    \
            return rc_;                                                                                       \
    } while (0)

static int run_step(fwd_ctx *c, step_state *st, int T, pwb_err *e)
{
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int d = hp->n_embd, hd = hp->head_dim, ff = hp->n_ff, kv_dim = c->kv_dim, q_dim = c->q_dim;
    const int half = hp->n_rot / 2;
    const float eps = hp->norm_eps;

    /* Inputs: embedding rows or token embeddings (the latter scaled where the architecture says). */
    for (int t = 0; t < T; t++) {
        const fwd_seq *s = &st->seqs[c->t_seq[t]];
        int j = c->t_j[t];
        float *dst = c->x + (size_t)t * d;
        if (j < s->n_embeds) {
            memcpy(dst, s->embeds + (size_t)j * d, (size_t)d * sizeof *dst);
        } else {
            int rc = model_embed_token(m, s->ids[j - s->n_embeds], dst, e);
            if (rc != PWB_OK)
                return rc;
        }
        op_rope_table(c->cs + (size_t)t * hp->n_rot, c->t_pos[t], c->inv_freq, half);
        op_rope_table(c->cs_swa + (size_t)t * hp->n_rot, c->t_pos[t], c->inv_freq_swa, half);
    }
    /* Scores scratch: one row per thread, as long as the longest sequence. */
    size_t maxlen = 1;
    for (int t = 0; t < T; t++)
        if ((size_t)c->t_pos[t] + 1 > maxlen)
            maxlen = (size_t)c->t_pos[t] + 1;
    size_t nth = (size_t)omp_get_max_threads();
    if (maxlen > c->scores_cap || !c->scores) {
        free(c->scores);
        c->scores_cap = maxlen;
        c->scores = malloc(nth * maxlen * sizeof(float));
        if (!c->scores) {
            c->scores_cap = 0;
            return err_set(e, PWB_ENOMEM, "out of memory");
        }
    }

    int nr = T; /* rows whose residual stream we still carry */
    for (int t = 0; t < T; t++)
        c->rows[t] = t;

    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        const int last = l == hp->n_layer - 1;
        const float *cs_l = L->swa ? c->cs_swa : c->cs;
        op_rmsnorm_rows(c->xn, c->x, L->attn_norm, nr, d, eps);
        MM(l, WS_K, c->xn, nr, c->k);
        MM(l, WS_V, c->xn, nr, c->v);
        op_add_bias(c->k, L->bk, nr, kv_dim);
        op_add_bias(c->v, L->bv, nr, kv_dim);
        if (L->k_norm)
            op_rmsnorm_rows(c->k, c->k, L->k_norm, nr * hp->n_head_kv, hd, eps);
        /* Rope the keys and store keys and values in each sequence's cache. */
        for (int t = 0; t < nr; t++) {
            float *kr = c->k + (size_t)t * kv_dim;
            op_rope(kr, hp->n_head_kv, hd, cs_l + (size_t)t * hp->n_rot, hp->n_rot, hp->rope_layout);
            kv_cache *kv = st->seqs[c->t_seq[t]].kv;
            int own = c->t_pos[t] - kv->n_parent;
            memcpy(kv->k[l] + (size_t)own * kv_dim, kr, (size_t)kv_dim * sizeof(float));
            memcpy(kv->v[l] + (size_t)own * kv_dim, c->v + (size_t)t * kv_dim, (size_t)kv_dim * sizeof(float));
            if (own + 1 > kv->n)
                kv->n = own + 1;
        }
        if (last) {
            /* Past the last layer's keys and values only the output rows matter. */
            int k = 0;
            for (int t = 0; t < T; t++) {
                if (c->t_out[t] < 0)
                    continue;
                if (k != t) {
                    memmove(c->x + (size_t)k * d, c->x + (size_t)t * d, (size_t)d * sizeof(float));
                    memmove(c->xn + (size_t)k * d, c->xn + (size_t)t * d, (size_t)d * sizeof(float));
                }
                c->rows[k++] = t;
            }
            nr = k;
            if (nr == 0)
                return PWB_OK;
        }
        MM(l, WS_Q, c->xn, nr, c->q);
        op_add_bias(c->q, L->bq, nr, q_dim);
        if (L->q_norm)
            op_rmsnorm_rows(c->q, c->q, L->q_norm, nr * hp->n_head, hd, eps);
        for (int r = 0; r < nr; r++)
            op_rope(c->q + (size_t)r * q_dim, hp->n_head, hd, cs_l + (size_t)c->rows[r] * hp->n_rot, hp->n_rot,
                    hp->rope_layout);
        attention(c, st, l, c->rows, nr);
        MM(l, WS_O, c->att, nr, c->xn);
        if (L->post_attn_norm)
            op_rmsnorm_rows(c->xn, c->xn, L->post_attn_norm, nr, d, eps);
        add_rows(c->x, c->xn, nr, d);
        op_rmsnorm_rows(c->xn, c->x, L->ffn_norm, nr, d, eps);
        MM(l, WS_GATE, c->xn, nr, c->g);
        MM(l, WS_UP, c->xn, nr, c->u);
        op_glu(c->g, c->g, c->u, (int64_t)nr * ff, c->act);
        MM(l, WS_DOWN, c->g, nr, c->xn);
        if (L->post_ffn_norm)
            op_rmsnorm_rows(c->xn, c->xn, L->post_ffn_norm, nr, d, eps);
        add_rows(c->x, c->xn, nr, d);
    }

    /* The head, a few rows at a time. */
    op_rmsnorm_rows(c->xn, c->x, m->output_norm, nr, d, eps);
    int head = 0;
    for (int r = 0; r < nr; r++) {
        const fwd_seq *s = &st->seqs[c->t_seq[c->rows[r]]];
        if (s->hidden)
            memcpy(s->hidden + (size_t)c->t_out[c->rows[r]] * d, c->xn + (size_t)r * d, (size_t)d * sizeof(float));
        head |= s->logits || (s->targets && s->logprobs);
    }
    const int V = hp->n_vocab;
    for (int r0 = 0; head && r0 < nr; r0 += FWD_LOGIT_ROWS) {
        int nb = nr - r0 < FWD_LOGIT_ROWS ? nr - r0 : FWD_LOGIT_ROWS;
        MM(-1, WS_OUTPUT, c->xn + (size_t)r0 * d, nb, c->lg);
#pragma omp parallel for schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            int t = c->rows[r0 + b];
            fwd_seq *s = &st->seqs[c->t_seq[t]];
            int slot = c->t_out[t];
            float *lg = c->lg + (size_t)b * V;
            op_softcap(lg, V, hp->final_softcap);
            if (s->logits)
                memcpy(s->logits + (size_t)slot * V, lg, (size_t)V * sizeof(float));
            if (s->targets && s->logprobs)
                s->logprobs[slot] = (double)lg[s->targets[slot]] - logsumexp_f(lg, V);
        }
    }
    return PWB_OK;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* Checks every sequence before any cache is touched. */
static int batch_check(fwd_ctx *c, fwd_seq *seqs, int n, int64_t *total, pwb_err *e)
{
    const model_hparams *hp = &c->m->hp;
    *total = 0;
    for (int i = 0; i < n; i++) {
        fwd_seq *s = &seqs[i];
        if (!s->kv || s->kv->m != c->m)
            return err_set(e, PWB_EINVAL, "sequence %d: no cache for this model", i);
        if (s->n_embeds < 0 || s->n_ids < 0 || (s->n_embeds && !s->embeds) || (s->n_ids && !s->ids))
            return err_set(e, PWB_EINVAL, "sequence %d: bad input", i);
        int len = s->n_embeds + s->n_ids;
        if (s->lora && (s->lora->training || s->lora->n_layer != hp->n_layer))
            return err_set(e, PWB_EINVAL, "sequence %d: its LoRA is not shaped for this model or is training", i);
        if (s->n_out < 0 || s->n_out > len || (s->n_out && !s->logits && !s->hidden && !(s->targets && s->logprobs)))
            return err_set(e, PWB_EINVAL, "sequence %d: bad output request", i);
        if ((int64_t)kv_cache_len(s->kv) + len > hp->n_ctx)
            return err_set(e, PWB_ERANGE, "sequence %d: %lld positions exceed the model's context of %d", i,
                           (long long)kv_cache_len(s->kv) + len, hp->n_ctx);
        for (int j = 0; j < s->n_ids; j++)
            if (s->ids[j] < 0 || s->ids[j] >= hp->n_vocab)
                return err_set(e, PWB_EINVAL, "sequence %d: token id %d out of range", i, (int)s->ids[j]);
        for (int j = 0; s->out_pos && j < s->n_out; j++)
            if (s->out_pos[j] < 0 || s->out_pos[j] >= len)
                return err_set(e, PWB_EINVAL, "sequence %d: output position %d out of range", i, s->out_pos[j]);
        for (int j = 0; s->targets && s->logprobs && j < s->n_out; j++)
            if (s->targets[j] < 0 || s->targets[j] >= hp->n_vocab)
                return err_set(e, PWB_EINVAL, "sequence %d: target id %d out of range", i, (int)s->targets[j]);
        *total += len;
    }
    if (n > 1) {
        const kv_cache **p = malloc((size_t)n * sizeof *p);
        if (!p)
            return err_set(e, PWB_ENOMEM, "out of memory");
        for (int i = 0; i < n; i++)
            p[i] = seqs[i].kv;
        qsort(p, (size_t)n, sizeof *p, cmp_ptr);
        int dup = 0;
        for (int i = 1; i < n; i++)
            dup |= p[i] == p[i - 1];
        free(p);
        if (dup)
            return err_set(e, PWB_EINVAL, "the same cache appears twice in one batch");
    }
    if (*total > INT32_MAX)
        return err_set(e, PWB_ERANGE, "batch too large");
    return PWB_OK;
}

int forward_batch(fwd_ctx *c, fwd_seq *seqs, int n, pwb_err *e)
{
    if (n < 0 || (n && !seqs))
        return err_set(e, PWB_EINVAL, "forward: bad batch");
    int64_t total;
    int rc = batch_check(c, seqs, n, &total, e);
    if (rc != PWB_OK)
        return rc;
    for (int i = 0; i < n; i++)
        if ((rc = kv_cache_reserve(seqs[i].kv, seqs[i].n_embeds + seqs[i].n_ids, e)) != PWB_OK)
            return rc;
    step_state st = {.seqs = seqs};
    for (int i = 0; i < n; i++)
        st.any_lora |= seqs[i].lora != NULL;
    st.start = malloc(((size_t)n + 1) * sizeof(int));
    st.flat_base = malloc(((size_t)n + 1) * sizeof(int));
    st.out_of = malloc(((size_t)total + 1) * sizeof(int));
    if (!st.start || !st.flat_base || !st.out_of) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    int64_t base = 0;
    for (int i = 0; i < n; i++) {
        fwd_seq *s = &seqs[i];
        int len = s->n_embeds + s->n_ids;
        st.start[i] = kv_cache_len(s->kv);
        st.flat_base[i] = (int)base;
        for (int j = 0; j < len; j++)
            st.out_of[base + j] = -1;
        for (int k = 0; k < s->n_out; k++) {
            int j = s->out_pos ? s->out_pos[k] : len - s->n_out + k;
            if (st.out_of[base + j] >= 0) {
                rc = err_set(e, PWB_EINVAL, "sequence %d: output position %d asked twice", i, j);
                goto done;
            }
            st.out_of[base + j] = k;
        }
        base += len;
    }
    /* Fill steps of up to max_tokens stacked tokens, in sequence order. */
    int si = 0, sj = 0;
    while (si < n) {
        int T = 0;
        while (si < n && T < c->max_tokens) {
            fwd_seq *s = &seqs[si];
            int len = s->n_embeds + s->n_ids;
            if (sj >= len) {
                si++;
                sj = 0;
                continue;
            }
            c->t_seq[T] = si;
            c->t_j[T] = sj;
            c->t_pos[T] = st.start[si] + sj;
            c->t_out[T] = st.out_of[st.flat_base[si] + sj];
            T++;
            sj++;
        }
        if (T == 0)
            break;
        if ((rc = run_step(c, &st, T, e)) != PWB_OK)
            goto done;
    }
done:
    free(st.start);
    free(st.flat_base);
    free(st.out_of);
    return rc;
}
