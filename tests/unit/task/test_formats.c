/* Benchmarks in their own format: exact whitespace, field paths, answer maps, per-row multiple
 * choice, split slices. Cards and data are written here; CommonsenseQA is read from the shared
 * datasets. */
#include <criterion/criterion.h>
#include <string.h>

#include "task/dataset.h"
#include "task/import.h"
#include "task/template.h"
#include "helpers.h"

static void load_card_text(const char *dir, const char *text, ds_card *c)
{
    t_write(dir, "card.json", text);
    card_init(c);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(card_load(c, t_path(dir, "card.json"), &e), PWB_OK, "%s", e.msg);
}

static char *render_flat(const char *tpl_text, const ds_card *c, const ds_example *x)
{
    pwb_template t;
    template_init(&t);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(template_parse(&t, tpl_text, strlen(tpl_text), "t.tmpl", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(template_check(&t, c, &e), PWB_OK, "%s", e.msg);
    tpl_prompt p;
    cr_assert_eq(template_render(&t, c, x, NULL, 0, &p, &e), PWB_OK, "%s", e.msg);
    pwb_buf b;
    buf_init(&b);
    tpl_prompt_flatten(&p, &b);
    tpl_prompt_free(&p);
    template_free(&t);
    return b.data;
}

/* lm-evaluation-harness's glue/sst2 prompt on the untrimmed card: the sentence keeps its trailing
 * space, the prompt ends in "Answer:" and each label is ranked after a space. */
Test(whitespace, sst2_lmeval_prompt_is_exact)
{
    ds_card c;
    ds_data d;
    t_load_card(&c, "glue_sst2");
    t_load_split(&c, NULL, &d);
    pwb_template t;
    template_init(&t);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(template_load(&t, t_repo("templates/sst2-lmeval.tmpl"), &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(template_check(&t, &c, &e), PWB_OK, "%s", e.msg);
    tpl_prompt p;
    cr_assert_eq(template_render(&t, &c, &d.ex[0], NULL, 0, &p, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(p.n, 1);
    cr_assert_str_eq(p.msgs[0].content, "it 's a charming and often affecting journey . \n"
                                        "Question: Is this sentence positive or negative?\nAnswer:");
    int n = 0;
    char **ch = template_choices(&t, &c, &d.ex[0], &n);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(ch[0], " negative");
    cr_assert_str_eq(ch[1], " positive");
    dataset_choices_free(ch, n);
    tpl_prompt_free(&p);
    template_free(&t);
    ds_data_free(&d);
    /* the shipped sst2 card asks for trimming (its published reports were made so) */
    card_free(&c);
    t_load_card(&c, "sst2");
    t_load_split(&c, NULL, &d);
    cr_assert_str_eq(d.ex[0].input, "it 's a charming and often affecting journey .");
    ds_data_free(&d);
    card_free(&c);
}

Test(whitespace, trailing_space_kept_blank_lines_dropped)
{
    char dir[64];
    t_mkdtemp(dir, sizeof dir);
    t_write(dir, "d.jsonl", "{\"t\": \"  padded  \", \"y\": \"a\"}\n");
    ds_card c;
    load_card_text(dir,
                   "{\"name\": \"w\", \"task\": \"classification\", \"input_field\": \"t\", \"answer_field\": \"y\","
                   " \"labels\": [\"a\", \"b\"], \"splits\": {\"test\": {\"file\": \"d.jsonl\"}}}",
                   &c);
    ds_data d;
    t_load_split(&c, NULL, &d);
    cr_assert_str_eq(d.ex[0].input, "  padded  ");
    char *s = render_flat("---\n[system]\nBe brief. \n\n[user]\n{{input}}|\nAnswer: \n", &c, &d.ex[0]);
    cr_assert_str_eq(s, "[system]\nBe brief. \n\n[user]\n  padded  |\nAnswer: ");
    free(s);
    ds_data_free(&d);
    card_free(&c);
    /* "trim_input": true trims */
    load_card_text(dir,
                   "{\"name\": \"w\", \"task\": \"classification\", \"input_field\": \"t\", \"answer_field\": \"y\","
                   " \"trim_input\": true, \"labels\": [\"a\", \"b\"], \"splits\": {\"test\": {\"file\": \"d.jsonl\"}}}",
                   &c);
    t_load_split(&c, NULL, &d);
    cr_assert_str_eq(d.ex[0].input, "padded");
    ds_data_free(&d);
    card_free(&c);
    t_rmdir(dir);
}

/* Field paths and a value map: a nested input, an answer under a list, numeric keys to letters. */
Test(fields, paths_and_answer_map)
{
    char dir[64];
    t_mkdtemp(dir, sizeof dir);
    t_write(dir, "d.jsonl",
            "{\"doc\": {\"title\": \"T1\", \"body\": [\"first\", \"second\"]}, \"ans\": [{\"k\": 1}], \"tags\": "
            "[{\"n\": \"x\"}, {\"n\": \"y\"}]}\n"
            "{\"doc\": {\"title\": \"T2\", \"body\": [\"only\"]}, \"ans\": [{\"k\": 2}], \"tags\": []}\n"
            "{\"doc\": {\"title\": \"T3\", \"body\": [\"b\"]}, \"ans\": [{\"k\": 0}], \"tags\": []}\n");
    ds_card c;
    load_card_text(dir,
                   "{\"name\": \"p\", \"task\": \"classification\", \"input_template\": \"{{doc.title}}: "
                   "{{doc.body[0]}}\", \"answer_field\": \"ans[0].k\", \"fields\": [\"tags[*].n\"],"
                   " \"labels\": [\"A\", \"B\"], \"answer_map\": {\"1\": \"A\", \"0\": \"A\", \"2\": \"B\"},"
                   " \"splits\": {\"test\": {\"file\": \"d.jsonl\"}}}",
                   &c);
    ds_data d;
    t_load_split(&c, NULL, &d);
    cr_assert_eq(d.n, 3);
    cr_assert_str_eq(d.ex[0].input, "T1: first");
    cr_assert_str_eq(d.ex[1].input, "T2: only");
    cr_assert_eq(d.ex[0].label, 0);
    cr_assert_eq(d.ex[1].label, 1);
    cr_assert_eq(d.ex[2].label, 0, "several raw answers map to one label");
    int k = dataset_field_index(&d, "tags[*].n");
    cr_assert_geq(k, 0);
    cr_assert_str_eq(d.ex[0].fields[k], "[\"x\",\"y\"]");
    ds_data_free(&d);
    card_free(&c);
    t_rmdir(dir);
}

static const char *mc_card =
    "{\"name\": \"mc\", \"task\": \"multiple_choice\", \"input_field\": \"question\",\n"
    " \"options\": {\"text\": \"choices.text\", \"label\": \"choices.label\"},\n"
    " \"answer_field\": \"answerKey\", \"labels\": [\"A\", \"B\", \"C\"],\n"
    " \"splits\": {\"test\": {\"file\": \"d.jsonl\"}}}";

/* The Hugging Face layout: per-row options rendered by {{#choices}}, ranked by text or letter. */
Test(multiple_choice, hf_layout_options_and_choices)
{
    char dir[64];
    t_mkdtemp(dir, sizeof dir);
    t_write(dir, "d.jsonl",
            "{\"question\": \"Sky?\", \"choices\": {\"label\": [\"A\", \"B\", \"C\"], \"text\": [\"blue\", \"green\", "
            "\"red\"]}, \"answerKey\": \"A\"}\n"
            "{\"question\": \"Grass?\", \"choices\": {\"label\": [\"A\", \"B\", \"C\"], \"text\": [\"pink\", \"green\", "
            "\"grey\"]}, \"answerKey\": \"B\"}\n");
    ds_card c;
    load_card_text(dir, mc_card, &c);
    ds_data d;
    t_load_split(&c, NULL, &d);
    cr_assert_eq(d.ex[1].n_options, 3);
    cr_assert_str_eq(d.ex[1].options[2], "grey");
    cr_assert_eq(d.ex[1].label, 1);
    cr_assert_str_eq(d.ex[1].answer, "B");
    char *s = render_flat("---\nQ: {{input}}\n{{#choices}}\n{{label}}. {{text}}\n{{/choices}}\nAnswer:", &c, &d.ex[1]);
    cr_assert_str_eq(s, "Q: Grass?\nA. pink\nB. green\nC. grey\nAnswer:");
    free(s);
    pwb_template t;
    template_init(&t);
    pwb_err e;
    err_clear(&e);
    const char *by_text = "target_delimiter: \" \"\n---\n{{input}}";
    cr_assert_eq(template_parse(&t, by_text, strlen(by_text), "t.tmpl", &e), PWB_OK, "%s", e.msg);
    int n = 0;
    char **ch = template_choices(&t, &c, &d.ex[1], &n);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(ch[0], " pink", "rows with options rank their texts by default");
    dataset_choices_free(ch, n);
    t.choices = TPL_CHOICES_LABEL;
    ch = template_choices(&t, &c, &d.ex[1], &n);
    cr_assert_str_eq(ch[2], " C");
    dataset_choices_free(ch, n);
    template_free(&t);
    /* the shipped generic templates check against it */
    const char *tpls[] = {"templates/mc-zero-shot.tmpl", "templates/mc-cot.tmpl", "templates/mc-role.tmpl",
                          "templates/mc-lmeval.tmpl"};
    for (int i = 0; i < 4; i++) {
        template_init(&t);
        cr_assert_eq(template_load(&t, t_repo(tpls[i]), &e), PWB_OK, "%s", e.msg);
        cr_assert_eq(template_check(&t, &c, &e), PWB_OK, "%s: %s", tpls[i], e.msg);
        template_free(&t);
    }
    ds_data_free(&d);
    card_free(&c);
    t_rmdir(dir);
}

static void mc_error(const char *data, const char *want)
{
    char dir[64];
    t_mkdtemp(dir, sizeof dir);
    t_write(dir, "d.jsonl", data);
    ds_card c;
    load_card_text(dir, mc_card, &c);
    ds_data d;
    ds_data_init(&d);
    pwb_err e;
    err_clear(&e);
    cr_assert_neq(dataset_load(&c, NULL, NULL, &d, &e), PWB_OK);
    cr_assert_not_null(strstr(e.msg, want), "want '%s' in '%s'", want, e.msg);
    cr_assert_not_null(strstr(e.msg, "d.jsonl:2:"), "names file and line: %s", e.msg);
    card_free(&c);
    t_rmdir(dir);
}

Test(multiple_choice, bad_rows_name_file_and_line)
{
    const char *ok = "{\"question\": \"q\", \"choices\": {\"label\": [\"A\", \"B\", \"C\"], \"text\": [\"x\", \"y\", \"z\"]},"
                     " \"answerKey\": \"A\"}\n";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s{\"question\": \"q\", \"choices\": {\"label\": [\"A\", \"B\"], \"text\": [\"x\", "
             "\"y\"]}, \"answerKey\": \"A\"}\n", ok);
    mc_error(buf, "2 options in 'choices.text'");
    snprintf(buf, sizeof buf, "%s{\"question\": \"q\", \"choices\": {\"label\": [\"A\", \"B\", \"C\"], \"text\": [\"x\", "
             "\"y\", \"z\"]}, \"answerKey\": \"D\"}\n", ok);
    mc_error(buf, "answer key 'D' is not among the options");
    snprintf(buf, sizeof buf, "%s{\"question\": \"q\", \"choices\": {\"label\": [\"A\", \"C\", \"B\"], \"text\": [\"x\", "
             "\"y\", \"z\"]}, \"answerKey\": \"A\"}\n", ok);
    mc_error(buf, "option labels in 'choices.label' differ");
}

/* CommonsenseQA from the shared datasets: 1,221 questions, a held-out slice for shots. */
Test(multiple_choice, commonsense_qa_card_and_slices)
{
    ds_card c;
    ds_data all, ev, shots;
    t_load_card(&c, "commonsense_qa");
    t_load_split(&c, "validation", &all);
    cr_assert_eq(all.n, 1221);
    size_t counts[5];
    dataset_label_counts(&all, &c, counts);
    cr_assert_eq(counts[0], 239);
    cr_assert_eq(counts[4], 235);
    t_load_split(&c, NULL, &ev);
    t_load_split(&c, c.few_shot_split, &shots);
    cr_assert_eq(ev.n, 1021);
    cr_assert_eq(shots.n, 200);
    cr_assert_eq(dataset_overlap(&ev, NULL, 0, &shots), 0, "complementary slices of one shuffle");
    cr_assert_eq(dataset_overlap(&ev, NULL, 0, &all), 1021);
    for (size_t i = 1; i < ev.n; i++)
        cr_assert_gt(ev.ex[i].row, ev.ex[i - 1].row, "file order kept, rows keep their ids");
    ds_data_free(&all);
    ds_data_free(&ev);
    ds_data_free(&shots);
    card_free(&c);
}

Test(slices, parse_ranges_and_percentages)
{
    ds_slice s;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(dataset_slice_parse("dev[0:500]", &s, &e), PWB_OK);
    cr_assert_str_eq(s.base, "dev");
    cr_assert(s.sliced && !s.seeded && s.a == 0 && s.b == 500);
    cr_assert_eq(dataset_slice_parse("train@7[20%:]", &s, &e), PWB_OK);
    cr_assert(s.seeded && s.seed == 7 && s.a_pct && s.a == 20 && s.b < 0);
    cr_assert_eq(dataset_slice_parse("dev", &s, &e), PWB_OK);
    cr_assert(!s.sliced);
    const char *bad[] = {"dev[", "dev[1]", "dev[a:b]", "dev[0:5]x", "dev@[0:1]", "dev[0:101%]", "[0:1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_neq(dataset_slice_parse(bad[i], &s, &e), PWB_OK, "%s", bad[i]);
    /* a slice past the end is cut, an empty one refused */
    ds_card c;
    ds_data d;
    t_load_card(&c, "sst2");
    t_load_split(&c, "dev[860:900]", &d);
    cr_assert_eq(d.n, 12);
    cr_assert_eq(d.ex[0].row, 860);
    ds_data_free(&d);
    cr_assert_neq(dataset_load(&c, "dev[900:]", t_data_path(), &d, &e), PWB_OK);
    cr_assert_not_null(strstr(e.msg, "selects no rows"), "%s", e.msg);
    card_free(&c);
}

static cJSON *guess(const char *dir, const char *file, const char *input, pwb_err *e, int *rc)
{
    ds_import_opts o = {.file = t_path(dir, file), .header = -1, .input = input, .name = "x", .split = "dev"};
    ds_import im;
    *rc = ds_import_guess(&o, &im, e);
    cJSON *c = im.card ? cJSON_Duplicate(im.card, 1) : NULL;
    ds_import_free(&im);
    return c;
}

/* The importer's guesses, through the dataset loaders: options as a list with numeric keys, TREC
 * lines, a tab-separated .txt, a two-field input template; errors name the file. */
Test(import, guesses_layouts)
{
    char dir[64];
    t_mkdtemp(dir, sizeof dir);
    pwb_buf b;
    buf_init(&b);
    for (int i = 0; i < 12; i++)
        buf_printf(&b, "{\"goal\": \"open jar %d\", \"endings\": [\"twist\", \"smash\", \"wait\"], \"label\": %d}\n", i,
                   i % 3);
    t_write(dir, "piqa.jsonl", b.data);
    buf_reset(&b);
    for (int i = 0; i < 12; i++)
        buf_printf(&b, "%s question %d ?\n", i % 2 ? "LOC:city Where is" : "NUM:date When was", i);
    t_write(dir, "trec.txt", b.data);
    buf_reset(&b);
    for (int i = 0; i < 12; i++)
        buf_printf(&b, "%s\tmessage %d\n", i % 2 ? "spam" : "ham", i);
    t_write(dir, "sms.txt", b.data);
    buf_reset(&b);
    for (int i = 0; i < 12; i++)
        buf_printf(&b, "{\"premise\": \"p%d\", \"hypothesis\": \"h%d\", \"label\": \"%s\"}\n", i, i, i % 2 ? "yes" : "no");
    t_write(dir, "nli.jsonl", b.data);
    buf_free(&b);
    pwb_err e;
    err_clear(&e);
    int rc;
    cJSON *c = guess(dir, "piqa.jsonl", NULL, &e, &rc);
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    cr_assert_str_eq(cJSON_GetObjectItem(c, "task")->valuestring, "multiple_choice");
    cr_assert_str_eq(cJSON_GetObjectItem(c, "options")->valuestring, "endings");
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "answer_map"), "2")->valuestring, "C");
    cr_assert_str_eq(cJSON_GetObjectItem(c, "input_field")->valuestring, "goal");
    cJSON_Delete(c);
    c = guess(dir, "trec.txt", NULL, &e, &rc);
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    const cJSON *sp = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "splits"), "dev");
    cr_assert_not_null(strstr(cJSON_GetObjectItem(sp, "line_pattern")->valuestring, "(?<fine>"));
    cr_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "labels"), 0)->child->valuestring, "LOC");
    cJSON_Delete(c);
    c = guess(dir, "sms.txt", NULL, &e, &rc);
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    sp = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "splits"), "dev");
    cr_assert_str_eq(cJSON_GetObjectItem(sp, "format")->valuestring, "tsv");
    cJSON_Delete(c);
    c = guess(dir, "nli.jsonl", "{{premise}} {{hypothesis}}", &e, &rc);
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    cr_assert_str_eq(cJSON_GetObjectItem(c, "input_template")->valuestring, "{{premise}} {{hypothesis}}");
    cJSON_Delete(c);
    c = guess(dir, "nli.jsonl", "{{premise}} {{claim}}", &e, &rc);
    cr_assert_neq(rc, PWB_OK);
    cr_assert_null(c);
    cr_assert_not_null(strstr(e.msg, "nli.jsonl: input template names field 'claim'"), "%s", e.msg);
    t_rmdir(dir);
}
