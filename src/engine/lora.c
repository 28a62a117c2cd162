#include "engine/lora.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"

#define LORA_PAR_MIN (1 << 15) /* below this many multiply-adds a call stays on one thread */

static const char *const names[LORA_N_MODULES] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *const peft_names[LORA_N_MODULES] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

int lora_module_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < LORA_N_MODULES; i++) {
        const size_t n = strlen(names[i]);
        if (strcmp(name, names[i]) == 0 || (strncmp(name, names[i], n) == 0 && strcmp(name + n, "_proj") == 0))
            return i;
    }
    return -1;
}

const char *lora_module_name(int mod)
{
    return mod >= 0 && mod < LORA_N_MODULES ? names[mod] : "?";
}

const char *lora_module_peft(int mod)
{
    return mod >= 0 && mod < LORA_N_MODULES ? peft_names[mod] : "?";
}

unsigned lora_targets_parse(const char *list)
{
    unsigned mask = 0;
    char word[32];
    size_t k = 0;
    for (const char *p = list ? list : "";; p++) {
        if (*p && !isspace((unsigned char)*p) && *p != ',' && *p != '-') {
            if (k + 1 >= sizeof word)
                return 0;
            word[k++] = *p;
            continue;
        }
        if (k) {
            word[k] = '\0';
            const int m = lora_module_parse(word);
            if (m < 0)
                return 0;
            mask |= 1u << m;
            k = 0;
        }
        if (!*p)
            break;
    }
    return mask;
}

static void mat_dims(const model *m, int mod, int *in, int *out)
{
    const int d = m->hp.n_embd, q = m->hp.n_head * m->hp.head_dim, kv = m->hp.n_head_kv * m->hp.head_dim;
    const int ff = m->hp.n_ff;
    const int ins[] = {d, d, d, q, d, d, ff}, outs[] = {q, kv, kv, d, ff, ff, d};
    *in = ins[mod];
    *out = outs[mod];
}

void lora_free(lora *l)
{
    if (!l)
        return;
    for (int i = 0; l->mats && i < l->n_layer * LORA_N_MODULES; i++) {
        free(l->mats[i].a);
        free(l->mats[i].b);
    }
    free(l->mats);
    memset(l, 0, sizeof *l);
}

static int alloc_like(lora *l, int r, float alpha, unsigned targets, int n_layer, const int *in, const int *out,
                      pwb_err *e)
{
    memset(l, 0, sizeof *l);
    if (r < 1 || r > LORA_MAX_RANK || !targets || targets >= (1u << LORA_N_MODULES) || n_layer < 1)
        return err_set(e, PWB_EINVAL, "lora: bad rank %d or target modules", r);
    l->r = r;
    l->alpha = alpha;
    l->targets = targets;
    l->n_layer = n_layer;
    l->mats = calloc((size_t)n_layer * LORA_N_MODULES, sizeof *l->mats);
    if (!l->mats)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; i < n_layer * LORA_N_MODULES; i++) {
        const int mod = i % LORA_N_MODULES;
        lora_mat *t = &l->mats[i];
        t->in = in[mod];
        t->out = out[mod];
        if (!(targets & (1u << mod)))
            continue;
        t->a = calloc((size_t)r * (size_t)t->in, sizeof(float));
        t->b = calloc((size_t)t->out * (size_t)r, sizeof(float));
        if (!t->a || !t->b) {
            lora_free(l);
            return err_set(e, PWB_ENOMEM, "out of memory (LoRA rank %d)", r);
        }
    }
    return PWB_OK;
}

int lora_new(lora *l, const model *m, int r, float alpha, unsigned targets, pwb_err *e)
{
    int in[LORA_N_MODULES], out[LORA_N_MODULES];
    for (int i = 0; i < LORA_N_MODULES; i++)
        mat_dims(m, i, &in[i], &out[i]);
    return alloc_like(l, r, alpha, targets, m->hp.n_layer, in, out, e);
}

int lora_new_like(lora *dst, const lora *src, pwb_err *e)
{
    int in[LORA_N_MODULES], out[LORA_N_MODULES];
    for (int i = 0; i < LORA_N_MODULES; i++) {
        in[i] = src->mats[i].in;
        out[i] = src->mats[i].out;
    }
    int rc = alloc_like(dst, src->r, src->alpha, src->targets, src->n_layer, in, out, e);
    if (rc == PWB_OK) {
        dst->dropout = src->dropout;
        dst->drop_seed = src->drop_seed;
    }
    return rc;
}

int lora_copy_values(lora *dst, const lora *src)
{
    if (dst->r != src->r || dst->targets != src->targets || dst->n_layer != src->n_layer)
        return -1;
    for (int i = 0; i < src->n_layer * LORA_N_MODULES; i++) {
        const lora_mat *s = &src->mats[i];
        lora_mat *d = &dst->mats[i];
        if (!s->a)
            continue;
        if (d->in != s->in || d->out != s->out)
            return -1;
        memcpy(d->a, s->a, (size_t)src->r * (size_t)s->in * sizeof(float));
        memcpy(d->b, s->b, (size_t)s->out * (size_t)src->r * sizeof(float));
    }
    return 0;
}

void lora_zero(lora *l)
{
    for (int i = 0; i < l->n_layer * LORA_N_MODULES; i++)
        if (l->mats[i].a) {
            memset(l->mats[i].a, 0, (size_t)l->r * (size_t)l->mats[i].in * sizeof(float));
            memset(l->mats[i].b, 0, (size_t)l->mats[i].out * (size_t)l->r * sizeof(float));
        }
}

float lora_scale(const lora *l)
{
    return l->alpha / (float)l->r;
}

lora_mat *lora_at_mut(lora *l, int layer, int mod)
{
    if (!l || layer < 0 || layer >= l->n_layer || mod < 0 || mod >= LORA_N_MODULES)
        return NULL;
    lora_mat *t = &l->mats[(size_t)layer * LORA_N_MODULES + (size_t)mod];
    return t->a ? t : NULL;
}

const lora_mat *lora_at(const lora *l, int layer, int mod)
{
    return lora_at_mut((lora *)l, layer, mod);
}

size_t lora_n_params(const lora *l)
{
    size_t n = 0;
    for (int i = 0; i < l->n_layer * LORA_N_MODULES; i++)
        if (l->mats[i].a)
            n += (size_t)l->r * ((size_t)l->mats[i].in + (size_t)l->mats[i].out);
    return n;
}

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unit(uint64_t *s)
{
    *s = mix(*s);
    return (double)(*s >> 11) * (1.0 / 9007199254740992.0);
}

void lora_init_peft(lora *l, uint64_t seed)
{
    /* kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1/sqrt(fan_in). */
    for (int i = 0; i < l->n_layer * LORA_N_MODULES; i++) {
        lora_mat *t = &l->mats[i];
        if (!t->a)
            continue;
        uint64_t s = mix(seed ^ mix((uint64_t)i + 1));
        const double bound = 1.0 / sqrt((double)t->in);
        for (size_t k = 0; k < (size_t)l->r * (size_t)t->in; k++)
            t->a[k] = (float)((2.0 * unit(&s) - 1.0) * bound);
        memset(t->b, 0, (size_t)t->out * (size_t)l->r * sizeof(float));
    }
}

void lora_set_training(lora *l, int training, uint64_t step_seed)
{
    l->training = training;
    l->drop_seed = step_seed;
}

/* Dropout's mask: x[row][col] of (layer, mod) is dropped when a 16-bit draw is below p * 65536;
 * one splitmix64 value gives the draws of four columns. A hash of the position, not a stream, so
 * the backward recomputes the forward's mask instead of storing it. */
static uint32_t drop_threshold(const lora *l)
{
    return (uint32_t)lrint((double)l->dropout * 65536.0);
}

static int dropping(const lora *l)
{
    return l->training && l->dropout > 0.0f;
}

/* v[n] *= the mask of (layer, mod, row): 0 or 1 / (1 - p). */
static void drop_apply(const lora *l, int layer, int mod, int row, float *v, int n)
{
    const uint64_t rs = mix(l->drop_seed ^ mix(((uint64_t)layer << 40) ^ ((uint64_t)mod << 32) ^ (uint64_t)(uint32_t)row));
    const uint32_t thr = drop_threshold(l);
    const float keep = 1.0f / (1.0f - l->dropout);
    for (int i = 0; i < n; i += 4) {
        uint64_t h = mix(rs + (uint64_t)(i >> 2) * 0x9E3779B97F4A7C15ull);
        for (int k = 0; k < 4 && i + k < n; k++, h >>= 16)
            v[i + k] = (uint32_t)(h & 0xffffu) < thr ? 0.0f : v[i + k] * keep;
    }
}

/* x's row after dropout, into buf (or x itself when no dropout applies). */
static const float *drop_row(const lora *l, int layer, int mod, const float *x, int in, int row, float *buf)
{
    if (!dropping(l))
        return x;
    memcpy(buf, x, (size_t)in * sizeof(float));
    drop_apply(l, layer, mod, row, buf, in);
    return buf;
}

/* bt [r][out] = B^T, so the products with B run along rows of length out (vectorised) rather
 * than along the rank. */
static void b_transpose(const lora_mat *t, int r, float *bt)
{
    for (int o = 0; o < t->out; o++)
        for (int j = 0; j < r; j++)
            bt[(size_t)j * t->out + o] = t->b[(size_t)o * r + j];
}

int lora_fwd(const lora *l, int layer, int mod, const float *x, size_t ldx, int B, float *y, size_t ldy, int row0,
             pwb_err *e)
{
    const lora_mat *t = lora_at(l, layer, mod);
    if (!t || B <= 0)
        return PWB_OK;
    const int r = l->r, in = t->in, out = t->out;
    const float s = lora_scale(l);
    const int drop = dropping(l);
    float *tmp = drop ? malloc((size_t)B * (size_t)in * sizeof(float)) : NULL;
    float *u = malloc((size_t)B * (size_t)r * sizeof(float));
    float *bt = malloc((size_t)r * (size_t)out * sizeof(float));
    if ((drop && !tmp) || !u || !bt) {
        free(tmp);
        free(u);
        free(bt);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    b_transpose(t, r, bt);
#pragma omp parallel for schedule(static) if ((int64_t)B * r * (in + out) >= LORA_PAR_MIN)
    for (int b = 0; b < B; b++) {
        float *ub = u + (size_t)b * r;
        const float *xb = drop_row(l, layer, mod, x + (size_t)b * ldx, in, row0 + b, tmp ? tmp + (size_t)b * in : NULL);
        for (int j = 0; j < r; j++)
            ub[j] = s * kernel_dot_f32(xb, t->a + (size_t)j * in, in);
        float *yb = y + (size_t)b * ldy;
        for (int j = 0; j < r; j++)
            kernel_axpy_f32(yb, ub[j], bt + (size_t)j * out, out);
    }
    free(tmp);
    free(u);
    free(bt);
    return PWB_OK;
}

int lora_bwd(const lora *l, lora *g, int layer, int mod, const float *x, size_t ldx, const float *dy, size_t ldy,
             int B, float *dx, size_t ldx_out, int row0, pwb_err *e)
{
    const lora_mat *t = lora_at(l, layer, mod);
    if (!t || B <= 0)
        return PWB_OK;
    lora_mat *gt = g ? lora_at_mut(g, layer, mod) : NULL;
    if (gt && !x)
        return err_set(e, PWB_EINVAL, "lora: the weights' gradient needs the product's input");
    const int r = l->r, in = t->in, out = t->out;
    const float s = lora_scale(l);
    const int drop = dropping(l);
    float *u = malloc((size_t)B * (size_t)r * sizeof(float));  /* s * drop(x) A^T */
    float *gb = malloc((size_t)B * (size_t)r * sizeof(float)); /* s * dy B */
    float *bt = malloc((size_t)r * (size_t)out * sizeof(float) * (gt ? 2 : 1)); /* B^T, then dB^T */
    /* drop(x) for the gradient of A, or the masked input gradient */
    float *xd = drop && (gt || dx) ? malloc((size_t)B * (size_t)in * sizeof(float)) : NULL;
    if (!u || !gb || !bt || (drop && (gt || dx) && !xd)) {
        free(u);
        free(gb);
        free(bt);
        free(xd);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    b_transpose(t, r, bt);
    const int par = (int64_t)B * r * (in + out) >= LORA_PAR_MIN;
#pragma omp parallel for schedule(static) if (par)
    for (int b = 0; b < B; b++) {
        const float *db = dy + (size_t)b * ldy;
        for (int j = 0; j < r; j++)
            gb[(size_t)b * r + j] = s * kernel_dot_f32(db, bt + (size_t)j * out, out);
        if (gt) {
            const float *xb = drop_row(l, layer, mod, x + (size_t)b * ldx, in, row0 + b, xd ? xd + (size_t)b * in : NULL);
            for (int j = 0; j < r; j++)
                u[(size_t)b * r + j] = s * kernel_dot_f32(xb, t->a + (size_t)j * in, in);
        }
    }
    if (gt) {
        /* dB^T[j] = sum_b u[b][j] dy[b]; dA[j] += sum_b gb[b][j] drop(x)[b]: per rank, rows of out and in. */
        float *dbt = bt + (size_t)r * out;
        memset(dbt, 0, (size_t)r * (size_t)out * sizeof(float));
#pragma omp parallel for schedule(static) if (par)
        for (int j = 0; j < r; j++)
            for (int b = 0; b < B; b++) {
                kernel_axpy_f32(dbt + (size_t)j * out, u[(size_t)b * r + j], dy + (size_t)b * ldy, out);
                const float *xb = xd ? xd + (size_t)b * in : x + (size_t)b * ldx;
                kernel_axpy_f32(gt->a + (size_t)j * in, gb[(size_t)b * r + j], xb, in);
            }
        for (int o = 0; o < out; o++)
            for (int j = 0; j < r; j++)
                gt->b[(size_t)o * r + j] += dbt[(size_t)j * out + o];
    }
    if (dx) {
#pragma omp parallel for schedule(static) if (par)
        for (int b = 0; b < B; b++) {
            float *dxb = dx + (size_t)b * ldx_out;
            if (!drop) {
                for (int j = 0; j < r; j++)
                    kernel_axpy_f32(dxb, gb[(size_t)b * r + j], t->a + (size_t)j * in, in);
                continue;
            }
            float *acc = xd + (size_t)b * in; /* free again: the gradient of A is done */
            memset(acc, 0, (size_t)in * sizeof(float));
            for (int j = 0; j < r; j++)
                kernel_axpy_f32(acc, gb[(size_t)b * r + j], t->a + (size_t)j * in, in);
            drop_apply(l, layer, mod, row0 + b, acc, in);
            kernel_axpy_f32(dxb, 1.0f, acc, in);
        }
    }
    free(u);
    free(gb);
    free(bt);
    free(xd);
    return PWB_OK;
}

int lora_permute_rows(const model *m, int kv, float *w, int cols, int to_hf, pwb_err *e)
{
    if (m->hp.rope_layout != ROPE_ADJACENT)
        return PWB_OK;
    const int hd = m->hp.head_dim, nh = kv ? m->hp.n_head_kv : m->hp.n_head, half = hd / 2;
    float *tmp = malloc((size_t)hd * (size_t)cols * sizeof(float));
    if (!tmp)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int h = 0; h < nh; h++) {
        float *blk = w + (size_t)h * hd * cols;
        memcpy(tmp, blk, (size_t)hd * (size_t)cols * sizeof(float));
        /* pwb (llama.cpp) row 2i + j  <->  HF row j * hd/2 + i */
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                const int p = 2 * i + j, q = j * half + i;
                const int dst = to_hf ? q : p, src = to_hf ? p : q;
                memcpy(blk + (size_t)dst * cols, tmp + (size_t)src * cols, (size_t)cols * sizeof(float));
            }
    }
    free(tmp);
    return PWB_OK;
}
