/* SSE and NDJSON walkers. See stream.h. */
#include "llm/stream.h"

#include <string.h>

#include "util/buf.h"

/* The next line of body at *off (without its "\n" or "\r\n"); 0 at the end. */
static int next_line(const char *body, size_t len, size_t *off, const char **line, size_t *n)
{
    if (*off >= len)
        return 0;
    const char *p = body + *off;
    const char *nl = memchr(p, '\n', len - *off);
    size_t k = nl ? (size_t)(nl - p) : len - *off;
    *off += k + (nl ? 1 : 0);
    if (k > 0 && p[k - 1] == '\r')
        k--;
    *line = p;
    *n = k;
    return 1;
}

/* The value of "name:value" when line is that field (one optional space after the colon). */
static int field(const char *line, size_t n, const char *name, const char **v, size_t *vn)
{
    size_t k = strlen(name);
    if (n < k + 1 || memcmp(line, name, k) != 0 || line[k] != ':')
        return 0;
    *v = line + k + 1;
    *vn = n - k - 1;
    if (*vn > 0 && **v == ' ') {
        (*v)++;
        (*vn)--;
    }
    return 1;
}

int sse_each(const char *body, size_t len, stream_event_fn fn, void *ctx)
{
    pwb_buf data;
    char event[64];
    buf_init(&data);
    event[0] = '\0';
    int have = 0, rc = 0;
    long count = 0;
    size_t off = 0;
    const char *line;
    size_t n;
    for (;;) {
        int more = next_line(body, len, &off, &line, &n);
        if (!more || n == 0) {
            /* a blank line (or the end) dispatches the event gathered so far */
            if (have) {
                if (++count > STREAM_MAX_EVENTS) {
                    rc = -1;
                    break;
                }
                if (!data.data && buf_puts(&data, "")) {
                    rc = -1;
                    break;
                }
                if ((rc = fn(ctx, event[0] ? event : NULL, data.data, data.len)))
                    break;
            }
            buf_reset(&data);
            event[0] = '\0';
            have = 0;
            if (!more)
                break;
            continue;
        }
        const char *v;
        size_t vn;
        if (line[0] == ':')
            continue;
        if (field(line, n, "data", &v, &vn)) {
            if ((have && buf_putc(&data, '\n')) || buf_append(&data, v, vn)) {
                rc = -1;
                break;
            }
            have = 1;
        } else if (field(line, n, "event", &v, &vn)) {
            size_t k = vn < sizeof event - 1 ? vn : sizeof event - 1;
            memcpy(event, v, k);
            event[k] = '\0';
        }
    }
    buf_free(&data);
    return rc;
}

/* Calls fn with a NUL-terminated copy of line[0..n) (small lines on the stack). */
static int deliver(stream_event_fn fn, void *ctx, const char *line, size_t n)
{
    char stack[1024];
    if (n < sizeof stack) {
        memcpy(stack, line, n);
        stack[n] = '\0';
        return fn(ctx, NULL, stack, n);
    }
    pwb_buf b;
    buf_init(&b);
    int rc = buf_append(&b, line, n) ? -1 : fn(ctx, NULL, b.data, n);
    buf_free(&b);
    return rc;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

int ndjson_each(const char *body, size_t len, stream_event_fn fn, void *ctx)
{
    size_t off = 0;
    const char *line;
    size_t n;
    long count = 0;
    while (next_line(body, len, &off, &line, &n)) {
        if (blank(line, n))
            continue;
        if (++count > STREAM_MAX_EVENTS)
            return -1;
        int rc = deliver(fn, ctx, line, n);
        if (rc)
            return rc;
    }
    return 0;
}

int stream_lines_each(int sse, const char *data, size_t len, stream_event_fn fn, void *ctx)
{
    size_t off = 0;
    const char *line;
    size_t n;
    while (next_line(data, len, &off, &line, &n)) {
        const char *v = line;
        size_t vn = n;
        if (sse && !field(line, n, "data", &v, &vn))
            continue;
        if (blank(v, vn))
            continue;
        int rc = deliver(fn, ctx, v, vn);
        if (rc)
            return rc;
    }
    return 0;
}
