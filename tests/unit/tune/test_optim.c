#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tune/optim.h"

/* First Adafactor step: beta2_1 = 0, so v = g^2 (+eps) and the unfactored update is sign(g);
 * its RMS is 1, so no clipping, and p moves by exactly lr (plus weight decay). */
Test(adafactor, first_step_is_lr_times_sign_unfactored)
{
    optim_config c;
    optim_config_default(&c, OPTIM_ADAFACTOR);
    c.weight_decay = 0;
    c.grad_clip_norm = 0;
    optimizer o;
    cr_assert_eq(optim_init(&o, &c, 1, 4, NULL), PWB_OK);
    float p[4] = {1, 1, 1, 1}, g[4] = {0.5f, -2.0f, 1e-3f, -1e-4f};
    optim_step(&o, p, g);
    float want[4] = {0.7f, 1.3f, 0.7f, 1.3f};
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(p[i], want[i], 1e-5, "p[%d] = %f", i, p[i]);
    optim_free(&o);
}

/* scale_parameter: the step is lr times the parameter's RMS (Hugging Face's Adafactor with
 * scale_parameter=True, relative_step=False), floored at eps2; without it, lr as is. */
Test(adafactor, scale_parameter_steps_relative_to_the_rms)
{
    const float start[2][4] = {{3, -3, 3, -3}, {1e-5f, 0, 0, 0}}; /* RMS 3, and one below eps2 */
    const double want_step[2] = {0.1 * 3, 0.1 * 1e-3};
    for (int k = 0; k < 2; k++) {
        optim_config c;
        optim_config_default(&c, OPTIM_ADAFACTOR);
        c.weight_decay = 0;
        c.grad_clip_norm = 0;
        c.lr = 0.1;
        c.scale_parameter = 1;
        optimizer o;
        cr_assert_eq(optim_init(&o, &c, 1, 4, NULL), PWB_OK);
        float p[4], g[4] = {0.5f, -2.0f, 1e-3f, -1e-4f};
        memcpy(p, start[k], sizeof p);
        double lr = optim_step(&o, p, g);
        cr_assert_float_eq(lr, 0.1, 1e-12, "the schedule's rate is reported, %g", lr);
        for (int i = 0; i < 4; i++) /* the first update is sign(g), as in the unscaled case */
            cr_assert_float_eq(p[i], start[k][i] - (float)(want_step[k] * (g[i] > 0 ? 1 : -1)), 1e-6, "p[%d] = %f",
                               i, p[i]);
        optim_free(&o);
    }
}

/* Factored case, checked against the closed form of the first step:
 * u_ij = g_ij / sqrt(vr_i / mean(vr) * vc_j), then RMS clipping to 1. */
Test(adafactor, first_step_factored_matches_closed_form)
{
    optim_config c;
    optim_config_default(&c, OPTIM_ADAFACTOR);
    c.weight_decay = 0;
    c.grad_clip_norm = 0;
    c.lr = 0.1;
    enum { R = 3, C = 4 };
    optimizer o;
    cr_assert_eq(optim_init(&o, &c, R, C, NULL), PWB_OK);
    float p[R * C] = {0}, g[R * C];
    for (int i = 0; i < R * C; i++)
        g[i] = (float)sin(i + 1.0);
    double vr[R] = {0}, vc[C] = {0}, u[R * C], mean = 0, ss = 0;
    for (int r = 0; r < R; r++)
        for (int k = 0; k < C; k++) {
            vr[r] += (double)g[r * C + k] * g[r * C + k] / C;
            vc[k] += (double)g[r * C + k] * g[r * C + k] / R;
        }
    for (int r = 0; r < R; r++)
        mean += vr[r] / R;
    for (int r = 0; r < R; r++)
        for (int k = 0; k < C; k++) {
            u[r * C + k] = g[r * C + k] / sqrt(vr[r] / mean * vc[k]);
            ss += u[r * C + k] * u[r * C + k];
        }
    double rms = sqrt(ss / (R * C)), d = rms > 1 ? rms : 1;
    optim_step(&o, p, g);
    for (int i = 0; i < R * C; i++)
        cr_assert_float_eq(p[i], -0.1 * u[i] / d, 1e-5, "p[%d] = %f want %f", i, p[i], -0.1 * u[i] / d);
    optim_free(&o);
}

static double quadratic_run(int kind, double lr, int steps)
{
    optim_config c;
    optim_config_default(&c, kind);
    c.lr = lr;
    c.weight_decay = 0;
    enum { R = 4, C = 8 };
    optimizer o;
    cr_assert_eq(optim_init(&o, &c, R, C, NULL), PWB_OK);
    float p[R * C] = {0}, g[R * C], target[R * C];
    for (int i = 0; i < R * C; i++)
        target[i] = (float)cos(i * 0.7);
    double loss = 0;
    for (int s = 0; s < steps; s++) {
        loss = 0;
        for (int i = 0; i < R * C; i++) {
            g[i] = p[i] - target[i];
            loss += 0.5 * g[i] * g[i];
        }
        optim_step(&o, p, g);
    }
    optim_free(&o);
    return loss;
}

Test(optim, both_minimise_a_quadratic)
{
    double start = 0;
    for (int i = 0; i < 32; i++)
        start += 0.5 * cos(i * 0.7) * cos(i * 0.7);
    double a = quadratic_run(OPTIM_ADAFACTOR, 0.05, 300);
    double w = quadratic_run(OPTIM_ADAMW, 0.05, 300);
    cr_assert_lt(a, start * 0.01, "adafactor loss %g (start %g)", a, start);
    cr_assert_lt(w, start * 0.01, "adamw loss %g (start %g)", w, start);
}

Test(optim, schedules_and_clipping)
{
    optim_config c;
    optim_config_default(&c, OPTIM_ADAMW);
    c.schedule = SCHED_WARMUP_LINEAR;
    c.warmup_steps = 10;
    c.total_steps = 110;
    cr_assert_float_eq(optim_lr(&c, 5), c.lr * 0.5, 1e-12);
    cr_assert_float_eq(optim_lr(&c, 60), c.lr * 0.5, 1e-12);
    cr_assert_float_eq(optim_lr(&c, 110), 0.0, 1e-12);
    float g[2] = {3, 4};
    double n = optim_clip_grad(g, 2, 1.0);
    cr_assert_float_eq(n, 5.0, 1e-9);
    cr_assert_float_eq(g[0], 0.6f, 1e-6);
    cr_assert_float_eq(g[1], 0.8f, 1e-6);
}

Test(optim, checkpoint_state_round_trip)
{
    optim_config c;
    optim_config_default(&c, OPTIM_ADAFACTOR);
    optimizer a, b;
    cr_assert_eq(optim_init(&a, &c, 2, 3, NULL), PWB_OK);
    cr_assert_eq(optim_init(&b, &c, 2, 3, NULL), PWB_OK);
    float pa[6] = {0}, pb[6], g[6] = {1, -1, 2, -2, 3, -3}, g2[6];
    optim_step(&a, pa, memcpy(g2, g, sizeof g));
    float *st = malloc(optim_state_size(&a) * sizeof *st);
    optim_state_save(&a, st);
    optim_state_load(&b, st);
    memcpy(pb, pa, sizeof pa);
    optim_step(&a, pa, memcpy(g2, g, sizeof g));
    optim_step(&b, pb, memcpy(g2, g, sizeof g));
    for (int i = 0; i < 6; i++)
        cr_assert_float_eq(pa[i], pb[i], 0);
    free(st);
    optim_free(&a);
    optim_free(&b);
}
