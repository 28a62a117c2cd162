/* Finding cards and templates for the CLI's listing and checking commands. */
#ifndef PWB_TASK_CATALOG_H
#define PWB_TASK_CATALOG_H

#include "task/card.h"
#include "util/buf.h"
#include "util/err.h"

typedef struct catalog_list {
    char **v;
    int n, cap;
} catalog_list;

/* Where pwb finds its cards and templates, one rule for the runner, pwb tune and every command:
 * the folders given (a suite's own come first), the working directory's datasets/ or templates/,
 * those of the checkout or install prefix pwb runs from (catalog_home), then $PWB_DATA_PATH
 * (cards and data) or $PWB_TEMPLATE_PATH, then the data folder the build was configured with.
 * Each list is ':'-separated, holds existing folders only, each real folder once. */

/* The checkout (<root>/build/pwb) or the install data folder (<prefix>/share/pwb, beside
 * <prefix>/bin/pwb) this pwb came from, or $PWB_HOME; NULL when none. */
const char *catalog_home(void);
/* Card folders: extra (may be NULL), datasets/, <home>/datasets, $PWB_DATA_PATH, the build's. */
void catalog_card_dirs(const char *extra, pwb_buf *out);
/* Data folders for a card's split files (after the card's own folder): $PWB_DATA_PATH, the build's. */
void catalog_data_path(pwb_buf *out);
/* Template folders: extra (may be NULL), templates/, <home>/templates, $PWB_TEMPLATE_PATH. */
void catalog_template_dirs(const char *extra, pwb_buf *out);
/* A relative path the user named (a suite, a model): as given when it exists, else under the
 * home (so `pwb run suites/demo.json` works from any folder); -1 when out of memory. */
int catalog_find_file(const char *name, pwb_buf *out);

void list_free(catalog_list *l);
int list_add(catalog_list *l, const char *s);
/* Files in dir ending with ext, as "dir/name", sorted; a missing folder is an empty list. */
int catalog_files(const char *dir, const char *ext, catalog_list *out);
/* Card files in the folders of a colon-separated list: NAME.json and NAME/card.json. The first
 * of a name wins. */
int catalog_cards(const char *dirs, catalog_list *out);
/* The card name in dirs closest to a misspelt name (did you mean), into out; 0 when none is close. */
int catalog_closest_card(const char *name, const char *dirs, char *out, size_t cap);
/* The same for a template name in the ':'-separated template folders. */
int catalog_closest_template(const char *name, const char *dirs, char *out, size_t cap);
/* A card by name (searched in the card folders) or by path (a name with '/' or ending .json). */
int catalog_load_card(const char *name, const char *extra_dirs, ds_card *c, pwb_err *e);
/* A template by path, or by name in the ':'-separated folders (with or without .tmpl). */
int catalog_template_path(const char *name, const char *dirs, pwb_buf *out, pwb_err *e);

#endif
