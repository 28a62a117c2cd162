/* Input handling end to end: bad input stops pwb before the database with one file:line error;
 * datasets pwb has never seen run with the generic templates after writing (or importing) a card. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integration/harness.h"

static const char *const generic[] = {"zero-shot=zero-shot", "few-shot=few-shot", "cot=cot", "role=role", NULL};
static const char *const fake_labels[] = {"--prefix", "Answer: ", NULL};

static void write_in(const char *dir, const char *name, const char *text)
{
    char *p = it_path(dir, name);
    it_write(p, text);
    free(p);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A card for a two-label JSONL file: input "text", answer "label" (pos/neg) unless overridden. */
static void write_card(const char *dir, const char *name, const char *file, const char *input_field)
{
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\n  \"name\": \"%s\",\n  \"task\": \"classification\",\n  \"instruction\": \"Classify the text.\",\n"
             "  \"input_field\": \"%s\",\n  \"answer_field\": \"label\",\n"
             "  \"labels\": [{\"value\": \"pos\", \"verbalizer\": \"positive\"}, "
             "{\"value\": \"neg\", \"verbalizer\": \"negative\"}],\n"
             "  \"splits\": {\"dev\": {\"file\": \"%s\", \"format\": \"jsonl\"}}\n}\n",
             name, input_field, file);
    char fn[256];
    snprintf(fn, sizeof fn, "%s.json", name);
    write_in(dir, fn, buf);
}

typedef struct bad_case {
    const char *what, *dataset, *tmpl, *where;
} bad_case;

Test(inputs, bad_input_names_file_and_line_and_leaves_db_alone, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    cr_assert_eq(fake_start(&f, dir, fake_labels), 0);
    write_in(dir, "good.jsonl", "{\"text\": \"a fine film\", \"label\": \"pos\"}\n{\"text\": \"dull\", \"label\": \"neg\"}\n");
    write_in(dir, "malformed.jsonl",
             "{\"text\": \"a fine film\", \"label\": \"pos\"}\n{\"text\": \"dull\", \"label\": \"neg\"}\n"
             "{\"text\": \"broken, \"label\": \"neg\"}\n{\"text\": \"fine\", \"label\": \"pos\"}\n");
    write_in(dir, "outside.jsonl",
             "{\"text\": \"a fine film\", \"label\": \"pos\"}\n{\"text\": \"dull\", \"label\": \"neg\"}\n"
             "{\"text\": \"so-so\", \"label\": \"neutral\"}\n");
    write_card(dir, "good", "good.jsonl", "text");
    write_card(dir, "malformed", "malformed.jsonl", "text");
    write_card(dir, "outside", "outside.jsonl", "text");
    write_card(dir, "nofield", "good.jsonl", "review"); /* the file has no "review" */
    write_in(dir, "unknown-var.tmpl", "name: unknown-var\nkind: zero-shot\ntask: classification\n---\n"
                                      "{{instruction}}\n\nText: {{input}}\n{{sentiment_hint}}\n");

    /* A database that exists already, from a good run. */
    char *db = it_path(dir, "results.db");
    const char *const zs[] = {"zero-shot=zero-shot", NULL};
    char *good = it_suite(dir, "good-suite.json", "good", NULL, 0, &f, 2, 0, zs);
    proc_out p = it_run((const char *const[]){it_pwb(), "run", good, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    proc_out_free(&p);
    char before[65], after[65];
    it_sha256(db, before);
    cr_assert(before[0]);

    const bad_case cases[] = {
        {"template with an unknown variable", "good", "unknown-var.tmpl", "unknown-var.tmpl:8:"},
        {"card naming a missing field", "nofield", "zero-shot", "good.jsonl:1:"},
        {"malformed JSONL row", "malformed", "zero-shot", "malformed.jsonl:3:"},
        {"label outside the card", "outside", "zero-shot", "outside.jsonl:3:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        char method[128], file[64];
        snprintf(method, sizeof method, "m=%s", c->tmpl);
        snprintf(file, sizeof file, "bad-%zu.json", i);
        char *suite = it_suite(dir, file, c->dataset, NULL, 0, &f, 2, 0, (const char *const[]){method, NULL});
        /* into the existing database: unchanged */
        p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, NULL});
        cr_assert_eq(p.status, 3, "%s: exit %d, %s", c->what, p.status, p.err);
        cr_assert(strstr(p.err, c->where), "%s: no '%s' in: %s", c->what, c->where, p.err);
        cr_assert(strncmp(p.err, "pwb: ", 5) == 0 && count_lines(p.err) == 1, "%s: not one line: %s", c->what, p.err);
        cr_assert_str_eq(p.out, "", "%s: printed %s", c->what, p.out);
        proc_out_free(&p);
        it_sha256(db, after);
        cr_assert_str_eq(before, after, "%s: the database changed", c->what);
        /* into a database that does not exist yet: not created */
        char *fresh = it_path(dir, "new/never.db");
        p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", fresh, NULL});
        cr_assert_eq(p.status, 3, "%s: exit %d", c->what, p.status);
        cr_assert(!it_exists(fresh), "%s: created %s", c->what, fresh);
        proc_out_free(&p);
        free(fresh);
        free(suite);
    }
    fake_stop(&f);
    it_rmtree(dir);
    free(good);
    free(db);
    free(dir);
}

/* A CSV with quoted fields (commas, doubled quotes, a line break) that pwb has never seen: a
 * card, then the four generic templates. */
Test(inputs, unseen_csv_dataset_runs_with_generic_templates, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const fake[] = {"--answer-from", "favourable,unfavourable", "--prefix", "Answer: ", NULL};
    cr_assert_eq(fake_start(&f, dir, fake), 0);
    static const char *good[] = {"Loved it, \"\"truly\"\" great", "Warm, funny and wise", "A delight",
                                 "Sharp writing,\nfine acting", "Best of the year"};
    static const char *bad[] = {"Dull, slow, \"\"meh\"\"", "A waste of time", "Nothing works", "Too long",
                                "Flat and lifeless"};
    for (int split = 0; split < 2; split++) {
        char *path = it_path(dir, split ? "test.csv" : "train.csv");
        FILE *o = fopen(path, "w");
        cr_assert(o);
        fprintf(o, "id,review,rating\r\n");
        int n = split ? 40 : 20;
        for (int i = 0; i < n; i++)
            fprintf(o, "%d,\"%s (%d)\",%s\r\n", i, i % 2 ? bad[i % 5] : good[i % 5], i, i % 2 ? "1 star" : "5 stars");
        fclose(o);
        free(path);
    }
    write_in(dir, "reviews.json",
             "{\n  \"name\": \"reviews\",\n  \"task\": \"classification\",\n"
             "  \"instruction\": \"Is this product review favourable or unfavourable?\",\n"
             "  \"input_field\": \"review\",\n  \"answer_field\": \"rating\",\n"
             "  \"labels\": [{\"value\": \"5 stars\", \"verbalizer\": \"favourable\"},\n"
             "             {\"value\": \"1 star\", \"verbalizer\": \"unfavourable\"}],\n"
             "  \"splits\": {\"train\": {\"file\": \"train.csv\", \"format\": \"csv\"},\n"
             "             \"test\": {\"file\": \"test.csv\", \"format\": \"csv\"}}\n}\n");
    char *suite = it_suite(dir, "reviews-suite.json", "reviews", NULL, 0, &f, 8, 2, generic);
    char *db = it_path(dir, "results.db");
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_summary WHERE dataset = 'reviews' AND split = 'test' AND n = 40"),
                 4);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE valid = 0 OR error IS NOT NULL"), 0);
    char *in = it_sql_text(db, "SELECT input FROM examples WHERE dataset = 'reviews' AND row = 0");
    cr_assert(in && strcmp(in, "Loved it, \"truly\" great (0)") == 0, "quoted CSV field read as: %s", in);
    free(in);
    in = it_sql_text(db, "SELECT input FROM examples WHERE dataset = 'reviews' AND row = 8");
    cr_assert(in && strstr(in, "Sharp writing,\nfine acting"), "multi-line field read as: %s", in);
    free(in);
    /* few-shot examples come from train.csv, never the test rows */
    char *prompt = it_sql_text(db, "SELECT prompt FROM v_predictions WHERE method = 'few-shot' AND row = 0");
    cr_assert(prompt && strstr(prompt, "Answer: favourable") && strstr(prompt, "Answer: unfavourable"), "%s", prompt);
    free(prompt);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}

/* `pwb dataset import` writes the card for JSONL, headerless TSV and fastText-style text files;
 * each then runs with the generic templates. */
Test(inputs, imported_datasets_run, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const fake[] = {"--prefix", "Answer: ", "--answer-from", "sports,politics,spam,ham,billing,bug", NULL};
    cr_assert_eq(fake_start(&f, dir, fake), 0);
    char *jl = it_path(dir, "news.jsonl"), *tsv = it_path(dir, "tickets.tsv"), *txt = it_path(dir, "sms.txt");
    FILE *a = fopen(jl, "w"), *b = fopen(tsv, "w"), *c = fopen(txt, "w");
    cr_assert(a && b && c);
    for (int i = 0; i < 30; i++) {
        fprintf(a, "{\"id\": %d, \"headline\": \"%s story number %d about the week's events\", \"topic\": \"%s\"}\n", i,
                i % 2 ? "Parliament" : "Cup final", i, i % 2 ? "politics" : "sports");
        fprintf(b, "%s\tCustomer %d writes: %s\n", i % 3 ? "billing" : "bug", i,
                i % 3 ? "I was charged twice this month" : "the app crashes on start");
        fprintf(c, "__label__%s %s %d\n", i % 4 ? "ham" : "spam", i % 4 ? "see you at lunch" : "WIN a FREE prize now", i);
    }
    fclose(a);
    fclose(b);
    fclose(c);
    struct {
        const char *file, *name, *input, *answer;
        int rows;
    } cases[] = {{jl, "news", "\"input_field\": \"headline\"", "\"answer_field\": \"topic\"", 30},
                 {tsv, "tickets", "\"input_field\": \"text\"", "\"answer_field\": \"label\"", 30},
                 {txt, "sms", "\"input_field\": \"text\"", "\"answer_field\": \"label\"", 30}};
    char *db = it_path(dir, "results.db");
    for (int i = 0; i < 3; i++) {
        char card[256];
        snprintf(card, sizeof card, "%s/%s.json", dir, cases[i].name);
        proc_out p = it_run((const char *const[]){it_pwb(), "dataset", "import", cases[i].file, "--name", cases[i].name,
                                                  "-o", card, NULL});
        cr_assert_eq(p.status, 0, "import %s: %s", cases[i].name, p.err);
        proc_out_free(&p);
        char *text = it_read(card);
        cr_assert(text && strstr(text, cases[i].input) && strstr(text, cases[i].answer), "%s card:\n%s",
                  cases[i].name, text);
        free(text);
        p = it_run((const char *const[]){it_pwb(), "dataset", "import", cases[i].file, "-o", card, NULL});
        cr_assert_eq(p.status, 3, "an existing card is not overwritten without --force");
        proc_out_free(&p);
        char sfile[64];
        snprintf(sfile, sizeof sfile, "%s-suite.json", cases[i].name);
        char *suite = it_suite(dir, sfile, cases[i].name, NULL, 0, &f, 8, 2, generic);
        p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
        cr_assert_eq(p.status, 0, "run %s: %s%s", cases[i].name, p.out, p.err);
        proc_out_free(&p);
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM v_summary WHERE dataset = '%s' AND n = %d", cases[i].name,
                 cases[i].rows);
        cr_assert_eq(it_sql_long(db, sql), 4, "%s: every generic template ran every row", cases[i].name);
        free(suite);
    }
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0);
    fake_stop(&f);
    it_rmtree(dir);
    free(jl);
    free(tsv);
    free(txt);
    free(db);
    free(dir);
}
