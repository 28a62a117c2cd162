/* Hostile input: random text built from each format's special characters must never crash a
 * parser (run under `make asan` too); it may only fail with an error. */
#include <criterion/criterion.h>
#include <string.h>

#include "task/dataset.h"
#include "task/score.h"
#include "task/template.h"
#include "helpers.h"
#include "util/rng.h"

static size_t garbage(pwb_rng *r, const char *alphabet, char *out, size_t cap)
{
    size_t n = (size_t)rng_below(r, cap - 1), k = strlen(alphabet);
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[rng_below(r, k)];
    out[n] = '\0';
    return n;
}

Test(robust, templates_and_rendering)
{
    ds_card c;
    t_load_card(&c, "boolq");
    pwb_rng r;
    rng_init(&r, 99);
    char buf[256];
    char *vals[] = {"p", "q", "7", "true"};
    char *names[] = {"passage", "question", "idx", "label"};
    ds_example x = {.input = "in", .answer = "yes", .label = 0, .fields = vals, .field_names = names,
                    .n_fields = 4, .answer_idx = 3};
    const ds_example *shots[] = {&x, &x};
    int parsed = 0;
    for (int i = 0; i < 4000; i++) {
        size_t n = garbage(&r, "{{}}#^/!&.x [user]\n\n---:shots input labels", buf, sizeof buf);
        if (i % 2 == 0 && n + 5 < sizeof buf) { /* half with a header end, so bodies get parsed */
            memmove(buf + 4, buf, n + 1);
            memcpy(buf, "---\n", 4);
            n += 4;
        }
        pwb_template t;
        template_init(&t);
        pwb_err e;
        if (template_parse(&t, buf, n, "g.tmpl", &e) == PWB_OK) {
            parsed++;
            template_check(&t, &c, &e);
            tpl_prompt p;
            if (template_render(&t, &c, &x, shots, 2, &p, &e) == PWB_OK)
                tpl_prompt_free(&p);
        }
        template_free(&t);
    }
    cr_assert_gt(parsed, 100, "only %d garbage templates parsed: the generator is too narrow", parsed);
    card_free(&c);
}

Test(robust, data_files_and_cards)
{
    pwb_rng r;
    rng_init(&r, 7);
    char dir[64];
    t_mkdtemp(dir, sizeof dir);
    t_write(dir, "c.json",
            "{\"name\":\"g\",\"task\":\"classification\",\"input_field\":\"a\",\"answer_field\":\"b\","
            "\"labels\":[\"x\",\"y\"],\"splits\":{\"csv\":{\"file\":\"g.csv\"},\"tsv\":{\"file\":\"g.tsv\"},"
            "\"jsonl\":{\"file\":\"g.jsonl\"}}}");
    ds_card c;
    card_init(&c);
    pwb_err e;
    cr_assert_eq(card_load(&c, t_path(dir, "c.json"), &e), PWB_OK, "%s", e.msg);
    char buf[512];
    int loaded = 0;
    for (int i = 0; i < 600; i++) {
        garbage(&r, "a,b,x,y\"\"\n\r\t{}:[]\\\xc3\xa9", buf, sizeof buf);
        const char *split = i % 3 == 0 ? "csv" : i % 3 == 1 ? "tsv" : "jsonl";
        char name[16];
        snprintf(name, sizeof name, "g.%s", split);
        t_write(dir, name, buf);
        ds_data d;
        ds_data_init(&d);
        if (dataset_load(&c, split, "", &d, &e) == PWB_OK)
            loaded++;
        ds_data_free(&d);
        /* the same garbage as a card (tests/unit/run/test_suite.c feeds it to the suite parser) */
        t_write(dir, "x.json", buf);
        ds_card g;
        card_init(&g);
        card_load(&g, t_path(dir, "x.json"), &e);
        card_free(&g);
    }
    (void)loaded;
    card_free(&c);
    t_rmdir(dir);
}

Test(robust, scoring_garbage)
{
    const char *cards[] = {"sst2", "gsm8k", "boolq"};
    pwb_rng r;
    rng_init(&r, 3);
    char buf[300];
    for (int k = 0; k < 3; k++) {
        ds_card c;
        t_load_card(&c, cards[k]);
        scorer *s;
        pwb_err e;
        cr_assert_eq(scorer_init(&s, &c, NULL, &e), PWB_OK);
        ds_example gold = {.answer = "18", .label = 0};
        for (int i = 0; i < 3000; i++) {
            garbage(&r, "0123456789,.-$ answer:#positive no yes\n", buf, sizeof buf);
            score_result res;
            scorer_score(s, buf, &gold, &res);
            if (res.valid)
                cr_assert_not_null(res.extracted);
            score_result_clear(&res);
            char num[32];
            score_normalize_number(buf, num, sizeof num);
        }
        scorer_free(s);
        card_free(&c);
    }
}
