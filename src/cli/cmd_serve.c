/* pwb serve: the local engine and its adapters behind an OpenAI-compatible HTTP API (src/serve). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/engine.h"
#include "serve/adapter.h"
#include "serve/sched.h"
#include "serve/server.h"
#include "util/file.h"
#include "util/log.h"
#include "util/str.h"
#include "util/timer.h"

int cmd_serve(const cli_args *a)
{
    const char *path = cli_str(a, "model", NULL);
    if (!path) {
        cli_usage_error(a->cmd, "--model PATH is required");
        return EXIT_PWB_USAGE;
    }
    long port, threads, max_batch, step_tokens, max_body, max_conns, max_inflight, req_to, drain_to;
    if (cli_long(a, "port", 8080, 0, 65535, &port) || cli_long(a, "threads", 0, 0, 1024, &threads) ||
        cli_long(a, "max-batch", 64, 1, 1024, &max_batch) || cli_long(a, "step-tokens", 256, 16, 8192, &step_tokens) ||
        cli_long(a, "max-body", 1 << 20, 1024, 1L << 30, &max_body) ||
        cli_long(a, "max-connections", 1024, 1, 100000, &max_conns) ||
        cli_long(a, "max-inflight", 256, 1, 100000, &max_inflight) ||
        cli_long(a, "request-timeout", 600, 1, 86400, &req_to) || cli_long(a, "drain-timeout", 30, 0, 86400, &drain_to))
        return EXIT_PWB_USAGE;
    const char *key_env = cli_str(a, "api-key-env", "PWB_SERVE_API_KEY");
    const char *key = getenv(key_env);
    if (cli_str(a, "api-key-env", NULL) && (!key || !*key)) {
        cli_usage_error(a->cmd, "--api-key-env %s: the variable is not set", key_env);
        return EXIT_PWB_USAGE;
    }
    const char *specs[ADAPTER_MAX];
    int n_specs = cli_all(a, "adapter", specs, ADAPTER_MAX);

    pwb_err e;
    err_clear(&e);
    engine *en = NULL;
    adapter_set ads;
    adapter_set_init(&ads);
    sched *s = NULL;
    serve *sv = NULL;
    double t0 = timer_wall();
    const int int8 = cli_flag(a, "int8");
    engine_opts eo = {.n_threads = (int)threads, .int8_activations = int8};
    int rc = engine_open(&en, path, &eo, &e);
    for (int i = 0; rc == PWB_OK && i < n_specs; i++)
        rc = adapter_set_add(&ads, specs[i], engine_model(en), &e);
    sched_opts so = {.step_tokens = (int)step_tokens, .max_active = (int)max_batch, .n_threads = (int)threads,
                     .int8_activations = int8, .pool_positions = cli_flag(a, "no-prefix-cache") ? -1 : 0};
    if (rc == PWB_OK)
        rc = sched_start(&s, en, &ads, &so, &e);
    serve_opts vo = {.host = cli_str(a, "host", "127.0.0.1"), .port = (int)port, .max_body = (size_t)max_body,
                     .max_connections = (int)max_conns, .max_inflight = (int)max_inflight,
                     .request_timeout_s = (double)req_to, .api_key = key,
                     .chat_template = cli_str(a, "chat-template", NULL), .model_name = path};
    if (rc == PWB_OK) {
        cli_signals_install();
        rc = serve_start(&sv, en, &ads, s, &vo, &e);
    }
    if (rc == PWB_OK && cli_str(a, "port-file", NULL)) {
        char num[16];
        snprintf(num, sizeof num, "%d\n", serve_port(sv));
        rc = file_write_atomic(cli_str(a, "port-file", NULL), num, strlen(num), &e);
    }
    if (rc != PWB_OK) {
        serve_stop(sv);
        sched_free(s);
        adapter_set_free(&ads);
        engine_close(en);
        return cli_fail(&e);
    }
    if (!a->quiet) {
        fprintf(stderr, "pwb serve: %s loaded in %.1f s; listening on http://%s:%d/v1%s\n", path, timer_wall() - t0,
                vo.host, serve_port(sv), key ? " (API key required)" : "");
        for (int i = 0; i < ads.n; i++)
            fprintf(stderr, "  model %-24s %s%s%s\n", ads.items[i].name, adapter_kind_name(ads.items[i].kind),
                    ads.items[i].dir ? " from " : "", ads.items[i].dir ? ads.items[i].dir : "");
    }
    while (!cli_stop) {
        usleep(200 * 1000);
        serve_tick(sv);
    }
    /* SIGTERM / Ctrl-C: take no new connections, let the running requests finish */
    serve_quiesce(sv);
    int left = serve_inflight(sv);
    if (!a->quiet)
        fprintf(stderr, "pwb serve: stopping; finishing %d request%s\n", left, left == 1 ? "" : "s");
    double t_end = timer_wall() + (double)drain_to;
    while (serve_inflight(sv) > 0 && timer_wall() < t_end) {
        usleep(50 * 1000);
        serve_tick(sv);
    }
    left = serve_inflight(sv);
    serve_stop(sv);
    sched_free(s);
    adapter_set_free(&ads);
    engine_close(en);
    if (left > 0)
        fprintf(stderr, "pwb serve: %d request%s cut off after --drain-timeout\n", left, left == 1 ? "" : "s");
    return EXIT_PWB_OK;
}
