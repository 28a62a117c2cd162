#include "util/err.h"

#include <errno.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void err_clear(pwb_err *e)
{
    if (!e)
        return;
    e->code = PWB_OK;
    e->msg[0] = '\0';
}

int err_set(pwb_err *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

int err_prefix(pwb_err *e, const char *fmt, ...)
{
    if (!e)
        return PWB_OK;
    char head[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%.500s%.*s", head, (int)(sizeof e->msg - 501), old);
    return e->code;
}

const char *err_code_name(int code)
{
    static const char *names[] = {"ok", "invalid input", "i/o error", "parse error", "out of memory",
                                  "out of range", "database error", "http error", "model error",
                                  "unsupported", "interrupted", "limit reached", "busy", "write failed"};
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0]))
        return "unknown error";
    return names[code];
}

int err_write_code(int errnum)
{
    return errnum == ENOSPC || errnum == EDQUOT || errnum == EFBIG || errnum == EIO ? PWB_EWRITE : PWB_EIO;
}
