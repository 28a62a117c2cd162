#include "task/rx.h"

#include <string.h>

pcre2_code *rx_compile(const char *pat, const char *what, pwb_err *e)
{
    if (!pat) {
        err_set(e, PWB_EINVAL, "%s: no pattern", what);
        return NULL;
    }
    if (strlen(pat) > RX_MAX_PATTERN) {
        err_set(e, PWB_ERANGE, "%s: pattern longer than %d bytes", what, RX_MAX_PATTERN);
        return NULL;
    }
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                                   &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        err_set(e, PWB_EINVAL, "%s: bad regex '%.200s': %s at offset %zu", what, pat, (const char *)msg, (size_t)off);
        return NULL;
    }
    return re;
}

/* Bounded matching: hostile patterns or outputs must not hang a run. */
static pcre2_match_context *match_ctx(void)
{
    static _Thread_local pcre2_match_context *mc;
    if (!mc) {
        mc = pcre2_match_context_create(NULL);
        if (mc) {
            pcre2_set_match_limit(mc, 1000000);
            pcre2_set_depth_limit(mc, 10000);
        }
    }
    return mc;
}

int rx_find(const pcre2_code *re, const char *s, size_t n, size_t *so, size_t *eo)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md)
        return -1;
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, md, match_ctx());
    if (rc < 0) {
        pcre2_match_data_free(md);
        return rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t count = pcre2_get_ovector_count(md);
    int g = 0;
    int named = pcre2_substring_number_from_name(re, (PCRE2_SPTR) "answer");
    if (named > 0 && (uint32_t)named < count && ov[2 * named] != PCRE2_UNSET)
        g = named;
    else if (rc > 1 && ov[2] != PCRE2_UNSET)
        g = 1;
    else if (rc > 1) { /* group 1 unset: first set group */
        for (int i = 2; i < rc; i++)
            if (ov[2 * i] != PCRE2_UNSET) {
                g = i;
                break;
            }
    }
    *so = ov[2 * g];
    *eo = ov[2 * g + 1];
    pcre2_match_data_free(md);
    if (*eo < *so) /* \K tricks can invert the span */
        *eo = *so;
    return 1;
}

int rx_remove_all(const pcre2_code *re, const char *s, size_t n, pwb_buf *out)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md)
        return -1;
    size_t pos = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, 0, md, match_ctx());
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (a < pos || b < a)
            break;
        if (buf_append(out, s + pos, a - pos)) {
            pcre2_match_data_free(md);
            return -1;
        }
        if (b == a) { /* empty match: keep one char and move on */
            if (a < n && buf_append(out, s + a, 1)) {
                pcre2_match_data_free(md);
                return -1;
            }
            b = a + 1;
        }
        pos = b;
    }
    pcre2_match_data_free(md);
    if (pos < n && buf_append(out, s + pos, n - pos))
        return -1;
    return buf_append(out, "", 0);
}

int rx_names(const pcre2_code *re, const char **names, int *nums, int cap)
{
    uint32_t count = 0, size = 0;
    PCRE2_SPTR table;
    pcre2_pattern_info(re, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(re, PCRE2_INFO_NAMEENTRYSIZE, &size);
    pcre2_pattern_info(re, PCRE2_INFO_NAMETABLE, &table);
    int k = 0;
    for (uint32_t i = 0; i < count && k < cap; i++) {
        PCRE2_SPTR ent = table + (size_t)i * size;
        nums[k] = (ent[0] << 8) | ent[1];
        names[k] = (const char *)(ent + 2);
        k++;
    }
    return k;
}
