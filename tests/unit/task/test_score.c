#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "task/dataset.h"
#include "task/score.h"
#include "helpers.h"

typedef struct sc_case {
    const char *output;
    const char *want; /* extracted, NULL = invalid */
} sc_case;

/* Scores each output against a gold example and checks extraction and correctness. */
static void run_cases(const char *card, const char *pattern, const char *gold_answer, int gold_label,
                      const sc_case *cases, size_t n)
{
    ds_card c;
    t_load_card(&c, card);
    scorer *s;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(scorer_init(&s, &c, pattern, &e), PWB_OK, "%s", e.msg);
    ds_example gold;
    memset(&gold, 0, sizeof gold);
    gold.answer = (char *)gold_answer;
    gold.label = gold_label;
    for (size_t i = 0; i < n; i++) {
        score_result r;
        cr_assert_eq(scorer_score(s, cases[i].output, &gold, &r), PWB_OK);
        if (!cases[i].want) {
            cr_assert_eq(r.valid, 0, "'%s' -> '%s', expected invalid", cases[i].output, r.extracted);
            cr_assert_null(r.extracted);
            cr_assert_eq(r.correct, 0);
        } else {
            cr_assert_eq(r.valid, 1, "'%s' gave no answer, expected '%s'", cases[i].output, cases[i].want);
            cr_assert_str_eq(r.extracted, cases[i].want, "'%s'", cases[i].output);
            cr_assert_eq(r.correct, !strcmp(cases[i].want, gold_answer), "'%s'", cases[i].output);
        }
        score_result_clear(&r);
    }
    scorer_free(s);
    card_free(&c);
}

Test(score, labels_builtin_first_whole_word)
{
    sc_case cases[] = {
        {"positive", "positive"},
        {"Positive.", "positive"},
        {"  **POSITIVE**\n", "positive"},
        {"The sentiment is negative.", "negative"},
        {"negative or positive? positive", "negative"}, /* the first mention wins */
        {"pos", "positive"},                            /* alias */
        {"positively glowing", NULL},                   /* whole words only */
        {"I am not sure.", NULL},
        {"", NULL},
    };
    run_cases("sst2", NULL, "positive", 1, cases, sizeof cases / sizeof cases[0]);
}

Test(score, ag_news_verbalizers_and_aliases)
{
    sc_case cases[] = {
        {"Sci/Tech", "Sci/Tech"},          {"sci/tech", "Sci/Tech"},     {"Science", "Sci/Tech"},
        {"Technology news.", "Sci/Tech"}, {"Sports", "Sports"},          {"Business\n\nThe article", "Business"},
        {"world", "World"},                {"Category: Entertainment", NULL},
    };
    run_cases("ag_news", NULL, "Sci/Tech", 3, cases, sizeof cases / sizeof cases[0]);
}

Test(score, yesno)
{
    sc_case cases[] = {
        {"Yes.", "yes"}, {"no", "no"}, {"False", "no"}, {"true", "yes"},
        {"No, the passage says otherwise.", "no"}, {"I don't know", NULL}, {"Nope", NULL},
    };
    run_cases("boolq", NULL, "no", 1, cases, sizeof cases / sizeof cases[0]);
}

Test(score, cot_pattern_takes_the_last_answer_line)
{
    const char *pat = "(?is)^.*\\banswer\\s*:\\s*([^\\n]*)";
    sc_case cases[] = {
        {"The review praises the acting, so it is positive.\nAnswer: negative", "negative"},
        {"Answer: positive\nWait.\nAnswer: Negative.", "negative"},
        {"It is clearly positive.", NULL}, /* no "Answer:" line: invalid even though a label appears */
        {"Answer: unclear", NULL},
    };
    run_cases("sst2", pat, "negative", 0, cases, sizeof cases / sizeof cases[0]);
}

Test(score, numeric_gsm8k_default_pattern)
{
    sc_case cases[] = {
        {"18", "18"},
        {"$18.00", "18"},
        {"Step 1: 16 - 3 - 4 = 9.\nStep 2: 9 * 2 = 18.\nAnswer: 18", "18"},
        {"The answer is $18.", "18"},
        {"She makes 9 * 2 = 18 dollars a day", "18"}, /* no marker: the last number */
        {"#### 18", "18"},
        {"Answer: 5 + 13 = 18", "18"},
        {"The answer is: 1,234.", "1234"},
        {"Answer: -7", "-7"},
        {"Answer: 17.5", "17.5"},
        {"I cannot solve this.", NULL},
    };
    run_cases("gsm8k", NULL, "18", -1, cases, sizeof cases / sizeof cases[0]);
}

Test(score, normalize_number)
{
    struct {
        const char *in, *out;
    } ok[] = {{"1,234", "1234"}, {"1,234.50", "1234.5"}, {"$5.00", "5"},   {" 42 ", "42"}, {"-3", "-3"},
              {"-0", "0"},       {"50%", "50"},          {"18.", "18"},    {"0.25", "0.25"}, {"**7**", "7"},
              {"+8", "8"},       {"1000000", "1000000"}, {"-$4.5", "-4.5"}};
    char buf[64];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cr_assert_eq(score_normalize_number(ok[i].in, buf, sizeof buf), 0, "'%s'", ok[i].in);
        cr_assert_str_eq(buf, ok[i].out, "'%s'", ok[i].in);
    }
    const char *bad[] = {"", "abc", "1.2.3", "12 apples", "--1", "$", NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert_neq(score_normalize_number(bad[i], buf, sizeof buf), 0, "'%s' accepted as %s", bad[i], buf);
    cr_assert_neq(score_normalize_number("123456", buf, 3), 0); /* does not fit */
}

/* Free-text answers match in any language: NFC and full case folding, so "CAFÉ" (precomposed) and
 * "Cafe" + U+0301 both match "café", and German "STRASSE" matches "straße". */
Test(score, free_text_unicode_case_and_composition)
{
    char dir[] = "/tmp/pwb_score_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/t.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"name\":\"t\",\"task\":\"free_text\",\"input_field\":\"q\",\"answer_field\":\"a\","
          "\"splits\":{\"test\":{\"file\":\"d.jsonl\"}}}", f);
    fclose(f);
    ds_card c;
    card_init(&c);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(card_load(&c, path, &e), PWB_OK, "%s", e.msg);
    scorer *s;
    cr_assert_eq(scorer_init(&s, &c, NULL, &e), PWB_OK, "%s", e.msg);
    const struct { const char *gold, *out; } ok[] = {
        {"caf\xc3\xa9", "CAF\xc3\x89."},
        {"caf\xc3\xa9", "Cafe\xcc\x81"},
        {"stra\xc3\x9f" "e", "STRASSE"},
        {"\xce\xb1\xce\xb8\xce\xb7\xce\xbd\xce\xb1", "\xce\x91\xce\x98\xce\x97\xce\x9d\xce\x91"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ds_example gold;
        memset(&gold, 0, sizeof gold);
        gold.answer = (char *)ok[i].gold;
        gold.label = -1;
        score_result r;
        cr_assert_eq(scorer_score(s, ok[i].out, &gold, &r), PWB_OK);
        cr_expect_eq(r.correct, 1, "'%s' vs '%s' -> '%s'", ok[i].out, ok[i].gold, r.extracted);
        score_result_clear(&r);
    }
    scorer_free(s);
    card_free(&c);
    remove(path);
    rmdir(dir);
}

Test(score, bad_pattern_and_null_output)
{
    ds_card c;
    t_load_card(&c, "sst2");
    scorer *s = NULL;
    pwb_err e;
    err_clear(&e);
    cr_assert_neq(scorer_init(&s, &c, "(unclosed", &e), PWB_OK);
    cr_assert_null(s);
    cr_assert_not_null(strstr(e.msg, "bad regex '(unclosed'"), "%s", e.msg);
    cr_assert_eq(scorer_init(&s, &c, NULL, &e), PWB_OK);
    score_result r;
    cr_assert_eq(scorer_score(s, NULL, NULL, &r), PWB_OK);
    cr_assert_eq(r.valid, 0);
    cr_assert_eq(scorer_score(s, "positive", NULL, &r), PWB_OK); /* no gold: extraction only */
    cr_assert_eq(r.valid, 1);
    cr_assert_eq(r.correct, 0);
    score_result_clear(&r);
    scorer_free(s);
    card_free(&c);
}
