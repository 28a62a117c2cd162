/* The command line: one table of subcommands (commands.c) from which the parser and every
 * `--help` are generated (args.c). src/cli is the only place that prints for humans and exits. */
#ifndef PWB_CLI_CLI_H
#define PWB_CLI_CLI_H

#include <signal.h>
#include <stdio.h>

#include "util/buf.h"
#include "util/err.h"

#define PWB_VERSION "0.1.0"

/* Documented exit codes (docs/cli.md). */
enum pwb_exit {
    EXIT_PWB_OK = 0,
    EXIT_PWB_FAILED = 1,      /* finished, but some predictions failed (or a generic failure) */
    EXIT_PWB_USAGE = 2,       /* bad command line */
    EXIT_PWB_INPUT = 3,       /* bad input: suite, card, template, data file */
    EXIT_PWB_DB = 4,          /* the database */
    EXIT_PWB_BACKEND = 5,     /* a backend could not be created or run at all */
    EXIT_PWB_LIMIT = 6,       /* stopped at a user-set limit (pwb run --max-cost); finished work is kept */
    EXIT_PWB_BUSY = 7,        /* another pwb is writing the same run */
    EXIT_PWB_INTERRUPTED = 130
};

#define CLI_MAX_OPTS 48
#define CLI_MAX_POS 64
#define CLI_MAX_MULTI 64

typedef struct cli_opt {
    const char *name;  /* long name, without "--" */
    char short_name;   /* 0 when none */
    const char *arg;   /* metavariable ("PATH") when the option takes a value; NULL for a flag */
    const char *help;
} cli_opt;

typedef struct cli_args cli_args;
typedef int (*cli_fn)(const cli_args *a);

typedef struct cli_cmd {
    const char *name;     /* "run", or "template check" for an action of a group */
    const char *synopsis; /* positionals, e.g. "SUITE" */
    int min_pos, max_pos; /* max_pos -1: unlimited */
    const char *summary;  /* one line for `pwb help` */
    const char *help;     /* the body of `pwb CMD --help` */
    const cli_opt *opts;  /* terminated by a zero entry */
    cli_fn fn;
} cli_cmd;

struct cli_args {
    const cli_cmd *cmd;
    const char *val[CLI_MAX_OPTS]; /* last value given, by index into cmd->opts */
    int count[CLI_MAX_OPTS];       /* times given */
    const char *pos[CLI_MAX_POS];
    int npos;
    const char *multi[CLI_MAX_MULTI]; /* every value of every option, in order (repeatable options) */
    int multi_idx[CLI_MAX_MULTI];
    int nmulti;
    int verbose, quiet;
};

extern const cli_cmd cli_commands[];
extern const int cli_n_commands;
extern const cli_opt cli_common_opts[];

/* args.c */
/* Finds the command for argv (one or two words); *used says how many words it took. NULL when
 * there is none; *group is set when argv[0] names a group ("template") without a valid action. */
const cli_cmd *cli_find(int argc, char **argv, int *used, const char **group);
/* Parses options and positionals. Returns 0, or EXIT_PWB_USAGE after printing the error; sets
 * *help_only when --help was asked for (already printed). */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_args *a, int *help_only);
void cli_print_help(const cli_cmd *cmd, FILE *f);
void cli_print_group_help(const char *group, FILE *f);
void cli_print_overview(FILE *f);
const char *cli_str(const cli_args *a, const char *name, const char *def);
/* Every value given for a repeatable option, in order (at most max); the count. */
int cli_all(const cli_args *a, const char *name, const char **out, int max);
int cli_flag(const cli_args *a, const char *name);
/* Parses an integer option within [min, max]; prints a usage error and returns -1 when bad. */
int cli_long(const cli_args *a, const char *name, long def, long min, long max, long *out);
/* The same for a finite number within [min, max]. */
int cli_double(const cli_args *a, const char *name, double def, double min, double max, double *out);

/* "Did you mean": the option of cmd (or common one) or the command closest to a misspelling. */
const char *cli_closest_option(const cli_cmd *cmd, const char *name);
const char *cli_closest_command(const char *word);

/* util.c */
/* Prints "pwb: <message>" on stderr and maps the error code to an exit code. */
int cli_fail(const pwb_err *e);
int cli_exit_code(int pwb_code);
void cli_usage_error(const cli_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* --db, else $PWB_DB, else results/pwb.db in the checkout pwb was built in, else in the working directory. */
const char *cli_db_path(const cli_args *a);
/* ':'-separated data folders for split files (task/catalog.h's rule). */
const char *cli_data_path(void);
/* ':'-separated template folders: --dir (if any), then task/catalog.h's rule. */
const char *cli_template_dirs(const cli_args *a);
/* A suite or model path as the user named it, else under the checkout/prefix pwb came from. */
const char *cli_user_file(const char *name);
/* Interrupt flag set by SIGINT/SIGTERM once cli_signals_install has run. */
extern volatile sig_atomic_t cli_stop;
void cli_signals_install(void);

/* The subcommands. */
int cmd_run(const cli_args *a);
int cmd_report(const cli_args *a);
int cmd_query(const cli_args *a);
int cmd_template_list(const cli_args *a);
int cmd_template_show(const cli_args *a);
int cmd_template_check(const cli_args *a);
int cmd_template_render(const cli_args *a);
int cmd_dataset_list(const cli_args *a);
int cmd_dataset_show(const cli_args *a);
int cmd_dataset_check(const cli_args *a);
int cmd_dataset_import(const cli_args *a);
int cmd_generate(const cli_args *a);
int cmd_serve(const cli_args *a);
int cmd_tune(const cli_args *a);
int cmd_model_info(const cli_args *a);
int cmd_version(const cli_args *a);
int cmd_help(const cli_args *a);

#endif
