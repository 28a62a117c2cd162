/* Keys and providers: presets, endpoint URLs, the loopback rule for keys over plain HTTP, TLS
 * verification never switched off, and a planted key echoed back by a hostile server through every
 * provider and reply form, found in no response field. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakesrv.h"
#include "llm/backend.h"
#include "llm/provider.h"
#include "llm/remote.h"
#include "util/buf.h"
#include "util/file.h"

Test(keys, loopback_hosts)
{
    const char *yes[] = {"http://127.0.0.1:8080/v1", "http://localhost/v1", "HTTP://LOCALHOST:1", "http://127.1.2.3",
                         "http://[::1]:8000/v1", "http://user:pw@127.0.0.1/x", "https://127.0.0.1", "http://[::ffff:127.0.0.1]/",
                         "http://localhost?x=1"};
    const char *no[] = {"http://127.0.0.1.evil.com/v1", "http://10.0.0.1/v1", "http://example.com", "http://localhost.com",
                        "http://[::2]/", "http://127.0.0.1@evil.com/", "ftp://127.0.0.1/", "http://", "", NULL,
                        "http://[::1", "http://0x7f000001/"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(url_is_loopback(yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert(!url_is_loopback(no[i]), "%s", no[i] ? no[i] : "NULL");
}

static int create(const char *provider, const char *base, const char *key_env, int allow, llm_backend **b, pwb_err *e)
{
    llm_config c;
    llm_config_defaults(&c);
    c.name = "k";
    c.provider = provider;
    c.base_url = base;
    c.model = "m";
    c.api_key_env = key_env;
    c.allow_insecure_key = allow;
    *b = NULL;
    return llm_backend_create(b, &c, e);
}

Test(keys, never_over_plain_http_to_a_remote_host)
{
    const char *key = "sk-NEVER-IN-MESSAGES-42";
    setenv("PWB_TEST_KEY_RULE", key, 1);
    const char *providers[] = {"openai", "openai-completions", "ollama", "anthropic"};
    for (size_t p = 0; p < 4; p++) {
        llm_backend *b = NULL;
        pwb_err e;
        cr_assert_eq(create(providers[p], "http://10.1.2.3:8000/v1", "PWB_TEST_KEY_RULE", 0, &b, &e), PWB_EINVAL,
                     "%s", providers[p]);
        cr_assert(strstr(e.msg, "plain http://") && strstr(e.msg, "PWB_TEST_KEY_RULE"), "%s", e.msg);
        cr_assert_null(strstr(e.msg, key), "the message names the variable, never the key");
        cr_assert_null(b);
        /* allowed when the user says so, over https, to loopback, or with no key at all */
        cr_assert_eq(create(providers[p], "http://10.1.2.3:8000/v1", "PWB_TEST_KEY_RULE", 1, &b, &e), PWB_OK, "%s", e.msg);
        llm_backend_free(b);
        cr_assert_eq(create(providers[p], "https://10.1.2.3:8000/v1", "PWB_TEST_KEY_RULE", 0, &b, &e), PWB_OK, "%s", e.msg);
        llm_backend_free(b);
        cr_assert_eq(create(providers[p], "http://127.0.0.1:8000/v1", "PWB_TEST_KEY_RULE", 0, &b, &e), PWB_OK, "%s", e.msg);
        llm_backend_free(b);
        cr_assert_eq(create(providers[p], "http://10.1.2.3:8000/v1", NULL, 0, &b, &e), PWB_OK, "%s", e.msg);
        llm_backend_free(b);
    }
    unsetenv("PWB_TEST_KEY_RULE");
}

Test(keys, presets_and_urls)
{
    llm_config c, r;
    llm_config_defaults(&c);
    c.name = "g";
    c.provider = "groq";
    pwb_err e;
    cr_assert_eq(llm_config_resolve(&c, &r, &e), PWB_EINVAL, "a hosted preset wants a key");
    cr_assert(strstr(e.msg, "GROQ_API_KEY"), "%s", e.msg);
    c.api_key_env = "MY_GROQ";
    cr_assert_eq(llm_config_resolve(&c, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.provider, "openai");
    cr_assert_str_eq(r.preset, "groq");
    cr_assert_str_eq(r.base_url, "https://api.groq.com/openai/v1");
    c.base_url = "http://127.0.0.1:9999/v1";
    cr_assert_eq(llm_config_resolve(&c, &r, &e), PWB_OK);
    cr_assert_str_eq(r.base_url, "http://127.0.0.1:9999/v1", "the suite's URL wins");

    llm_config_defaults(&c);
    c.provider = "openai-completions";
    c.preset = "vllm";
    cr_assert_eq(llm_config_resolve(&c, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.provider, "openai-completions", "a preset keeps the completions endpoint");
    cr_assert_str_eq(r.base_url, "http://127.0.0.1:8000/v1");
    c.preset = "anthropic";
    cr_assert_eq(llm_config_resolve(&c, &r, &e), PWB_EINVAL, "not OpenAI-compatible");
    c.preset = "nope";
    cr_assert_eq(llm_config_resolve(&c, &r, &e), PWB_EINVAL);
    c.preset = "openai";
    c.api_key_env = "OPENAI_API_KEY";
    cr_assert_eq(llm_config_resolve(&c, &r, &e), PWB_OK);
    cr_assert_str_eq(r.base_url, "https://api.openai.com/v1");

    const char *local[] = {"vllm", "llamacpp", "ollama-openai", "ollama"};
    for (int i = 0; i < 4; i++) {
        llm_config_defaults(&c);
        c.provider = local[i];
        cr_assert_eq(llm_config_resolve(&c, &r, &e), PWB_OK, "%s: %s", local[i], e.msg);
        cr_assert(url_is_loopback(r.base_url), "%s: %s", local[i], r.base_url);
    }
    size_t n = 0, n_url = 0;
    const llm_provider *all = llm_provider_list(&n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(llm_provider_find(all[i].name), &all[i]);
        if (!all[i].base_url)
            continue;
        n_url++;
        cr_assert(strncmp(all[i].base_url, "https://", 8) == 0 || url_is_loopback(all[i].base_url), "%s", all[i].name);
    }
    cr_assert_eq(n_url, 9);

    pwb_buf u;
    buf_init(&u);
    cr_assert_eq(remote_url(&u, "https://api.anthropic.com", "/v1/messages", &e), PWB_OK);
    cr_assert_str_eq(u.data, "https://api.anthropic.com/v1/messages");
    remote_url(&u, "https://api.anthropic.com/v1/", "/v1/messages", &e);
    cr_assert_str_eq(u.data, "https://api.anthropic.com/v1/messages");
    remote_url(&u, "http://h:11434/api", "/api/chat", &e);
    cr_assert_str_eq(u.data, "http://h:11434/api/chat");
    remote_url(&u, "http://h/v1", "/chat/completions", &e);
    cr_assert_str_eq(u.data, "http://h/v1/chat/completions");
    remote_url(&u, "http://h/myv1", "/v1/messages", &e);
    cr_assert_str_eq(u.data, "http://h/myv1/v1/messages", "only a whole segment counts");
    buf_free(&u);
}

/* TLS verification is libcurl's default; no source file may switch it off. */
Test(keys, tls_verification_never_disabled)
{
    const char *root = getenv("PWB_ROOT");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/src/llm", root && *root ? root : ".");
    DIR *d = opendir(dir);
    if (!d)
        cr_skip_test("no %s", dir);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 3 || strcmp(de->d_name + l - 2, ".c"))
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        pwb_buf b;
        buf_init(&b);
        pwb_err e;
        cr_assert_eq(file_read_all(path, 1 << 24, &b, &e), PWB_OK);
        cr_assert_null(strstr(b.data, "SSL_VERIFYPEER"), "%s touches CURLOPT_SSL_VERIFYPEER", path);
        cr_assert_null(strstr(b.data, "SSL_VERIFYHOST"), "%s touches CURLOPT_SSL_VERIFYHOST", path);
        buf_free(&b);
        files++;
    }
    closedir(d);
    cr_assert(files >= 5);
}

static fakesrv g_srv;
static void fini(void) { fakesrv_stop(&g_srv); }
TestSuite(keys_http, .fini = fini, .timeout = 60);

static void no_key_in(const llm_response *r, const char *key, const char *what)
{
    const char *fields[] = {r->text, r->error, r->finish_reason};
    for (int k = 0; k < 3; k++)
        if (fields[k])
            cr_assert_null(strstr(fields[k], key), "%s: the key leaked: %s", what, fields[k]);
}

/* A hostile server echoes the credential into every reply and error (fakellm --leak-auth), and
 * some attempts fail. No response field, streamed or not, from any provider, carries the key. */
Test(keys_http, planted_key_found_in_no_response)
{
    const char *key = "sk-PLANTED-b7e1c0ffee-9d";
    setenv("PWB_TEST_PLANTED", key, 1);
    fakesrv_start(&g_srv, (const char *const[]){"--leak-auth", "--rate-500", "0.3", "--rate-429", "0.1",
                                                "--retry-after", "0", "--seed", "8", NULL});
    struct {
        const char *provider;
        int stream, retries;
        const char *base;
    } cases[] = {
        {"openai", 0, 6, g_srv.base},      {"openai", 1, 6, g_srv.base},      {"openai-completions", 1, 6, g_srv.base},
        {"ollama", 0, 6, g_srv.root},      {"ollama", 1, 6, g_srv.root},      {"anthropic", 1, 6, g_srv.root},
        {"openai", 0, 0, g_srv.base}, /* no retries: some requests end with the error body */
        {"anthropic", 0, 0, g_srv.root},
    };
    int errors_seen = 0, echoes_seen = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        llm_config c;
        llm_config_defaults(&c);
        c.name = "leaky";
        c.provider = cases[k].provider;
        c.base_url = cases[k].base;
        c.model = "m";
        c.api_key_env = "PWB_TEST_PLANTED";
        c.stream = cases[k].stream;
        c.max_retries = cases[k].retries;
        c.backoff_base_s = 0.005;
        c.backoff_max_s = 0.01;
        llm_backend *be = NULL;
        pwb_err e;
        cr_assert_eq(llm_backend_create(&be, &c, &e), PWB_OK, "%s", e.msg);
        test_reqs t;
        test_reqs_init(&t, 10, 0);
        cr_assert_eq(be->run(be, t.req, t.n, t.out, test_reqs_on_done, &t, &e), PWB_OK, "%s", e.msg);
        cr_assert_null(strstr(e.msg, key));
        for (size_t i = 0; i < t.n; i++) {
            no_key_in(&t.out[i], key, cases[k].provider);
            errors_seen += t.out[i].error != NULL;
            echoes_seen += (t.out[i].text && strstr(t.out[i].text, "[auth: ")) ||
                           (t.out[i].error && strstr(t.out[i].error, "you sent"));
        }
        llm_backend_free(be);
        test_reqs_free(&t);
    }
    cr_assert(errors_seen > 0, "some error bodies were kept");
    cr_assert(echoes_seen >= 60, "the server echoed the key %d times", echoes_seen);
    unsetenv("PWB_TEST_PLANTED");
}
