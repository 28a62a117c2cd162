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
