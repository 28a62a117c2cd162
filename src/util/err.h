/* Error values: library code fills a pwb_err and returns its code; only src/cli prints. */
#ifndef PWB_UTIL_ERR_H
#define PWB_UTIL_ERR_H

enum pwb_code {
    PWB_OK = 0,
    PWB_EINVAL,   /* bad argument or bad user input (card, template, suite) */
    PWB_EIO,      /* file system */
    PWB_EPARSE,   /* malformed file content */
    PWB_ENOMEM,
    PWB_ERANGE,   /* a size or count beyond a limit */
    PWB_EDB,      /* SQLite */
    PWB_EHTTP,    /* network / HTTP */
    PWB_EMODEL,   /* model file or engine */
    PWB_EUNSUP,   /* valid but not supported */
    PWB_EINTR,    /* interrupted by a signal */
    PWB_ELIMIT,   /* a user-set limit was reached (e.g. --max-cost) */
    PWB_EBUSY,    /* another process holds what is needed (a run's writer) */
    PWB_EWRITE    /* a write failed: no space (full disk, quota, file size limit) or an I/O error */
};

typedef struct pwb_err {
    int code;
    char msg[1024];
} pwb_err;

void err_clear(pwb_err *e);
/* Sets e (may be NULL) and returns code, so callers can `return err_set(e, ...)`. */
int err_set(pwb_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message with context ("file.json: " + old). Returns e->code. */
int err_prefix(pwb_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *err_code_name(int code);
/* PWB_EWRITE for an errno that means no room to write (ENOSPC, EDQUOT, EFBIG) or a failed write
 * (EIO), else PWB_EIO (a path that cannot be opened, say: an input problem). */
int err_write_code(int errnum);

#endif
