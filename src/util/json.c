#include "util/json.h"

#include <string.h>

#include "util/buf.h"
#include "util/file.h"
#include "util/str.h"

static void line_col(const char *text, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

cJSON *json_parse(const char *text, size_t n, const char *what, pwb_err *e)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!j) {
        int line, col;
        size_t off = end && end >= text ? (size_t)(end - text) : 0;
        line_col(text, off, &line, &col);
        err_set(e, PWB_EPARSE, "%s:%d:%d: malformed JSON", what, line, col);
    }
    return j;
}

cJSON *json_parse_file(const char *path, size_t max_bytes, pwb_err *e)
{
    pwb_buf b;
    buf_init(&b);
    if (file_read_all(path, max_bytes, &b, e) != PWB_OK) {
        buf_free(&b);
        return NULL;
    }
    cJSON *j = json_parse(b.data, b.len, path, e);
    buf_free(&b);
    return j;
}

const char *json_str(const cJSON *obj, const char *key, const char *def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : def;
}

double json_num(const cJSON *obj, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

int json_int(const cJSON *obj, const char *key, int def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v))
        return def;
    double d = v->valuedouble;
    if (d > 2147483647.0 || d < -2147483648.0)
        return def;
    return (int)d;
}

int json_bool(const cJSON *obj, const char *key, int def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v);
    return def;
}

int json_req_str(const cJSON *obj, const char *key, const char *what, const char **out, pwb_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v) || !v->valuestring)
        return err_set(e, PWB_EINVAL, "%s: missing string field '%s'", what, key);
    *out = v->valuestring;
    return PWB_OK;
}

int json_key_is_comment(const char *key)
{
    return key[0] == '_' || str_starts(key, "x-") || !strcmp(key, "comment");
}

int json_append(pwb_buf *out, cJSON *o, int bad)
{
    char *s = bad ? NULL : cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    int rc = !s || buf_puts(out, s) ? -1 : 0;
    cJSON_free(s);
    return rc;
}
