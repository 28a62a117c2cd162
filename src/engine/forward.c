#include "engine/forward.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"

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
    float *cs;                               /* [max_tokens][n_rot/2][2]: cos, sin */
    double *inv_freq;                        /* [n_rot/2] */
    int *t_seq, *t_j, *t_pos, *t_out;        /* per stacked token */
    int *rows;
    float *lg;                               /* [FWD_LOGIT_ROWS][n_vocab] */
    float *scores;
    size_t scores_cap;
    int exact;                               /* weight products by kernel_matmul_exact */
};

static void *xmalloc_f(size_t n_floats)
{
    return malloc((n_floats ? n_floats : 1) * sizeof(float));
}

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
    free(c->inv_freq);
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
    c->x = xmalloc_f(T * (size_t)hp->n_embd);
    c->xn = xmalloc_f(T * wide);
    c->q = xmalloc_f(T * (size_t)c->q_dim);
    c->k = xmalloc_f(T * (size_t)c->kv_dim);
    c->v = xmalloc_f(T * (size_t)c->kv_dim);
    c->att = xmalloc_f(T * (size_t)c->q_dim);
    c->g = xmalloc_f(T * (size_t)hp->n_ff);
    c->u = xmalloc_f(T * (size_t)hp->n_ff);
    c->cs = xmalloc_f(T * (size_t)hp->n_rot);
    c->inv_freq = malloc((size_t)(hp->n_rot / 2 + 1) * sizeof(double));
    c->t_seq = malloc(T * sizeof(int));
    c->t_j = malloc(T * sizeof(int));
    c->t_pos = malloc(T * sizeof(int));
    c->t_out = malloc(T * sizeof(int));
    c->rows = malloc(T * sizeof(int));
    c->lg = xmalloc_f((size_t)FWD_LOGIT_ROWS * (size_t)hp->n_vocab);
    if (!c->x || !c->xn || !c->q || !c->k || !c->v || !c->att || !c->g || !c->u || !c->cs || !c->inv_freq ||
        !c->t_seq || !c->t_j || !c->t_pos || !c->t_out || !c->rows || !c->lg) {
        fwd_ctx_free(c);
        return err_set(e, PWB_ENOMEM, "out of memory (forward scratch for %d tokens)", max_tokens);
    }
    for (int i = 0; i < hp->n_rot / 2; i++)
        c->inv_freq[i] = pow((double)hp->rope_base, -2.0 * i / (double)hp->n_rot);
    *out = c;
    return PWB_OK;
}

void fwd_ctx_set_exact(fwd_ctx *c, int exact)
{
    c->exact = exact != 0;
}

const model *fwd_ctx_model(const fwd_ctx *c)
{
    return c->m;
}

/* ---------------------------------------------------------------------------------------------
 * Numerics */

void fwd_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + (double)eps));
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

/* cs holds (cos, sin) for each of the n_rot/2 frequencies at this position. */
static void rope_apply(float *x, const float *cs, int n_rot, int layout)
{
    int half = n_rot / 2;
    if (layout == ROPE_ADJACENT) {
        for (int i = 0; i < half; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1];
            float a = x[2 * i], b = x[2 * i + 1];
            x[2 * i] = a * c - b * s;
            x[2 * i + 1] = a * s + b * c;
        }
    } else {
        for (int i = 0; i < half; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1];
            float a = x[i], b = x[i + half];
            x[i] = a * c - b * s;
            x[i + half] = a * s + b * c;
        }
    }
}

static void rope_table(float *cs, int pos, const double *inv_freq, int half)
{
    for (int i = 0; i < half; i++) {
        double a = (double)pos * inv_freq[i];
        cs[2 * i] = (float)cos(a);
        cs[2 * i + 1] = (float)sin(a);
    }
}

void fwd_rope(float *x, int pos, const model_hparams *hp)
{
    float cs[2 * MODEL_MAX_HEAD_DIM];
    int half = hp->n_rot / 2;
    for (int i = 0; i < half; i++) {
        double a = (double)pos * pow((double)hp->rope_base, -2.0 * i / (double)hp->n_rot);
        cs[2 * i] = (float)cos(a);
        cs[2 * i + 1] = (float)sin(a);
    }
    rope_apply(x, cs, hp->n_rot, hp->rope_layout);
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
} step_state;

static void attention(fwd_ctx *c, step_state *st, int l, const int *rows, int nr)
{
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const int kv_dim = c->kv_dim, q_dim = c->q_dim;
    const float scale = 1.0f / sqrtf((float)hd);
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
        const float *qv = c->q + (size_t)r * q_dim + (size_t)h * hd;
        float *sc = scores_base + (size_t)omp_get_thread_num() * c->scores_cap;
        /* Segments of the parent chain, collected leaf first and visited root first, so positions
         * are summed in the same order whether or not a prefix was reused (bitwise equal results
         * matter: the kernels quantize activations, which amplifies the last bit). */
        const float *Ks[KV_MAX_DEPTH + 1], *Vs[KV_MAX_DEPTH + 1];
        int lo[KV_MAX_DEPTH + 1], hi[KV_MAX_DEPTH + 1], nseg = 0;
        const kv_cache *seg = leaf;
        int top = npos;
        while (top > 0 && nseg <= KV_MAX_DEPTH) {
            while (seg->n_parent >= top)
                seg = seg->parent;
            Ks[nseg] = seg->k[l] + (size_t)kvh * hd;
            Vs[nseg] = seg->v[l] + (size_t)kvh * hd;
            lo[nseg] = seg->n_parent;
            hi[nseg] = top;
            nseg++;
            top = seg->n_parent;
        }
        float mx = -INFINITY;
        for (int g = nseg - 1; g >= 0; g--)
            for (int p = lo[g]; p < hi[g]; p++) {
                float s = kernel_dot_f32(qv, Ks[g] + (size_t)(p - lo[g]) * kv_dim, hd) * scale;
                sc[p] = s;
                if (s > mx)
                    mx = s;
            }
        float sum = 0.0f;
        for (int p = 0; p < npos; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
        float inv = 1.0f / sum;
        float *o = c->att + (size_t)r * q_dim + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof *o);
        for (int g = nseg - 1; g >= 0; g--)
            for (int p = lo[g]; p < hi[g]; p++)
                kernel_axpy_f32(o, sc[p] * inv, Vs[g] + (size_t)(p - lo[g]) * kv_dim, hd);
    }
}

static void add_bias(float *y, const float *b, int rows, int dim)
{
    if (!b)
        return;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++)
            y[(size_t)r * dim + i] += b[i];
}

static void rmsnorm_rows(float *out, const float *x, const float *w, int rows, int n, float eps)
{
#pragma omp parallel for schedule(static) if ((int64_t)rows * n >= FWD_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++)
        fwd_rmsnorm(out + (size_t)r * n, x + (size_t)r * n, w, n, eps);
}

static int fwd_matmul(const fwd_ctx *c, const pwb_tensor *W, const float *x, int B, float *y, pwb_err *e)
{
    if (!c->exact)
        return kernel_matmul(W, x, B, y, e);
    const int64_t K = W->ne[0], M = W->ne[1] * W->ne[2] * W->ne[3];
    return kernel_matmul_exact(W, x, K > 0 ? (size_t)K : 0, B, y, M > 0 ? (size_t)M : 0, e);
}

#define MM(W, X, B, Y)                                                                                        \
    do {                                                                                                      \
        int rc_ = fwd_matmul(c, (W), (X), (B), (Y), e);                                                       \
        if (rc_ != PWB_OK)                                                                                    \
            return rc_;                                                                                       \
    } while (0)

static int run_step(fwd_ctx *c, step_state *st, int T, pwb_err *e)
{
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int d = hp->n_embd, hd = hp->head_dim, ff = hp->n_ff, kv_dim = c->kv_dim, q_dim = c->q_dim;
    const int half = hp->n_rot / 2;

    /* Inputs: embedding rows or token embeddings. */
    for (int t = 0; t < T; t++) {
        const fwd_seq *s = &st->seqs[c->t_seq[t]];
        int j = c->t_j[t];
        float *dst = c->x + (size_t)t * d;
        if (j < s->n_embeds) {
            memcpy(dst, s->embeds + (size_t)j * d, (size_t)d * sizeof *dst);
        } else {
            int rc = kernel_get_row(&m->tok_embd, s->ids[j - s->n_embeds], dst, e);
            if (rc != PWB_OK)
                return rc;
        }
        rope_table(c->cs + (size_t)t * hp->n_rot, c->t_pos[t], c->inv_freq, half);
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
        rmsnorm_rows(c->xn, c->x, L->attn_norm, nr, d, hp->norm_eps);
        MM(&L->wk, c->xn, nr, c->k);
        MM(&L->wv, c->xn, nr, c->v);
        add_bias(c->k, L->bk, nr, kv_dim);
        add_bias(c->v, L->bv, nr, kv_dim);
        /* Rope the keys and store keys and values in each sequence's cache. */
        for (int t = 0; t < nr; t++) {
            float *kr = c->k + (size_t)t * kv_dim;
            for (int h = 0; h < hp->n_head_kv; h++)
                rope_apply(kr + (size_t)h * hd, c->cs + (size_t)t * hp->n_rot, hp->n_rot, hp->rope_layout);
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
        MM(&L->wq, c->xn, nr, c->q);
        add_bias(c->q, L->bq, nr, q_dim);
        for (int r = 0; r < nr; r++) {
            float *qr = c->q + (size_t)r * q_dim;
            const float *cs = c->cs + (size_t)c->rows[r] * hp->n_rot;
            for (int h = 0; h < hp->n_head; h++)
                rope_apply(qr + (size_t)h * hd, cs, hp->n_rot, hp->rope_layout);
        }
        attention(c, st, l, c->rows, nr);
        MM(&L->wo, c->att, nr, c->xn);
#pragma omp parallel for schedule(static) if ((int64_t)nr * d >= 4 * FWD_PAR_MIN_WORK)
        for (int r = 0; r < nr; r++) {
            float *xr = c->x + (size_t)r * d;
            const float *o = c->xn + (size_t)r * d;
            for (int i = 0; i < d; i++)
                xr[i] += o[i];
        }
        rmsnorm_rows(c->xn, c->x, L->ffn_norm, nr, d, hp->norm_eps);
        MM(&L->w_gate, c->xn, nr, c->g);
        MM(&L->w_up, c->xn, nr, c->u);
#pragma omp parallel for schedule(static) if ((int64_t)nr * ff * 8 >= FWD_PAR_MIN_WORK)
        for (int r = 0; r < nr; r++) {
            float *g = c->g + (size_t)r * ff;
            const float *u = c->u + (size_t)r * ff;
            for (int i = 0; i < ff; i++)
                g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        }
        MM(&L->w_down, c->g, nr, c->xn);
#pragma omp parallel for schedule(static) if ((int64_t)nr * d >= 4 * FWD_PAR_MIN_WORK)
        for (int r = 0; r < nr; r++) {
            float *xr = c->x + (size_t)r * d;
            const float *o = c->xn + (size_t)r * d;
            for (int i = 0; i < d; i++)
                xr[i] += o[i];
        }
    }

    /* The head, a few rows at a time. */
    rmsnorm_rows(c->xn, c->x, m->output_norm, nr, d, hp->norm_eps);
    const int V = hp->n_vocab;
    for (int r0 = 0; r0 < nr; r0 += FWD_LOGIT_ROWS) {
        int nb = nr - r0 < FWD_LOGIT_ROWS ? nr - r0 : FWD_LOGIT_ROWS;
        MM(&m->output, c->xn + (size_t)r0 * d, nb, c->lg);
#pragma omp parallel for schedule(static) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            int t = c->rows[r0 + b];
            fwd_seq *s = &st->seqs[c->t_seq[t]];
            int slot = c->t_out[t];
            const float *lg = c->lg + (size_t)b * V;
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
        if (s->n_out < 0 || s->n_out > len || (s->n_out && !s->logits && !(s->targets && s->logprobs)))
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
