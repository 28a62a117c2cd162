/* pwb run SUITE: validate, run every cell, print a summary table (or, with --dry-run, what each
 * cell would send and cost). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/table.h"
#include "run/run.h"
#include "task/catalog.h"
#include "util/str.h"

/* Soft-prompt cells: what was (or, in a dry run, would be) trained or reused. */
static void print_soft(const run_result *r, int dry)
{
    for (int i = 0; i < r->n_cells; i++) {
        const run_cell_result *c = &r->cells[i];
        if (c->soft == RUN_SOFT_NONE)
            continue;
        printf("soft prompt %s/%s/%s: ", c->dataset, c->model, c->method);
        if (c->soft == RUN_SOFT_REUSED) {
            printf("%s the one trained before", dry ? "reuses" : "reused");
            if (!dry && c->soft_steps >= 0)
                printf(" (%ld steps, %lld examples, %.1f s of training)", c->soft_steps, (long long)c->soft_examples,
                       c->soft_seconds);
        } else {
            printf("%s %ld steps, %lld examples (%d training, %d held out)%s", dry ? "will train" : "trained",
                   c->soft_steps, (long long)c->soft_examples, c->soft_n_train, c->soft_n_eval,
                   c->soft_resumes ? (dry ? ", resuming its checkpoint" : ", resumed") : "");
            if (!dry && c->soft_seconds >= 0)
                printf(" in %.1f s", c->soft_seconds);
        }
        if (!dry && !isnan(c->soft_best_acc))
            printf(", held-out accuracy %.3f", c->soft_best_acc);
        printf("; %s\n", c->soft_dir ? c->soft_dir : "?");
    }
}

/* --dry-run: per cell what would be sent, and the total. */
static void print_estimate(const run_opts *o, const run_result *r)
{
    printf("suite %s is valid: %d cells; dry run, nothing sent\n", o->suite_path, r->n_cells);
    cli_table t;
    table_init(&t, 9,
               (const char *[]){"dataset", "model", "method", "requests", "calls", "tokens_in", "max_tokens_out",
                                "max_cost_usd", "counted_with"});
    int unpriced = 0, approx = 0;
    for (int i = 0; i < r->n_cells; i++) {
        const run_cell_result *c = &r->cells[i];
        char req[32], calls[32], tin[32], tout[32], cost[32];
        snprintf(req, sizeof req, "%ld", c->est.requests);
        snprintf(calls, sizeof calls, "%ld", c->est.calls);
        snprintf(tin, sizeof tin, "%.0f", c->est.tokens_in);
        snprintf(tout, sizeof tout, "%.0f", c->est.tokens_out_max);
        if (c->est_priced)
            snprintf(cost, sizeof cost, "%.4f", c->est.cost_usd);
        else
            snprintf(cost, sizeof cost, "-");
        unpriced |= !c->est_priced;
        approx |= !c->est_exact;
        /* "tokenizer /long/path/model.gguf": the file's name says enough in a table */
        const char *how = c->est_method;
        const char *slash = strrchr(how, '/');
        char shown[128];
        if (!strncmp(how, "tokenizer ", 10) && slash && slash[1]) {
            snprintf(shown, sizeof shown, "tokenizer %s", slash + 1);
            how = shown;
        }
        table_add(&t, (const char *[]){c->dataset, c->model, c->method, req, calls, tin, tout, cost, how});
    }
    table_print(&t, stdout, TABLE_PLAIN);
    table_free(&t);
    printf("total: %ld requests, %ld calls, %.0f prompt tokens, at most %.0f generated, at most $%.4f\n",
           r->est.requests, r->est.calls, r->est.tokens_in, r->est.tokens_out_max, r->est.cost_usd);
    print_soft(r, 1);
    if (o->max_cost_usd > 0)
        printf("--max-cost $%.4f: %s\n", o->max_cost_usd,
               r->est.cost_usd <= o->max_cost_usd ? "the run fits even if every reply uses all its max_tokens"
                                                  : "the run may stop at the limit (exit 6); rerun with a higher one");
    printf("(the cost assumes every request generates its max_tokens; the response cache and rows a resumed run "
           "already has are not subtracted%s%s)\n",
           unpriced ? "; '-': no token price for the model (local CPU time, or none in the suite or prices.json)" : "",
           approx ? "; bytes/4: no tokenizer for the model, give it one with \"tokenizer\"" : "");
}

static void print_summary(const run_opts *o, const run_result *r)
{
    if (o->dry_run) {
        print_estimate(o, r);
        return;
    }
    if (r->n_cells == 0)
        return;
    double rate = r->wall_s > 0 ? (double)r->n_new / r->wall_s : 0;
    printf("run %lld%s: %ld new predictions in %.1f s (%.0f/s), %ld from cache, %ld already done\n",
           (long long)r->run_id, r->resumed ? " (resumed)" : "", r->n_new, r->wall_s, rate, r->n_cached, r->n_skipped);
    if (o->max_cost_usd > 0)
        printf("spent $%.4f of the $%.4f limit (--max-cost)%s\n", r->spent_usd, o->max_cost_usd,
               r->limited ? ": limit reached, the run is incomplete" : "");
    cli_table t;
    table_init(&t, 8, (const char *[]){"dataset", "model", "method", "n", "accuracy", "invalid", "errors", "cost_usd"});
    for (int i = 0; i < r->n_cells; i++) {
        const run_cell_result *c = &r->cells[i];
        char n[48], acc[32], cost[32], inv[32], err[32];
        if (c->n == c->n_planned)
            snprintf(n, sizeof n, "%ld", c->n);
        else
            snprintf(n, sizeof n, "%ld/%ld", c->n, c->n_planned);
        if (c->n > 0)
            snprintf(acc, sizeof acc, "%.3f", (double)c->correct / (double)c->n);
        else
            snprintf(acc, sizeof acc, "-");
        snprintf(cost, sizeof cost, "%.4f", c->cost_usd);
        snprintf(inv, sizeof inv, "%ld", c->invalid);
        snprintf(err, sizeof err, "%ld", c->errors);
        table_add(&t, (const char *[]){c->dataset, c->model, c->method, n, acc, inv, err, cost});
    }
    table_print(&t, stdout, TABLE_PLAIN);
    table_free(&t);
    print_soft(r, 0);
}

int cmd_run(const cli_args *a)
{
    run_opts o;
    run_opts_init(&o);
    o.suite_path = cli_user_file(a->pos[0]);
    o.db_path = cli_db_path(a);
    o.fresh = cli_flag(a, "fresh") > 0;
    o.require_existing = cli_flag(a, "resume") > 0;
    o.dry_run = cli_flag(a, "dry-run") > 0;
    o.no_cache = cli_flag(a, "no-cache") > 0;
    o.search_only = !strcmp(a->cmd->name, "optimize");
    o.wait = !o.search_only && cli_flag(a, "wait") > 0;
    if (o.fresh && o.require_existing) {
        cli_usage_error(a->cmd, "--fresh and --resume exclude each other");
        return EXIT_PWB_USAGE;
    }
    long limit, conc, chunk;
    if (cli_long(a, "limit", 0, 1, 100000000L, &limit) || cli_long(a, "concurrency", 0, 1, 4096, &conc) ||
        cli_long(a, "chunk", 256, 1, 65536, &chunk))
        return EXIT_PWB_USAGE;
    const char *mc = cli_str(a, "max-cost", NULL);
    if (mc) {
        double v;
        if (str_to_double(mc, &v) || v <= 0 || v > 1e9) {
            cli_usage_error(a->cmd, "--max-cost: expected an amount in USD greater than 0, got '%s'", mc);
            return EXIT_PWB_USAGE;
        }
        o.max_cost_usd = v;
    }
    o.limit = limit;
    o.concurrency = (int)conc;
    o.chunk = (int)chunk;
    pwb_buf cards;
    buf_init(&cards);
    catalog_card_dirs(NULL, &cards);
    o.card_dirs = cards.data;
    o.data_path = cli_data_path();
    o.template_dirs = cli_template_dirs(a);
    o.stop = &cli_stop;
    o.progress = a->quiet ? NULL : stderr;
    cli_signals_install();
    signal(SIGPIPE, SIG_IGN); /* a server closing its socket is an error return, not a death */

    run_result r;
    pwb_err e;
    err_clear(&e);
    int rc = run_suite(&o, &r, &e);
    if (o.search_only) {
        for (int i = 0; !rc && i < r.n_cells; i++)
            if (r.cells[i].search_template)
                printf("%s/%s/%s: %s\n", r.cells[i].dataset, r.cells[i].model, r.cells[i].method,
                       r.cells[i].search_template);
    } else if (!o.dry_run || rc == PWB_OK) {
        print_summary(&o, &r);
    }
    fflush(stdout);
    int code = EXIT_PWB_OK;
    if (rc == PWB_ELIMIT) {
        cli_fail(&e);
        code = EXIT_PWB_LIMIT;
    } else if (rc) {
        code = cli_fail(&e);
    } else {
        long errors = 0;
        for (int i = 0; i < r.n_cells; i++)
            errors += r.cells[i].errors;
        if (errors > 0) {
            fprintf(stderr, "pwb: %ld predictions failed (their error is in the database: "
                            "pwb query \"SELECT error, count(*) FROM v_predictions WHERE run_id = %lld "
                            "AND error IS NOT NULL GROUP BY 1\")\n",
                    errors, (long long)r.run_id);
            code = EXIT_PWB_FAILED;
        }
    }
    run_result_free(&r);
    buf_free(&cards);
    return code;
}
