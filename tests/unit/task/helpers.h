/* Shared helpers for the task tests: repository/shared paths and scratch files. */
#ifndef PWB_TEST_TASK_HELPERS_H
#define PWB_TEST_TASK_HELPERS_H

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "task/dataset.h"
#include "util/buf.h"

static inline const char *t_root(void)
{
    const char *r = getenv("PWB_ROOT");
    return r && r[0] ? r : ".";
}

/* $PWB_SHARED, else ../shared beside the repository. */
static inline const char *t_shared(void)
{
    static char buf[4096];
    const char *s = getenv("PWB_SHARED");
    if (s && s[0])
        return s;
    snprintf(buf, sizeof buf, "%.4000s/../shared", t_root());
    return buf;
}

static inline const char *t_data_path(void)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%.4000s/datasets", t_shared());
    return buf;
}

/* A path under the repository, in a rotating static buffer (a few may be live at once). */
static inline const char *t_repo(const char *rel)
{
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, 4096, "%s/%s", t_root(), rel);
    return b;
}

static inline void t_load_card(ds_card *c, const char *name)
{
    card_init(c);
    pwb_err e;
    err_clear(&e);
    char rel[256];
    snprintf(rel, sizeof rel, "datasets/%s.json", name);
    int rc = card_load(c, t_repo(rel), &e);
    cr_assert_eq(rc, PWB_OK, "card %s: %s", name, e.msg);
}

static inline void t_load_split(const ds_card *c, const char *split, ds_data *d)
{
    ds_data_init(d);
    pwb_err e;
    err_clear(&e);
    int rc = dataset_load(c, split, t_data_path(), d, &e);
    cr_assert_eq(rc, PWB_OK, "%s/%s: %s", c->name, split ? split : "(eval)", e.msg);
}

/* Scratch directory, removed by t_rmdir. */
static inline void t_mkdtemp(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/pwb-bench-XXXXXX");
    cr_assert_not_null(mkdtemp(out));
}

static inline int t_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static inline void t_rmdir(const char *dir) { nftw(dir, t_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static inline void t_write(const char *dir, const char *name, const char *text)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f, "cannot write %s", p);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

static inline const char *t_path(const char *dir, const char *name)
{
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

#endif
