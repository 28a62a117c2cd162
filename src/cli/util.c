/* Helpers shared by the subcommands: error printing, exit codes, default paths, signals. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "task/catalog.h"
#include "util/file.h"

volatile sig_atomic_t cli_stop;

int cli_exit_code(int code)
{
    switch (code) {
    case PWB_OK:
        return EXIT_PWB_OK;
    case PWB_EINVAL:
    case PWB_EIO:
    case PWB_EPARSE:
    case PWB_ERANGE:
    case PWB_EUNSUP:
        return EXIT_PWB_INPUT;
    case PWB_EDB:
        return EXIT_PWB_DB;
    case PWB_EHTTP:
    case PWB_EMODEL:
        return EXIT_PWB_BACKEND;
    case PWB_EINTR:
        return EXIT_PWB_INTERRUPTED;
    case PWB_ELIMIT:
        return EXIT_PWB_LIMIT;
    case PWB_EBUSY:
        return EXIT_PWB_BUSY;
    case PWB_EWRITE: /* a full disk: the input was fine */
        return EXIT_PWB_FAILED;
    default:
        return EXIT_PWB_FAILED;
    }
}

int cli_fail(const pwb_err *e)
{
    /* One line: messages from the library already lead with "file:line:" where there is one. */
    const char *m = e->msg[0] ? e->msg : err_code_name(e->code);
    size_t n = strcspn(m, "\n");
    fprintf(stderr, "pwb: %.*s\n", (int)n, m);
    return cli_exit_code(e->code ? e->code : PWB_EINVAL);
}

const char *cli_db_path(const cli_args *a)
{
    const char *p = cli_str(a, "db", NULL);
    if (p && p[0])
        return p;
    p = getenv("PWB_DB");
    if (p && p[0])
        return p;
    /* Run from a checkout (its build/pwb or ./pwb), the checkout's results/ wherever the working
     * directory is, so `make demo` and every later command share one database. */
    static pwb_buf own;
    const char *h = catalog_home();
    if (!own.data && h) {
        pwb_buf mk;
        buf_init(&mk);
        if (!file_join(&mk, h, "Makefile") && file_exists(mk.data))
            buf_printf(&own, "%s/results/pwb.db", h);
        buf_free(&mk);
    }
    return own.data ? own.data : "results/pwb.db";
}

const char *cli_data_path(void)
{
    static pwb_buf p;
    if (!p.data)
        catalog_data_path(&p);
    return p.data ? p.data : "";
}

const char *cli_template_dirs(const cli_args *a)
{
    static pwb_buf p;
    catalog_template_dirs(cli_str(a, "dir", NULL), &p);
    return p.data ? p.data : "";
}

const char *cli_user_file(const char *name)
{
    /* a few live at once (suite and model); leaked at exit like the other statics */
    static pwb_buf b[4];
    static int k;
    pwb_buf *o = &b[k++ % 4];
    return catalog_find_file(name, o) || !o->data ? name : o->data;
}

static void on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

void cli_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* One-shot: a second Ctrl-C kills at once, which is safe since every write is a transaction. */
    sa.sa_flags = (int)SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}
