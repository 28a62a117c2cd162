/* JSON helpers over cJSON: bounded file parsing with line numbers in errors, typed getters. */
#ifndef PWB_UTIL_JSON_H
#define PWB_UTIL_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include "util/buf.h"
#include "util/err.h"

#define JSON_MAX_FILE (64u << 20)

/* Parses text of length n. On error the message names `what` and the line:column. */
cJSON *json_parse(const char *text, size_t n, const char *what, pwb_err *e);
cJSON *json_parse_file(const char *path, size_t max_bytes, pwb_err *e);

/* Getters: return the default when the key is absent; set e and return NULL/def on a wrong type
 * only when e is non-NULL and `required` is set. */
const char *json_str(const cJSON *obj, const char *key, const char *def);
double json_num(const cJSON *obj, const char *key, double def);
int json_int(const cJSON *obj, const char *key, int def);
int json_bool(const cJSON *obj, const char *key, int def);
/* Required string: error "what: missing string field 'key'". */
int json_req_str(const cJSON *obj, const char *key, const char *what, const char **out, pwb_err *e);
/* Appends o minified to out and deletes o. Nonzero when bad (building o failed already) or out
 * of memory. */
int json_append(pwb_buf *out, cJSON *o, int bad);

/* Keys a validated object may carry besides its fields: notes to the reader ("_why", "x-origin",
 * "comment"), never read. */
int json_key_is_comment(const char *key);

#endif
