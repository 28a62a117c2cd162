/* Sweep expansion in suites: "sweep" objects become one method per point, with their names and
 * settings; bad sweeps are refused with a message. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "run/suite.h"


static const char suite_head[] = "{\"name\": \"sw\", \"datasets\": [\"sst2\"], \"models\": [{\"name\": \"m\", "
                                 "\"provider\": \"local\", \"model\": \"x.gguf\"}], \"methods\": [";

static int parse(pwb_suite *s, const char *methods, pwb_err *e)
{
    char text[4096];
    snprintf(text, sizeof text, "%s%s]}", suite_head, methods);
    suite_init(s);
    return suite_parse(s, text, strlen(text), "suites/sw.json", e);
}

Test(sweep, expands_shots)
{
    pwb_suite s;
    pwb_err e;
    cr_assert_eq(parse(&s,
                       "{\"name\": \"zs\", \"template\": \"zero-shot\"},"
                       "{\"name\": \"few-shot\", \"template\": \"few-shot\", \"sweep\": {\"shots\": [0, 1, 2, 4, 8]}},"
                       "{\"name\": \"cot\", \"template\": \"cot\"}",
                       &e),
                 PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_methods, 7);
    cr_assert_str_eq(s.methods[0].name, "zs");
    cr_assert_null(s.methods[0].sweep);
    const int shots[] = {0, 1, 2, 4, 8};
    for (int i = 0; i < 5; i++) {
        const suite_method *m = &s.methods[1 + i];
        char name[32], point[32];
        snprintf(name, sizeof name, "few-shot[shots=%d]", shots[i]);
        snprintf(point, sizeof point, "{\"shots\":%d}", shots[i]);
        cr_assert_str_eq(m->name, name);
        cr_assert_eq(m->shots, shots[i]);
        cr_assert_str_eq(m->sweep, "few-shot");
        cr_assert_str_eq(m->sweep_point, point);
        cr_assert_str_eq(m->template_path, "few-shot");
        cr_assert_str_eq(m->scoring, "generate");
    }
    cr_assert_str_eq(s.methods[6].name, "cot");
    suite_free(&s);
}

Test(sweep, expands_soft_prompt_grid)
{
    pwb_suite s;
    pwb_err e;
    cr_assert_eq(parse(&s,
                       "{\"name\": \"soft\", \"soft_prompt\": {\"tokens\": 20, \"steps\": 100}, \"scoring\": \"rank\","
                       " \"sweep\": {\"tokens\": [1, 5, 20, 50], \"init\": [\"random\", \"vocab\", \"class\"]}}",
                       &e),
                 PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_methods, 12);
    /* the last axis varies fastest */
    cr_assert_str_eq(s.methods[0].name, "soft[tokens=1,init=random]");
    cr_assert_str_eq(s.methods[1].name, "soft[tokens=1,init=vocab]");
    cr_assert_str_eq(s.methods[5].name, "soft[tokens=5,init=class]");
    cr_assert_str_eq(s.methods[11].name, "soft[tokens=50,init=class]");
    const suite_method *m = &s.methods[7]; /* tokens 20, vocab */
    cr_assert_str_eq(m->name, "soft[tokens=20,init=vocab]");
    cr_assert_str_eq(m->sweep, "soft");
    cr_assert_str_eq(m->sweep_point, "{\"tokens\":20,\"init\":\"vocab\"}");
    cr_assert_eq(cJSON_GetObjectItem(m->soft_prompt, "tokens")->valueint, 20);
    cr_assert_str_eq(cJSON_GetObjectItem(m->soft_prompt, "init")->valuestring, "vocab");
    /* other settings are kept */
    cr_assert_eq(cJSON_GetObjectItem(m->soft_prompt, "steps")->valueint, 100);
    cr_assert_eq(cJSON_GetObjectItem(s.methods[0].soft_prompt, "tokens")->valueint, 1);
    cr_assert_str_eq(m->scoring, "rank");
    cr_assert_null(m->template_path);
    /* the suite's identity is its text, not the expansion */
    cr_assert_eq(strlen(s.sha256), 64);
    suite_free(&s);
}

static void expect_error(const char *methods, const char *needle)
{
    pwb_suite s;
    pwb_err e;
    err_clear(&e);
    cr_assert_neq(parse(&s, methods, &e), PWB_OK, "accepted: %s", methods);
    cr_assert(strstr(e.msg, needle) != NULL, "error '%s' lacks '%s'", e.msg, needle);
    cr_assert(strncmp(e.msg, "suites/sw.json: ", 16) == 0, "%s", e.msg);
    suite_free(&s);
}

Test(sweep, rejects_bad_sweeps)
{
    expect_error("{\"name\": \"f\", \"template\": \"few-shot\", \"sweep\": {\"tokens\": [1, 2]}}",
                 "methods[0].sweep.tokens: a template method sweeps only 'shots'");
    expect_error("{\"name\": \"s\", \"soft_prompt\": {}, \"sweep\": {\"shots\": [1]}}", "a trained prompt's shots are not swept");
    expect_error("{\"name\": \"f\", \"template\": \"few-shot\", \"shots\": 2, \"sweep\": {\"shots\": [1]}}",
                 "give shots or sweep.shots, not both");
    expect_error("{\"name\": \"f\", \"template\": \"few-shot\", \"sweep\": {\"shots\": [1, 2, 1]}}",
                 "sweep.shots[2] repeats an earlier value");
    expect_error("{\"name\": \"f\", \"template\": \"few-shot\", \"sweep\": {\"shots\": [65]}}",
                 "sweep.shots[0] must be an integer from 0 to 64");
    expect_error("{\"name\": \"f\", \"template\": \"few-shot\", \"sweep\": {\"shots\": []}}",
                 "sweep.shots must be an array of 1 to 64 values");
    expect_error("{\"name\": \"f\", \"template\": \"few-shot\", \"sweep\": []}", "sweep must be an object of axes");
    expect_error("{\"name\": \"s\", \"soft_prompt\": {}, \"sweep\": {\"init\": [\"zeros\"]}}",
                 "sweep.init[0] must be one of random, vocab, class, text");
    expect_error("{\"name\": \"s\", \"soft_prompt\": {}, \"sweep\": {\"lr\": [\"a,b\"]}}",
                 "sweep.lr[0] must be a number or a name");
    /* 64 x 64 points */
    char big[2048];
    int n = snprintf(big, sizeof big, "{\"name\": \"s\", \"soft_prompt\": {}, \"sweep\": {\"tokens\": [");
    for (int i = 1; i <= 20; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "%s%d", i > 1 ? "," : "", i);
    n += snprintf(big + n, sizeof big - (size_t)n, "], \"lr\": [");
    for (int i = 1; i <= 20; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "%s%d", i > 1 ? "," : "", i);
    snprintf(big + n, sizeof big - (size_t)n, "]}}");
    expect_error(big, "sweep has more than 256 points");
    /* a derived name may not collide with a written one */
    expect_error("{\"name\": \"f[shots=1]\", \"template\": \"x\"}", "use letters, digits");
    expect_error("{\"name\": \"f\", \"template\": \"few-shot\", \"sweep\": {\"shots\": [1]}},"
                 "{\"name\": \"f\", \"template\": \"few-shot\"}",
                 "method name 'f' used twice");
}

/* Equal budgets and calibration: every arm declares train_limit and sweeps it; a soft prompt's is
 * its soft_prompt.train_limit; calibration is a rank-scoring setting and a sweep axis. */
Test(sweep, budgets_and_calibration)
{
    pwb_suite s;
    pwb_err e;
    cr_assert_eq(parse(&s,
                       "{\"name\": \"zs\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"calibration\": \"pmi\"},"
                       "{\"name\": \"fs\", \"template\": \"few-shot\", \"scoring\": \"rank\","
                       " \"sweep\": {\"train_limit\": [16, 64], \"calibration\": [\"none\", \"contextual\"]}},"
                       "{\"name\": \"soft\", \"soft_prompt\": {\"steps\": 10}, \"train_limit\": 256},"
                       "{\"name\": \"soft2\", \"soft_prompt\": {\"steps\": 10}, \"sweep\": {\"train_limit\": [0, 16]}}",
                       &e),
                 PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_methods, 1 + 4 + 1 + 2);
    cr_assert_str_eq(s.methods[0].calibration, "pmi");
    cr_assert_eq(s.methods[0].train_limit, -1);
    cr_assert_str_eq(s.methods[1].name, "fs[train_limit=16,calibration=none]");
    cr_assert_eq(s.methods[1].train_limit, 16);
    cr_assert_str_eq(s.methods[1].calibration, "none");
    cr_assert_str_eq(s.methods[4].name, "fs[train_limit=64,calibration=contextual]");
    cr_assert_eq(s.methods[4].train_limit, 64);
    cr_assert_str_eq(s.methods[4].calibration, "contextual");
    cr_assert_eq(s.methods[5].soft.train_limit, 256);
    cr_assert_eq(s.methods[5].train_limit, 256);
    cr_assert_eq(s.methods[6].train_limit, -1, "train_limit 0 means all of the split");
    cr_assert_eq(s.methods[7].soft.train_limit, 16);
    cr_assert_eq(s.methods[7].train_limit, 16);
    suite_free(&s);
    static const char *const bad[][2] = {
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"calibration\": \"platt\"}",
         "calibration must be"},
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"calibration\": \"contextual\"}", "scoring\": \"rank"},
        {"{\"name\": \"a\", \"soft_prompt\": {}, \"calibration\": \"pmi\"}", "uncalibrated"},
        {"{\"name\": \"a\", \"soft_prompt\": {\"train_limit\": 5}, \"train_limit\": 5}", "not both"},
        {"{\"name\": \"a\", \"template\": \"few-shot\", \"train_limit\": 5, \"sweep\": {\"train_limit\": [1]}}",
         "not both"},
        {"{\"name\": \"a\", \"template\": \"few-shot\", \"scoring\": \"rank\", \"sweep\": {\"calibration\": [\"x\"]}}",
         "one of none, contextual, pmi"},
        {"{\"name\": \"a\", \"template\": \"few-shot\", \"train_limit\": -2}", "train_limit"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_neq(parse(&s, bad[i][0], &e), PWB_OK, "%s", bad[i][0]);
        cr_assert(strstr(e.msg, bad[i][1]) != NULL, "%s: %s", bad[i][0], e.msg);
        suite_free(&s);
    }
}

/* Prompt search settings: defaults, the budget it needs, and a train_limit sweep of a searched method. */
Test(sweep, optimize_settings)
{
    pwb_suite s;
    pwb_err e;
    cr_assert_eq(parse(&s,
                       "{\"name\": \"o\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"train_limit\": 500,"
                       " \"optimize\": {\"templates\": [\"few-shot\"], \"instructions\": [\"Say it.\"],"
                       " \"bootstrap_tries\": 12}},"
                       "{\"name\": \"os\", \"template\": \"zero-shot\", \"scoring\": \"rank\","
                       " \"optimize\": {\"heldout\": 8}, \"sweep\": {\"train_limit\": [16, 64]}}",
                       &e),
                 PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_methods, 3);
    cr_assert_eq(s.methods[0].opt.n_templates, 1);
    cr_assert_str_eq(s.methods[0].opt.templates[0], "few-shot");
    cr_assert_eq(s.methods[0].opt.n_instructions, 1);
    cr_assert_eq(s.methods[0].opt.demo_sets, 3);
    cr_assert_eq(s.methods[0].opt.heldout, 100);
    cr_assert_eq(s.methods[0].opt.max_evals, 0);
    cr_assert_eq(s.methods[0].opt.bootstrap_tries, 12);
    cr_assert_eq(s.methods[2].opt.bootstrap_tries, 0); /* four per shot */
    cr_assert_eq(s.methods[2].train_limit, 64);
    cr_assert_eq(s.methods[2].opt.heldout, 8);
    suite_free(&s);
    static const char *const bad[][2] = {
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"optimize\": {}}", "needs a train_limit"},
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"train_limit\": 500, \"optimize\": {}}", "scoring"},
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"train_limit\": 500,"
         " \"optimize\": {\"demo_sets\": 0}}", "demo_sets"},
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"train_limit\": 500,"
         " \"optimize\": {\"bootstrap_tries\": -1}}", "bootstrap_tries"},
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"train_limit\": 500,"
         " \"optimize\": {\"templates\": [3]}}", "templates[0]"},
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"train_limit\": 20,"
         " \"optimize\": {\"heldout\": 100}}", "too few rows"},
        {"{\"name\": \"a\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"train_limit\": 500,"
         " \"optimize\": {\"rounds\": 3}}", "rounds"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_neq(parse(&s, bad[i][0], &e), PWB_OK, "%s", bad[i][0]);
        cr_assert(strstr(e.msg, bad[i][1]) != NULL, "%s: %s", bad[i][0], e.msg);
        suite_free(&s);
    }
}
