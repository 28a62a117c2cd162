/* Test helper: starts build/fakellm (PWB_FAKELLM) on a free loopback port and stops it. Tests skip
 * when it is not built. */
#ifndef PWB_TEST_FAKESRV_H
#define PWB_TEST_FAKESRV_H

#include <cjson/cJSON.h>
#include <sys/types.h>

#include "llm/backend.h"

typedef struct fakesrv {
    pid_t pid;
    int port;
    char base[64]; /* http://127.0.0.1:<port>/v1 */
    char root[64]; /* http://127.0.0.1:<port> */
} fakesrv;

/* args: extra fakellm options, NULL-terminated (may be NULL). */
void fakesrv_start(fakesrv *f, const char *const *args);
void fakesrv_stop(fakesrv *f);
/* GET /stats, parsed; and one counter of it (-1 when absent). */
cJSON *fakesrv_stats(const fakesrv *f);
int fakesrv_stat(const fakesrv *f, const char *key);
/* A temporary file name for --log (removed by the caller). */
void fakesrv_temp(char *path, size_t cap, const char *tag);

/* n chat requests "question number i: ..." with a short system message; free with test_reqs_free. */
typedef struct test_reqs {
    size_t n;
    llm_request *req;
    llm_message *msg;
    char **text;
    llm_response *out;
    int *done;
} test_reqs;
void test_reqs_init(test_reqs *t, size_t n, int max_tokens);
void test_reqs_free(test_reqs *t);
/* done callback counting calls per index into t->done */
void test_reqs_on_done(void *ctx, size_t i, const llm_response *r);

#endif
