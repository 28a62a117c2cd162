#include "util/log.h"

#include <stdarg.h>

static int g_level = LOG_WARN;
static FILE *g_stream;
static int g_stream_set;

void log_set_level(int level) { g_level = level; }

void log_set_stream(FILE *f)
{
    g_stream = f;
    g_stream_set = 1;
}

int log_enabled(int level) { return level <= g_level && (g_stream_set ? g_stream != NULL : 1); }

void log_msg(int level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    FILE *f = g_stream_set ? g_stream : stderr;
    static const char *tag[] = {"error", "warning", "info", "debug"};
    fprintf(f, "pwb: %s: ", tag[level < 0 ? 0 : level > 3 ? 3 : level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
}
