/* The prompt-tuning loop on TinyStories-656K: the PEFT artifact `pwb tune` writes (F32 [4, 128]
 * for 4 virtual tokens), encoding as the rank scorer does, learning, determinism, checkpoint and
 * resume, early stopping. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/chat.h"
#include "engine/engine.h"
#include "tune/peft.h"
#include "tune/train.h"
#include "unit/engine/tiny_model.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/str.h"

static char tmpdir[64];

static void mk(void)
{
    str_copy(tmpdir, sizeof tmpdir, "/tmp/pwb-tune-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static engine *open_ts(void)
{
    const char *p = t_path(t_shared(), "models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    if (!file_exists(p))
        cr_skip_test("%s not found (set PWB_SHARED)", p);
    engine *en;
    pwb_err e;
    engine_opts o = {.n_threads = 1};
    cr_assert_eq(engine_open(&en, p, &o, &e), PWB_OK, "%s", e.msg);
    return en;
}

static const char *const sst2_labels[2] = {"negative", "positive"};

/* The zero-shot template's user message for one sentence. */
static int encode_one(engine *en, const chat_template *ct, const char *sentence, int label, tune_example *x)
{
    pwb_buf u;
    buf_init(&u);
    buf_printf(&u,
               "Classify the sentiment of the movie review as positive or negative.\n\nText:\n%s\n\n"
               "Answer with exactly one word: positive or negative.",
               sentence);
    chat_msg msg = {"user", u.data};
    pwb_err e;
    int rc = tune_encode(engine_model(en), ct, &msg, 1, sst2_labels, 2, label, x, &e);
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    buf_free(&u);
    return rc;
}

/* The first n labelled rows of SST-2's training file. */
static tune_example *sst2_examples(engine *en, int n)
{
    const char *p = t_path(t_shared(), "datasets/sst2/train.tsv");
    if (!file_exists(p))
        cr_skip_test("%s not found", p);
    pwb_buf f;
    buf_init(&f);
    pwb_err e;
    cr_assert_eq(file_read_all(p, 64u << 20, &f, &e), PWB_OK, "%s", e.msg);
    chat_template ct;
    cr_assert_eq(chat_template_init(&ct, engine_model(en)->chat_template, NULL, &e), PWB_OK, "%s", e.msg);
    tune_example *ex = calloc((size_t)n, sizeof *ex);
    char *line = strchr(f.data, '\n');
    for (int i = 0; i < n; i++) {
        cr_assert_not_null(line);
        line++;
        char *end = strchr(line, '\n'), *tab = strchr(line, '\t');
        cr_assert(end && tab && tab < end);
        *tab = 0;
        encode_one(en, &ct, line, tab[1] == '1', &ex[i]);
        line = end;
    }
    chat_template_free(&ct);
    buf_free(&f);
    return ex;
}

static void free_examples(tune_example *ex, int n)
{
    for (int i = 0; i < n; i++)
        tune_example_free(&ex[i]);
    free(ex);
}

/* What `pwb tune --model TinyStories-656K-Q8_0.gguf --dataset sst2 --tokens 4 --steps 2 --out DIR`
 * does, through the library: a PEFT folder holding F32 prompt_embeddings [4, 128]. */
Test(train, tinystories_sst2_two_steps_write_a_peft_folder, .init = mk, .fini = rm)
{
    engine *en = open_ts();
    tune_example *ex = sst2_examples(en, 48);
    tune_config cfg;
    tune_config_default(&cfg);
    cfg.n_tokens = 4;
    cfg.steps = 2;
    cfg.eval_n = 16;
    soft_prompt sp;
    tune_result res;
    pwb_err e;
    cr_assert_eq(tune_train(en, &cfg, ex, 48, &sp, NULL, &res, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(res.steps, 2);
    cr_expect_eq(res.examples_seen, 16);
    cr_expect_eq(res.n_eval, 16);
    cr_expect_eq(res.n_train, 32);
    cr_expect(res.best_accuracy >= 0 && res.best_accuracy <= 1);
    cr_expect(isfinite(res.last_loss) && res.last_loss > 0);
    cr_assert_eq(sp.n_tokens, 4);
    cr_assert_eq(sp.dim, 128);

    char dir[128];
    snprintf(dir, sizeof dir, "%s/sst2-soft", tmpdir);
    cr_assert_eq(tune_save(dir, &sp, cfg.init, NULL, "TinyStories-656K-Q8_0.gguf", "{\"steps\": 2}\n", &e), PWB_OK,
                 "%s", e.msg);
    peft_prompt p;
    peft_prompt_init(&p);
    cr_assert_eq(peft_load(dir, &p, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(p.n_tokens, 4);
    cr_expect_eq(p.dim, 128);
    cr_expect_eq(memcmp(p.embeddings, sp.w, 4 * 128 * sizeof(float)), 0);
    peft_prompt_free(&p);
    /* the header itself says F32 [4, 128] */
    char st[160];
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(file_read_all(st, 1 << 20, &b, &e), PWB_OK);
    uint64_t hl;
    memcpy(&hl, b.data, 8);
    cr_assert_lt(hl, b.len);
    cJSON *h = json_parse(b.data + 8, (size_t)hl, "header", &e);
    cr_assert_not_null(h, "%s", e.msg);
    cJSON *t = cJSON_GetObjectItem(h, "prompt_embeddings");
    cr_assert_str_eq(json_str(t, "dtype", ""), "F32");
    cJSON *shape = cJSON_GetObjectItem(t, "shape");
    cr_assert_eq(cJSON_GetArraySize(shape), 2);
    cr_expect_eq(cJSON_GetArrayItem(shape, 0)->valueint, 4);
    cr_expect_eq(cJSON_GetArrayItem(shape, 1)->valueint, 128);
    cJSON_Delete(h);
    buf_free(&b);
    soft_prompt back;
    cr_assert_eq(tune_load(dir, 128, &back, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(back.n_tokens, 4);
    softprompt_free(&back);
    cr_expect_eq(tune_load(dir, 576, &back, &e), PWB_EINVAL);
    cr_expect_null(back.w);
    softprompt_free(&sp);
    free_examples(ex, 48);
    engine_close(en);
}

Test(train, encode_hands_trailing_spaces_to_the_choices)
{
    engine *en = open_ts();
    const model *m = engine_model(en);
    chat_msg msg = {"user", "The weather today is "};
    const char *choices[2] = {"sunny", "rainy day"};
    tune_example x;
    pwb_err e;
    cr_assert_eq(tune_encode(m, NULL, &msg, 1, choices, 2, 1, &x, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(x.label, 1);
    cr_expect_eq(x.n_labels, 2);
    cr_assert_gt(x.n_ids, 2);
    cr_assert_geq(x.cont_lens[1], 2);
    /* The prompt lost its trailing space; the choice carries it: it is the tail of the whole text's
     * tokens when those start with the prompt's, else the choice (with its space) on its own. */
    int32_t *p_ids, *full, *alone;
    size_t np, nf, na;
    const char *joined = "The weather today is rainy day";
    cr_assert_geq(tokenizer_encode(m->tok, "The weather today is", 20, 1, 1, &p_ids, &np, &e), 0);
    cr_assert_eq(np, (size_t)x.n_ids);
    cr_expect_eq(memcmp(p_ids, x.ids, np * sizeof *p_ids), 0);
    cr_assert_geq(tokenizer_encode(m->tok, joined, strlen(joined), 1, 1, &full, &nf, &e), 0);
    cr_assert_geq(tokenizer_encode(m->tok, " rainy day", 10, 0, 0, &alone, &na, &e), 0);
    if (nf > np && memcmp(full, p_ids, np * sizeof *full) == 0) {
        cr_assert_eq((size_t)x.cont_lens[1], nf - np);
        cr_expect_eq(memcmp(full + np, x.conts[1], (nf - np) * sizeof *full), 0);
    } else {
        cr_assert_eq((size_t)x.cont_lens[1], na);
        cr_expect_eq(memcmp(alone, x.conts[1], na * sizeof *alone), 0);
    }
    free(p_ids);
    free(full);
    free(alone);
    tune_example_free(&x);
    cr_expect_eq(tune_encode(m, NULL, &msg, 1, choices, 2, 2, &x, &e), PWB_EINVAL);
    cr_expect_eq(tune_encode(m, NULL, &msg, 0, choices, 2, 0, &x, &e), PWB_EINVAL);
    engine_close(en);
}

/* A task the tiny model can learn from a prompt alone: the label is the story's first word. */
static tune_example *toy_examples(engine *en, int n)
{
    static const char *pos[] = {"happy", "sunny", "kind", "warm"}, *neg[] = {"sad", "dark", "cold", "angry"};
    static const char *const labels[2] = {"no", "yes"};
    tune_example *ex = calloc((size_t)n, sizeof *ex);
    pwb_err e;
    for (int i = 0; i < n; i++) {
        char text[128];
        int y = i % 2;
        snprintf(text, sizeof text, "%s was the day when Tom met a %s cat. Was it nice?", y ? pos[i / 2 % 4] : neg[i / 2 % 4],
                 i % 3 ? "big" : "small");
        chat_msg msg = {"user", text};
        cr_assert_eq(tune_encode(engine_model(en), NULL, &msg, 1, labels, 2, y, &ex[i], &e), PWB_OK, "%s", e.msg);
    }
    return ex;
}

typedef struct recorder {
    double loss[64];
    int n_steps, n_evals, stop_at;
    double best_seen;
    long best_step_seen;
} recorder;

static int rec_step(void *ctx, const tune_step_info *s)
{
    recorder *r = ctx;
    if (r->n_steps < 64)
        r->loss[r->n_steps] = s->loss;
    r->n_steps++;
    cr_expect(s->lr > 0 && s->seconds >= 0 && s->grad_norm > 0);
    return r->stop_at && s->step == r->stop_at;
}

static int rec_eval(void *ctx, const tune_eval_info *v)
{
    recorder *r = ctx;
    r->n_evals++;
    if (v->is_best) {
        r->best_seen = v->accuracy;
        r->best_step_seen = v->step;
    }
    return 0;
}

Test(train, loss_goes_down_on_a_learnable_task)
{
    engine *en = open_ts();
    tune_example *ex = toy_examples(en, 40);
    tune_config cfg;
    tune_config_default(&cfg);
    cfg.n_tokens = 6;
    cfg.init = SP_INIT_VOCAB;
    cfg.steps = 30;
    cfg.eval_n = 8;
    cfg.eval_every = 10;
    recorder r = {0};
    tune_hooks h = {.on_step = rec_step, .on_eval = rec_eval, .ctx = &r};
    soft_prompt sp;
    tune_result res;
    pwb_err e;
    cr_assert_eq(tune_train(en, &cfg, ex, 40, &sp, &h, &res, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(r.n_steps, 30);
    cr_expect_eq(r.n_evals, 4, "step 0, 10, 20, 30");
    double first = (r.loss[0] + r.loss[1] + r.loss[2]) / 3, last = (r.loss[27] + r.loss[28] + r.loss[29]) / 3;
    cr_log_info("toy task: loss %.4f -> %.4f, held-out accuracy %.3f", first, last, res.best_accuracy);
    cr_expect_lt(last, 0.7 * first, "loss %.4f -> %.4f", first, last);
    cr_expect_float_eq(res.best_accuracy, r.best_seen, 1e-12);
    cr_expect_eq(res.best_step, r.best_step_seen);
    /* the prompt returned is the best one: it scores the held-out slice as reported; the slice is
     * internal, so score all examples and check the prompt beats no prompt at all */
    double acc, loss, acc0, loss0;
    cr_assert_eq(tune_evaluate(en, &sp, ex, 40, &acc, &loss, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(tune_evaluate(en, NULL, ex, 40, &acc0, &loss0, NULL, &e), PWB_OK, "%s", e.msg);
    cr_log_info("toy task, all 40: accuracy %.3f (no prompt %.3f), loss %.3f (%.3f)", acc, acc0, loss, loss0);
    cr_expect_lt(loss, loss0);
    softprompt_free(&sp);
    free_examples(ex, 40);
    engine_close(en);
}

Test(train, resume_from_a_checkpoint_gives_the_uninterrupted_result, .init = mk, .fini = rm)
{
    engine *en = open_ts();
    tune_example *ex = toy_examples(en, 24);
    tune_config cfg;
    tune_config_default(&cfg);
    cfg.n_tokens = 3;
    cfg.init = SP_INIT_RANDOM;
    cfg.opt.kind = OPTIM_ADAMW;
    optim_config_default(&cfg.opt, OPTIM_ADAMW);
    cfg.opt.lr = 0.05;
    cfg.steps = 5;
    cfg.batch = 4;
    cfg.eval_n = 0;
    cfg.config_key = "k1";
    soft_prompt straight, resumed;
    tune_result res;
    pwb_err e;
    cr_assert_eq(tune_train(en, &cfg, ex, 24, &straight, NULL, &res, &e), PWB_OK, "%s", e.msg);
    cr_expect(isnan(res.best_accuracy));
    cr_expect(isfinite(res.cpu_seconds) && res.cpu_seconds > 0, "training CPU time measured: %g", res.cpu_seconds);

    char ck[128];
    snprintf(ck, sizeof ck, "%s/ck.bin", tmpdir);
    cfg.checkpoint = ck;
    recorder r = {.stop_at = 2};
    tune_hooks h = {.on_step = rec_step, .ctx = &r};
    soft_prompt part;
    cr_assert_eq(tune_train(en, &cfg, ex, 24, &part, &h, &res, &e), PWB_EINTR);
    cr_expect_eq(res.steps, 2);
    cr_expect(file_exists(ck));
    softprompt_free(&part);

    r = (recorder){0};
    cr_assert_eq(tune_train(en, &cfg, ex, 24, &resumed, &h, &res, &e), PWB_OK, "%s", e.msg);
    cr_expect(res.resumed);
    cr_expect_eq(res.steps, 5);
    cr_expect_eq(res.examples_seen, 20);
    cr_expect_eq(r.n_steps, 3, "steps 3..5 only");
    for (int i = 0; i < 3 * 128; i++)
        cr_assert_float_eq(resumed.w[i], straight.w[i], 1e-6, "element %d: %g vs %g", i, resumed.w[i], straight.w[i]);
    softprompt_free(&resumed);

    /* a finished checkpoint: nothing left to do, same prompt */
    r = (recorder){0};
    cr_assert_eq(tune_train(en, &cfg, ex, 24, &resumed, &h, &res, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(r.n_steps, 0);
    cr_expect_float_eq(resumed.w[7], straight.w[7], 1e-6);
    cr_expect(isfinite(res.cpu_seconds) && res.cpu_seconds > 0);
    softprompt_free(&resumed);

    /* a checkpoint written before the header held CPU time (PWBTUNE1: 168 header bytes, the
     * current one 176) still resumes; its CPU time is unknown */
    pwb_buf old;
    buf_init(&old);
    cr_assert_eq(file_read_all(ck, 1 << 20, &old, &e), PWB_OK);
    cr_assert_eq(memcmp(old.data, "PWBTUNE2", 8), 0);
    memcpy(old.data, "PWBTUNE1", 8);
    memmove(old.data + 168, old.data + 176, old.len - 176);
    cr_assert_eq(file_write_atomic(ck, old.data, old.len - 8, &e), PWB_OK);
    buf_free(&old);
    r = (recorder){0};
    cr_assert_eq(tune_train(en, &cfg, ex, 24, &resumed, &h, &res, &e), PWB_OK, "%s", e.msg);
    cr_expect(res.resumed);
    cr_expect_eq(r.n_steps, 0);
    cr_expect_float_eq(resumed.w[7], straight.w[7], 1e-6);
    cr_expect(isnan(res.cpu_seconds));
    softprompt_free(&resumed);

    /* asking a finished run for more steps continues it as a longer run would have gone */
    soft_prompt longer, extended;
    tune_config c7 = cfg;
    c7.steps = 7;
    c7.checkpoint = NULL;
    cr_assert_eq(tune_train(en, &c7, ex, 24, &longer, NULL, &res, &e), PWB_OK, "%s", e.msg);
    c7.checkpoint = ck;
    r = (recorder){0};
    cr_assert_eq(tune_train(en, &c7, ex, 24, &extended, &h, &res, &e), PWB_OK, "%s", e.msg);
    cr_expect(res.resumed);
    cr_expect_eq(r.n_steps, 2, "steps 6 and 7 only");
    for (int i = 0; i < 3 * 128; i++)
        cr_assert_float_eq(extended.w[i], longer.w[i], 1e-6, "element %d", i);
    softprompt_free(&longer);
    softprompt_free(&extended);

    /* another configuration refuses it */
    cfg.config_key = "k2";
    cr_expect_eq(tune_train(en, &cfg, ex, 24, &resumed, NULL, &res, &e), PWB_EINVAL);
    cr_expect(strstr(e.msg, "another training configuration") != NULL, "%s", e.msg);
    /* garbage is not a checkpoint */
    cr_assert_eq(file_write_atomic(ck, "garbage", 7, &e), PWB_OK);
    cfg.config_key = "k1";
    cr_expect_eq(tune_train(en, &cfg, ex, 24, &resumed, NULL, &res, &e), PWB_EPARSE);
    softprompt_free(&straight);
    free_examples(ex, 24);
    engine_close(en);
}

Test(train, early_stopping_keeps_the_best)
{
    engine *en = open_ts();
    tune_example *ex = toy_examples(en, 32);
    tune_config cfg;
    tune_config_default(&cfg);
    cfg.n_tokens = 2;
    cfg.init = SP_INIT_RANDOM;
    cfg.steps = 12;
    cfg.batch = 4;
    cfg.eval_n = 8;
    cfg.eval_every = 1;
    cfg.patience = 2;
    cfg.opt.lr = 3.0; /* noisy on purpose: evaluations go up and down */
    recorder r = {0};
    tune_hooks h = {.on_step = rec_step, .on_eval = rec_eval, .ctx = &r};
    soft_prompt sp;
    tune_result res;
    pwb_err e;
    cr_assert_eq(tune_train(en, &cfg, ex, 32, &sp, &h, &res, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(r.n_evals, res.steps + 1, "step 0, then one evaluation per step");
    cr_expect_eq(res.best_step, r.best_step_seen);
    cr_expect_float_eq(res.best_accuracy, r.best_seen, 1e-12);
    if (res.stopped_early)
        cr_expect_eq(res.steps - res.best_step, cfg.patience, "stopped %d evaluations after the best", cfg.patience);
    else
        cr_expect_eq(res.steps, 12);
    softprompt_free(&sp);
    free_examples(ex, 32);
    engine_close(en);
}

Test(train, rejects_bad_input)
{
    engine *en = open_ts();
    tune_example *ex = toy_examples(en, 4);
    tune_config cfg;
    tune_config_default(&cfg);
    soft_prompt sp;
    tune_result res;
    pwb_err e;
    cr_expect_eq(tune_train(en, &cfg, ex, 0, &sp, NULL, &res, &e), PWB_EINVAL);
    cfg.batch = 0;
    cr_expect_eq(tune_train(en, &cfg, ex, 4, &sp, NULL, &res, &e), PWB_EINVAL);
    tune_config_default(&cfg);
    ex[2].label = -1;
    cr_expect_eq(tune_train(en, &cfg, ex, 4, &sp, NULL, &res, &e), PWB_EINVAL);
    ex[2].label = 0;
    cfg.init = SP_INIT_TEXT;
    cfg.init_text = "";
    cfg.steps = 1;
    cr_expect_eq(tune_train(en, &cfg, ex, 4, &sp, NULL, &res, &e), PWB_EINVAL);
    free_examples(ex, 4);
    engine_close(en);
}
