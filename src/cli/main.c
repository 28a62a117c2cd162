/* pwb's entry point: finds the subcommand in the table, parses its options, runs it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <sqlite3.h>

#include "cli/cli.h"
#include "task/catalog.h"
#include "util/log.h"

int cmd_version(const cli_args *a)
{
    (void)a;
    printf("pwb %s\n", PWB_VERSION);
    printf("sqlite %s, %s, cJSON %s\n", sqlite3_libversion(), curl_version(), cJSON_Version());
    const char *wait = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    printf("OpenMP wait policy %s%s%s\n", wait ? wait : "default", spin ? ", GOMP_SPINCOUNT " : "", spin ? spin : "");
    return EXIT_PWB_OK;
}

int cmd_help(const cli_args *a)
{
    if (a->npos == 0) {
        cli_print_overview(stdout);
        return EXIT_PWB_OK;
    }
    int used;
    const char *group;
    const cli_cmd *c = cli_find(a->npos, (char **)a->pos, &used, &group);
    if (c && used == a->npos) {
        cli_print_help(c, stdout);
        return EXIT_PWB_OK;
    }
    if (group && a->npos == 1) {
        cli_print_group_help(group, stdout);
        return EXIT_PWB_OK;
    }
    cli_usage_error(NULL, "no command '%s'", a->pos[0]);
    return EXIT_PWB_USAGE;
}

/* libgomp reads its wait policy when it loads, before main. Left at its default, its idle threads
 * spin for about 300,000 iterations after every parallel region; on a machine whose cores are busy
 * with other work they take the cores pwb's own threads need (batch-1 decode at 2 threads ran 10x
 * slower than at 1 with another job running). Unless the user chose a policy, run again, once,
 * with passive waiting: the engine's small products have their own pool with a short spin. */
static void exec_with_passive_wait(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || setenv("OMP_WAIT_POLICY", "passive", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    /* no /proc: carry on with libgomp's default */
}

int main(int argc, char **argv)
{
    exec_with_passive_wait(argv);
    /* The price table (llm/prices.c) falls back to $PWB_ROOT/prices: point it at the checkout or
     * install prefix pwb came from, so it is found from any folder. */
    const char *home = catalog_home();
    if (home && !getenv("PWB_ROOT"))
        setenv("PWB_ROOT", home, 0);
    if (argc < 2) {
        cli_print_overview(stderr);
        return EXIT_PWB_USAGE;
    }
    const char *w = argv[1];
    if (strcmp(w, "--version") == 0 || strcmp(w, "-V") == 0)
        return cmd_version(NULL);
    if (strcmp(w, "--help") == 0 || strcmp(w, "-h") == 0) {
        cli_print_overview(stdout);
        return EXIT_PWB_OK;
    }
    int used;
    const char *group;
    const cli_cmd *cmd = cli_find(argc - 1, argv + 1, &used, &group);
    if (!cmd) {
        if (group) {
            const char *act = argc > 2 ? argv[2] : NULL;
            if (act && (strcmp(act, "--help") == 0 || strcmp(act, "-h") == 0)) {
                cli_print_group_help(group, stdout);
                return EXIT_PWB_OK;
            }
            if (act)
                fprintf(stderr, "pwb: %s: unknown action '%s'\n", w, act);
            else
                fprintf(stderr, "pwb: %s: missing action\n", w);
            cli_print_group_help(group, stderr);
            return EXIT_PWB_USAGE;
        }
        const char *near = cli_closest_command(w);
        if (near)
            fprintf(stderr, "pwb: unknown command '%s' (did you mean '%s'? see pwb help)\n", w, near);
        else
            fprintf(stderr, "pwb: unknown command '%s' (see pwb help)\n", w);
        return EXIT_PWB_USAGE;
    }
    cli_args a;
    int help_only;
    int rc = cli_parse(cmd, argc - 1 - used, argv + 1 + used, &a, &help_only);
    if (rc || help_only)
        return rc;
    log_set_stream(stderr);
    log_set_level(a.verbose >= 2 ? LOG_DEBUG : a.verbose == 1 ? LOG_INFO : LOG_WARN);
    rc = cmd->fn(&a);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "pwb: error writing to standard output\n");
        if (rc == 0)
            rc = EXIT_PWB_FAILED;
    }
    return rc;
}
