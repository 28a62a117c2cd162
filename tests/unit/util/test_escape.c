/* The CSV and markdown escapers shared by the CLI's tables and the reports. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "util/escape.h"

static char *run(int (*fn)(pwb_buf *, const char *), const char *s)
{
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(fn(&b, s), 0);
    buf_puts(&b, "");
    return buf_take(&b);
}

Test(escape, csv_quotes_only_when_needed)
{
    const char *in[] = {"plain", "a,b", "say \"hi\"", "two\nlines", "", NULL};
    const char *want[] = {"plain", "\"a,b\"", "\"say \"\"hi\"\"\"", "\"two\nlines\"", "", ""};
    for (int i = 0; i < 6; i++) {
        char *got = run(esc_csv, in[i]);
        cr_expect_str_eq(got ? got : "", want[i], "input %d", i);
        free(got);
    }
}

Test(escape, markdown_cells_stay_one_cell)
{
    const char *in[] = {"a|b", "<b>x</b>", "one\ntwo", "tab\there", "caf\xc3\xa9", "bad\xff", NULL};
    const char *want[] = {"a\\|b", "&lt;b&gt;x&lt;/b&gt;", "one<br>two", "tab here", "caf\xc3\xa9", "bad?", ""};
    for (int i = 0; i < 7; i++) {
        char *got = run(esc_md, in[i]);
        cr_expect_str_eq(got ? got : "", want[i], "input %d", i);
        free(got);
    }
}
