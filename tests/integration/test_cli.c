/* The command line itself: help for every subcommand, usage errors, version, template and
 * dataset checks over the repository's own cards and templates. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integration/harness.h"

#define RUN(...) it_run((const char *const[]){it_pwb(), __VA_ARGS__, NULL})

Test(cli, version_and_help)
{
    proc_out p = RUN("--version");
    cr_assert_eq(p.status, 0);
    cr_assert(strncmp(p.out, "pwb ", 4) == 0, "got: %s", p.out);
    proc_out_free(&p);
    /* OpenMP's idle threads wait passively unless the user chose otherwise */
    unsetenv("OMP_WAIT_POLICY");
    unsetenv("GOMP_SPINCOUNT");
    p = RUN("--version");
    cr_assert(strstr(p.out, "\nOpenMP wait policy passive\n"), "got: %s", p.out);
    proc_out_free(&p);
    setenv("OMP_WAIT_POLICY", "active", 1);
    p = RUN("--version");
    cr_assert(strstr(p.out, "\nOpenMP wait policy active\n"), "got: %s", p.out);
    proc_out_free(&p);
    p = RUN("help");
    cr_assert_eq(p.status, 0);
    const char *cmds[] = {"run SUITE", "report", "query SQL", "template check", "dataset import", NULL};
    for (int i = 0; cmds[i]; i++)
        cr_assert(strstr(p.out, cmds[i]), "help lacks %s", cmds[i]);
    proc_out_free(&p);
}

Test(cli, every_subcommand_has_help)
{
    const char *cmds[][2] = {{"run", NULL},          {"report", NULL},        {"query", NULL},
                             {"template", "list"},   {"template", "show"},    {"template", "check"},
                             {"template", "render"}, {"dataset", "list"},     {"dataset", "show"},
                             {"dataset", "check"},   {"dataset", "import"},   {"version", NULL},
                             {"help", NULL}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        proc_out p = cmds[i][1] ? RUN(cmds[i][0], cmds[i][1], "--help") : RUN(cmds[i][0], "--help");
        char want[64];
        snprintf(want, sizeof want, "usage: pwb %s%s%s", cmds[i][0], cmds[i][1] ? " " : "", cmds[i][1] ? cmds[i][1] : "");
        cr_assert_eq(p.status, 0, "%s --help: exit %d", want, p.status);
        cr_assert(strstr(p.out, want), "%s --help printed: %s", want, p.out);
        cr_assert(strstr(p.out, "exit codes"), "%s --help lacks the exit codes", want);
        proc_out_free(&p);
    }
    proc_out p = RUN("template", "--help");
    cr_assert_eq(p.status, 0);
    cr_assert(strstr(p.out, "template render"));
    proc_out_free(&p);
}

Test(cli, usage_errors_exit_2)
{
    proc_out p = RUN("frobnicate");
    cr_assert_eq(p.status, 2);
    cr_assert(strstr(p.err, "unknown command"));
    proc_out_free(&p);
    p = RUN("run");
    cr_assert_eq(p.status, 2, "missing SUITE: %d", p.status);
    proc_out_free(&p);
    p = RUN("run", "x.json", "--bogus");
    cr_assert_eq(p.status, 2);
    cr_assert(strstr(p.err, "--bogus"));
    proc_out_free(&p);
    p = RUN("run", "x.json", "--limit", "ten");
    cr_assert_eq(p.status, 2);
    proc_out_free(&p);
    p = RUN("run", "x.json", "--fresh", "--resume");
    cr_assert_eq(p.status, 2);
    proc_out_free(&p);
    p = RUN("template");
    cr_assert_eq(p.status, 2);
    proc_out_free(&p);
    p = RUN("query", "--format", "xml", "SELECT 1");
    cr_assert_eq(p.status, 2);
    proc_out_free(&p);
    p = RUN("run", "no/such/suite.json", "--db", "no/such/dir/x.db");
    cr_assert_eq(p.status, 3, "a missing suite is bad input: %d", p.status);
    cr_assert(strstr(p.err, "pwb: ") == p.err, "one line starting with pwb: %s", p.err);
    proc_out_free(&p);
}

Test(cli, repository_templates_and_cards_check)
{
    proc_out p = RUN("template", "check");
    cr_assert_eq(p.status, 0, "template check: %s%s", p.out, p.err);
    cr_assert(strstr(p.out, " 0 failed"), "%s", p.out);
    proc_out_free(&p);
    p = RUN("template", "list");
    cr_assert_eq(p.status, 0);
    const char *names[] = {"zero-shot", "few-shot", "cot", "role", NULL};
    for (int i = 0; names[i]; i++)
        cr_assert(strstr(p.out, names[i]), "template list lacks %s", names[i]);
    proc_out_free(&p);
    p = RUN("dataset", "list");
    cr_assert_eq(p.status, 0);
    cr_assert(strstr(p.out, "sst2"));
    proc_out_free(&p);
    p = RUN("dataset", "check", "sst2");
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    cr_assert(strstr(p.out, "872 rows"), "%s", p.out);
    proc_out_free(&p);
    p = RUN("template", "render", "few-shot", "--dataset", "sst2", "--row", "3");
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "Answer:"), "%s", p.out);
    proc_out_free(&p);
}

Test(cli, template_check_reports_file_and_line)
{
    char *dir = it_tmpdir();
    char *t = it_path(dir, "bad.tmpl");
    it_write(t, "name: bad\nkind: zero-shot\ntask: classification\n---\n{{instruction}}\nText: {{input}}\n"
                "{{no_such_variable}}\n");
    proc_out p = RUN("template", "check", "--dir", dir, "--dataset", "sst2");
    cr_assert_eq(p.status, 3, "exit %d", p.status);
    cr_assert(strstr(p.err, "bad.tmpl:7:"), "no file:line in: %s", p.err);
    cr_assert(strstr(p.err, "no_such_variable"), "%s", p.err);
    proc_out_free(&p);
    it_rmtree(dir);
    free(t);
    free(dir);
}

/* The engine through the CLI: greedy ids from BOS match the reference in the model's PROVENANCE.md. */
Test(cli, generate_matches_reference_greedy_ids)
{
    char model[1024];
    snprintf(model, sizeof model, "%s/models/tinystories-656k/TinyStories-656K-Q8_0.gguf", it_env("PWB_SHARED", "../shared"));
    if (!it_exists(model))
        cr_skip_test("no %s", model);
    proc_out p = RUN("generate", "--model", model, "--prompt", "", "--greedy", "--max-tokens", "24", "--ids", "-q");
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "output: 147 201 282 215 286 598 1662 356 499 826 1363 1145 1652 615 242 1482 951 628 499 "
                            "826 872 921 318 385\n"),
              "%s", p.out);
    proc_out_free(&p);
    p = RUN("model", "info", model);
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "llama"), "%s", p.out);
    proc_out_free(&p);
    p = RUN("model", "info", "no/such/model.gguf");
    cr_assert_neq(p.status, 0);
    proc_out_free(&p);
}
