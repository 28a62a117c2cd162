#include "tune/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void optim_config_default(optim_config *c, int kind)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    if (kind == OPTIM_ADAFACTOR) {
        c->lr = 0.3;
        c->weight_decay = 1e-5;
    } else {
        c->lr = 1e-3;
        c->weight_decay = 0.01;
    }
    c->decay_rate = 0.8;
    c->eps1 = 1e-30;
    c->clip_threshold = 1.0;
    c->eps2 = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->schedule = SCHED_CONSTANT;
    c->grad_clip_norm = 1.0;
}

int optim_parse_kind(const char *name)
{
    if (!strcmp(name, "adafactor"))
        return OPTIM_ADAFACTOR;
    if (!strcmp(name, "adamw"))
        return OPTIM_ADAMW;
    return -1;
}

int optim_init(optimizer *o, const optim_config *c, size_t rows, size_t cols, pwb_err *e)
{
    memset(o, 0, sizeof *o);
    o->cfg = *c;
    o->rows = rows;
    o->cols = cols;
    size_t n = rows * cols;
    if (!rows || !cols || n / rows != cols)
        return err_set(e, PWB_EINVAL, "optimizer: bad shape %zux%zu", rows, cols);
    if (c->kind == OPTIM_ADAMW) {
        o->m = calloc(n, sizeof *o->m);
        o->v = calloc(n, sizeof *o->v);
        if (!o->m || !o->v)
            goto oom;
    } else if (rows > 1 && cols > 1) {
        o->vr = calloc(rows, sizeof *o->vr);
        o->vc = calloc(cols, sizeof *o->vc);
        if (!o->vr || !o->vc)
            goto oom;
    } else {
        o->v = calloc(n, sizeof *o->v);
        if (!o->v)
            goto oom;
    }
    return PWB_OK;
oom:
    optim_free(o);
    return err_set(e, PWB_ENOMEM, "optimizer: out of memory");
}

void optim_free(optimizer *o)
{
    free(o->m);
    free(o->v);
    free(o->vr);
    free(o->vc);
    o->m = o->v = o->vr = o->vc = NULL;
}

double optim_lr(const optim_config *c, long step)
{
    if (c->schedule == SCHED_CONSTANT)
        return c->lr;
    if (c->warmup_steps > 0 && step <= c->warmup_steps)
        return c->lr * (double)step / (double)c->warmup_steps;
    long rest = c->total_steps - c->warmup_steps;
    if (rest <= 0)
        return c->lr;
    double p = (double)(step - c->warmup_steps) / (double)rest;
    if (p > 1)
        p = 1;
    if (c->schedule == SCHED_WARMUP_LINEAR)
        return c->lr * (1.0 - p);
    return c->lr * 0.5 * (1.0 + cos(M_PI * p));
}

double optim_clip_grad(float *grad, size_t n, double max_norm)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)grad[i] * grad[i];
    double norm = sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        float s = (float)(max_norm / (norm + 1e-12));
        for (size_t i = 0; i < n; i++)
            grad[i] *= s;
    }
    return norm;
}

/* Adafactor (Shazeer & Stern 2018) without relative step or momentum; parameter scaling when
 * configured. */
static void adafactor_step(optimizer *o, float *p, float *g, double lr)
{
    const optim_config *c = &o->cfg;
    size_t R = o->rows, C = o->cols, n = R * C;
    if (c->scale_parameter) {
        double pss = 0;
        for (size_t i = 0; i < n; i++)
            pss += (double)p[i] * p[i];
        const double prms = n ? sqrt(pss / (double)n) : 0;
        lr *= prms > c->eps2 ? prms : c->eps2;
    }
    double beta2t = 1.0 - pow((double)o->step, -c->decay_rate);
    float *u = malloc(n * sizeof *u);
    if (!u)
        return;
    if (o->vr) {
        /* Factored second moment: row and column means of g^2 + eps1. */
        for (size_t r = 0; r < R; r++) {
            double s = 0;
            for (size_t k = 0; k < C; k++)
                s += (double)g[r * C + k] * g[r * C + k] + c->eps1;
            o->vr[r] = (float)(beta2t * o->vr[r] + (1 - beta2t) * (s / (double)C));
        }
        for (size_t k = 0; k < C; k++) {
            double s = 0;
            for (size_t r = 0; r < R; r++)
                s += (double)g[r * C + k] * g[r * C + k] + c->eps1;
            o->vc[k] = (float)(beta2t * o->vc[k] + (1 - beta2t) * (s / (double)R));
        }
        double rmean = 0;
        for (size_t r = 0; r < R; r++)
            rmean += o->vr[r];
        rmean /= (double)R;
        for (size_t r = 0; r < R; r++) {
            double rf = 1.0 / sqrt(o->vr[r] / rmean);
            for (size_t k = 0; k < C; k++)
                u[r * C + k] = (float)(rf / sqrt((double)o->vc[k]) * g[r * C + k]);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            o->v[i] = (float)(beta2t * o->v[i] + (1 - beta2t) * ((double)g[i] * g[i] + c->eps1));
            u[i] = (float)(g[i] / sqrt((double)o->v[i]));
        }
    }
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)u[i] * u[i];
    double rms = sqrt(ss / (double)n);
    double denom = rms / c->clip_threshold;
    if (denom < 1.0)
        denom = 1.0;
    for (size_t i = 0; i < n; i++) {
        if (c->weight_decay != 0)
            p[i] -= (float)(c->weight_decay * lr * p[i]);
        p[i] -= (float)(lr * u[i] / denom);
    }
    free(u);
}

static void adamw_step(optimizer *o, float *p, const float *g, double lr)
{
    const optim_config *c = &o->cfg;
    size_t n = o->rows * o->cols;
    double bc1 = 1.0 - pow(c->beta1, (double)o->step);
    double bc2 = 1.0 - pow(c->beta2, (double)o->step);
    for (size_t i = 0; i < n; i++) {
        o->m[i] = (float)(c->beta1 * o->m[i] + (1 - c->beta1) * g[i]);
        o->v[i] = (float)(c->beta2 * o->v[i] + (1 - c->beta2) * (double)g[i] * g[i]);
        double mhat = o->m[i] / bc1, vhat = o->v[i] / bc2;
        p[i] -= (float)(lr * c->weight_decay * p[i]);
        p[i] -= (float)(lr * mhat / (sqrt(vhat) + c->eps));
    }
}

double optim_step(optimizer *o, float *param, float *grad)
{
    o->step++;
    double lr = optim_lr(&o->cfg, o->step);
    if (o->cfg.grad_clip_norm > 0)
        optim_clip_grad(grad, o->rows * o->cols, o->cfg.grad_clip_norm);
    if (o->cfg.kind == OPTIM_ADAMW)
        adamw_step(o, param, grad, lr);
    else
        adafactor_step(o, param, grad, lr);
    return lr;
}

size_t optim_state_size(const optimizer *o)
{
    size_t n = o->rows * o->cols;
    return 1 + (o->m ? n : 0) + (o->v ? n : 0) + (o->vr ? o->rows : 0) + (o->vc ? o->cols : 0);
}

void optim_state_save(const optimizer *o, float *out)
{
    size_t n = o->rows * o->cols;
    *out++ = (float)o->step;
    if (o->m) { memcpy(out, o->m, n * sizeof *out); out += n; }
    if (o->v) { memcpy(out, o->v, n * sizeof *out); out += n; }
    if (o->vr) { memcpy(out, o->vr, o->rows * sizeof *out); out += o->rows; }
    if (o->vc) memcpy(out, o->vc, o->cols * sizeof *out);
}

void optim_state_load(optimizer *o, const float *in)
{
    size_t n = o->rows * o->cols;
    o->step = (long)*in++;
    if (o->m) { memcpy(o->m, in, n * sizeof *in); in += n; }
    if (o->v) { memcpy(o->v, in, n * sizeof *in); in += n; }
    if (o->vr) { memcpy(o->vr, in, o->rows * sizeof *in); in += o->rows; }
    if (o->vc) memcpy(o->vc, in, o->cols * sizeof *in);
}
