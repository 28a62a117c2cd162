/* Tuning methods' settings tables: one parser for suites, `pwb tune` and the training job. */
#include <criterion/criterion.h>
#include <string.h>

#include "tune/settings.h"

static cJSON *obj(const char *text)
{
    cJSON *o = cJSON_Parse(text);
    cr_assert_not_null(o, "%s", text);
    return o;
}

Test(settings, json_fields_and_defaults)
{
    cJSON *o = obj("{\"tokens\":8,\"init\":\"text\",\"init_text\":\"hello\",\"lr\":0.05,\"exact\":true,"
                   "\"_note\":\"ignored\",\"seed\":9}");
    soft_settings s;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(tune_settings_parse(&tune_soft_method, o, "s.json", "m.soft_prompt", &s, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(s.tokens, 8);
    cr_expect_str_eq(s.init, "text");
    cr_expect_str_eq(s.init_text, "hello");
    cr_expect_float_eq(s.lr, 0.05, 1e-12);
    cr_expect_eq(s.exact, 1);
    cr_expect_eq(s.seed, 9);
    cr_expect_eq(s.batch, 8, "the default");
    cr_expect(s.weight_decay < 0, "the optimizer's default");
    cJSON_Delete(o);
}

static void bad_json(const char *text, const char *needle)
{
    cJSON *o = obj(text);
    soft_settings s;
    pwb_err e;
    err_clear(&e);
    cr_assert_neq(tune_settings_parse(&tune_soft_method, o, "s.json", "m", &s, &e), PWB_OK, "accepted %s", text);
    cr_expect(strstr(e.msg, needle), "'%s' lacks '%s'", e.msg, needle);
    cr_expect(!strncmp(e.msg, "s.json: m.", 10), "%s", e.msg);
    cJSON_Delete(o);
}

Test(settings, json_errors_name_the_field)
{
    bad_json("{\"tokns\":3}", "unknown field 'tokns'");
    bad_json("{\"tokens\":0}", "tokens must be an integer from 1 to 4096");
    bad_json("{\"epochs\":0}", "epochs must be a number");
    bad_json("{\"optimizer\":\"sgd\"}", "optimizer 'sgd' is not adafactor or adamw");
    bad_json("{\"init\":\"text\"}", "init_text is required with init \"text\"");
    bad_json("{\"exact\":2}", "exact must be true or false");
}

Test(settings, text_values_as_the_command_line_gives_them)
{
    soft_settings s;
    soft_settings_defaults(&s);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(tune_settings_set(&tune_soft_method, &s, "warmup", "12", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(tune_settings_set(&tune_soft_method, &s, "optimizer", "adamw", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(tune_settings_set(&tune_soft_method, &s, "exact", "1", &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(s.warmup, 12);
    cr_expect_str_eq(s.optimizer, "adamw");
    cr_expect_eq(s.exact, 1);
    cr_expect_neq(tune_settings_set(&tune_soft_method, &s, "batch", "2.5", &e), PWB_OK);
    cr_expect(strstr(e.msg, "expected an integer from 1 to 1024, got '2.5'"), "%s", e.msg);
    cr_expect_neq(tune_settings_set(&tune_soft_method, &s, "init", "zeros", &e), PWB_OK);
    cr_expect(strstr(e.msg, "'zeros' is not random, vocab, class or text"), "%s", e.msg);
    cr_expect_neq(tune_settings_set(&tune_soft_method, &s, "colour", "red", &e), PWB_OK);
    cr_expect_eq(s.batch, 8, "a rejected value leaves the setting alone");
}

Test(settings, check_and_config)
{
    soft_settings s;
    soft_settings_defaults(&s);
    pwb_err e;
    err_clear(&e);
    tune_config c;
    s.warmup = 5;
    s.lr = 0.25;
    cr_assert_eq(soft_settings_config(&s, &c, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(c.n_tokens, 20);
    cr_expect_float_eq(c.opt.lr, 0.25, 1e-12);
    cr_expect_eq(c.opt.schedule, SCHED_WARMUP_LINEAR);
    cr_expect_eq(c.opt.warmup_steps, 5);
    s.batch = 0; /* settings built in code meet the same bounds */
    cr_expect_neq(soft_settings_config(&s, &c, &e), PWB_OK);
    cr_expect(strstr(e.msg, "soft prompt: batch must be an integer from 1 to 1024"), "%s", e.msg);
    soft_settings_defaults(&s);
    s.init = "text";
    cr_expect_neq(tune_settings_check(&tune_soft_method, &s, NULL, "", &e), PWB_OK);
    cr_expect(strstr(e.msg, "init_text is required"), "%s", e.msg);
}
