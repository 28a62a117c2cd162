#include "task/catalog.h"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
#include "util/str.h"

/* The data folder the build was configured with (make: $(PWB_SHARED)/datasets), a default that
 * needs no export. */
#ifndef PWB_DEFAULT_DATA_PATH
#define PWB_DEFAULT_DATA_PATH ""
#endif

/* 1 when dir/sub is a folder. */
static int has_dir(const char *dir, const char *sub)
{
    pwb_buf p;
    buf_init(&p);
    int ok = !file_join(&p, dir, sub) && file_is_dir(p.data);
    buf_free(&p);
    return ok;
}

const char *catalog_home(void)
{
    static char home[PATH_MAX];
    static int done;
    if (done)
        return home[0] ? home : NULL;
    done = 1;
    const char *env = getenv("PWB_HOME");
    if (env && env[0]) {
        str_copy(home, sizeof home, env);
        return home;
    }
    char exe[PATH_MAX];
    if (!realpath("/proc/self/exe", exe))
        return NULL;
    /* <checkout>/build/pwb (the ./pwb link resolves there), <prefix>/bin/pwb with the data in
     * <prefix>/share/pwb, or a pwb binary beside templates/ */
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    pwb_buf c;
    buf_init(&c);
    for (int up = 0; up < 2 && !home[0]; up++) {
        if (has_dir(exe, "templates") && has_dir(exe, "datasets"))
            str_copy(home, sizeof home, exe);
        else if (!file_join(&c, exe, "share/pwb") && has_dir(c.data, "templates"))
            str_copy(home, sizeof home, c.data);
        if ((slash = strrchr(exe, '/')) && slash != exe)
            *slash = '\0';
        else
            break;
    }
    buf_free(&c);
    return home[0] ? home : NULL;
}

/* Appends dir to the ':'-list in out unless it is missing or already there (same real folder). */
static void add_dir(pwb_buf *out, const char *dir)
{
    char want[PATH_MAX], have[PATH_MAX];
    if (!dir || !dir[0] || !realpath(dir, want) || !file_is_dir(want))
        return;
    pwb_buf one;
    buf_init(&one);
    for (const char *p = out->data; (p = file_path_next(p, &one));) {
        if (realpath(one.data, have) && !strcmp(have, want)) {
            buf_free(&one);
            return;
        }
    }
    buf_free(&one);
    buf_printf(out, "%s%s", out->len ? ":" : "", dir);
}

/* Each folder of a ':'-list through add_dir. */
static void add_list(pwb_buf *out, const char *list)
{
    pwb_buf one;
    buf_init(&one);
    for (const char *p = list; (p = file_path_next(p, &one));)
        add_dir(out, one.data);
    buf_free(&one);
}

static void add_home(pwb_buf *out, const char *sub)
{
    const char *h = catalog_home();
    pwb_buf p;
    buf_init(&p);
    if (h && !file_join(&p, h, sub))
        add_dir(out, p.data);
    buf_free(&p);
}

void catalog_card_dirs(const char *extra, pwb_buf *out)
{
    buf_reset(out);
    add_list(out, extra);
    add_dir(out, "datasets");
    add_home(out, "datasets");
    add_list(out, getenv("PWB_DATA_PATH"));
    add_list(out, PWB_DEFAULT_DATA_PATH);
    if (!out->data)
        buf_puts(out, "");
}

void catalog_data_path(pwb_buf *out)
{
    buf_reset(out);
    add_list(out, getenv("PWB_DATA_PATH"));
    add_list(out, PWB_DEFAULT_DATA_PATH);
    if (!out->data)
        buf_puts(out, "");
}

void catalog_template_dirs(const char *extra, pwb_buf *out)
{
    buf_reset(out);
    add_list(out, extra);
    add_dir(out, "templates");
    add_home(out, "templates");
    add_list(out, getenv("PWB_TEMPLATE_PATH"));
    if (!out->data)
        buf_puts(out, "");
}

int catalog_find_file(const char *name, pwb_buf *out)
{
    buf_reset(out);
    const char *h = catalog_home();
    if (file_exists(name) || name[0] == '/' || !h)
        return buf_puts(out, name);
    if (file_join(out, h, name))
        return -1;
    if (!file_exists(out->data)) {
        buf_reset(out);
        return buf_puts(out, name);
    }
    return 0;
}

#define CATALOG_MAX 10000 /* files per folder: a sanity cap, not a feature */

void list_free(catalog_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

int list_add(catalog_list *l, const char *s)
{
    if (l->n + 1 >= l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = str_dup(s)))
        return -1;
    l->v[++l->n] = NULL;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int catalog_files(const char *dir, const char *ext, catalog_list *out)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    catalog_list names = {0};
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) && names.n < CATALOG_MAX) {
        if (de->d_name[0] == '.' || !str_ends(de->d_name, ext))
            continue;
        if (list_add(&names, de->d_name)) {
            rc = -1;
            break;
        }
    }
    closedir(d);
    if (names.n)
        qsort(names.v, (size_t)names.n, sizeof *names.v, cmp_str);
    pwb_buf p;
    buf_init(&p);
    for (int i = 0; !rc && i < names.n; i++) {
        if (file_join(&p, dir, names.v[i]) || list_add(out, p.data))
            rc = -1;
    }
    buf_free(&p);
    list_free(&names);
    return rc;
}

/* "datasets/sst2.json" -> "sst2"; "datasets/x/card.json" -> "x". */
static void card_stem(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcmp(base, "card.json") == 0 && base > path + 1) {
        const char *end = base - 1, *start = end;
        while (start > path && start[-1] != '/')
            start--;
        size_t n = (size_t)(end - start) < cap - 1 ? (size_t)(end - start) : cap - 1;
        memcpy(out, start, n);
        out[n] = '\0';
        return;
    }
    str_copy(out, cap, base);
    size_t n = strlen(out);
    if (n > 5 && strcmp(out + n - 5, ".json") == 0)
        out[n - 5] = '\0';
}

int catalog_cards(const char *dirs, catalog_list *out)
{
    catalog_list seen = {0};
    pwb_buf dir, sub;
    buf_init(&dir);
    buf_init(&sub);
    int rc = 0;
    for (const char *p = dirs; !rc && (p = file_path_next(p, &dir));) {
        catalog_list files = {0};
        rc = catalog_files(dir.data, ".json", &files);
        /* and <dir>/<name>/card.json */
        DIR *d = opendir(dir.data);
        struct dirent *de;
        int count = 0;
        while (!rc && d && (de = readdir(d)) && count++ < CATALOG_MAX) {
            if (de->d_name[0] == '.')
                continue;
            buf_reset(&sub);
            buf_printf(&sub, "%s/%s/card.json", dir.data, de->d_name);
            if (file_exists(sub.data) && list_add(&files, sub.data))
                rc = -1;
        }
        if (d)
            closedir(d);
        for (int i = 0; !rc && i < files.n; i++) {
            char stem[256];
            card_stem(files.v[i], stem, sizeof stem);
            int dup = 0;
            for (int k = 0; k < seen.n && !dup; k++)
                dup = strcmp(seen.v[k], stem) == 0;
            if (!dup && (list_add(&seen, stem) || list_add(out, files.v[i])))
                rc = -1;
        }
        list_free(&files);
    }
    buf_free(&dir);
    buf_free(&sub);
    list_free(&seen);
    return rc;
}

/* The closest of names (list of paths, each turned into its stem by stem_of) to name, into out. */
static int closest_stem(const char *name, const catalog_list *files, void (*stem_of)(const char *, char *, size_t),
                        char *out, size_t cap)
{
    out[0] = '\0';
    char(*stems)[128] = files->n ? calloc((size_t)files->n, sizeof *stems) : NULL;
    const char **v = files->n ? calloc((size_t)files->n, sizeof *v) : NULL;
    if (files->n && (!stems || !v)) {
        free(stems);
        free(v);
        return 0;
    }
    for (int i = 0; i < files->n; i++) {
        stem_of(files->v[i], stems[i], sizeof stems[i]);
        v[i] = stems[i];
    }
    const char *best = str_closest(name, v, (size_t)files->n);
    if (best)
        str_copy(out, cap, best);
    free(stems);
    free(v);
    return out[0] != '\0';
}

int catalog_closest_card(const char *name, const char *dirs, char *out, size_t cap)
{
    catalog_list files = {0};
    int found = !catalog_cards(dirs, &files) && closest_stem(name, &files, card_stem, out, cap);
    list_free(&files);
    return found;
}

static void tmpl_stem(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    str_copy(out, cap, base ? base + 1 : path);
    size_t n = strlen(out);
    if (n > 5 && !strcmp(out + n - 5, ".tmpl"))
        out[n - 5] = '\0';
}

/* Every *.tmpl in the ':'-separated folders. */
static int template_files(const char *dirs, catalog_list *out)
{
    pwb_buf dir;
    buf_init(&dir);
    int rc = 0;
    for (const char *p = dirs; !rc && (p = file_path_next(p, &dir));)
        rc = catalog_files(dir.data, ".tmpl", out);
    buf_free(&dir);
    return rc;
}

int catalog_closest_template(const char *name, const char *dirs, char *out, size_t cap)
{
    catalog_list files = {0};
    int found = !template_files(dirs, &files) && closest_stem(name, &files, tmpl_stem, out, cap);
    list_free(&files);
    return found;
}

int catalog_load_card(const char *name, const char *extra_dirs, ds_card *c, pwb_err *e)
{
    if (strchr(name, '/') || str_ends(name, ".json"))
        return card_load(c, name, e);
    pwb_buf dirs;
    buf_init(&dirs);
    catalog_card_dirs(extra_dirs, &dirs);
    int rc = card_find(c, name, dirs.data, e);
    buf_free(&dirs);
    return rc;
}

int catalog_template_path(const char *name, const char *dirs, pwb_buf *out, pwb_err *e)
{
    buf_reset(out);
    if (file_exists(name) && !file_is_dir(name))
        return buf_puts(out, name) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    pwb_buf dir;
    buf_init(&dir);
    for (const char *p = dirs; !strchr(name, '/') && p && *p;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        buf_reset(&dir);
        buf_append(&dir, p, n);
        p = colon ? colon + 1 : p + n;
        if (!dir.data)
            continue;
        file_join(out, dir.data, name);
        if (file_exists(out->data))
            goto found;
        buf_puts(out, ".tmpl");
        if (file_exists(out->data))
            goto found;
    }
    buf_free(&dir);
    char near[128] = "";
    catalog_closest_template(name, dirs, near, sizeof near);
    return err_set(e, PWB_EINVAL, "no template '%s'%s%s%s (looked for it as a path and in %s)", name,
                   near[0] ? " (did you mean '" : "", near, near[0] ? "'?)" : "",
                   dirs && dirs[0] ? dirs : "no templates folder");
found:
    buf_free(&dir);
    return PWB_OK;
}
