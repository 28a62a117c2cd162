/* Benchmarks in their own format, end to end: a multiple-choice set in the Hugging Face layout, a
 * TREC-style "LABEL:fine text" file and a two-field entailment JSONL each run with only an
 * imported card and the generic templates; bad cards and overlapping slices stop pwb before the
 * database with one error naming the file. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "integration/harness.h"

static int one_line(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n == 1;
}

static char *import_card(const char *dir, const char *file, const char *name, const char *input)
{
    char *data = it_path(dir, file), *card = NULL;
    char out[64];
    snprintf(out, sizeof out, "%s.json", name);
    card = it_path(dir, out);
    const char *argv[] = {it_pwb(), "dataset", "import", data, "--name", name, "-o", card, input ? "-i" : NULL, input,
                          NULL};
    proc_out p = it_run(argv);
    cr_assert_eq(p.status, 0, "import %s: %s", file, p.err);
    proc_out_free(&p);
    free(data);
    return card;
}

Test(formats, three_unseen_layouts_run_with_only_a_card, .timeout = 180)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const fake[] = {"--prefix", "Answer: ", "--answer-from", "A,B,C,D,DESC,ENTY,LOC,NUM,entailment,contradiction",
                                NULL};
    cr_assert_eq(fake_start(&f, dir, fake), 0);
    char *mc = it_path(dir, "arc.jsonl"), *trec = it_path(dir, "trec.txt"), *nli = it_path(dir, "nli.jsonl");
    FILE *a = fopen(mc, "w"), *b = fopen(trec, "w"), *c = fopen(nli, "w");
    cr_assert(a && b && c);
    static const char *coarse[] = {"DESC:manner How did", "ENTY:animal What animal", "LOC:city Where is",
                                   "NUM:date When was"};
    for (int i = 0; i < 24; i++) {
        fprintf(a, "{\"id\": \"q%d\", \"question\": \"Which of these, number %d, is a fruit?\", \"choices\": "
                   "{\"label\": [\"A\", \"B\", \"C\", \"D\"], \"text\": [\"pear %d\", \"brick\", \"chair\", "
                   "\"door\"]}, \"answerKey\": \"%c\"}\n",
                i, i, i, "ABCD"[i % 4]);
        fprintf(b, "%s question %d ?\n", coarse[i % 4], i);
        fprintf(c, "{\"premise\": \"A man plays a guitar on stage (%d).\", \"hypothesis\": \"%s\", \"label\": \"%s\"}\n",
                i, i % 2 ? "Nobody plays anything." : "A man makes music.", i % 2 ? "contradiction" : "entailment");
    }
    fclose(a);
    fclose(b);
    fclose(c);
    char *cards[3] = {import_card(dir, "arc.jsonl", "arc", NULL), import_card(dir, "trec.txt", "trec", NULL),
                      import_card(dir, "nli.jsonl", "nli", "{{premise}} {{hypothesis}}")};
    char *text = it_read(cards[0]);
    cr_assert(text && strstr(text, "\"multiple_choice\"") && strstr(text, "\"choices.text\"") &&
                  strstr(text, "\"answerKey\""),
              "%s", text);
    free(text);
    text = it_read(cards[1]);
    cr_assert(text && strstr(text, "(?<fine>") && strstr(text, "\"DESC\""), "%s", text);
    free(text);
    text = it_read(cards[2]);
    cr_assert(text && strstr(text, "\"input_template\": \"{{premise}} {{hypothesis}}\""), "%s", text);
    free(text);
    const char *const mc_methods[] = {"zero-shot=mc-zero-shot", "few-shot=mc-few-shot", "cot=mc-cot", "role=mc-role",
                                      NULL};
    const char *const cls_methods[] = {"zero-shot=zero-shot", "few-shot=few-shot", "cot=cot", "role=role", NULL};
    const char *names[] = {"arc", "trec", "nli"};
    char *db = it_path(dir, "results.db");
    for (int i = 0; i < 3; i++) {
        char sfile[64];
        snprintf(sfile, sizeof sfile, "%s-suite.json", names[i]);
        char *suite = it_suite(dir, sfile, names[i], NULL, 0, &f, 8, 2, i == 0 ? mc_methods : cls_methods);
        proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
        cr_assert_eq(p.status, 0, "run %s: %s%s", names[i], p.out, p.err);
        proc_out_free(&p);
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM v_summary WHERE dataset = '%s' AND n = 24", names[i]);
        cr_assert_eq(it_sql_long(db, sql), 4, "%s: every generic template ran every row", names[i]);
        free(suite);
    }
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0);
    char *prompt = it_sql_text(db, "SELECT prompt FROM v_predictions WHERE dataset = 'arc' AND method = 'zero-shot'"
                                   " AND row = 3");
    cr_assert(prompt && strstr(prompt, "A. pear 3\nB. brick\nC. chair\nD. door"), "%s", prompt);
    free(prompt);
    prompt = it_sql_text(db, "SELECT prompt FROM v_predictions WHERE dataset = 'nli' AND method = 'zero-shot' AND row = 1");
    cr_assert(prompt && strstr(prompt, "stage (1). Nobody plays anything."), "%s", prompt);
    free(prompt);
    cr_assert_gt(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE dataset = 'arc' AND valid = 1"), 0);
    fake_stop(&f);
    for (int i = 0; i < 3; i++)
        free(cards[i]);
    it_rmtree(dir);
    free(mc);
    free(trec);
    free(nli);
    free(db);
    free(dir);
}

static const char *mc_card_text =
    "{\"name\": \"mc\", \"task\": \"multiple_choice\", \"input_field\": \"question\",\n"
    " \"options\": {\"text\": \"choices.text\", \"label\": \"choices.label\"},\n"
    " \"answer_field\": \"answerKey\", \"labels\": [\"A\", \"B\", \"C\"],\n"
    " \"splits\": {\"dev\": {\"file\": \"mc.jsonl\"}}}\n";

static void write_mc(const char *dir, const char *bad_row)
{
    char *p = it_path(dir, "mc.jsonl");
    FILE *o = fopen(p, "w");
    cr_assert(o);
    for (int i = 0; i < 10; i++)
        fprintf(o, "{\"question\": \"q%d\", \"choices\": {\"label\": [\"A\", \"B\", \"C\"], \"text\": [\"x\", \"y\", "
                   "\"z\"]}, \"answerKey\": \"B\"}\n",
                i);
    if (bad_row)
        fprintf(o, "%s\n", bad_row);
    fclose(o);
    free(p);
}

/* The 1-based line of the first line holding needle, 0 when none. */
static int line_of(const char *text, const char *needle)
{
    const char *at = strstr(text, needle);
    int line = 1;
    for (const char *p = text; at && p < at; p++)
        line += *p == '\n';
    return at ? line : 0;
}

Test(formats, bad_cards_and_overlapping_slices_stop_before_the_database, .timeout = 120)
{
    char *dir = it_tmpdir();
    char *card = it_path(dir, "mc.json");
    it_write(card, mc_card_text);
    const char *const zs[] = {"zero-shot=mc-zero-shot", NULL};
    const char *const fs[] = {"few-shot=mc-few-shot", NULL};
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s/models/tinystories-656k/TinyStories-656K-Q8_0.gguf",
             it_env("PWB_SHARED", "../shared"));
    struct {
        const char *what, *bad_row, *split, *shot_split, *want, *key;
        const char *const *methods;
        int train; /* a soft prompt trained on shot_split (a local model) */
    } cases[] = {
        {"an option list of the wrong length",
         "{\"question\": \"q\", \"choices\": {\"label\": [\"A\", \"B\"], \"text\": [\"x\", \"y\"]}, \"answerKey\": \"A\"}",
         NULL, NULL, "mc.jsonl:11: 2 options in 'choices.text'", NULL, zs, 0},
        {"an answer key not among the options",
         "{\"question\": \"q\", \"choices\": {\"label\": [\"A\", \"B\", \"C\"], \"text\": [\"x\", \"y\", \"z\"]}, "
         "\"answerKey\": \"E\"}",
         NULL, NULL, "mc.jsonl:11: answer key 'E' is not among the options", NULL, zs, 0},
        {"shots overlapping the evaluated rows", NULL, "dev[0:8]", "dev[5:10]",
         "dataset 'mc': 3 of the evaluated rows (split 'dev[0:8]') are also few-shot rows (split 'dev[5:10]')",
         "\"shot_split\"", fs, 0},
        {"a training slice overlapping the evaluated rows", NULL, "dev[0:8]", "dev[5:10]",
         "dataset 'mc': 3 of the evaluated rows (split 'dev[0:8]') are also training rows (split 'dev[5:10]')",
         "\"train_split\"", zs, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_mc(dir, cases[i].bad_row);
        char *suite = NULL;
        if (cases[i].train) {
            if (!it_exists(tiny)) {
                cr_log_warn("no %s: the training-slice case is skipped", tiny);
                continue;
            }
            char text[4096];
            snprintf(text, sizeof text,
                     "{\n  \"name\": \"bad\", \"seed\": 7,\n  \"datasets\": [{\"name\": \"mc\", \"split\": \"%s\"}],\n"
                     "  \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\"}],\n"
                     "  \"methods\": [{\"name\": \"soft\", \"template\": \"mc-zero-shot\",\n"
                     "               \"soft_prompt\": {\"tokens\": 2,\n                               \"train_split\": \"%s\"}}]\n}\n",
                     cases[i].split, tiny, cases[i].shot_split);
            suite = it_path(dir, "bad-suite.json");
            it_write(suite, text);
        } else {
            suite = it_suite(dir, "bad-suite.json", "mc", cases[i].split, 0, NULL, 1, 0, cases[i].methods);
        }
        if (cases[i].shot_split && !cases[i].train) { /* add the dataset's shot_split on a line of its own */
            char *s = it_read(suite);
            cr_assert_not_null(s);
            char *at = strstr(s, "\"split\"");
            cr_assert_not_null(at);
            char buf[4096];
            snprintf(buf, sizeof buf, "%.*s\n    \"shot_split\": \"%s\", %s", (int)(at - s), s, cases[i].shot_split, at);
            it_write(suite, buf);
            free(s);
        }
        /* a data error names the data file and line; a slice error the suite and the line naming the slice */
        char want[512];
        snprintf(want, sizeof want, "%s", cases[i].want);
        if (cases[i].key) {
            char *s = it_read(suite);
            cr_assert_not_null(s);
            int line = line_of(s, cases[i].key);
            cr_assert_gt(line, 1);
            snprintf(want, sizeof want, "bad-suite.json:%d: %s", line, cases[i].want);
            free(s);
        }
        char *db = it_path(dir, "never/results.db");
        proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, NULL});
        cr_assert_eq(p.status, 3, "%s: exit %d: %s", cases[i].what, p.status, p.err);
        cr_assert(strstr(p.err, want), "%s: no '%s' in: %s", cases[i].what, want, p.err);
        cr_assert(one_line(p.err), "%s: not one line: %s", cases[i].what, p.err);
        cr_assert(!it_exists(db), "%s: created the database", cases[i].what);
        proc_out_free(&p);
        free(db);
        free(suite);
    }
    it_rmtree(dir);
    free(card);
    free(dir);
}

/* A file outside the card's folder and the data path: the imported card names it by absolute path
 * and pins its sha256, so it loads without PWB_TRUST_CARDS (nothing else could be read through it),
 * and a changed file is refused. */
Test(formats, import_of_a_file_elsewhere_loads_through_its_card, .timeout = 60)
{
    char *dir = it_tmpdir();
    char *data = it_path(dir, "elsewhere/reviews.jsonl"), *card = it_path(dir, "cards/reviews.json");
    char *sub = it_path(dir, "elsewhere");
    cr_assert_eq(mkdir(sub, 0755), 0);
    it_write(data, "{\"text\": \"a good film\", \"label\": \"pos\"}\n{\"text\": \"a dull film\", \"label\": \"neg\"}\n");
    unsetenv("PWB_TRUST_CARDS");
    proc_out p = it_run((const char *const[]){it_pwb(), "dataset", "import", data, "-o", card, NULL});
    cr_assert_eq(p.status, 0, "import: %s", p.err);
    proc_out_free(&p);
    char *text = it_read(card);
    cr_assert(text && strstr(text, data) && strstr(text, "\"sha256\""), "%s", text);
    free(text);
    p = it_run((const char *const[]){it_pwb(), "dataset", "check", card, NULL});
    cr_assert_eq(p.status, 0, "check: %s%s", p.out, p.err);
    cr_assert(strstr(p.out, "2 rows"), "%s", p.out);
    proc_out_free(&p);
    FILE *o = fopen(data, "a");
    cr_assert_not_null(o);
    fputs("{\"text\": \"another\", \"label\": \"neg\"}\n", o);
    fclose(o);
    p = it_run((const char *const[]){it_pwb(), "dataset", "check", card, NULL});
    cr_assert_eq(p.status, 3, "a changed file loaded: %s%s", p.out, p.err);
    cr_assert(strstr(p.err, "sha256 mismatch"), "%s", p.err);
    proc_out_free(&p);
    it_rmtree(dir);
    free(sub);
    free(data);
    free(card);
    free(dir);
}

/* Calibration and LoRA on multiple-choice cells (a local model): contextual and pmi calibration of
 * the letters (the content-free prompt keeps its lettered options), a LoRA adapter trained on a
 * held-out slice; calibrating a template that ranks each row's own option texts is refused before
 * the database. */
Test(formats, calibration_and_lora_on_multiple_choice_cells, .timeout = 120)
{
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s/models/tinystories-656k/TinyStories-656K-Q8_0.gguf",
             it_env("PWB_SHARED", "../shared"));
    if (!it_exists(tiny))
        cr_skip("no %s", tiny);
    char *dir = it_tmpdir();
    char *card = it_path(dir, "mc.json");
    it_write(card, mc_card_text);
    write_mc(dir, NULL);
    char text[4096];
    snprintf(text, sizeof text,
             "{\"name\": \"mc-calib\", \"seed\": 3,\n"
             " \"datasets\": [{\"name\": \"mc\", \"split\": \"dev@1[4:]\", \"shot_split\": \"dev@1[:4]\"}],\n"
             " \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\"}],\n"
             " \"methods\": [{\"name\": \"plain\", \"template\": \"mc-zero-shot\", \"scoring\": \"rank\"},\n"
             "   {\"name\": \"contextual\", \"template\": \"mc-zero-shot\", \"scoring\": \"rank\", \"calibration\": \"contextual\"},\n"
             "   {\"name\": \"pmi\", \"template\": \"mc-lmeval\", \"scoring\": \"rank\", \"calibration\": \"pmi\"},\n"
             "   {\"name\": \"lora\", \"template\": \"mc-zero-shot\",\n"
             "    \"lora\": {\"r\": 2, \"steps\": 2, \"batch\": 2, \"train_split\": \"dev@1[:4]\", \"eval_n\": 0}}]}\n",
             tiny);
    char *suite = it_path(dir, "calib.json"), *db = it_path(dir, "results.db");
    it_write(suite, text);
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_summary WHERE n = 6"), 4);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cells WHERE calib_prior IS NOT NULL"), 2);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0);
    char *cf = it_sql_text(db, "SELECT prompt FROM calib_inputs WHERE input = 'N/A'");
    cr_assert(cf && strstr(cf, "A. N/A\nB. N/A\nC. N/A"), "%s", cf);
    free(cf);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM soft_prompts WHERE trainable_params > 0"), 1);
    /* a template ranking the option texts cannot be calibrated */
    char *tpl = it_path(dir, "mc-text.tmpl");
    it_write(tpl, "name: mc-text\ntask: multiple_choice\nchoices: text\n---\nQuestion: {{input}}\nAnswer:");
    snprintf(text, sizeof text,
             "{\"name\": \"mc-text\", \"datasets\": [\"mc\"],\n"
             " \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\"}],\n"
             " \"methods\": [{\"name\": \"text\", \"template\": \"mc-text.tmpl\", \"scoring\": \"rank\", "
             "\"calibration\": \"contextual\"}]}\n",
             tiny);
    it_write(suite, text);
    char *never = it_path(dir, "never/results.db");
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", never, NULL});
    cr_assert_eq(p.status, 3, "%s%s", p.out, p.err);
    cr_assert(strstr(p.err, "calibration needs the same continuations on every row") && one_line(p.err), "%s", p.err);
    cr_assert(!it_exists(never));
    proc_out_free(&p);
    it_rmtree(dir);
    free(never);
    free(tpl);
    free(suite);
    free(db);
    free(card);
    free(dir);
}
