#include "task/catalog.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
#include "util/str.h"

void catalog_card_dirs(const char *extra, pwb_buf *out)
{
    buf_reset(out);
    if (extra && extra[0])
        buf_printf(out, "%s:", extra);
    buf_puts(out, "datasets");
    const char *dp = getenv("PWB_DATA_PATH");
    if (dp && dp[0])
        buf_printf(out, ":%s", dp);
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
    for (const char *p = dirs; p && *p && !rc;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        buf_reset(&dir);
        buf_append(&dir, p, n);
        p = colon ? colon + 1 : p + n;
        if (!dir.len)
            continue;
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

int catalog_template_path(const char *name, const char *dir, pwb_buf *out, pwb_err *e)
{
    buf_reset(out);
    if (file_exists(name) && !file_is_dir(name))
        return buf_puts(out, name) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    if (!strchr(name, '/')) {
        file_join(out, dir, name);
        if (file_exists(out->data))
            return PWB_OK;
        buf_puts(out, ".tmpl");
        if (file_exists(out->data))
            return PWB_OK;
    }
    return err_set(e, PWB_EINVAL, "no template '%s' (looked for it as a path and in %s/)", name, dir);
}
