/* pwb dataset list|show|check (import is in cmd_import.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task/dataset.h"
#include "task/catalog.h"
#include "cli/cli.h"
#include "cli/table.h"
#include "util/str.h"

/* --cards, datasets/, then $PWB_DATA_PATH: the folders `pwb run` finds cards in. */
static void card_dirs_for_listing(const cli_args *a, pwb_buf *out)
{
    catalog_card_dirs(cli_str(a, "cards", NULL), out);
}

int cmd_dataset_list(const cli_args *a)
{
    pwb_buf dirs;
    buf_init(&dirs);
    card_dirs_for_listing(a, &dirs);
    catalog_list files = {0};
    int bad = catalog_cards(dirs.data, &files) != 0;
    cli_table t;
    table_init(&t, 6, (const char *[]){"name", "task", "labels", "splits", "eval", "card"});
    t.max_width = 60;
    for (int i = 0; i < files.n; i++) {
        ds_card c;
        card_init(&c);
        pwb_err e;
        err_clear(&e);
        if (card_load(&c, files.v[i], &e)) {
            cli_fail(&e);
            bad = 1;
            continue;
        }
        pwb_buf labels, splits;
        buf_init(&labels);
        buf_init(&splits);
        for (int k = 0; k < c.n_labels; k++)
            buf_printf(&labels, "%s%s", k ? "," : "", c.labels[k].verbalizer);
        for (int k = 0; k < c.n_splits; k++)
            buf_printf(&splits, "%s%s", k ? "," : "", c.splits[k].name);
        table_add(&t, (const char *[]){c.name, ds_task_name(c.task), labels.data ? labels.data : "",
                                       splits.data ? splits.data : "", c.eval_split, files.v[i]});
        buf_free(&labels);
        buf_free(&splits);
        card_free(&c);
    }
    if (files.n == 0)
        fprintf(stderr, "pwb: no dataset cards in %s\n", dirs.data);
    else
        table_print(&t, stdout, TABLE_PLAIN);
    table_free(&t);
    list_free(&files);
    buf_free(&dirs);
    return bad ? EXIT_PWB_INPUT : EXIT_PWB_OK;
}

static void print_label_counts(const ds_data *d, const ds_card *c)
{
    if (c->n_labels <= 0)
        return;
    size_t *counts = calloc((size_t)c->n_labels, sizeof *counts);
    if (!counts)
        return;
    size_t labelled = dataset_label_counts(d, c, counts);
    printf("      labels:");
    for (int k = 0; k < c->n_labels; k++)
        printf(" %s=%zu", c->labels[k].verbalizer, counts[k]);
    if (labelled < d->n)
        printf(" (unlabelled %zu)", d->n - labelled);
    printf("\n");
    free(counts);
}

/* Loads every split: the check, and the row counts for show. */
static int load_all_splits(const ds_card *c, int verbose_counts, pwb_err *e)
{
    int rc = dataset_verify(c, cli_data_path(), e);
    if (rc)
        return rc;
    for (int s = 0; s < c->n_splits; s++) {
        ds_data d;
        ds_data_init(&d);
        rc = dataset_load(c, c->splits[s].name, cli_data_path(), &d, e);
        if (rc) {
            ds_data_free(&d);
            return rc;
        }
        printf("  %-10s %8zu rows  %s (%s)\n", c->splits[s].name, d.n, d.path ? d.path : c->splits[s].file,
               c->splits[s].format);
        if (verbose_counts)
            print_label_counts(&d, c);
        size_t empty = dataset_count_empty(&d), first = 0;
        while (empty && !dataset_empty_input(&d.ex[first]))
            first++;
        if (empty)
            printf("  warning: %zu empty input%s (first at %s:%ld); the card's \"empty_inputs\": \"skip\" drops "
                   "them\n", empty, empty == 1 ? "" : "s", d.path, d.ex[first].line);
        ds_data_free(&d);
    }
    return PWB_OK;
}

int cmd_dataset_show(const cli_args *a)
{
    long nrows;
    if (cli_long(a, "rows", 3, 0, 1000, &nrows))
        return EXIT_PWB_USAGE;
    ds_card c;
    card_init(&c);
    pwb_err e;
    err_clear(&e);
    if (catalog_load_card(a->pos[0], cli_str(a, "cards", NULL), &c, &e))
        return cli_fail(&e);
    printf("name:        %s\ncard:        %s\ntask:        %s (answer: %s)\n", c.name, c.path, ds_task_name(c.task),
           ds_answer_name(c.answer_kind));
    if (c.description)
        printf("description: %s\n", c.description);
    if (c.source)
        printf("source:      %s\n", c.source);
    if (c.license)
        printf("license:     %s\n", c.license);
    if (c.instruction)
        printf("instruction: %s\n", c.instruction);
    printf("input:       %s\n", c.input_template ? c.input_template : c.input_field ? c.input_field : "(per split)");
    printf("answer:      %s\n", c.answer_field ? c.answer_field : "(per split)");
    if (c.n_labels) {
        printf("labels:     ");
        for (int k = 0; k < c.n_labels; k++)
            printf(" %s -> %s%s", c.labels[k].value, c.labels[k].verbalizer, k + 1 < c.n_labels ? "," : "");
        printf("\n");
    }
    printf("eval split:  %s; shots from: %s\nsplits:\n", c.eval_split, c.few_shot_split ? c.few_shot_split : "(none)");
    int rc = load_all_splits(&c, 1, &e);
    if (!rc && nrows > 0) {
        ds_data d;
        ds_data_init(&d);
        rc = dataset_load(&c, c.eval_split, cli_data_path(), &d, &e);
        if (!rc) {
            printf("first rows of %s:\n", c.eval_split);
            cli_table t;
            table_init(&t, 3, (const char *[]){"row", "answer", "input"});
            t.max_width = 100;
            for (size_t i = 0; i < d.n && i < (size_t)nrows; i++) {
                char row[32];
                snprintf(row, sizeof row, "%zu", d.ex[i].row);
                table_add(&t, (const char *[]){row, d.ex[i].answer ? d.ex[i].answer : "", d.ex[i].input});
            }
            table_print(&t, stdout, TABLE_PLAIN);
            table_free(&t);
        }
        ds_data_free(&d);
    }
    card_free(&c);
    return rc ? cli_fail(&e) : EXIT_PWB_OK;
}

int cmd_dataset_check(const cli_args *a)
{
    catalog_list names = {0};
    pwb_buf dirs;
    buf_init(&dirs);
    int bad = 0;
    if (a->npos > 0) {
        for (int i = 0; i < a->npos; i++)
            bad |= list_add(&names, a->pos[i]);
    } else {
        card_dirs_for_listing(a, &dirs);
        bad |= catalog_cards(dirs.data, &names);
    }
    int n_ok = 0, n_fail = 0;
    for (int i = 0; i < names.n; i++) {
        ds_card c;
        card_init(&c);
        pwb_err e;
        err_clear(&e);
        int rc = catalog_load_card(names.v[i], cli_str(a, "cards", NULL), &c, &e);
        if (!rc) {
            printf("%s (%s)\n", c.name, c.path);
            rc = load_all_splits(&c, 1, &e);
        }
        if (rc) {
            cli_fail(&e);
            n_fail++;
        } else {
            n_ok++;
        }
        card_free(&c);
    }
    printf("%d card%s checked: %d ok, %d failed\n", names.n, names.n == 1 ? "" : "s", n_ok, n_fail);
    int code = bad || n_fail || names.n == 0 ? EXIT_PWB_INPUT : EXIT_PWB_OK;
    list_free(&names);
    buf_free(&dirs);
    return code;
}
