/* Example selection end to end on TinyStories-656K and SST-2: shot_pick similar embeds the shot
 * pool and the queries with the local engine, keeps the embeddings in the response cache (a rerun
 * embeds nothing again), never shows a query its own text, and picks the rows nearest the query;
 * shots_as_turns and label_words change the prompt as documented. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integration/harness.h"

static char g_model[1024];

static int have_model(void)
{
    snprintf(g_model, sizeof g_model, "%s/models/tinystories-656k/TinyStories-656K-Q8_0.gguf",
             it_env("PWB_SHARED", "../shared"));
    return it_exists(g_model);
}

Test(shots, similar_turns_and_label_words, .timeout = 120)
{
    if (!have_model())
        cr_skip("no %s", g_model);
    char *dir = it_tmpdir();
    char text[4096];
    snprintf(text, sizeof text,
             "{\"name\": \"shots-it\", \"seed\": 5, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 6}],"
             " \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\"}],"
             " \"methods\": [{\"name\": \"near\", \"template\": \"sst2-review\", \"scoring\": \"rank\", \"shots\": 2,"
             "  \"shot_pick\": \"similar\", \"shots_as_turns\": true, \"train_limit\": 24},"
             "  {\"name\": \"words\", \"template\": \"zero-shot\", \"scoring\": \"rank\","
             "   \"label_words\": [\"bad\", \"great\"]}]}",
             g_model);
    char *suite = it_path(dir, "s.json"), *db = it_path(dir, "s.db");
    it_write(suite, text);
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    /* a zero-shot template given shots by its method is recorded as a few-shot prompt */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cells WHERE method = 'near' AND kind = 'few-shot'"), 1);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cells WHERE method = 'words' AND kind = 'zero-shot'"), 1);
    /* 24 pool rows + 6 queries embedded, each kept in the cache */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cache WHERE value LIKE '{\"embedding\":%'"), 30);
    /* each prompt: two shots as user/assistant turns, then the query; never the query's own text */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions p JOIN cells c ON c.id = p.cell_id"
                                 " WHERE c.method = 'near' AND p.valid = 1"
                                 " AND (length(p.prompt) - length(replace(p.prompt, '[assistant]', ''))) / 11 = 2"),
                 6);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions p JOIN cells c ON c.id = p.cell_id"
                                 " JOIN examples x ON x.dataset = 'sst2' AND x.split = 'dev' AND x.row = p.row"
                                 " WHERE c.method = 'near' AND instr(substr(p.prompt, 1, length(p.prompt) -"
                                 " length(x.input) - 80), x.input) > 0"),
                 0);
    /* label words: the prompt names them; answers are still stored by the card's labels */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions p JOIN cells c ON c.id = p.cell_id"
                                 " WHERE c.method = 'words' AND p.prompt LIKE '%bad or great%'"
                                 " AND p.extracted IN ('negative', 'positive')"),
                 6);
    /* a fresh run over the same texts: the shots are the same and no text is embedded again */
    char *first = it_sql_text(db, "SELECT group_concat(p.prompt_sha256, ',') FROM predictions p JOIN cells c"
                                  " ON c.id = p.cell_id WHERE c.method = 'near' ORDER BY p.row");
    long cached = it_sql_long(db, "SELECT count(*) FROM cache");
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "--fresh", "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cache"), cached);
    char *second = it_sql_text(db, "SELECT group_concat(p.prompt_sha256, ',') FROM predictions p JOIN cells c"
                                   " ON c.id = p.cell_id WHERE c.method = 'near' AND c.run_id = 2 ORDER BY p.row");
    cr_assert_str_eq(first, second);
    /* a label_words list that does not fit the card is refused before anything runs */
    snprintf(text, sizeof text,
             "{\"name\": \"shots-bad\", \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 6}],"
             " \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\"}],"
             " \"methods\": [{\"name\": \"words\", \"template\": \"zero-shot\", \"scoring\": \"rank\","
             "   \"label_words\": [\"bad\", \"great\", \"meh\"]}]}",
             g_model);
    it_write(suite, text);
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_neq(p.status, 0);
    cr_assert(strstr(p.err, "label_words has 3 words; card"), "%s", p.err);
    proc_out_free(&p);
    free(first);
    free(second);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}

/* Instructions the model proposes from labelled pairs (optimize.propose) join the race: seeded (the
 * same suite proposes the same), deduplicated, read from the budget's rows. */
Test(shots, search_with_proposed_instructions, .timeout = 120)
{
    if (!have_model())
        cr_skip("no %s", g_model);
    char *dir = it_tmpdir();
    char text[4096];
    snprintf(text, sizeof text,
             "{\"name\": \"propose-it\", \"seed\": 2, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 4}],"
             " \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\"}],"
             " \"methods\": [{\"name\": \"searched\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"train_limit\": 40,"
             "  \"optimize\": {\"propose\": 2, \"heldout\": 8, \"instructions\": [\"Is this review positive or negative?\"]}}]}",
             g_model);
    char *suite = it_path(dir, "p.json"), *db = it_path(dir, "p.db"), *db2 = it_path(dir, "q.db");
    it_write(suite, text);
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    /* the card's wording, the given one, and what the model proposed (its two replies are the same
     * line, kept once) */
    cr_assert_eq(it_sql_long(db, "SELECT n_candidates FROM prompt_searches"), 3);
    cr_assert_eq(it_sql_long(db, "SELECT count(DISTINCT instruction) FROM prompt_candidates"), 3);
    /* the proposals read five rows each beside the held-out slice, all within the budget */
    long read = it_sql_long(db, "SELECT examples_read FROM prompt_searches");
    cr_assert_geq(read, 8 + 5);
    cr_assert_leq(read, 40);
    char *a = it_sql_text(db, "SELECT group_concat(instruction, '|') FROM prompt_candidates ORDER BY idx");
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db2, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    char *b = it_sql_text(db2, "SELECT group_concat(instruction, '|') FROM prompt_candidates ORDER BY idx");
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(db2);
    free(dir);
}

/* An HTTP model's /embeddings endpoint (fakellm: a hashed bag of words) picks the shots: every pool
 * row and query embedded once, kept in the cache, the same shots on a fresh run. */
Test(shots, similar_through_an_embeddings_endpoint, .timeout = 60)
{
    char *dir = it_tmpdir();
    fake_llm f;
    cr_assert_eq(fake_start(&f, dir, NULL), 0);
    char text[4096];
    snprintf(text, sizeof text,
             "{\"name\": \"emb-it\", \"seed\": 4, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 5}],"
             " \"models\": [{\"name\": \"cmpl\", \"provider\": \"openai-completions\", \"preset\": \"vllm\","
             " \"base_url\": \"http://127.0.0.1:%d/v1\", \"model\": \"m\"}],"
             " \"methods\": [{\"name\": \"near\", \"template\": \"few-shot\", \"scoring\": \"rank\", \"shots\": 3,"
             "  \"shot_pick\": \"similar\", \"train_limit\": 50}]}",
             f.port);
    char *suite = it_path(dir, "e.json"), *db = it_path(dir, "e.db");
    it_write(suite, text);
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cache WHERE value LIKE '{\"embedding\":%'"), 55);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE valid = 1"), 5);
    /* the same suite again, fresh: every embedding from the cache, the same prompts */
    char *a = it_sql_text(db, "SELECT group_concat(prompt_sha256) FROM (SELECT prompt_sha256 FROM predictions"
                              " ORDER BY cell_id, row)");
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "--fresh", "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cache WHERE value LIKE '{\"embedding\":%'"), 55);
    char *b = it_sql_text(db, "SELECT group_concat(prompt_sha256) FROM (SELECT p.prompt_sha256 FROM predictions p"
                              " JOIN cells c ON c.id = p.cell_id WHERE c.run_id = 2 ORDER BY p.row)");
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}
