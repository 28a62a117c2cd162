/* pwb run SUITE: validate, run every cell, print a summary table. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/table.h"
#include "run/run.h"

static void print_summary(const run_opts *o, const run_result *r)
{
    if (o->dry_run) {
        printf("suite %s is valid: %d cells\n", o->suite_path, r->n_cells);
        cli_table t;
        table_init(&t, 4, (const char *[]){"dataset", "model", "method", "planned"});
        for (int i = 0; i < r->n_cells; i++) {
            const run_cell_result *c = &r->cells[i];
            char planned[32];
            snprintf(planned, sizeof planned, "%ld", c->n_planned);
            table_add(&t, (const char *[]){c->dataset, c->model, c->method, planned});
        }
        table_print(&t, stdout, TABLE_PLAIN);
        table_free(&t);
        return;
    }
    if (r->n_cells == 0)
        return;
    double rate = r->wall_s > 0 ? (double)r->n_new / r->wall_s : 0;
    printf("run %lld%s: %ld new predictions in %.1f s (%.0f/s), %ld from cache, %ld already done\n",
           (long long)r->run_id, r->resumed ? " (resumed)" : "", r->n_new, r->wall_s, rate, r->n_cached, r->n_skipped);
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
}

int cmd_run(const cli_args *a)
{
    run_opts o;
    run_opts_init(&o);
    o.suite_path = a->pos[0];
    o.db_path = cli_db_path(a);
    o.fresh = cli_flag(a, "fresh") > 0;
    o.require_existing = cli_flag(a, "resume") > 0;
    o.dry_run = cli_flag(a, "dry-run") > 0;
    o.no_cache = cli_flag(a, "no-cache") > 0;
    if (o.fresh && o.require_existing) {
        cli_usage_error(a->cmd, "--fresh and --resume exclude each other");
        return EXIT_PWB_USAGE;
    }
    long limit, conc, chunk;
    if (cli_long(a, "limit", 0, 1, 100000000L, &limit) || cli_long(a, "concurrency", 0, 1, 4096, &conc) ||
        cli_long(a, "chunk", 256, 1, 65536, &chunk))
        return EXIT_PWB_USAGE;
    o.limit = limit;
    o.concurrency = (int)conc;
    o.chunk = (int)chunk;
    pwb_buf cards;
    buf_init(&cards);
    cli_card_dirs(NULL, &cards);
    o.card_dirs = cards.data;
    o.data_path = cli_data_path();
    o.stop = &cli_stop;
    o.progress = a->quiet ? NULL : stderr;
    cli_signals_install();
    signal(SIGPIPE, SIG_IGN); /* a server closing its socket is an error return, not a death */

    run_result r;
    pwb_err e;
    err_clear(&e);
    int rc = run_suite(&o, &r, &e);
    if (!o.dry_run || rc == PWB_OK)
        print_summary(&o, &r);
    fflush(stdout);
    int code = EXIT_PWB_OK;
    if (rc) {
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
