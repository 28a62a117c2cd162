/* Prompt search end to end over /v1/completions (the loopback fake server ranks labels): the
 * search stays within its budget (a count of the labelled rows it read, from what it stored), is
 * reproducible (same seed, same scores, same winner, same template file), writes a winner that is
 * an ordinary template, and refuses a budget too small for its first round. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integration/harness.h"

static proc_out pwb(const char *const *argv) { return it_run(argv); }

static char *suite_text(int port, long max_evals)
{
    char *t = malloc(4096);
    cr_assert_not_null(t);
    snprintf(t, 4096,
             "{\"name\": \"opt\", \"seed\": 3, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 6}],"
             " \"models\": [{\"name\": \"cmpl\", \"provider\": \"openai-completions\", \"preset\": \"vllm\","
             " \"base_url\": \"http://127.0.0.1:%d/v1\", \"model\": \"m\"}],"
             " \"methods\": [{\"name\": \"searched\", \"template\": \"zero-shot\", \"scoring\": \"rank\","
             "  \"calibration\": \"contextual\", \"train_limit\": 64,"
             "  \"optimize\": {\"templates\": [\"few-shot\", \"sst2-review\"],"
             "   \"instructions\": [\"Is this review positive or negative?\", \"Label the sentiment.\"],"
             "   \"demo_sets\": 2, \"heldout\": 16, \"max_evals\": %ld}}]}",
             port, max_evals);
    return t;
}

Test(optimize, budget_reproducible_winner_template, .timeout = 180)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const args[] = {"--favor", "positive", NULL};
    cr_assert_eq(fake_start(&f, dir, args), 0);
    char *text = suite_text(f.port, 400);
    char *suite = it_path(dir, "opt.json");
    it_write(suite, text);
    char *db = it_path(dir, "a.db");
    proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    /* zero-shot x 3 wordings + few-shot x 3 wordings x 2 demo sets + sst2-review (no {{instruction}}) */
    cr_assert_eq(it_sql_long(db, "SELECT n_candidates FROM prompt_searches"), 10);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM prompt_candidates"), 10);
    cr_assert_eq(it_sql_long(db, "SELECT kind = 'optimized' AND train_limit = 64 FROM cells"), 1);
    cr_assert_leq(it_sql_long(db, "SELECT evals FROM prompt_searches"), 400);
    /* rankings spent, recounted: held-out rows per candidate plus three content-free inputs each */
    cr_assert_eq(it_sql_long(db, "SELECT (SELECT sum(n_eval) + 3 * count(*) FROM prompt_candidates) - evals"
                                 " FROM prompt_searches"),
                 0);
    /* labelled rows read, recounted: the held-out rows scored plus every demonstration shown */
    long held = it_sql_long(db, "SELECT max(n_eval) FROM prompt_candidates");
    long demos = it_sql_long(db, "SELECT count(DISTINCT j.value) FROM prompt_candidates c, json_each(c.demo_rows) j"
                                 " WHERE c.last_round >= 0");
    long read = it_sql_long(db, "SELECT examples_read FROM prompt_searches");
    cr_assert_eq(held, 16);
    cr_assert_eq(read, held + demos, "read %ld, held-out %ld, demos %ld", read, held, demos);
    cr_assert_leq(read, 64, "the budget is never exceeded");
    /* the halving: rows 1, 2, 4, 8, 16 for 10, 5, 3, 2, 1 candidates (67 rankings with calibration) */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM prompt_candidates WHERE n_eval = 16"), 1);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM prompt_candidates WHERE n_eval = 1"), 5);
    cr_assert_eq(it_sql_long(db, "SELECT rounds FROM prompt_searches"), 5);
    cr_assert_eq(it_sql_long(db, "SELECT evals FROM prompt_searches"), 67);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE valid = 1"), 6);
    char *tpath = it_sql_text(db, "SELECT template_path FROM prompt_searches");
    char *winner1 = it_read(tpath);
    cr_assert_not_null(winner1, "%s", tpath);
    cr_assert(strstr(winner1, "{{input}}") && strstr(winner1, "kind: zero-shot"), "%s", winner1);
    /* an ordinary template: pwb loads and shows it */
    p = pwb((const char *const[]){it_pwb(), "template", "show", tpath, NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    proc_out_free(&p);
    char *scores1 = it_sql_text(db, "SELECT group_concat(idx || ':' || n_eval || ':' || correct, ' ') ||"
                                    " ' w' || (SELECT winner FROM prompt_searches) FROM prompt_candidates");
    /* the same suite, another database: the same scores, winner and file */
    char *db2 = it_path(dir, "b.db");
    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db2, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    char *scores2 = it_sql_text(db2, "SELECT group_concat(idx || ':' || n_eval || ':' || correct, ' ') ||"
                                     " ' w' || (SELECT winner FROM prompt_searches) FROM prompt_candidates");
    cr_assert_str_eq(scores1, scores2);
    char *winner2 = it_read(tpath);
    cr_assert_str_eq(winner1, winner2);
    /* a rerun resumes: the search is not repeated */
    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db2, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db2, "SELECT count(*) FROM prompt_searches"), 1);
    /* the report shows the search's cost */
    p = pwb((const char *const[]){it_pwb(), "report", "--db", db, NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "| searched | optimized | 64 | contextual |") && strstr(p.out, "10 candidates"), "%s",
              p.out);
    proc_out_free(&p);
    /* a budget that stops the race after round 3 (40 + 5 + 6 rankings of 55): the leader wins */
    free(text);
    text = suite_text(f.port, 55);
    it_write(suite, text);
    char *db4 = it_path(dir, "d.db");
    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db4, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    char *stop = it_sql_text(db4, "SELECT evals || ':' || rounds FROM prompt_searches");
    cr_assert_str_eq(stop, "51:3");
    free(stop);
    free(db4);
    /* too small a budget for the first round: refused, nothing scored */
    free(text);
    text = suite_text(f.port, 30);
    it_write(suite, text);
    char *db3 = it_path(dir, "c.db");
    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db3, "-q", NULL});
    cr_assert_neq(p.status, 0);
    cr_assert(strstr(p.err, "max_evals 30"), "%s", p.err);
    proc_out_free(&p);
    fake_stop(&f);
    it_rmtree(dir);
    free(scores1);
    free(scores2);
    free(winner1);
    free(winner2);
    free(tpath);
    free(text);
    free(suite);
    free(db);
    free(db2);
    free(db3);
    free(dir);
}

/* Chain-of-thought demonstrations bootstrapped from the demo pool (DSPy's BootstrapFewShot). The
 * training rows cycle through four words; the fake server reasons about each by its word, right
 * for alpha (positive) and beta (negative), wrong for gamma (positive, said negative) and delta
 * (negative, said positive). Only alpha and beta rows become demonstrations, each showing its own
 * reasoning; every row tried is read from the budget; the same seed bootstraps the same; and a
 * rerun answers every generation from the response cache (the server is gone by then). */
#define COT_GLAD "The text sounds glad. Answer: positive"
#define COT_SAD "The text sounds sad. Answer: negative"
#define COT_GRIM "The text sounds grim. Answer: negative"
#define COT_UPBEAT "The text sounds upbeat. Answer: positive"

static void cot_suite(const char *path, int port, const char *method)
{
    char t[4096];
    snprintf(t, sizeof t,
             "{\"name\": \"cot\", \"seed\": 5, \"datasets\": [{\"name\": \"words\", \"split\": \"dev\"}],"
             " \"models\": [{\"name\": \"cmpl\", \"provider\": \"openai-completions\", \"preset\": \"vllm\","
             " \"base_url\": \"http://127.0.0.1:%d/v1\", \"model\": \"m\", \"max_retries\": 0}],"
             " \"methods\": [{\"name\": \"%s\", \"template\": \"cot-fewshot\", \"scoring\": \"rank\", \"train_limit\": 40,"
             "  \"optimize\": {\"demo_sets\": 3, \"heldout\": 8, \"bootstrap_tries\": 10}}]}",
             port, method);
    it_write(path, t);
}

/* One text summing up every candidate's bootstrap (malloc'd). */
static char *cot_candidates(const char *db, int search)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT group_concat(idx || ' ' || demo_rows || ' ' || tried_rows || ' ' || demo_rationales, ' | ')"
             " FROM prompt_candidates WHERE search_id = %d",
             search);
    char *s = it_sql_text(db, sql);
    cr_assert_not_null(s);
    return s;
}

Test(optimize, cot_demos_are_rationales_that_reached_the_gold_label, .timeout = 180)
{
    char *dir = it_tmpdir();
    const char *words[4] = {"alpha", "beta", "gamma", "delta"};
    char *card = it_path(dir, "words.json"), *train = it_path(dir, "train.jsonl"), *dev = it_path(dir, "dev.jsonl");
    it_write(card, "{\"name\": \"words\", \"task\": \"classification\", \"instruction\": \"Classify the text.\","
                   " \"input_field\": \"text\", \"answer_field\": \"label\", \"few_shot_split\": \"train\","
                   " \"labels\": [{\"value\": \"pos\", \"verbalizer\": \"positive\"},"
                   " {\"value\": \"neg\", \"verbalizer\": \"negative\"}],"
                   " \"splits\": {\"train\": {\"file\": \"train.jsonl\", \"format\": \"jsonl\"},"
                   " \"dev\": {\"file\": \"dev.jsonl\", \"format\": \"jsonl\"}}}");
    FILE *o = fopen(train, "w");
    cr_assert_not_null(o);
    for (int i = 0; i < 40; i++) /* row i: words[i % 4]; alpha and gamma positive */
        fprintf(o, "{\"text\": \"an %s item number %d\", \"label\": \"%s\"}\n", words[i % 4], i, i % 2 ? "neg" : "pos");
    fclose(o);
    it_write(dev, "{\"text\": \"a dev alpha\", \"label\": \"pos\"}\n{\"text\": \"a dev beta\", \"label\": \"neg\"}\n");
    fake_llm f;
    const char *const args[] = {"--favor", "positive", "--rule", "alpha item=" COT_GLAD, "--rule", "beta item=" COT_SAD,
                                "--rule", "gamma item=" COT_GRIM, "--rule", "delta item=" COT_UPBEAT, NULL};
    cr_assert_eq(fake_start(&f, dir, args), 0);
    char *suite = it_path(dir, "cot.json"), *db = it_path(dir, "a.db"), *db2 = it_path(dir, "b.db");
    cot_suite(suite, f.port, "boot");
    proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT n_candidates FROM prompt_searches"), 3);
    /* demonstrations were kept, and wrong reasoning was tried and turned away */
    long kept = it_sql_long(db, "SELECT count(*) FROM prompt_candidates c, json_each(c.demo_rows)");
    long tried = it_sql_long(db, "SELECT count(*) FROM prompt_candidates c, json_each(c.tried_rows)");
    cr_assert_gt(kept, 0);
    cr_assert_gt(it_sql_long(db, "SELECT count(*) FROM prompt_candidates c, json_each(c.tried_rows) t"
                                 " WHERE t.value % 4 >= 2"),
                 0, "no gamma or delta row was tried");
    cr_assert_leq(it_sql_long(db, "SELECT max(json_array_length(tried_rows)) FROM prompt_candidates"), 10);
    cr_assert_lt(kept, tried);
    /* only alpha and beta rows are demonstrations, each showing its own (right) reasoning */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM prompt_candidates c, json_each(c.demo_rows) r"
                                 " JOIN json_each(c.demo_rationales) w ON w.key = r.key"
                                 " WHERE (r.value % 4 = 0 AND w.value = '" COT_GLAD "')"
                                 " OR (r.value % 4 = 1 AND w.value = '" COT_SAD "')"),
                 kept);
    /* ... each of them tried; label-balanced: never more than two of a label in a set of four */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM prompt_candidates c, json_each(c.demo_rows) r"
                                 " WHERE r.value NOT IN (SELECT value FROM json_each(c.tried_rows))"),
                 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM prompt_candidates c WHERE (SELECT count(*) FROM"
                                 " json_each(c.demo_rows) WHERE value % 4 = 0) > 2"),
                 0);
    /* labelled rows read: the held-out slice plus every row tried, within the budget */
    long read = it_sql_long(db, "SELECT examples_read FROM prompt_searches");
    long distinct = it_sql_long(db, "SELECT count(DISTINCT t.value) FROM prompt_candidates c, json_each(c.tried_rows) t");
    cr_assert_eq(read, 8 + distinct, "read %ld, tried %ld", read, distinct);
    cr_assert_leq(read, 40);
    /* the winner shows the right reasoning only, and is an ordinary chain-of-thought template */
    char *tpath = it_sql_text(db, "SELECT template_path FROM prompt_searches");
    char *winner = it_read(tpath);
    cr_assert_not_null(winner, "%s", tpath);
    cr_assert(strstr(winner, "kind: cot") && strstr(winner, "answer: ") && strstr(winner, "{{input}}"), "%s", winner);
    cr_assert(strstr(winner, COT_GLAD) || strstr(winner, COT_SAD), "%s", winner);
    cr_assert(!strstr(winner, "grim") && !strstr(winner, "upbeat") && !strstr(winner, "gamma") &&
                  !strstr(winner, "delta"),
              "%s", winner);
    p = pwb((const char *const[]){it_pwb(), "template", "show", tpath, NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    proc_out_free(&p);
    /* the same seed, another database: the same demonstrations */
    char *first = cot_candidates(db, 1);
    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db2, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    char *again = cot_candidates(db2, 1);
    cr_assert_str_eq(first, again);
    /* the server gone, a second search in the first database answers everything from the cache */
    fake_stop(&f);
    cot_suite(suite, f.port, "boot2");
    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    char *cached = cot_candidates(db, 2);
    cr_assert_str_eq(first, cached);
    it_rmtree(dir);
    free(first);
    free(again);
    free(cached);
    free(winner);
    free(tpath);
    free(card);
    free(train);
    free(dev);
    free(suite);
    free(db);
    free(db2);
    free(dir);
}

/* The same bootstrap on the local engine (TinyStories-656K, SST-2): the model's greedy reasoning
 * costs CPU that the search records, every row tried is read from the budget (whether or not its
 * reasoning was kept), and a second search in the same database generates nothing: every reply
 * comes from the response cache, so it spends no CPU. */
Test(optimize, cot_bootstrap_on_the_local_engine_is_counted_and_cached, .timeout = 120)
{
    char model[1024];
    if (it_tiny_model(model, sizeof model) != 0)
        cr_skip("no TinyStories-656K model");
    char *dir = it_tmpdir();
    char *suite = it_path(dir, "tiny.json"), *db = it_path(dir, "t.db");
    const char *methods[2] = {"boot", "boot2"};
    for (int run = 0; run < 2; run++) {
        char t[2048];
        snprintf(t, sizeof t,
                 "{\"name\": \"cot-tiny\", \"seed\": 5, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 2}],"
                 " \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\", \"max_tokens\": 24}],"
                 " \"methods\": [{\"name\": \"%s\", \"template\": \"cot-fewshot\", \"scoring\": \"rank\", \"train_limit\": 24,"
                 "  \"optimize\": {\"demo_sets\": 1, \"heldout\": 8, \"bootstrap_tries\": 4}}]}",
                 model, methods[run]);
        it_write(suite, t);
        proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
        cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
        proc_out_free(&p);
    }
    /* four rows tried (fewer only if all four shots were found sooner), each read from the budget */
    long tried = it_sql_long(db, "SELECT json_array_length(tried_rows) FROM prompt_candidates WHERE search_id = 1");
    long kept = it_sql_long(db, "SELECT json_array_length(demo_rows) FROM prompt_candidates WHERE search_id = 1");
    cr_assert(tried == 4 || (tried < 4 && kept == 4), "tried %ld, kept %ld", tried, kept);
    cr_assert_eq(it_sql_long(db, "SELECT examples_read FROM prompt_searches WHERE id = 1"), 8 + tried);
    cr_assert_eq(it_sql_long(db, "SELECT json_array_length(demo_rationales) FROM prompt_candidates WHERE search_id = 1"),
                 kept);
    /* greedy generations, kept in the cache: one per row tried */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cache WHERE value NOT LIKE '%choice_logprob%'"
                                 " AND value NOT LIKE '{\"embedding\":%'"),
                 tried);
    cr_assert_eq(it_sql_long(db, "SELECT cpu_s > 0 FROM prompt_searches WHERE id = 1"), 1);
    /* the second search: the same rows and reasoning, all from the cache */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM prompt_searches"), 2);
    cr_assert_eq(it_sql_long(db, "SELECT count(DISTINCT tried_rows || demo_rows || demo_rationales)"
                                 " FROM prompt_candidates"),
                 1);
    cr_assert_eq(it_sql_long(db, "SELECT cpu_s = 0 AND examples_read = 8 + " "(SELECT json_array_length(tried_rows)"
                                 " FROM prompt_candidates WHERE search_id = 2) FROM prompt_searches WHERE id = 2"),
                 1);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}
