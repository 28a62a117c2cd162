/* Finding cards and templates for the CLI's listing and checking commands. */
#ifndef PWB_TASK_CATALOG_H
#define PWB_TASK_CATALOG_H

#include "task/dataset.h"
#include "util/buf.h"
#include "util/err.h"

typedef struct catalog_list {
    char **v;
    int n, cap;
} catalog_list;

/* The card search path: extra (may be NULL), then datasets/, then $PWB_DATA_PATH. */
void catalog_card_dirs(const char *extra, pwb_buf *out);

void list_free(catalog_list *l);
int list_add(catalog_list *l, const char *s);
/* Files in dir ending with ext, as "dir/name", sorted; a missing folder is an empty list. */
int catalog_files(const char *dir, const char *ext, catalog_list *out);
/* Card files in the folders of a colon-separated list: NAME.json and NAME/card.json. The first
 * of a name wins. */
int catalog_cards(const char *dirs, catalog_list *out);
/* A card by name (searched in the card folders) or by path (a name with '/' or ending .json). */
int catalog_load_card(const char *name, const char *extra_dirs, ds_card *c, pwb_err *e);
/* A template by path, or by name in dir (with or without .tmpl). */
int catalog_template_path(const char *name, const char *dir, pwb_buf *out, pwb_err *e);

#endif
