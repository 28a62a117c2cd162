#include <criterion/criterion.h>
#include <string.h>
#include <sys/stat.h>

#include "task/dataset.h"
#include "task/score.h"
#include "task/template.h"
#include "helpers.h"
#include "util/sha256.h"

/* ---- the real shared datasets ---- */

Test(dataset_real, sst2_dev)
{
    ds_card c;
    ds_data d;
    t_load_card(&c, "sst2");
    cr_assert_str_eq(c.eval_split, "dev");
    t_load_split(&c, NULL, &d);
    cr_assert_eq(d.n, 872);
    size_t counts[2];
    cr_assert_eq(dataset_label_counts(&d, &c, counts), 872);
    cr_assert_eq(counts[1], 444, "positive: %zu", counts[1]);
    cr_assert_eq(counts[0], 428);
    cr_assert_eq(dataset_majority_label(&d, &c), 1);
    /* first row: "it 's a charming and often affecting journey . <TAB>1" (trailing space trimmed) */
    cr_assert_str_eq(d.ex[0].input, "it 's a charming and often affecting journey .");
    cr_assert_str_eq(d.ex[0].answer, "positive");
    cr_assert_eq(d.ex[0].line, 2);
    cr_assert_eq(d.ex[871].row, 871);
    cr_assert_eq(d.n_fields, 2);
    cr_assert_str_eq(d.field_names[0], "sentence");
    cr_assert_eq(d.ex[0].answer_idx, 1);
    ds_data_free(&d);
    card_free(&c);
}

Test(dataset_real, ag_news_test_and_headerless_train)
{
    ds_card c;
    ds_data d;
    t_load_card(&c, "ag_news");
    t_load_split(&c, "test", &d);
    cr_assert_eq(d.n, 7600);
    size_t counts[4];
    dataset_label_counts(&d, &c, counts);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(counts[i], 1900, "label %d: %zu", i, counts[i]);
    /* Title + Description through the input template; the card's replace list cleans escapes */
    cr_assert(strncmp(d.ex[0].input, "Fears for T N pension after talks\nUnions representing", 52) == 0, "%s",
              d.ex[0].input);
    cr_assert_str_eq(d.ex[0].answer, "Business");
    cr_assert_null(strstr(d.ex[1].input, "\\"), "backslash escapes replaced: %s", d.ex[1].input);
    cr_assert_not_null(strstr(d.ex[1].input, "$10 million"), "%s", d.ex[1].input);
    ds_data_free(&d);
    /* the train subset: TSV without header, label names as raw values (split-level mapping) */
    t_load_split(&c, "train", &d);
    cr_assert_eq(d.n, 10001);
    dataset_label_counts(&d, &c, counts);
    cr_assert_eq(counts[0], 2509);
    cr_assert_eq(counts[1], 2458);
    cr_assert_eq(counts[2], 2496);
    cr_assert_eq(counts[3], 2538);
    cr_assert_str_eq(d.ex[0].answer, "Sci/Tech");
    cr_assert_eq(d.ex[0].line, 1);
    ds_data_free(&d);
    card_free(&c);
}

Test(dataset_real, boolq_val)
{
    ds_card c;
    ds_data d;
    t_load_card(&c, "boolq");
    cr_assert_eq(c.answer_kind, DS_ANSWER_YESNO);
    t_load_split(&c, NULL, &d);
    cr_assert_eq(d.n, 3270);
    size_t counts[2];
    dataset_label_counts(&d, &c, counts);
    cr_assert_eq(counts[0], 2033); /* yes (true) */
    cr_assert_eq(counts[1], 1237);
    cr_assert(strncmp(d.ex[0].input, "Passage: Ethanol fuel -- ", 25) == 0);
    cr_assert_not_null(strstr(d.ex[0].input, "\nQuestion: does ethanol take more energy make that produces?"));
    cr_assert_str_eq(d.ex[0].answer, "no");
    ds_data_free(&d);
    card_free(&c);
}

Test(dataset_real, gsm8k_test_numeric_gold)
{
    ds_card c;
    ds_data d;
    t_load_card(&c, "gsm8k");
    cr_assert_eq(c.task, DS_NUMERIC);
    t_load_split(&c, NULL, &d);
    cr_assert_eq(d.n, 1319);
    cr_assert_str_eq(d.ex[0].answer, "18");
    cr_assert_eq(d.ex[0].label, -1);
    for (size_t i = 0; i < d.n; i++) {
        char num[64];
        cr_assert_eq(score_normalize_number(d.ex[i].answer, num, sizeof num), 0, "row %zu: %s", i, d.ex[i].answer);
        cr_assert_str_eq(num, d.ex[i].answer);
        cr_assert_not_null(d.ex[i].rationale);
        cr_assert_null(strstr(d.ex[i].rationale, "<<"), "row %zu: %s", i, d.ex[i].rationale);
        cr_assert_null(strstr(d.ex[i].rationale, "####"));
    }
    cr_assert_str_eq(d.ex[0].rationale,
                     "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the farmer\xe2\x80\x99s market.");
    ds_data_free(&d);
    card_free(&c);
}

Test(dataset_real, every_card_verifies)
{
    const char *names[] = {"sst2", "ag_news", "boolq", "gsm8k"};
    for (int i = 0; i < 4; i++) {
        ds_card c;
        t_load_card(&c, names[i]);
        pwb_err e;
        err_clear(&e);
        cr_assert_eq(dataset_verify(&c, t_data_path(), &e), PWB_OK, "%s: %s", names[i], e.msg);
        card_free(&c);
    }
}

Test(dataset_real, card_find_by_name)
{
    ds_card c;
    card_init(&c);
    pwb_err e;
    char dirs[8192];
    snprintf(dirs, sizeof dirs, "/nonexistent:%s", t_repo("datasets"));
    cr_assert_eq(card_find(&c, "boolq", dirs, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(c.name, "boolq");
    card_free(&c);
    cr_assert_neq(card_find(&c, "nope", dirs, &e), PWB_OK);
    cr_assert_not_null(strstr(e.msg, "nope"));
    cr_assert_neq(card_find(&c, "../etc", dirs, &e), PWB_OK);
}

Test(dataset_real, sample_is_seeded_sorted_and_nested)
{
    ds_card c;
    ds_data d;
    t_load_card(&c, "sst2");
    t_load_split(&c, NULL, &d);
    size_t a[872], b[872], big[872];
    cr_assert_eq(dataset_sample(&d, 100, 7, a), 100);
    cr_assert_eq(dataset_sample(&d, 100, 7, b), 100);
    cr_assert_eq(memcmp(a, b, sizeof(size_t) * 100), 0);
    for (int i = 1; i < 100; i++)
        cr_assert_lt(a[i - 1], a[i]);
    cr_assert_eq(dataset_sample(&d, 200, 7, big), 200);
    for (int i = 0; i < 100; i++) { /* a larger limit extends a smaller one */
        int found = 0;
        for (int k = 0; k < 200; k++)
            found |= big[k] == a[i];
        cr_assert(found, "row %zu of the 100-sample missing from the 200-sample", a[i]);
    }
    dataset_sample(&d, 100, 8, b);
    cr_assert_neq(memcmp(a, b, sizeof(size_t) * 100), 0);
    cr_assert_eq(dataset_sample(&d, 0, 7, b), 872);
    cr_assert_eq(b[871], 871);
    ds_data_free(&d);
    card_free(&c);
}

/* ---- scratch datasets ---- */

typedef struct scratch {
    char dir[64];
    ds_card c;
    ds_data d;
    pwb_err e;
} scratch;

/* Writes card.json and a data file, loads the card; returns dataset_load's code. */
static int scratch_load(scratch *s, const char *card_json, const char *file, const char *data, const char *split)
{
    t_mkdtemp(s->dir, sizeof s->dir);
    t_write(s->dir, "card.json", card_json);
    if (file)
        t_write(s->dir, file, data);
    card_init(&s->c);
    ds_data_init(&s->d);
    err_clear(&s->e);
    int rc = card_load(&s->c, t_path(s->dir, "card.json"), &s->e);
    if (rc)
        return rc;
    return dataset_load(&s->c, split, "", &s->d, &s->e);
}

static void scratch_done(scratch *s)
{
    ds_data_free(&s->d);
    card_free(&s->c);
    t_rmdir(s->dir);
}

#define CARD_JSONL                                                                                                     \
    "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"text\",\"answer_field\":\"label\","               \
    "\"labels\":[{\"value\":\"0\",\"verbalizer\":\"negative\"},{\"value\":\"1\",\"verbalizer\":\"positive\"}],"      \
    "\"splits\":{\"test\":{\"file\":\"d.jsonl\"}}}"

Test(loader, jsonl_blank_lines_and_types)
{
    scratch s;
    int rc = scratch_load(&s, CARD_JSONL, "d.jsonl",
                          "{\"text\":\"good\",\"label\":1,\"extra\":{\"a\":[1,2]}}\n\n   \n"
                          "{\"text\":\"bad\",\"label\":\"0\",\"n\":2.5,\"b\":true,\"z\":null}\n",
                          NULL);
    cr_assert_eq(rc, PWB_OK, "%s", s.e.msg);
    cr_assert_eq(s.d.n, 2);
    cr_assert_eq(s.d.ex[1].line, 4);
    cr_assert_str_eq(s.d.ex[0].answer, "positive");
    cr_assert_str_eq(s.d.ex[1].answer, "negative");
    int ix = dataset_field_index(&s.d, "extra");
    cr_assert_str_eq(s.d.ex[0].fields[ix], "{\"a\":[1,2]}");
    cr_assert_null(s.d.ex[1].fields[ix]); /* absent in row 2: padded */
    cr_assert_str_eq(s.d.ex[1].fields[dataset_field_index(&s.d, "n")], "2.5");
    cr_assert_str_eq(s.d.ex[1].fields[dataset_field_index(&s.d, "b")], "true");
    cr_assert_null(s.d.ex[1].fields[dataset_field_index(&s.d, "z")]);
    cr_assert_eq(s.d.ex[0].n_fields, s.d.n_fields);
    scratch_done(&s);
}

Test(loader, jsonl_malformed_line)
{
    scratch s;
    int rc = scratch_load(&s, CARD_JSONL, "d.jsonl",
                          "{\"text\":\"a\",\"label\":1}\n\n{\"text\": \"b\", \"label\": 0,}\n", NULL);
    cr_assert_eq(rc, PWB_EPARSE);
    cr_assert_not_null(strstr(s.e.msg, "d.jsonl:3: malformed JSON"), "%s", s.e.msg);
    scratch_done(&s);
    rc = scratch_load(&s, CARD_JSONL, "d.jsonl", "[1,2]\n", NULL);
    cr_assert_not_null(strstr(s.e.msg, "d.jsonl:1: malformed JSON"), "%s", s.e.msg);
    scratch_done(&s);
    rc = scratch_load(&s, CARD_JSONL, "d.jsonl", "{\"text\":\"a\",\"label\":1} trailing\n", NULL);
    cr_assert_not_null(strstr(s.e.msg, "d.jsonl:1: malformed JSON"), "%s", s.e.msg);
    scratch_done(&s);
}

Test(loader, missing_field_names_card_and_line)
{
    scratch s;
    int rc = scratch_load(&s, CARD_JSONL, "d.jsonl", "{\"text\":\"a\",\"label\":1}\n{\"txt\":\"b\",\"label\":0}\n",
                          NULL);
    cr_assert_eq(rc, PWB_EINVAL);
    cr_assert_not_null(strstr(s.e.msg, "d.jsonl:2: field 'text'"), "%s", s.e.msg);
    cr_assert_not_null(strstr(s.e.msg, "card.json"), "%s", s.e.msg);
    scratch_done(&s);
    /* a CSV header without the column */
    rc = scratch_load(&s,
                      "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"sentence\",\"answer_field\":\"y\","
                      "\"labels\":[\"a\",\"b\"],\"splits\":{\"test\":{\"file\":\"d.csv\"}}}",
                      "d.csv", "text,y\nhello,a\n", NULL);
    cr_assert_eq(rc, PWB_EINVAL);
    cr_assert_not_null(strstr(s.e.msg, "d.csv:2: field 'sentence'"), "%s", s.e.msg);
    cr_assert_not_null(strstr(s.e.msg, "card.json"), "%s", s.e.msg);
    scratch_done(&s);
}

Test(loader, unknown_label)
{
    scratch s;
    int rc = scratch_load(&s, CARD_JSONL, "d.jsonl",
                          "{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":\"maybe\"}\n", NULL);
    cr_assert_eq(rc, PWB_EINVAL);
    cr_assert_not_null(strstr(s.e.msg, "d.jsonl:2: label 'maybe' is not one of the card's labels (0, 1)"), "%s",
                       s.e.msg);
    scratch_done(&s);
}

Test(loader, sha256_and_rows_checked)
{
    scratch s;
    const char *card = "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"text\",\"answer_field\":\"label\","
                       "\"labels\":[\"0\",\"1\"],\"splits\":{\"test\":{\"file\":\"d.jsonl\",\"sha256\":"
                       "\"0000000000000000000000000000000000000000000000000000000000000000\"}}}";
    int rc = scratch_load(&s, card, "d.jsonl", "{\"text\":\"a\",\"label\":1}\n", NULL);
    cr_assert_neq(rc, PWB_OK);
    cr_assert_not_null(strstr(s.e.msg, "sha256 mismatch for d.jsonl"), "%s", s.e.msg);
    scratch_done(&s);
    card = "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"text\",\"answer_field\":\"label\","
           "\"labels\":[\"0\",\"1\"],\"splits\":{\"test\":{\"file\":\"d.jsonl\",\"rows\":3}}}";
    rc = scratch_load(&s, card, "d.jsonl", "{\"text\":\"a\",\"label\":1}\n", NULL);
    cr_assert_neq(rc, PWB_OK);
    cr_assert_not_null(strstr(s.e.msg, "1 examples"), "%s", s.e.msg);
    scratch_done(&s);
}

Test(loader, data_file_not_found_names_what_was_tried)
{
    scratch s;
    int rc = scratch_load(&s, CARD_JSONL, NULL, NULL, NULL);
    cr_assert_eq(rc, PWB_EIO);
    cr_assert_not_null(strstr(s.e.msg, "d.jsonl"), "%s", s.e.msg);
    cr_assert_not_null(strstr(s.e.msg, "card.json"), "%s", s.e.msg);
    scratch_done(&s);
}

#define CARD_CSV                                                                                                       \
    "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"text\",\"answer_field\":\"y\","                   \
    "\"labels\":[\"a\",\"b\"],\"splits\":{\"test\":{\"file\":\"d.csv\"}}}"

Test(loader, csv_rfc4180_edge_cases)
{
    scratch s;
    const char *csv = "\xef\xbb\xbftext,y\r\n"
                      "plain,a\r\n"
                      "\"with, comma\",b\r\n"
                      "\"say \"\"hi\"\"\",a\r\n"
                      "\"two\nlines\",b\n"
                      "\"crlf\r\ninside\",a\n"
                      "\n"
                      "\"\",b\n"
                      "unquoted \"mid\" quote,a\n"
                      "last,b"; /* no final newline */
    int rc = scratch_load(&s, CARD_CSV, "d.csv", csv, NULL);
    cr_assert_eq(rc, PWB_OK, "%s", s.e.msg);
    cr_assert_eq(s.d.n, 8);
    cr_assert_str_eq(s.d.field_names[0], "text"); /* BOM stripped */
    cr_assert_str_eq(s.d.ex[0].input, "plain");
    cr_assert_str_eq(s.d.ex[1].input, "with, comma");
    cr_assert_str_eq(s.d.ex[2].input, "say \"hi\"");
    cr_assert_str_eq(s.d.ex[3].input, "two\nlines");
    cr_assert_str_eq(s.d.ex[4].input, "crlf\r\ninside");
    cr_assert_str_eq(s.d.ex[5].input, "");
    cr_assert_str_eq(s.d.ex[6].input, "unquoted \"mid\" quote");
    cr_assert_str_eq(s.d.ex[7].input, "last");
    cr_assert_str_eq(s.d.ex[7].answer, "b");
    /* line numbers count the newlines inside quoted fields */
    cr_assert_eq(s.d.ex[3].line, 5);
    cr_assert_eq(s.d.ex[4].line, 7);
    cr_assert_eq(s.d.ex[5].line, 10);
    cr_assert_eq(s.d.ex[7].line, 12);
    scratch_done(&s);
}

Test(loader, csv_errors_with_lines)
{
    scratch s;
    int rc = scratch_load(&s, CARD_CSV, "d.csv", "text,y\nok,a\n\"multi\nline\",b\n\"open,a\n", NULL);
    cr_assert_eq(rc, PWB_EPARSE);
    cr_assert_not_null(strstr(s.e.msg, "d.csv:5: unterminated quoted field"), "%s", s.e.msg);
    scratch_done(&s);
    rc = scratch_load(&s, CARD_CSV, "d.csv", "text,y\n\"x\"junk,a\n", NULL);
    cr_assert_not_null(strstr(s.e.msg, "d.csv:2: unexpected character after a closing quote"), "%s", s.e.msg);
    scratch_done(&s);
    rc = scratch_load(&s, CARD_CSV, "d.csv", "text,y\nok,a\nx,b,extra\n", NULL);
    cr_assert_not_null(strstr(s.e.msg, "d.csv:3: expected 2 fields, found 3"), "%s", s.e.msg);
    scratch_done(&s);
    rc = scratch_load(&s, CARD_CSV, "d.csv", "text,y\nok,a\n\"\xff\xfe\",b\n", NULL);
    cr_assert_not_null(strstr(s.e.msg, "d.csv:3: invalid UTF-8"), "%s", s.e.msg);
    scratch_done(&s);
}

Test(loader, tsv_crlf_columns_and_index_fields)
{
    scratch s;
    const char *card = "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"2\",\"answer_field\":\"1\","
                       "\"labels\":[\"x\",\"y\"],\"splits\":{\"test\":{\"file\":\"d.tsv\",\"header\":false}}}";
    int rc = scratch_load(&s, card, "d.tsv", "x\tfirst \"quoted\" text\r\ny\tsecond\r\n\r\n", NULL);
    cr_assert_eq(rc, PWB_OK, "%s", s.e.msg);
    cr_assert_eq(s.d.n, 2);
    cr_assert_str_eq(s.d.ex[0].input, "first \"quoted\" text"); /* TSV: quotes are text */
    cr_assert_str_eq(s.d.ex[1].answer, "y");
    scratch_done(&s);
    rc = scratch_load(&s, card, "d.tsv", "x\ta\ny\tb\tc\n", NULL);
    cr_assert_not_null(strstr(s.e.msg, "d.tsv:2: expected 2 fields, found 3"), "%s", s.e.msg);
    scratch_done(&s);
}

Test(loader, text_format_plain_and_line_pattern)
{
    scratch s;
    const char *card = "{\"name\":\"t\",\"task\":\"free_text\",\"input_field\":\"text\","
                       "\"splits\":{\"test\":{\"file\":\"d.txt\",\"labeled\":false}}}";
    int rc = scratch_load(&s, card, "d.txt", "first line\n\nsecond line\n", NULL);
    cr_assert_eq(rc, PWB_OK, "%s", s.e.msg);
    cr_assert_eq(s.d.n, 2);
    cr_assert_str_eq(s.d.ex[1].input, "second line");
    cr_assert_null(s.d.ex[1].answer);
    scratch_done(&s);
    card = "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"text\",\"answer_field\":\"label\","
           "\"labels\":[\"spam\",\"ham\"],\"splits\":{\"test\":{\"file\":\"d.txt\",\"format\":\"text\","
           "\"line_pattern\":\"^__label__(?<label>\\\\S+) (?<text>.*)$\"}}}";
    rc = scratch_load(&s, card, "d.txt", "__label__ham hello there\n__label__spam buy now\n", NULL);
    cr_assert_eq(rc, PWB_OK, "%s", s.e.msg);
    cr_assert_eq(s.d.n, 2);
    cr_assert_str_eq(s.d.ex[0].input, "hello there");
    cr_assert_str_eq(s.d.ex[1].answer, "spam");
    scratch_done(&s);
    rc = scratch_load(&s, card, "d.txt", "__label__ham hello\nno label here\n", NULL);
    cr_assert_not_null(strstr(s.e.msg, "d.txt:2: line does not match"), "%s", s.e.msg);
    scratch_done(&s);
}

Test(card, validation_errors_name_the_card)
{
    struct {
        const char *json, *want;
    } cases[] = {
        {"{\"name\":\"t\",\"task\":\"sorting\",\"splits\":{}}", "task 'sorting'"},
        {"{\"name\":\"t\",\"task\":\"classification\",\"input_feild\":\"x\"}", "unknown key 'input_feild'"},
        {"{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"x\",\"answer_field\":\"y\","
         "\"labels\":[\"a\",\"a\"],\"splits\":{\"t\":{\"file\":\"f.csv\"}}}",
         "listed twice"},
        {"{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"x\",\"answer_field\":\"y\","
         "\"labels\":[\"a\"],\"splits\":{\"t\":{\"file\":\"f.csv\"}}}",
         "at least two labels"},
        {"{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"x\",\"answer_field\":\"y\","
         "\"labels\":[\"a\",\"b\"],\"splits\":{\"t\":{\"file\":\"f.xml\",\"format\":\"xml\"}}}",
         "format 'xml'"},
        {"{\"name\":\"t\",\"task\":\"numeric\",\"input_field\":\"x\",\"answer_field\":\"y\","
         "\"answer_extract\":\"(unclosed\",\"splits\":{\"t\":{\"file\":\"f.csv\"}}}",
         "answer_extract: bad regex"},
        {"{\"name\":\"t\",\"task\":\"numeric\",\"answer_field\":\"y\",\"splits\":{\"t\":{\"file\":\"f.csv\"}}}",
         "no input_field or input_template"},
        {"{\"name\":\"t\",\"task\":\"numeric\",\"input_template\":\"{{#a}}x\",\"answer_field\":\"y\","
         "\"splits\":{\"t\":{\"file\":\"f.csv\"}}}",
         "never closed"},
        {"{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"x\",\"answer_field\":\"y\","
         "\"labels\":[\"a\",\"b\"],\"splits\":{\"t\":{\"file\":\"f.tsv\",\"label_values\":{\"a\":\"1\"}}}}",
         "label_values has no entry for 'b'"},
        {"{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"x\",\"answer_field\":\"y\","
         "\"labels\":[\"a\",\"b\"],\"eval_split\":\"dev\",\"splits\":{\"t\":{\"file\":\"f.tsv\"}}}",
         "eval_split 'dev'"},
        {"{\"name\":\"t\",\"task\":\"classification\",", "malformed JSON"},
    };
    char dir[64];
    t_mkdtemp(dir, sizeof dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        t_write(dir, "bad.json", cases[i].json);
        ds_card c;
        card_init(&c);
        pwb_err e;
        err_clear(&e);
        cr_assert_neq(card_load(&c, t_path(dir, "bad.json"), &e), PWB_OK, "case %zu loaded", i);
        cr_assert_not_null(strstr(e.msg, cases[i].want), "case %zu: %s", i, e.msg);
        cr_assert_not_null(strstr(e.msg, "bad.json"), "case %zu: %s", i, e.msg);
        card_free(&c);
    }
    t_rmdir(dir);
}

/* A dataset nobody wrote code for: a card and two CSV files made here, run through the generic
 * templates unchanged. */
Test(new_dataset, card_only_no_code)
{
    char dir[64];
    t_mkdtemp(dir, sizeof dir);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/data", dir);
    cr_assert_eq(mkdir(sub, 0755), 0);
    t_write(dir, "data/tickets_train.csv",
            "id,subject,body,team\n"
            "1,Printer jammed,\"The printer on floor 2 jams, again\",hardware\n"
            "2,Password reset,I cannot log in to my account,account\n"
            "3,Monitor flickers,\"The screen flickers when \"\"night mode\"\" is on\",hardware\n"
            "4,Locked out,Too many login attempts,account\n"
            "5,Refund,I was charged twice,billing\n"
            "6,Invoice,Where is my invoice for March?,billing\n");
    t_write(dir, "data/tickets_test.csv",
            "id,subject,body,team\n"
            "7,Keyboard,Keys are sticky,hardware\n"
            "8,2FA,My code never arrives,account\n"
            "9,Charge,Unknown charge on my card,billing\n");
    char cards[128];
    snprintf(cards, sizeof cards, "%s/cards", dir);
    cr_assert_eq(mkdir(cards, 0755), 0);
    t_write(cards, "tickets.json",
            "{\n"
            "  \"name\": \"tickets\",\n"
            "  \"task\": \"classification\",\n"
            "  \"instruction\": \"Route the support ticket to the team that should handle it.\",\n"
            "  \"input_template\": \"Subject: {{subject}}\\n{{body}}\",\n"
            "  \"answer_field\": \"team\",\n"
            "  \"labels\": [\n"
            "    {\"value\": \"hardware\", \"verbalizer\": \"hardware\"},\n"
            "    {\"value\": \"account\", \"verbalizer\": \"account\"},\n"
            "    {\"value\": \"billing\", \"verbalizer\": \"billing\"}\n"
            "  ],\n"
            "  \"splits\": {\n"
            "    \"test\": {\"file\": \"tickets_test.csv\", \"format\": \"csv\"},\n"
            "    \"train\": {\"file\": \"tickets_train.csv\", \"format\": \"csv\"}\n"
            "  }\n"
            "}\n");
    ds_card c;
    card_init(&c);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(card_find(&c, "tickets", cards, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(c.eval_split, "test");
    cr_assert_str_eq(c.few_shot_split, "train");
    ds_data test, train;
    ds_data_init(&test);
    ds_data_init(&train);
    /* the files are found through the data search path, not beside the card */
    cr_assert_eq(dataset_load(&c, NULL, sub, &test, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(dataset_load(&c, "train", sub, &train, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(test.n, 3);
    cr_assert_str_eq(test.ex[0].input, "Subject: Keyboard\nKeys are sticky");
    cr_assert_str_eq(train.ex[2].input, "Subject: Monitor flickers\nThe screen flickers when \"night mode\" is on");
    const char *tpls[] = {"templates/zero-shot.tmpl", "templates/few-shot.tmpl", "templates/cot.tmpl",
                          "templates/role.tmpl"};
    for (int i = 0; i < 4; i++) {
        pwb_template t;
        template_init(&t);
        cr_assert_eq(template_load(&t, t_repo(tpls[i]), &e), PWB_OK, "%s", e.msg);
        cr_assert_eq(template_check(&t, &c, &e), PWB_OK, "%s: %s", tpls[i], e.msg);
        size_t rows[8];
        const ds_example *shots[8];
        if (t.shots > 3)
            t.shots = 3; /* one per label in this tiny train split */
        cr_assert_eq(template_pick_shots(&t, &c, &train, 0, 0, 1, rows, &e), PWB_OK, "%s", e.msg);
        for (int k = 0; k < t.shots; k++)
            shots[k] = &train.ex[rows[k]];
        tpl_prompt p;
        cr_assert_eq(template_render(&t, &c, &test.ex[1], shots, t.shots, &p, &e), PWB_OK, "%s", e.msg);
        pwb_buf flat;
        buf_init(&flat);
        tpl_prompt_flatten(&p, &flat);
        cr_assert_not_null(strstr(flat.data, "Subject: 2FA\nMy code never arrives"), "%s", flat.data);
        cr_assert_not_null(strstr(flat.data, "hardware, account or billing"), "%s", flat.data);
        cr_assert_not_null(strstr(flat.data, "Route the support ticket"), "%s", flat.data);
        if (t.shots) {
            int seen[3] = {0};
            for (int k = 0; k < t.shots; k++)
                seen[train.ex[rows[k]].label]++;
            cr_assert(seen[0] == 1 && seen[1] == 1 && seen[2] == 1, "balanced shots");
            cr_assert_not_null(strstr(flat.data, "Answer: billing"), "%s", flat.data);
        }
        buf_free(&flat);
        tpl_prompt_free(&p);
        template_free(&t);
    }
    ds_data_free(&test);
    ds_data_free(&train);
    card_free(&c);
    t_rmdir(dir);
}

/* A NUL byte cannot be stored: raw in any format, or as JSON's \u0000, it is an error naming the
 * file and line (not a field cut short). A literal backslash-u in TSV is just text. */
Test(loader, nul_bytes_refused_with_file_and_line)
{
    static const struct {
        const char *card, *file, *data;
        size_t len;
        const char *where;
    } cases[] = {
        {CARD_JSONL, "d.jsonl", "{\"text\":\"ok\",\"label\":1}\n{\"text\":\"a\\u0000b\",\"label\":0}\n", 0, "d.jsonl:2:"},
        {CARD_JSONL, "d.jsonl", "{\"text\":\"ok\",\"label\":1}\n\n{\"text\":\"a\0b\",\"label\":0}\n", 43, "d.jsonl:3:"},
        {"{\"name\":\"t\",\"task\":\"free_text\",\"input_field\":\"q\",\"answer_field\":\"a\","
         "\"splits\":{\"test\":{\"file\":\"d.tsv\",\"format\":\"tsv\",\"header\":true}}}",
         "d.tsv", "q\ta\nx\ty\nbad\0\tz\n", 16, "d.tsv:3:"},
        {"{\"name\":\"t\",\"task\":\"free_text\",\"input_field\":\"q\",\"answer_field\":\"a\","
         "\"splits\":{\"test\":{\"file\":\"d.csv\",\"format\":\"csv\",\"header\":true}}}",
         "d.csv", "q,a\n\"x\0\",y\n", 12, "d.csv:2:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        scratch s;
        t_mkdtemp(s.dir, sizeof s.dir);
        t_write(s.dir, "card.json", cases[i].card);
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", s.dir, cases[i].file);
        FILE *f = fopen(p, "wb");
        cr_assert_not_null(f);
        size_t n = cases[i].len ? cases[i].len : strlen(cases[i].data);
        fwrite(cases[i].data, 1, n, f);
        fclose(f);
        card_init(&s.c);
        ds_data_init(&s.d);
        err_clear(&s.e);
        cr_assert_eq(card_load(&s.c, t_path(s.dir, "card.json"), &s.e), PWB_OK, "%s", s.e.msg);
        int rc = dataset_load(&s.c, NULL, "", &s.d, &s.e);
        cr_expect_eq(rc, PWB_EPARSE, "case %zu loaded (%d rows)", i, (int)s.d.n);
        cr_expect(strstr(s.e.msg, cases[i].where) && strstr(s.e.msg, "NUL"), "case %zu: %s", i, s.e.msg);
        scratch_done(&s);
    }
    scratch s;
    int rc = scratch_load(&s, "{\"name\":\"t\",\"task\":\"free_text\",\"input_field\":\"q\",\"answer_field\":\"a\","
                              "\"splits\":{\"test\":{\"file\":\"d.tsv\",\"format\":\"tsv\",\"header\":true}}}",
                          "d.tsv", "q\ta\nsee \\u0000 here\ty\n", NULL);
    cr_assert_eq(rc, PWB_OK, "%s", s.e.msg);
    cr_assert_str_eq(s.d.ex[0].input, "see \\u0000 here");
    scratch_done(&s);
    rc = scratch_load(&s, CARD_JSONL, "d.jsonl", "{\"text\":\"a\\\\u0000b\",\"label\":0}\n", NULL);
    cr_assert_eq(rc, PWB_OK, "an escaped backslash then u0000 is text: %s", s.e.msg);
    cr_assert_str_eq(s.d.ex[0].input, "a\\u0000b");
    scratch_done(&s);
}

/* A card names its data inside the data folders: no "..", no absolute path unless trusted. */
Test(loader, card_data_path_stays_inside)
{
    static const char *files[] = {"../d.jsonl", "x/../../d.jsonl", "/etc/hostname"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char card[512];
        snprintf(card, sizeof card,
                 "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"text\",\"answer_field\":\"label\","
                 "\"labels\":[\"a\",\"b\"],\"splits\":{\"test\":{\"file\":\"%s\",\"format\":\"jsonl\"}}}",
                 files[i]);
        scratch s;
        int rc = scratch_load(&s, card, "d.jsonl", "{\"text\":\"x\",\"label\":\"a\"}\n", NULL);
        cr_expect_eq(rc, PWB_EINVAL, "'%s' was not refused: %s", files[i], s.e.msg);
        cr_expect(strstr(s.e.msg, files[i]), "%s", s.e.msg);
        scratch_done(&s);
    }
    /* trusted: an absolute path is fine */
    scratch s;
    t_mkdtemp(s.dir, sizeof s.dir);
    t_write(s.dir, "d.jsonl", "{\"text\":\"x\",\"label\":\"a\"}\n");
    char card[512];
    snprintf(card, sizeof card,
             "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"text\",\"answer_field\":\"label\","
             "\"labels\":[\"a\",\"b\"],\"splits\":{\"test\":{\"file\":\"%s/d.jsonl\",\"format\":\"jsonl\"}}}",
             s.dir);
    t_write(s.dir, "card.json", card);
    card_init(&s.c);
    ds_data_init(&s.d);
    cr_assert_eq(card_load(&s.c, t_path(s.dir, "card.json"), &s.e), PWB_OK, "%s", s.e.msg);
    cr_assert_eq(dataset_load(&s.c, NULL, "", &s.d, &s.e), PWB_EINVAL);
    cr_expect(strstr(s.e.msg, "absolute path") && strstr(s.e.msg, "sha256"), "%s", s.e.msg);
    setenv("PWB_TRUST_CARDS", "1", 1);
    cr_assert_eq(dataset_load(&s.c, NULL, "", &s.d, &s.e), PWB_OK, "%s", s.e.msg);
    unsetenv("PWB_TRUST_CARDS");
    scratch_done(&s);
}

/* A card that pins the file's sha256 may name it by absolute path (what `dataset import` writes
 * for a file outside the data folders): only a file whose exact content the card's author knew
 * loads, and a wrong hash stops the load before any row. */
Test(loader, pinned_absolute_path_loads)
{
    static const char data[] = "{\"text\":\"x\",\"label\":\"a\"}\n";
    char hex[65];
    sha256_hex(data, strlen(data), hex);
    const char *pins[] = {hex, "0000000000000000000000000000000000000000000000000000000000000000", hex};
    for (int i = 0; i < 3; i++) {
        scratch s;
        t_mkdtemp(s.dir, sizeof s.dir);
        t_write(s.dir, "d.jsonl", data);
        char file[1024], card[2048];
        snprintf(file, sizeof file, "%s/d.jsonl", s.dir);
        if (i == 2)
            snprintf(file, sizeof file, "/dev/null"); /* not a regular file: never hashed */
        snprintf(card, sizeof card,
                 "{\"name\":\"t\",\"task\":\"classification\",\"input_field\":\"text\",\"answer_field\":\"label\","
                 "\"labels\":[\"a\",\"b\"],\"splits\":{\"test\":{\"file\":\"%s\",\"format\":\"jsonl\","
                 "\"sha256\":\"%s\"}}}",
                 file, pins[i]);
        t_write(s.dir, "card.json", card);
        card_init(&s.c);
        ds_data_init(&s.d);
        cr_assert_eq(card_load(&s.c, t_path(s.dir, "card.json"), &s.e), PWB_OK, "%s", s.e.msg);
        int rc = dataset_load(&s.c, NULL, "", &s.d, &s.e);
        if (i == 0) {
            cr_expect_eq(rc, PWB_OK, "%s", s.e.msg);
            cr_expect_eq(s.d.n, 1);
            cr_expect_eq(dataset_verify(&s.c, "", &s.e), PWB_OK, "%s", s.e.msg);
        } else {
            cr_expect_neq(rc, PWB_OK, "case %d loaded", i);
            cr_expect_eq(s.d.n, 0);
            cr_expect(strstr(s.e.msg, i == 1 ? "sha256 mismatch" : "not a regular file"), "%s", s.e.msg);
            cr_expect_neq(dataset_verify(&s.c, "", &s.e), PWB_OK);
        }
        scratch_done(&s);
    }
}
