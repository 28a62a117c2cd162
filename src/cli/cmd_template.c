/* pwb template list|show|check|render. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/gguf.h"
#include "task/dataset.h"
#include "task/template.h"
#include "task/catalog.h"
#include "util/file.h"
#include "cli/cli.h"
#include "cli/table.h"
#include "util/str.h"

/* Every template in the template folders, the first of a file name winning. */
static int all_templates(const cli_args *a, catalog_list *out)
{
    const char *dirs = cli_template_dirs(a);
    catalog_list seen = {0};
    pwb_buf dir;
    buf_init(&dir);
    int rc = 0;
    for (const char *p = dirs; !rc && (p = file_path_next(p, &dir));) {
        catalog_list files = {0};
        rc = catalog_files(dir.data, ".tmpl", &files);
        for (int i = 0; !rc && i < files.n; i++) {
            const char *base = strrchr(files.v[i], '/');
            base = base ? base + 1 : files.v[i];
            int dup = 0;
            for (int k = 0; k < seen.n && !dup; k++)
                dup = !strcmp(seen.v[k], base);
            if (!dup && (list_add(&seen, base) || list_add(out, files.v[i])))
                rc = -1;
        }
        list_free(&files);
    }
    buf_free(&dir);
    list_free(&seen);
    return rc;
}

int cmd_template_list(const cli_args *a)
{
    catalog_list files = {0};
    if (all_templates(a, &files)) {
        fprintf(stderr, "pwb: out of memory\n");
        return EXIT_PWB_FAILED;
    }
    if (files.n == 0) {
        fprintf(stderr, "pwb: no templates in %s\n", cli_template_dirs(a)[0] ? cli_template_dirs(a) : "any templates folder");
        list_free(&files);
        return EXIT_PWB_INPUT;
    }
    cli_table t;
    table_init(&t, 6, (const char *[]){"name", "kind", "shots", "task", "file", "description"});
    t.max_width = 60;
    int bad = 0;
    for (int i = 0; i < files.n; i++) {
        pwb_template tp;
        template_init(&tp);
        pwb_err e;
        err_clear(&e);
        if (template_load(&tp, files.v[i], &e)) {
            cli_fail(&e);
            bad = 1;
            template_free(&tp);
            continue;
        }
        char shots[64];
        if (tp.shots > 0)
            snprintf(shots, sizeof shots, "%d %s", tp.shots, template_shot_pick_name(tp.shot_pick));
        else
            snprintf(shots, sizeof shots, "0");
        table_add(&t, (const char *[]){tp.name, template_kind_name(tp.kind), shots, tp.task ? tp.task : "",
                                       files.v[i], tp.description ? tp.description : ""});
        template_free(&tp);
    }
    table_print(&t, stdout, TABLE_PLAIN);
    table_free(&t);
    list_free(&files);
    return bad ? EXIT_PWB_INPUT : EXIT_PWB_OK;
}

int cmd_template_show(const cli_args *a)
{
    pwb_err e;
    err_clear(&e);
    pwb_buf path;
    buf_init(&path);
    pwb_template tp;
    template_init(&tp);
    int rc = catalog_template_path(a->pos[0], cli_template_dirs(a), &path, &e);
    if (!rc)
        rc = template_load(&tp, path.data, &e);
    if (rc) {
        buf_free(&path);
        template_free(&tp);
        return cli_fail(&e);
    }
    printf("file:        %s\nname:        %s\nkind:        %s\nshots:       %d%s%s%s\ntask:        %s\n"
           "max_tokens:  %d\nanswer:      %s\n",
           path.data, tp.name, template_kind_name(tp.kind), tp.shots, tp.shots > 0 ? " (" : "",
           tp.shots > 0 ? template_shot_pick_name(tp.shot_pick) : "", tp.shots > 0 ? ")" : "",
           tp.task ? tp.task : "(any)", tp.max_tokens, tp.answer_pattern ? tp.answer_pattern : "(the card's)");
    if (tp.description)
        printf("description: %s\n", tp.description);
    printf("roles:      ");
    for (int i = 0; i < tp.n_sections; i++)
        printf(" %s (line %d)", tp.sections[i].role, tp.sections[i].line);
    printf("\n\n");
    if (tp.text)
        fputs(tp.text, stdout);
    buf_free(&path);
    template_free(&tp);
    return EXIT_PWB_OK;
}

int cmd_template_check(const cli_args *a)
{
    catalog_list tfiles = {0}, cfiles = {0};
    pwb_buf path, dirs;
    buf_init(&path);
    buf_init(&dirs);
    int bad = 0, oom = 0;
    pwb_err e;
    /* The templates: the ones named, or every one in the folder. */
    if (a->npos > 0) {
        for (int i = 0; i < a->npos; i++) {
            err_clear(&e);
            if (catalog_template_path(a->pos[i], cli_template_dirs(a), &path, &e)) {
                cli_fail(&e);
                bad = 1;
            } else {
                oom |= list_add(&tfiles, path.data);
            }
        }
    } else {
        oom |= all_templates(a, &tfiles);
    }
    /* The cards: one, or every card in the card folders. */
    const char *only = cli_str(a, "dataset", NULL);
    int ncards = 0;
    ds_card *cards = NULL;
    if (only) {
        cards = calloc(1, sizeof *cards);
        oom |= !cards;
        if (cards) {
            card_init(&cards[0]);
            err_clear(&e);
            if (catalog_load_card(only, cli_str(a, "cards", NULL), &cards[0], &e)) {
                cli_fail(&e);
                bad = 1;
            } else {
                ncards = 1;
            }
        }
    } else {
        catalog_card_dirs(cli_str(a, "cards", NULL), &dirs);
        oom |= catalog_cards(dirs.data, &cfiles);
        cards = calloc((size_t)(cfiles.n ? cfiles.n : 1), sizeof *cards);
        oom |= !cards;
        for (int i = 0; cards && i < cfiles.n; i++) {
            card_init(&cards[ncards]);
            err_clear(&e);
            if (card_load(&cards[ncards], cfiles.v[i], &e)) {
                cli_fail(&e);
                bad = 1;
            } else {
                ncards++;
            }
        }
    }
    if (oom) {
        fprintf(stderr, "pwb: out of memory\n");
        bad = 1;
    }
    if (!tfiles.n && a->npos == 0)
        fprintf(stderr, "pwb: no templates in %s\n", cli_template_dirs(a)[0] ? cli_template_dirs(a) : "any templates folder");
    int n_ok = 0, n_fail = 0;
    for (int i = 0; i < tfiles.n; i++) {
        pwb_template tp;
        template_init(&tp);
        err_clear(&e);
        if (template_load(&tp, tfiles.v[i], &e)) {
            cli_fail(&e);
            n_fail++;
            template_free(&tp);
            continue;
        }
        int applied = 0, failed = 0;
        for (int k = 0; k < ncards; k++) {
            if (!template_applies(&tp, &cards[k]))
                continue;
            applied++;
            err_clear(&e);
            if (template_check(&tp, &cards[k], &e)) {
                fprintf(stderr, "pwb: %s (with card %s)\n", e.msg, cards[k].path);
                failed++;
            }
        }
        if (failed) {
            n_fail++;
        } else {
            n_ok++;
            if (!a->quiet)
                printf("ok  %-32s %d card%s\n", tfiles.v[i], applied, applied == 1 ? "" : "s");
        }
        template_free(&tp);
    }
    printf("%d template%s checked against %d card%s: %d ok, %d failed\n", tfiles.n, tfiles.n == 1 ? "" : "s", ncards,
           ncards == 1 ? "" : "s", n_ok, n_fail);
    int code = bad || n_fail || tfiles.n == 0 ? EXIT_PWB_INPUT : EXIT_PWB_OK;
    for (int k = 0; k < ncards; k++)
        card_free(&cards[k]);
    free(cards);
    list_free(&tfiles);
    list_free(&cfiles);
    buf_free(&path);
    buf_free(&dirs);
    return code;
}

/* The index of the example with data row `row` (rows may skip blank lines), or -1. */
static long find_row(const ds_data *d, long row)
{
    if (row >= 0 && (size_t)row < d->n && d->ex[row].row == (size_t)row)
        return row;
    for (size_t i = 0; i < d->n; i++)
        if (d->ex[i].row == (size_t)row)
            return (long)i;
    return -1;
}

/* The string the model reads: the messages through a chat template (--chat-template NAME, or
 * the one in --model's GGUF), else flattened as completion backends send them. */
static int render_exact(const cli_args *a, const tpl_prompt *pr, pwb_buf *out, pwb_err *e)
{
    const char *name = cli_str(a, "chat-template", NULL), *model = cli_str(a, "model", NULL);
    if (!name && !model)
        return tpl_prompt_flatten(pr, out) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    gguf_file *g = NULL;
    int rc = model && !name ? gguf_open(&g, model, e) : PWB_OK;
    chat_template ct = {0};
    if (!rc)
        rc = chat_template_init(&ct, g ? gguf_get_str(g, "tokenizer.chat_template", NULL) : NULL, name, e);
    chat_msg *msgs = rc ? NULL : calloc((size_t)pr->n + 1, sizeof *msgs);
    if (!rc && !msgs)
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < pr->n; i++)
        msgs[i] = (chat_msg){.role = pr->msgs[i].role, .content = pr->msgs[i].content};
    buf_reset(out);
    if (!rc)
        rc = chat_render(&ct, msgs, (size_t)pr->n, 1, out, e);
    free(msgs);
    chat_template_free(&ct);
    if (g)
        gguf_close(g);
    return rc;
}

int cmd_template_render(const cli_args *a)
{
    const char *dsname = cli_str(a, "dataset", NULL);
    if (!dsname) {
        cli_usage_error(a->cmd, "--dataset NAME is required");
        return EXIT_PWB_USAGE;
    }
    long row, shots_override, seed;
    if (cli_long(a, "row", 0, 0, 100000000L, &row) || cli_long(a, "shots", -1, 0, 64, &shots_override) ||
        cli_long(a, "seed", 1, 0, 0x7fffffffffffffffL, &seed))
        return EXIT_PWB_USAGE;
    pwb_err e;
    err_clear(&e);
    pwb_buf path, flat;
    buf_init(&path);
    buf_init(&flat);
    pwb_template tp;
    template_init(&tp);
    ds_card card;
    card_init(&card);
    ds_data data, shots_data;
    ds_data_init(&data);
    ds_data_init(&shots_data);
    tpl_prompt pr = {0};
    size_t rows[64];
    const ds_example *shots[64];
    int rc = catalog_template_path(a->pos[0], cli_template_dirs(a), &path, &e);
    if (!rc)
        rc = template_load(&tp, path.data, &e);
    if (!rc)
        rc = catalog_load_card(dsname, cli_str(a, "cards", NULL), &card, &e);
    if (!rc)
        rc = template_check(&tp, &card, &e);
    const char *split = cli_str(a, "split", card.eval_split);
    if (!rc && !card_split(&card, split))
        rc = err_set(&e, PWB_EINVAL, "%s: no split '%s'", card.path, split);
    if (!rc)
        rc = dataset_load(&card, split, cli_data_path(), &data, &e);
    long idx = rc ? -1 : find_row(&data, row);
    if (!rc && idx < 0)
        rc = err_set(&e, PWB_EINVAL, "%s: split '%s' has no row %ld (%zu rows)", card.path, split, row, data.n);
    if (shots_override >= 0)
        tp.shots = (int)shots_override;
    if (tp.shots > 64)
        tp.shots = 64;
    const ds_data *from = &data;
    int same = 1;
    if (!rc && tp.shots > 0 && card.few_shot_split && strcmp(card.few_shot_split, split) != 0) {
        rc = dataset_load(&card, card.few_shot_split, cli_data_path(), &shots_data, &e);
        from = &shots_data;
        same = 0;
    }
    if (!rc && tp.shots > 0)
        rc = template_pick_shots(&tp, &card, from, (size_t)idx, same, (uint64_t)seed, rows, &e);
    for (int i = 0; !rc && i < tp.shots; i++) {
        if (rows[i] >= from->n)
            rc = err_set(&e, PWB_ERANGE, "shot row %zu outside the split", rows[i]);
        else
            shots[i] = &from->ex[rows[i]];
    }
    if (!rc)
        rc = template_render(&tp, &card, &data.ex[idx], shots, tp.shots, &pr, &e);
    if (!rc) {
        if (cli_flag(a, "flat")) {
            rc = render_exact(a, &pr, &flat, &e);
            if (!rc) /* exactly the text, no newline added: pipe through od -c to see the spaces */
                fwrite(flat.data ? flat.data : "", 1, flat.len, stdout);
            if (!rc && !a->quiet) {
                int nc = 0;
                char **ch = template_choices(&tp, &card, &data.ex[idx], &nc);
                fprintf(stderr, "\npwb: rank continuations:");
                for (int i = 0; ch && i < nc; i++)
                    fprintf(stderr, " \"%s\"", ch[i]);
                fprintf(stderr, "\n");
                dataset_choices_free(ch, nc);
            }
        } else {
            for (int i = 0; i < pr.n; i++)
                printf("%s[%s]\n%s\n", i ? "\n" : "", pr.msgs[i].role, pr.msgs[i].content);
        }
        if (!a->quiet)
            fprintf(stderr, "pwb: %s row %ld (%s), gold answer: %s\n", card.name, row, split,
                    data.ex[idx].answer ? data.ex[idx].answer : "(none)");
    }
    int code = rc ? cli_fail(&e) : EXIT_PWB_OK;
    tpl_prompt_free(&pr);
    ds_data_free(&data);
    ds_data_free(&shots_data);
    card_free(&card);
    template_free(&tp);
    buf_free(&path);
    buf_free(&flat);
    return code;
}
