/* pwb dataset import FILE: writes a dataset card for a CSV, TSV, JSONL or plain-text file. The
 * guessing is the task layer's (ds_import_guess); here: options, where the card goes, and proving
 * it by loading the file through it. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "task/dataset.h"
#include "task/import.h"
#include "cli/cli.h"
#include "util/file.h"
#include "util/str.h"

static void sanitize_name(const char *in, char *out, size_t cap)
{
    size_t j = 0;
    for (const char *p = in; *p && j + 1 < cap; p++)
        out[j++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
                           *p == '-'
                       ? *p
                       : '_';
    out[j] = '\0';
    if (!j)
        str_copy(out, cap, "dataset");
}

/* How the card names the file: relative to the card's folder or to a $PWB_DATA_PATH folder
 * when it lies inside one (the card stays portable), else absolute. */
static int card_file_ref(const char *file, const char *card_dir, pwb_buf *out)
{
    char fabs[PATH_MAX], dabs[PATH_MAX];
    buf_reset(out);
    if (!realpath(file, fabs))
        return buf_puts(out, file);
    const char *dp = cli_data_path();
    pwb_buf dirs;
    buf_init(&dirs);
    buf_printf(&dirs, "%s%s%s", card_dir, dp[0] ? ":" : "", dp);
    int rc = -1;
    for (const char *p = dirs.data; p && *p && rc;) {
        const char *c = strchr(p, ':');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        char d[PATH_MAX];
        if (n && n < sizeof d) {
            memcpy(d, p, n);
            d[n] = '\0';
            if (realpath(d, dabs)) {
                size_t dl = strlen(dabs);
                if (strncmp(fabs, dabs, dl) == 0 && fabs[dl] == '/')
                    rc = buf_puts(out, fabs + dl + 1);
            }
        }
        p = c ? c + 1 : p + n;
    }
    buf_free(&dirs);
    return rc ? buf_puts(out, fabs) : 0;
}

/* Proves the card: written beside its destination (relative file names resolve the same), the
 * file loaded through it, then moved into place; prints what was found. */
static int prove_and_write(const ds_import *im, const char *text, const char *dir, const char *dest, const char *name,
                           const char *split, pwb_err *e)
{
    pwb_buf tmp;
    buf_init(&tmp);
    ds_card c;
    card_init(&c);
    ds_data d;
    ds_data_init(&d);
    int rc = file_mkdirs(dir, e);
    if (!rc) {
        buf_printf(&tmp, "%s/.%s.import-%ld.json", dir, name, (long)getpid());
        rc = file_write_atomic(tmp.data, text, strlen(text), e);
    }
    if (!rc)
        rc = card_load(&c, tmp.data, e);
    if (!rc)
        rc = dataset_load(&c, split, cli_data_path(), &d, e);
    if (!rc && dest && rename(tmp.data, dest) != 0)
        rc = err_set(e, PWB_EIO, "%s: cannot write the card", dest);
    if (tmp.data)
        unlink(tmp.data);
    if (!rc) {
        if (!dest)
            fputs(text, stdout);
        size_t counts[DS_MAX_LABELS];
        dataset_label_counts(&d, &c, counts);
        fprintf(stderr, "pwb: %s%s: %zu rows, %s, %s '%s', answer '%s', %s:", dest ? "wrote " : "", dest ? dest : name,
                d.n, im->format, c.input_template ? "input template" : "input", im->input, im->answer,
                im->multiple_choice ? "options" : "labels");
        for (int i = 0; i < c.n_labels; i++)
            fprintf(stderr, " %s=%zu", c.labels[i].verbalizer, counts[i]);
        fprintf(stderr, "\n");
        if (im->numeric_labels)
            fprintf(stderr, "pwb: warning: the labels are numbers; a model answers better with words: "
                            "set --verbalizers (e.g. --verbalizers negative,positive)\n");
    }
    ds_data_free(&d);
    card_free(&c);
    buf_free(&tmp);
    return rc;
}

int cmd_dataset_import(const cli_args *a)
{
    const char *file = a->pos[0];
    if (cli_flag(a, "header") && cli_flag(a, "no-header")) {
        cli_usage_error(a->cmd, "--header and --no-header exclude each other");
        return EXIT_PWB_USAGE;
    }
    if (cli_str(a, "pattern", NULL) && (!cli_str(a, "input", NULL) || !cli_str(a, "answer", NULL))) {
        cli_usage_error(a->cmd, "with --pattern, give --input and --answer (group names)");
        return EXIT_PWB_USAGE;
    }
    pwb_err e;
    err_clear(&e);
    char stem[128], name[128];
    const char *base = strrchr(file, '/');
    str_copy(stem, sizeof stem, base ? base + 1 : file);
    char *dot = strchr(stem, '.');
    if (dot && dot != stem)
        *dot = '\0';
    sanitize_name(cli_str(a, "name", stem), name, sizeof name);
    const char *dest = cli_str(a, "output", NULL);
    pwb_buf defpath, dir, ref;
    buf_init(&defpath);
    buf_init(&dir);
    buf_init(&ref);
    buf_printf(&defpath, "datasets/%s.json", name);
    int to_stdout = dest && strcmp(dest, "-") == 0;
    if (!dest || to_stdout)
        dest = to_stdout ? NULL : defpath.data;
    ds_import im;
    memset(&im, 0, sizeof im);
    char *text = NULL;
    int code = EXIT_PWB_OK, rc = PWB_OK;
    if (dest && file_exists(dest) && !cli_flag(a, "force")) {
        fprintf(stderr, "pwb: %s exists (use --force to overwrite)\n", dest);
        code = EXIT_PWB_INPUT;
        goto done;
    }
    file_dirname(dest ? dest : "datasets/x.json", &dir);
    char sha[65];
    if (card_file_ref(file, dir.data, &ref))
        rc = err_set(&e, PWB_ENOMEM, "out of memory");
    if (!rc)
        rc = file_sha256(file, sha, &e);
    ds_import_opts o = {
        .file = file,
        .format = cli_str(a, "format", NULL),
        .header = cli_flag(a, "header") ? 1 : cli_flag(a, "no-header") ? 0 : -1,
        .pattern = cli_str(a, "pattern", NULL),
        .input = cli_str(a, "input", NULL),
        .answer = cli_str(a, "answer", NULL),
        .labels = cli_str(a, "labels", NULL),
        .verbalizers = cli_str(a, "verbalizers", NULL),
        .name = name,
        .split = cli_str(a, "split", "dev"),
        .instruction = cli_str(a, "instruction", NULL),
        .file_ref = ref.data,
        .sha256 = sha,
    };
    if (!rc)
        rc = ds_import_guess(&o, &im, &e);
    if (!rc && !(text = ds_import_card_text(&im)))
        rc = err_set(&e, PWB_ENOMEM, "out of memory");
    if (!rc)
        rc = prove_and_write(&im, text, dir.data, dest, name, o.split, &e);
    if (rc)
        code = cli_fail(&e);
done:
    free(text);
    ds_import_free(&im);
    buf_free(&defpath);
    buf_free(&dir);
    buf_free(&ref);
    return code;
}
