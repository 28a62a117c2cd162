/* Optimizers for the soft prompt (a single [rows, cols] F32 matrix): Adafactor as in the prompt
 * tuning paper (Lester et al. 2021: lr 0.3, decay rate 0.8, weight decay 1e-5, no parameter
 * scaling unless asked, no momentum, update clipping 1.0) and AdamW. Learning-rate schedules and gradient
 * clipping live here too. */
#ifndef PWB_TUNE_OPTIM_H
#define PWB_TUNE_OPTIM_H

#include <stddef.h>

#include "util/err.h"

enum optim_kind { OPTIM_ADAFACTOR = 0, OPTIM_ADAMW = 1 };
enum sched_kind { SCHED_CONSTANT = 0, SCHED_WARMUP_LINEAR = 1, SCHED_WARMUP_COSINE = 2 };

typedef struct optim_config {
    int kind;
    double lr;
    double weight_decay;
    /* Adafactor */
    double decay_rate;      /* 0.8: beta2_t = 1 - t^-0.8 */
    double eps1;            /* 1e-30, added to squared gradients */
    double clip_threshold;  /* 1.0: RMS clipping of the update */
    int scale_parameter;    /* lr relative to the parameter's RMS (at least eps2), as Hugging Face's
                             * Adafactor(scale_parameter=True): one rate fits models whose input
                             * vectors differ in size; 0: absolute steps */
    double eps2;            /* 1e-3: the smallest RMS scale_parameter uses */
    /* AdamW */
    double beta1, beta2, eps;
    /* schedule */
    int schedule;
    long warmup_steps;
    long total_steps;
    double grad_clip_norm;  /* global L2 clipping before the step; 0 = off */
} optim_config;

typedef struct optimizer {
    optim_config cfg;
    size_t rows, cols;
    long step;
    float *m;        /* AdamW first moment [rows*cols] */
    float *v;        /* AdamW second moment, or Adafactor's unfactored one (rows==1) */
    float *vr, *vc;  /* Adafactor factored second moment: per row [rows], per column [cols] */
} optimizer;

void optim_config_default(optim_config *c, int kind);
int optim_parse_kind(const char *name); /* -1 when unknown */
int optim_init(optimizer *o, const optim_config *c, size_t rows, size_t cols, pwb_err *e);
void optim_free(optimizer *o);
/* Learning rate at step (1-based) under the schedule. */
double optim_lr(const optim_config *c, long step);
/* Scales grad in place so its L2 norm is at most max_norm; returns the norm before clipping. */
double optim_clip_grad(float *grad, size_t n, double max_norm);
/* One update of param from grad (grad is modified: clipped, scaled). Returns the schedule's lr
 * (under scale_parameter the step is that times the parameter's RMS). */
double optim_step(optimizer *o, float *param, float *grad);
/* State for checkpoints: the number of floats and a flat copy in/out. */
size_t optim_state_size(const optimizer *o);
void optim_state_save(const optimizer *o, float *out);
void optim_state_load(optimizer *o, const float *in);

#endif
