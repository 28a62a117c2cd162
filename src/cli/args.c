/* Option parsing and help, generated from the command table. GNU-style: options and positionals
 * may be mixed, "--name value", "--name=value", "-x value", "-xVALUE", "--" ends options. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/str.h"

/* Length of the first word of a command name ("template" of "template check"). */
static size_t group_len(const char *name)
{
    const char *sp = strchr(name, ' ');
    return sp ? (size_t)(sp - name) : strlen(name);
}

const cli_cmd *cli_find(int argc, char **argv, int *used, const char **group)
{
    *used = 0;
    *group = NULL;
    if (argc < 1)
        return NULL;
    const char *w = argv[0];
    for (int i = 0; i < cli_n_commands; i++) {
        const cli_cmd *c = &cli_commands[i];
        size_t gl = group_len(c->name);
        if (strlen(w) != gl || strncmp(c->name, w, gl) != 0)
            continue;
        if (!c->name[gl]) {
            *used = 1;
            return c;
        }
        *group = c->name; /* a group: the next word picks the action */
        if (argc >= 2 && strcmp(c->name + gl + 1, argv[1]) == 0) {
            *used = 2;
            return c;
        }
    }
    return NULL;
}

static int opt_count(const cli_opt *o)
{
    int n = 0;
    while (o && o[n].name)
        n++;
    return n;
}

void cli_usage_error(const cli_cmd *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pwb: %s%s%s\n", cmd ? cmd->name : "", cmd ? ": " : "", msg);
    if (cmd)
        fprintf(stderr, "usage: pwb %s%s%s [OPTIONS] (see pwb %s --help)\n", cmd->name, cmd->synopsis[0] ? " " : "",
                cmd->synopsis, cmd->name);
}

/* Looks an option up by long name (len chars) or short letter: its index in the command's
 * options, -(1 + index) for a common option, OPT_UNKNOWN when there is none. */
#define OPT_UNKNOWN (-10000)
static int lookup(const cli_cmd *cmd, const char *name, size_t len, char letter)
{
    int n = opt_count(cmd->opts);
    for (int i = 0; i < n; i++) {
        const cli_opt *o = &cmd->opts[i];
        if (letter ? o->short_name == letter : (strlen(o->name) == len && strncmp(o->name, name, len) == 0))
            return i;
    }
    int nc = opt_count(cli_common_opts);
    for (int i = 0; i < nc; i++) {
        const cli_opt *o = &cli_common_opts[i];
        if (letter ? o->short_name == letter : (strlen(o->name) == len && strncmp(o->name, name, len) == 0))
            return -(1 + i);
    }
    return OPT_UNKNOWN;
}

static const cli_opt *opt_at(const cli_cmd *cmd, int idx)
{
    return idx >= 0 ? &cmd->opts[idx] : &cli_common_opts[-idx - 1];
}

/* Records an option; for common options applies it. Returns 1 when it was --help. */
static int apply(const cli_cmd *cmd, cli_args *a, int idx, const char *val)
{
    if (idx >= 0) {
        a->val[idx] = val;
        a->count[idx]++;
        if (val && a->nmulti < CLI_MAX_MULTI) {
            a->multi[a->nmulti] = val;
            a->multi_idx[a->nmulti++] = idx;
        }
        return 0;
    }
    const char *name = opt_at(cmd, idx)->name;
    if (strcmp(name, "help") == 0)
        return 1;
    if (strcmp(name, "verbose") == 0)
        a->verbose++;
    else if (strcmp(name, "quiet") == 0)
        a->quiet = 1;
    return 0;
}

int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_args *a, int *help_only)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    *help_only = 0;
    if (opt_count(cmd->opts) > CLI_MAX_OPTS) {
        cli_usage_error(cmd, "too many options in the command table");
        return EXIT_PWB_USAGE;
    }
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (only_pos || s[0] != '-' || s[1] == '\0') {
            if (a->npos >= CLI_MAX_POS) {
                cli_usage_error(cmd, "too many arguments");
                return EXIT_PWB_USAGE;
            }
            a->pos[a->npos++] = s;
            continue;
        }
        if (strcmp(s, "--") == 0) {
            only_pos = 1;
            continue;
        }
        int idx;
        const char *inline_val = NULL;
        if (s[1] == '-') {
            const char *name = s + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            idx = lookup(cmd, name, len, 0);
            if (idx == OPT_UNKNOWN) {
                char given[64];
                snprintf(given, sizeof given, "%.*s", (int)(len < 63 ? len : 63), name);
                const char *near = cli_closest_option(cmd, given);
                cli_usage_error(cmd, "unknown option '--%.*s'%s%s%s", (int)len, name, near ? " (did you mean --" : "",
                                near ? near : "", near ? "?)" : "");
                return EXIT_PWB_USAGE;
            }
            if (eq)
                inline_val = eq + 1;
        } else {
            idx = lookup(cmd, NULL, 0, s[1]);
            if (idx == OPT_UNKNOWN) {
                cli_usage_error(cmd, "unknown option '-%c'", s[1]);
                return EXIT_PWB_USAGE;
            }
            if (s[2]) {
                if (!opt_at(cmd, idx)->arg) {
                    cli_usage_error(cmd, "option '-%c' takes no value (got '%s')", s[1], s);
                    return EXIT_PWB_USAGE;
                }
                inline_val = s + 2;
            }
        }
        const cli_opt *o = opt_at(cmd, idx);
        const char *val = NULL;
        if (o->arg) {
            if (inline_val) {
                val = inline_val;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                cli_usage_error(cmd, "option '--%s' needs a value (%s)", o->name, o->arg);
                return EXIT_PWB_USAGE;
            }
        } else if (inline_val) {
            cli_usage_error(cmd, "option '--%s' takes no value", o->name);
            return EXIT_PWB_USAGE;
        }
        if (apply(cmd, a, idx, val)) {
            cli_print_help(cmd, stdout);
            *help_only = 1;
            return 0;
        }
    }
    if (a->npos < cmd->min_pos) {
        cli_usage_error(cmd, "missing %s", cmd->synopsis);
        return EXIT_PWB_USAGE;
    }
    if (cmd->max_pos >= 0 && a->npos > cmd->max_pos) {
        cli_usage_error(cmd, "unexpected argument '%s'", a->pos[cmd->max_pos]);
        return EXIT_PWB_USAGE;
    }
    return 0;
}

static void print_opts(const cli_opt *opts, FILE *f)
{
    for (int i = 0; opts && opts[i].name; i++) {
        const cli_opt *o = &opts[i];
        char left[64];
        char sh[8] = "    ";
        if (o->short_name)
            snprintf(sh, sizeof sh, "-%c, ", o->short_name);
        snprintf(left, sizeof left, "%s--%s%s%s", sh, o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "  %-28s %s\n", left, o->help);
    }
}

void cli_print_help(const cli_cmd *cmd, FILE *f)
{
    fprintf(f, "usage: pwb %s%s%s [OPTIONS]\n\n%s\n\n", cmd->name, cmd->synopsis[0] ? " " : "", cmd->synopsis,
            cmd->help);
    if (opt_count(cmd->opts) > 0) {
        fprintf(f, "options:\n");
        print_opts(cmd->opts, f);
    }
    fprintf(f, "common options:\n");
    print_opts(cli_common_opts, f);
    fprintf(f, "\nexit codes: 0 ok, 1 some predictions failed, 2 usage, 3 bad input, 4 database,\n"
               "5 backend, 6 cost limit reached, 130 interrupted (docs/cli.md)\n");
}

void cli_print_group_help(const char *group, FILE *f)
{
    size_t gl = group_len(group);
    fprintf(f, "usage: pwb %.*s ACTION [OPTIONS]\n\nactions:\n", (int)gl, group);
    for (int i = 0; i < cli_n_commands; i++) {
        const cli_cmd *c = &cli_commands[i];
        if (strncmp(c->name, group, gl) == 0 && c->name[gl] == ' ')
            fprintf(f, "  %-26s %s\n", c->name, c->summary);
    }
    fprintf(f, "\n`pwb %.*s ACTION --help` for one.\n", (int)gl, group);
}

void cli_print_overview(FILE *f)
{
    fprintf(f, "pwb %s: prompt workbench. Benchmarks hard prompts and trained soft prompts against LLMs,\n"
               "results in SQLite.\n\n"
               "usage: pwb COMMAND [ARGS] [OPTIONS]\n\ncommands:\n",
            PWB_VERSION);
    for (int i = 0; i < cli_n_commands; i++) {
        const cli_cmd *c = &cli_commands[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", c->name, c->synopsis[0] ? " " : "", c->synopsis);
        fprintf(f, "  %-30s %s\n", left, c->summary);
    }
    fprintf(f, "\n`pwb COMMAND --help` for one command's options. Environment: PWB_DB (database),\n"
               "PWB_DATA_PATH and PWB_TEMPLATE_PATH (':'-separated folders searched after the checkout's or\n"
               "install's). Documentation: docs/cli.md, man pwb.\n");
}

static int find_idx(const cli_args *a, const char *name)
{
    for (int i = 0; a->cmd->opts && a->cmd->opts[i].name; i++)
        if (strcmp(a->cmd->opts[i].name, name) == 0)
            return i;
    return -1;
}

const char *cli_str(const cli_args *a, const char *name, const char *def)
{
    int i = find_idx(a, name);
    return i >= 0 && a->count[i] && a->val[i] ? a->val[i] : def;
}

int cli_all(const cli_args *a, const char *name, const char **out, int max)
{
    int i = find_idx(a, name), n = 0;
    for (int k = 0; i >= 0 && k < a->nmulti && n < max; k++)
        if (a->multi_idx[k] == i)
            out[n++] = a->multi[k];
    return n;
}

int cli_flag(const cli_args *a, const char *name)
{
    int i = find_idx(a, name);
    return i >= 0 ? a->count[i] : 0;
}

int cli_long(const cli_args *a, const char *name, long def, long min, long max, long *out)
{
    const char *s = cli_str(a, name, NULL);
    *out = def;
    if (!s)
        return 0;
    long v;
    if (str_to_long(s, &v) != 0 || v < min || v > max) {
        cli_usage_error(a->cmd, "--%s: expected an integer in [%ld, %ld], got '%s'", name, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_double(const cli_args *a, const char *name, double def, double min, double max, double *out)
{
    const char *s = cli_str(a, name, NULL);
    *out = def;
    if (!s)
        return 0;
    double v;
    /* str_to_double refuses NaN and infinities */
    if (str_to_double(s, &v) != 0 || v < min || v > max) {
        cli_usage_error(a->cmd, "--%s: expected a number in [%g, %g], got '%s'", name, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

const char *cli_closest_option(const cli_cmd *cmd, const char *name)
{
    const char *names[CLI_MAX_OPTS * 2];
    size_t n = 0;
    for (int i = 0; cmd->opts && cmd->opts[i].name && n < CLI_MAX_OPTS; i++)
        names[n++] = cmd->opts[i].name;
    for (int i = 0; cli_common_opts[i].name && n < CLI_MAX_OPTS * 2; i++)
        names[n++] = cli_common_opts[i].name;
    return str_closest(name, names, n);
}

const char *cli_closest_command(const char *word)
{
    /* the first word of every command ("template list" -> "template") */
    static char first[64][32];
    const char *names[64];
    size_t n = 0;
    for (int i = 0; i < cli_n_commands && n < 64; i++) {
        size_t k = strcspn(cli_commands[i].name, " ");
        snprintf(first[n], sizeof first[n], "%.*s", (int)(k < 31 ? k : 31), cli_commands[i].name);
        names[n] = first[n];
        n++;
    }
    return str_closest(word, names, n);
}
