/* fakellm: a loopback OpenAI-compatible server for tests and benchmarks.
 *
 * Single-threaded, poll()-based HTTP/1.1 with keep-alive and Content-Length bodies, on 127.0.0.1.
 * Answers POST /v1/chat/completions, /v1/completions and /v1/embeddings (also without /v1) with
 * OpenAI-shaped JSON (embeddings: a 16-dimensional hashed bag of words),
 * GET /stats with counters, GET /health with "ok". Replies are deterministic functions of the
 * prompt; faults (429, 500, 503, dropped connection, slow reply, malformed JSON) are drawn per
 * request from a seeded RNG or taken from a script. Prints "PORT <n>" on stdout once listening.
 * Exits on SIGTERM/SIGINT, after --idle-exit seconds without traffic, or after --max-requests. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/rng.h"
#include "util/str.h"
#include "util/timer.h"

#define MAX_HEAD (64 * 1024)
#define MAX_BODY (16 * 1024 * 1024)
#define MAX_CONNS 1024
#define MAX_RULES 64
#define MAX_SCRIPT 4096
#define MAX_LABELS 256

enum fault { FK_OK, FK_429, FK_500, FK_503, FK_DROP, FK_SLOW, FK_MALFORMED, FK_COUNT };
static const char *fault_name[FK_COUNT] = {"ok", "429", "500", "503", "drop", "slow", "malformed"};

typedef struct conn {
    int fd;
    pwb_buf in;
    pwb_buf out;
    size_t out_off;
    double ready_at;  /* > 0: output held back until then (a slow reply) */
    int close_after;  /* close once the output is flushed */
    int sent_continue;
    size_t hold_off;  /* > 0: a streamed reply; output past this offset waits --stream-gap-ms */
} conn;

static struct {
    /* options */
    int port;
    uint64_t seed;
    double rate[FK_COUNT];
    int slow_ms;
    int retry_after;      /* seconds; < 0: no header */
    int retry_after_date; /* send it as an HTTP-date */
    long fail_first;
    int fail_kind;
    int script[MAX_SCRIPT];
    int n_script;
    long max_requests;
    double idle_exit;
    const char *log_path;
    const char *reply;
    int echo;
    char *labels[MAX_LABELS];
    int n_labels;
    const char *rule_key[MAX_RULES];
    const char *rule_reply[MAX_RULES];
    int n_rules;
    const char *prefix;
    long pad;
    const char *require_key;
    int leak_auth;
    const char *model;
    const char *favor;    /* --favor WORD: its fake log-probability is -0.05 */
    int ignore_echo;      /* --ignore-echo: completions never echo the prompt */
    int no_logprobs;      /* --no-logprobs: completions answer "logprobs": null */
    int first_token_ms;   /* streamed replies start after this */
    int stream_gap_ms;    /* ... and everything past the first token after this */
    int max_inflight;     /* > 0: 429 when more slow replies than this are pending */
    /* state */
    pwb_rng rng;
    FILE *log;
    int log_dirty;
    long posts;
    long stat_fault[FK_COUNT];
    long stat_bad, stat_unauth, stat_conns, stat_other;
    long stat_throttled, stat_peak_inflight;
    double draining; /* when --max-requests was reached */
} S;

static volatile sig_atomic_t g_term;
static void on_term(int sig) { (void)sig; g_term = 1; }

static void usage(void)
{
    fprintf(stderr,
            "usage: fakellm [options]\n"
            "  --port N              listen port on 127.0.0.1 (0: pick one; prints PORT <n>)\n"
            "  --seed N              fault RNG seed (default 1)\n"
            "  --rate-429 R --rate-500 R --rate-503 R --rate-drop R --rate-slow R --rate-malformed R\n"
            "                        per-request fault probabilities (sum <= 1)\n"
            "  --slow-ms MS          delay of a slow reply (default 3000)\n"
            "  --retry-after N       Retry-After seconds on 429/503 (default 1; -1: no header)\n"
            "  --retry-after-date    send Retry-After as an HTTP-date\n"
            "  --fail-first N        the first N requests fail (with --fail-kind, default 500)\n"
            "  --fail-kind K         ok|429|500|503|drop|slow|malformed\n"
            "  --script LIST         comma list of kinds for the next requests, in order\n"
            "  --max-requests N      exit after N completion requests\n"
            "  --idle-exit S         exit after S seconds without traffic (default 60; 0: never)\n"
            "  --log FILE            one JSON line per request: seq, t, path, headers, body, fault\n"
            "  --reply TEXT | --echo | --answer-from A,B,C   reply content (default: reply-<hash>)\n"
            "  --rule SUBSTR=REPLY   reply REPLY when the last user message contains SUBSTR\n"
            "  --prefix TEXT         prepended to every reply\n"
            "  --pad N               append N bytes of padding to every reply\n"
            "  --require-key KEY     401 unless 'Authorization: Bearer KEY' (x-api-key: KEY on /v1/messages)\n"
            "  --leak-auth           hostile: echo the Authorization header in replies and errors\n"
            "  --model NAME          model name in replies (default: the request's)\n"
            "  --favor WORD          completions logprobs: WORD gets -0.05 (others -(0.1 + fnv1a %% 400 / 100))\n"
            "  --ignore-echo         completions ignore \"echo\" (prompt log-probabilities never come back)\n"
            "  --no-logprobs         completions answer \"logprobs\": null\n"
            "  --first-token-ms MS   streamed replies start after MS\n"
            "  --stream-gap-ms MS    streamed replies: the rest after the first token follows after MS\n"
            "  --max-inflight K      429 (and /stats throttled) when K slow replies are already pending\n"
            "Endpoints: POST /v1/chat/completions, /v1/completions (echo + logprobs), /v1/messages, /v1/embeddings\n"
            "(Anthropic), /api/chat (Ollama); \"stream\": true answers SSE (NDJSON for Ollama).\n");
}

static int parse_kind(const char *s)
{
    for (int k = 0; k < FK_COUNT; k++)
        if (strcmp(s, fault_name[k]) == 0)
            return k;
    return -1;
}

static int num_arg(const char *s, double *out)
{
    if (str_to_double(s, out)) {
        fprintf(stderr, "fakellm: bad number '%s'\n", s);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv)
{
    S.seed = 1;
    S.slow_ms = 3000;
    S.retry_after = 1;
    S.fail_kind = FK_500;
    S.idle_exit = 60;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        int takes = 1;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        } else if (strcmp(a, "--echo") == 0) {
            S.echo = 1;
            takes = 0;
        } else if (strcmp(a, "--leak-auth") == 0) {
            S.leak_auth = 1;
            takes = 0;
        } else if (strcmp(a, "--retry-after-date") == 0) {
            S.retry_after_date = 1;
            takes = 0;
        } else if (strcmp(a, "--ignore-echo") == 0) {
            S.ignore_echo = 1;
            takes = 0;
        } else if (strcmp(a, "--no-logprobs") == 0) {
            S.no_logprobs = 1;
            takes = 0;
        } else if (!v) {
            fprintf(stderr, "fakellm: %s needs a value (see --help)\n", a);
            return -1;
        } else if (strncmp(a, "--rate-", 7) == 0) {
            int k = strcmp(a + 7, "429") == 0 ? FK_429 : strcmp(a + 7, "500") == 0 ? FK_500
                    : strcmp(a + 7, "503") == 0 ? FK_503 : strcmp(a + 7, "drop") == 0 ? FK_DROP
                    : strcmp(a + 7, "slow") == 0 ? FK_SLOW : strcmp(a + 7, "malformed") == 0 ? FK_MALFORMED : -1;
            if (k < 0 || num_arg(v, &d) || d < 0 || d > 1) {
                fprintf(stderr, "fakellm: bad %s %s\n", a, v);
                return -1;
            }
            S.rate[k] = d;
        } else if (strcmp(a, "--port") == 0 || strcmp(a, "--seed") == 0 || strcmp(a, "--slow-ms") == 0 ||
                   strcmp(a, "--retry-after") == 0 || strcmp(a, "--fail-first") == 0 ||
                   strcmp(a, "--max-requests") == 0 || strcmp(a, "--idle-exit") == 0 || strcmp(a, "--pad") == 0 ||
                   strcmp(a, "--first-token-ms") == 0 || strcmp(a, "--stream-gap-ms") == 0 ||
                   strcmp(a, "--max-inflight") == 0) {
            if (num_arg(v, &d))
                return -1;
            if (strcmp(a, "--port") == 0)
                S.port = (int)d;
            else if (strcmp(a, "--seed") == 0)
                S.seed = (uint64_t)d;
            else if (strcmp(a, "--slow-ms") == 0)
                S.slow_ms = (int)d;
            else if (strcmp(a, "--retry-after") == 0)
                S.retry_after = (int)d;
            else if (strcmp(a, "--fail-first") == 0)
                S.fail_first = (long)d;
            else if (strcmp(a, "--max-requests") == 0)
                S.max_requests = (long)d;
            else if (strcmp(a, "--idle-exit") == 0)
                S.idle_exit = d;
            else if (strcmp(a, "--first-token-ms") == 0)
                S.first_token_ms = (int)d;
            else if (strcmp(a, "--stream-gap-ms") == 0)
                S.stream_gap_ms = (int)d;
            else if (strcmp(a, "--max-inflight") == 0)
                S.max_inflight = (int)d;
            else
                S.pad = d < 0 ? 0 : d > 64e6 ? 64000000L : (long)d;
        } else if (strcmp(a, "--fail-kind") == 0) {
            if ((S.fail_kind = parse_kind(v)) < 0) {
                fprintf(stderr, "fakellm: unknown kind '%s'\n", v);
                return -1;
            }
        } else if (strcmp(a, "--script") == 0) {
            char *copy = str_dup(v), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t && S.n_script < MAX_SCRIPT; t = strtok_r(NULL, ",", &save)) {
                int k = parse_kind(str_trim(t));
                if (k < 0) {
                    fprintf(stderr, "fakellm: unknown kind '%s' in --script\n", t);
                    free(copy);
                    return -1;
                }
                S.script[S.n_script++] = k;
            }
            free(copy);
        } else if (strcmp(a, "--answer-from") == 0) {
            char *copy = str_dup(v), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t && S.n_labels < MAX_LABELS; t = strtok_r(NULL, ",", &save))
                S.labels[S.n_labels++] = str_dup(t);
            free(copy);
        } else if (strcmp(a, "--rule") == 0) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || S.n_rules >= MAX_RULES) {
                fprintf(stderr, "fakellm: --rule wants SUBSTR=REPLY\n");
                return -1;
            }
            S.rule_key[S.n_rules] = str_ndup(v, (size_t)(eq - v));
            S.rule_reply[S.n_rules++] = eq + 1;
        } else if (strcmp(a, "--log") == 0) {
            S.log_path = v;
        } else if (strcmp(a, "--reply") == 0) {
            S.reply = v;
        } else if (strcmp(a, "--prefix") == 0) {
            S.prefix = v;
        } else if (strcmp(a, "--require-key") == 0) {
            S.require_key = v;
        } else if (strcmp(a, "--model") == 0) {
            S.model = v;
        } else if (strcmp(a, "--favor") == 0) {
            S.favor = v;
        } else {
            fprintf(stderr, "fakellm: unknown option %s (see --help)\n", a);
            return -1;
        }
        i += takes;
    }
    double sum = 0;
    for (int k = 0; k < FK_COUNT; k++)
        sum += S.rate[k];
    if (sum > 1.0 + 1e-9) {
        fprintf(stderr, "fakellm: fault rates add up to more than 1\n");
        return -1;
    }
    return 0;
}

/* ---- replies ---- */

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static int count_words(const char *s)
{
    int n = 0, in = 0;
    for (; *s; s++) {
        int sp = *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v';
        if (!sp && !in)
            n++;
        in = !sp;
    }
    return n;
}

/* Keeps the first n words of s (in place). Returns 1 when it cut something. */
static int keep_words(char *s, int n)
{
    int w = 0, in = 0;
    for (char *p = s; *p; p++) {
        int sp = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v';
        if (!sp && !in && w++ == n) {
            while (p > s && (p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n' || p[-1] == '\r'))
                p--;
            *p = '\0';
            return 1;
        }
        in = !sp;
    }
    return 0;
}

static const char *content_of(const cJSON *m)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));
    return s ? s : "";
}

static void add_header_line(pwb_buf *out, int status, const char *reason, size_t len, const char *extra, int close)
{
    buf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s%s\r\n", status,
               reason, len, extra ? extra : "", close ? "Connection: close\r\n" : "");
}

static void respond(conn *c, int status, const char *reason, const char *body, size_t len, const char *extra)
{
    add_header_line(&c->out, status, reason, len, extra, c->close_after);
    buf_append(&c->out, body, len);
}

static void respond_error(conn *c, int status, const char *reason, const char *msg, const char *auth, const char *extra)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(j, "error");
    pwb_buf m;
    buf_init(&m);
    buf_puts(&m, msg);
    if (S.leak_auth && auth)
        buf_printf(&m, " (you sent: %s)", auth);
    cJSON_AddStringToObject(err, "message", m.data ? m.data : msg);
    cJSON_AddStringToObject(err, "type", reason);
    char *s = cJSON_PrintUnformatted(j);
    respond(c, status, reason, s ? s : "{}", s ? strlen(s) : 2, extra);
    free(s);
    buf_free(&m);
    cJSON_Delete(j);
}

static void retry_after_header(char *out, size_t cap)
{
    out[0] = '\0';
    if (S.retry_after < 0)
        return;
    if (S.retry_after_date) {
        time_t t = time(NULL) + S.retry_after;
        struct tm tm;
        gmtime_r(&t, &tm);
        char d[64];
        strftime(d, sizeof d, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        snprintf(out, cap, "Retry-After: %s\r\n", d);
    } else {
        snprintf(out, cap, "Retry-After: %d\r\n", S.retry_after);
    }
}

/* The wire protocols fakellm speaks. */
enum proto { P_CHAT, P_CMPL, P_ANTHROPIC, P_OLLAMA };

/* Request headers handle() looks at. */
typedef struct req_hdrs {
    const char *auth;     /* Authorization */
    const char *xkey;     /* x-api-key */
    const char *version;  /* anthropic-version */
} req_hdrs;

/* The credential a protocol carries, for --leak-auth. */
static const char *cred_of(int proto, const req_hdrs *h) { return proto == P_ANTHROPIC ? h->xkey : h->auth; }

/* Splits text into tokens: each is its leading whitespace plus one word (the last may be
 * whitespace only). Returns the count; starts[k] are byte offsets, starts[count] = strlen. */
static int split_pieces(const char *text, size_t **starts)
{
    size_t n = strlen(text), cap = 16;
    int k = 0;
    *starts = malloc((cap + 1) * sizeof **starts);
    size_t i = 0;
    while (i < n && *starts) {
        if ((size_t)k + 1 >= cap) {
            cap *= 2;
            size_t *t = realloc(*starts, (cap + 1) * sizeof *t);
            if (!t) {
                free(*starts);
                *starts = NULL;
                return 0;
            }
            *starts = t;
        }
        (*starts)[k++] = i;
        while (i < n && strchr(" \t\r\n", text[i]))
            i++;
        while (i < n && !strchr(" \t\r\n", text[i]))
            i++;
    }
    if (*starts)
        (*starts)[k] = n;
    return *starts ? k : 0;
}

static size_t codepoints(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Deterministic fake log-probability of a token: -(0.1 + (fnv1a(word) % 400) / 100), where word
 * is the token without its leading whitespace; --favor WORD gets -0.05. Tests compute the same. */
static double fake_logprob(const char *tok, size_t n)
{
    while (n && strchr(" \t\r\n", *tok)) {
        tok++;
        n--;
    }
    char w[256];
    size_t k = n < sizeof w - 1 ? n : sizeof w - 1;
    memcpy(w, tok, k);
    w[k] = '\0';
    if (S.favor && strcmp(w, S.favor) == 0)
        return -0.05;
    return -(0.1 + (double)(fnv1a(w) % 400u) / 100.0);
}

/* Appends the tokens of text (at code-point offset base) to the logprobs arrays; the very first
 * token of the echo has no log-probability (null), as OpenAI and llama.cpp answer. */
static void add_logprob_tokens(cJSON *tokens, cJSON *lps, cJSON *offs, cJSON *tops, const char *text, size_t base,
                               int first_is_start)
{
    size_t *st = NULL;
    int n = split_pieces(text, &st);
    for (int k = 0; k < n; k++) {
        size_t a = st[k], len = st[k + 1] - st[k];
        char *piece = str_ndup(text + a, len);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(piece ? piece : ""));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(base + codepoints(text, a))));
        if (k == 0 && first_is_start) {
            cJSON_AddItemToArray(lps, cJSON_CreateNull());
            cJSON_AddItemToArray(tops, cJSON_CreateNull());
        } else {
            double lp = fake_logprob(text + a, len);
            cJSON_AddItemToArray(lps, cJSON_CreateNumber(lp));
            cJSON *top = cJSON_CreateObject();
            cJSON_AddNumberToObject(top, piece ? piece : "", lp);
            cJSON_AddItemToArray(tops, top);
        }
        free(piece);
    }
    free(st);
}

static void respond_ct(conn *c, const char *ctype, const char *body, size_t len)
{
    buf_printf(&c->out, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", ctype, len,
               c->close_after ? "Connection: close\r\n" : "");
    buf_append(&c->out, body, len);
}

static void sse_event(pwb_buf *b, const char *event, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    if (event)
        buf_printf(b, "event: %s\n", event);
    buf_printf(b, "data: %s\n\n", s ? s : "{}");
    free(s);
    cJSON_Delete(j);
}

static void ndjson_line(pwb_buf *b, cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    buf_printf(b, "%s\n", s ? s : "{}");
    free(s);
    cJSON_Delete(j);
}

static cJSON *usage_obj(int proto, int in, int out)
{
    cJSON *u = cJSON_CreateObject();
    if (proto == P_ANTHROPIC) {
        cJSON_AddNumberToObject(u, "input_tokens", in);
        cJSON_AddNumberToObject(u, "output_tokens", out);
    } else {
        cJSON_AddNumberToObject(u, "prompt_tokens", in);
        cJSON_AddNumberToObject(u, "completion_tokens", out);
        cJSON_AddNumberToObject(u, "total_tokens", in + out);
    }
    return u;
}

static const char *anthropic_reason(const char *finish, int by_stop)
{
    return strcmp(finish, "length") == 0 ? "max_tokens" : by_stop ? "stop_sequence" : "end_turn";
}

/* The streamed body of a reply: one event per piece. Sets *hold to the offset in body just past
 * the first piece (where --stream-gap-ms holds the rest back). */
static void stream_body(pwb_buf *b, int proto, const char *model, const char *text, const char *finish, int by_stop,
                        int in, int out, int include_usage, size_t *hold)
{
    size_t *st = NULL;
    int n = split_pieces(text, &st);
    *hold = 0;
    if (proto == P_ANTHROPIC) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "type", "message_start");
        cJSON *m = cJSON_AddObjectToObject(j, "message");
        cJSON_AddStringToObject(m, "id", "msg_fake");
        cJSON_AddStringToObject(m, "type", "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddArrayToObject(m, "content");
        cJSON_AddStringToObject(m, "model", model);
        cJSON_AddNullToObject(m, "stop_reason");
        cJSON *u = cJSON_AddObjectToObject(m, "usage");
        cJSON_AddNumberToObject(u, "input_tokens", in);
        cJSON_AddNumberToObject(u, "output_tokens", 1);
        sse_event(b, "message_start", j);
        j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "type", "content_block_start");
        cJSON_AddNumberToObject(j, "index", 0);
        cJSON *cb = cJSON_AddObjectToObject(j, "content_block");
        cJSON_AddStringToObject(cb, "type", "text");
        cJSON_AddStringToObject(cb, "text", "");
        sse_event(b, "content_block_start", j);
        buf_puts(b, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    } else if (proto == P_CHAT) {
        cJSON *j = cJSON_CreateObject();
        cJSON *c0 = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "choices"), c0);
        cJSON_AddNumberToObject(c0, "index", 0);
        cJSON *d = cJSON_AddObjectToObject(c0, "delta");
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        cJSON_AddNullToObject(c0, "finish_reason");
        sse_event(b, NULL, j);
    }
    for (int k = 0; k < n; k++) {
        char *piece = str_ndup(text + st[k], st[k + 1] - st[k]);
        cJSON *j = cJSON_CreateObject();
        if (proto == P_ANTHROPIC) {
            cJSON_AddStringToObject(j, "type", "content_block_delta");
            cJSON_AddNumberToObject(j, "index", 0);
            cJSON *d = cJSON_AddObjectToObject(j, "delta");
            cJSON_AddStringToObject(d, "type", "text_delta");
            cJSON_AddStringToObject(d, "text", piece ? piece : "");
            sse_event(b, "content_block_delta", j);
        } else if (proto == P_OLLAMA) {
            cJSON_AddStringToObject(j, "model", model);
            cJSON_AddStringToObject(j, "created_at", "2025-01-01T00:00:00Z");
            cJSON *m = cJSON_AddObjectToObject(j, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", piece ? piece : "");
            cJSON_AddFalseToObject(j, "done");
            ndjson_line(b, j);
        } else {
            cJSON *c0 = cJSON_CreateObject();
            cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "choices"), c0);
            cJSON_AddNumberToObject(c0, "index", 0);
            if (proto == P_CHAT)
                cJSON_AddStringToObject(cJSON_AddObjectToObject(c0, "delta"), "content", piece ? piece : "");
            else
                cJSON_AddStringToObject(c0, "text", piece ? piece : "");
            cJSON_AddNullToObject(c0, "finish_reason");
            sse_event(b, NULL, j);
        }
        free(piece);
        if (k == 0)
            *hold = b->len;
    }
    free(st);
    cJSON *j = cJSON_CreateObject();
    if (proto == P_ANTHROPIC) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "type", "content_block_stop");
        cJSON_AddNumberToObject(s, "index", 0);
        sse_event(b, "content_block_stop", s);
        cJSON_AddStringToObject(j, "type", "message_delta");
        cJSON *d = cJSON_AddObjectToObject(j, "delta");
        cJSON_AddStringToObject(d, "stop_reason", anthropic_reason(finish, by_stop));
        cJSON_AddNullToObject(d, "stop_sequence");
        cJSON *u = cJSON_AddObjectToObject(j, "usage");
        cJSON_AddNumberToObject(u, "output_tokens", out);
        sse_event(b, "message_delta", j);
        buf_puts(b, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    } else if (proto == P_OLLAMA) {
        cJSON_AddStringToObject(j, "model", model);
        cJSON_AddStringToObject(j, "created_at", "2025-01-01T00:00:00Z");
        cJSON *m = cJSON_AddObjectToObject(j, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", "");
        cJSON_AddTrueToObject(j, "done");
        cJSON_AddStringToObject(j, "done_reason", finish);
        cJSON_AddNumberToObject(j, "prompt_eval_count", in);
        cJSON_AddNumberToObject(j, "eval_count", out);
        ndjson_line(b, j);
    } else {
        cJSON *c0 = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "choices"), c0);
        cJSON_AddNumberToObject(c0, "index", 0);
        if (proto == P_CHAT)
            cJSON_AddObjectToObject(c0, "delta");
        else
            cJSON_AddStringToObject(c0, "text", "");
        cJSON_AddStringToObject(c0, "finish_reason", finish);
        sse_event(b, NULL, j);
        if (include_usage) {
            j = cJSON_CreateObject();
            cJSON_AddArrayToObject(j, "choices");
            cJSON_AddItemToObject(j, "usage", usage_obj(proto, in, out));
            sse_event(b, NULL, j);
        }
        buf_puts(b, "data: [DONE]\n\n");
    }
}

/* The completion proper: builds the reply for a parsed request body. */
static void answer(conn *c, int proto, const cJSON *req, const req_hdrs *h)
{
    const char *cred = cred_of(proto, h);
    pwb_buf text;
    buf_init(&text);
    const char *last = "";
    int words_in = 0;
    const cJSON *stop = NULL, *mt = NULL;
    if (proto == P_CMPL) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(req, "prompt");
        if (cJSON_IsArray(p))
            p = cJSON_GetArrayItem(p, 0);
        if (!cJSON_IsString(p)) {
            S.stat_bad++;
            respond_error(c, 400, "Bad Request", "'prompt' must be a string", cred, NULL);
            return;
        }
        last = p->valuestring;
        words_in = count_words(last);
    } else {
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
        if (!cJSON_IsArray(msgs)) {
            S.stat_bad++;
            respond_error(c, 400, "Bad Request", "'messages' must be an array", cred, NULL);
            return;
        }
        const cJSON *m;
        cJSON_ArrayForEach(m, msgs) {
            words_in += count_words(content_of(m));
            const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
            if (proto == P_ANTHROPIC && (!role || (strcmp(role, "user") && strcmp(role, "assistant")))) {
                S.stat_bad++;
                respond_error(c, 400, "Bad Request", "messages: roles must be 'user' or 'assistant'", cred, NULL);
                return;
            }
            if (role && strcmp(role, "user") == 0)
                last = content_of(m);
        }
    }
    if (proto == P_ANTHROPIC) {
        const char *sys = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "system"));
        if (sys)
            words_in += count_words(sys);
        mt = cJSON_GetObjectItemCaseSensitive(req, "max_tokens");
        if (!cJSON_IsNumber(mt) || mt->valuedouble < 1) {
            S.stat_bad++;
            respond_error(c, 400, "Bad Request", "max_tokens: Field required", cred, NULL);
            return;
        }
        stop = cJSON_GetObjectItemCaseSensitive(req, "stop_sequences");
        const cJSON *st;
        cJSON_ArrayForEach(st, stop) {
            const char *sv = cJSON_GetStringValue(st);
            int blank = 1;
            for (const char *q = sv ? sv : ""; *q; q++)
                blank &= strchr(" \t\r\n", *q) != NULL;
            if (blank) {
                S.stat_bad++;
                respond_error(c, 400, "Bad Request", "stop_sequences: each must contain non-whitespace", cred, NULL);
                return;
            }
        }
    } else if (proto == P_OLLAMA) {
        const cJSON *opt = cJSON_GetObjectItemCaseSensitive(req, "options");
        stop = cJSON_GetObjectItemCaseSensitive(opt, "stop");
        mt = cJSON_GetObjectItemCaseSensitive(opt, "num_predict");
    } else {
        stop = cJSON_GetObjectItemCaseSensitive(req, "stop");
        mt = cJSON_GetObjectItemCaseSensitive(req, "max_tokens");
    }
    if (S.prefix)
        buf_puts(&text, S.prefix);
    int ruled = 0;
    for (int k = 0; k < S.n_rules && !ruled; k++)
        if (strstr(last, S.rule_key[k])) {
            buf_puts(&text, S.rule_reply[k]);
            ruled = 1;
        }
    if (ruled)
        ;
    else if (S.reply)
        buf_puts(&text, S.reply);
    else if (S.echo)
        buf_puts(&text, last);
    else if (S.n_labels)
        buf_puts(&text, S.labels[fnv1a(last) % (uint32_t)S.n_labels]);
    else
        buf_printf(&text, "reply-%08x", fnv1a(last));
    if (S.leak_auth && cred)
        buf_printf(&text, " [auth: %s]", cred);
    for (long k = 0; k < S.pad; k++)
        buf_putc(&text, 'x'); /* one long word: max_tokens does not cut it */
    if (!text.data)
        buf_puts(&text, "");
    const char *finish = "stop";
    int by_stop = 0;
    const cJSON *st;
    cJSON_ArrayForEach(st, stop) {
        const char *sv = cJSON_GetStringValue(st);
        char *hit = sv && *sv ? strstr(text.data, sv) : NULL;
        if (hit) {
            *hit = '\0';
            text.len = (size_t)(hit - text.data);
            by_stop = 1;
        }
    }
    if (cJSON_IsNumber(mt) && mt->valuedouble >= 0 && mt->valuedouble < 1e9 && keep_words(text.data, (int)mt->valuedouble)) {
        text.len = strlen(text.data);
        finish = "length";
    }
    int words_out = count_words(text.data);
    const char *model = S.model ? S.model : cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "model"));
    if (!model)
        model = "fakellm";
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(req, "stream");
    int stream = proto == P_OLLAMA ? !cJSON_IsFalse(sv) : cJSON_IsTrue(sv); /* Ollama streams by default */
    if (stream) {
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(req, "stream_options");
        int include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
        pwb_buf b;
        buf_init(&b);
        size_t hold = 0;
        stream_body(&b, proto, model, text.data, finish, by_stop, words_in, words_out, include_usage, &hold);
        respond_ct(c, proto == P_OLLAMA ? "application/x-ndjson" : "text/event-stream", b.data ? b.data : "", b.len);
        if (S.first_token_ms > 0)
            c->ready_at = timer_wall() + S.first_token_ms / 1000.0;
        if (S.stream_gap_ms > 0 && hold > 0)
            c->hold_off = c->out.len - b.len + hold;
        buf_free(&b);
        buf_free(&text);
        return;
    }

    cJSON *j = cJSON_CreateObject();
    char id[48];
    if (proto == P_ANTHROPIC) {
        snprintf(id, sizeof id, "msg_fake_%ld", S.posts);
        cJSON_AddStringToObject(j, "id", id);
        cJSON_AddStringToObject(j, "type", "message");
        cJSON_AddStringToObject(j, "role", "assistant");
        cJSON *content = cJSON_AddArrayToObject(j, "content");
        cJSON *blk = cJSON_CreateObject();
        cJSON_AddItemToArray(content, blk);
        cJSON_AddStringToObject(blk, "type", "text");
        cJSON_AddStringToObject(blk, "text", text.data);
        cJSON_AddStringToObject(j, "model", model);
        cJSON_AddStringToObject(j, "stop_reason", anthropic_reason(finish, by_stop));
        cJSON_AddNullToObject(j, "stop_sequence");
        cJSON_AddItemToObject(j, "usage", usage_obj(proto, words_in, words_out));
    } else if (proto == P_OLLAMA) {
        cJSON_AddStringToObject(j, "model", model);
        cJSON_AddStringToObject(j, "created_at", "2025-01-01T00:00:00Z");
        cJSON *m = cJSON_AddObjectToObject(j, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", text.data);
        cJSON_AddTrueToObject(j, "done");
        cJSON_AddStringToObject(j, "done_reason", finish);
        cJSON_AddNumberToObject(j, "total_duration", 1000);
        cJSON_AddNumberToObject(j, "prompt_eval_count", words_in);
        cJSON_AddNumberToObject(j, "eval_count", words_out);
    } else {
        int chat = proto == P_CHAT;
        snprintf(id, sizeof id, "%s-fake-%ld", chat ? "chatcmpl" : "cmpl", S.posts);
        cJSON_AddStringToObject(j, "id", id);
        cJSON_AddStringToObject(j, "object", chat ? "chat.completion" : "text_completion");
        cJSON_AddNumberToObject(j, "created", 0);
        cJSON_AddStringToObject(j, "model", model);
        cJSON *choices = cJSON_AddArrayToObject(j, "choices");
        cJSON *c0 = cJSON_CreateObject();
        cJSON_AddItemToArray(choices, c0);
        cJSON_AddNumberToObject(c0, "index", 0);
        if (chat) {
            cJSON *msg = cJSON_AddObjectToObject(c0, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            cJSON_AddStringToObject(msg, "content", text.data);
        } else {
            int echo = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "echo")) && !S.ignore_echo;
            const cJSON *lp = cJSON_GetObjectItemCaseSensitive(req, "logprobs");
            int want_lp = cJSON_IsNumber(lp) && lp->valuedouble >= 0 && !S.no_logprobs;
            pwb_buf all;
            buf_init(&all);
            if (echo)
                buf_puts(&all, last);
            buf_puts(&all, text.data);
            cJSON_AddStringToObject(c0, "text", all.data ? all.data : "");
            if (want_lp) {
                /* prompt and completion are tokenized apart, as a server does */
                cJSON *lo = cJSON_AddObjectToObject(c0, "logprobs");
                cJSON *tokens = cJSON_AddArrayToObject(lo, "tokens");
                cJSON *lps = cJSON_AddArrayToObject(lo, "token_logprobs");
                cJSON *tops = cJSON_AddArrayToObject(lo, "top_logprobs");
                cJSON *offs = cJSON_AddArrayToObject(lo, "text_offset");
                size_t pcp = codepoints(last, strlen(last));
                if (echo)
                    add_logprob_tokens(tokens, lps, offs, tops, last, 0, 1);
                add_logprob_tokens(tokens, lps, offs, tops, text.data, pcp, 0);
            } else {
                cJSON_AddNullToObject(c0, "logprobs");
            }
            buf_free(&all);
        }
        cJSON_AddStringToObject(c0, "finish_reason", finish);
        cJSON_AddItemToObject(j, "usage", usage_obj(proto, words_in, words_out));
    }
    char *s = cJSON_PrintUnformatted(j);
    if (s)
        respond(c, 200, "OK", s, strlen(s), NULL);
    else
        respond_error(c, 500, "Internal Server Error", "out of memory", NULL, NULL);
    free(s);
    cJSON_Delete(j);
    buf_free(&text);
}

static int choose_fault(long seq)
{
    if (seq <= S.fail_first)
        return S.fail_kind;
    long k = seq - S.fail_first - 1;
    if (k < S.n_script)
        return S.script[k];
    double u = rng_uniform(&S.rng), acc = 0;
    for (int f = FK_429; f < FK_COUNT; f++) {
        acc += S.rate[f];
        if (u < acc)
            return f;
    }
    return FK_OK;
}

static void log_request(const char *method, const char *path, const char *head, size_t hlen, const char *body,
                        size_t blen, const char *fault)
{
    if (!S.log)
        return;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "seq", (double)S.posts);
    cJSON_AddNumberToObject(j, "t", timer_epoch());
    cJSON_AddStringToObject(j, "method", method);
    cJSON_AddStringToObject(j, "path", path);
    cJSON *h = cJSON_AddObjectToObject(j, "headers");
    /* header lines after the request line, names lowercased */
    const char *p = memchr(head, '\n', hlen);
    const char *end = head + hlen;
    while (p && ++p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            char *name = str_ndup(p, (size_t)(colon - p));
            const char *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl && v[vl - 1] == '\r')
                vl--;
            char *val = str_ndup(v, vl);
            for (char *q = name; q && *q; q++)
                if (*q >= 'A' && *q <= 'Z')
                    *q = (char)(*q - 'A' + 'a');
            if (name && val)
                cJSON_AddStringToObject(h, name, val);
            free(name);
            free(val);
        }
        p = eol;
    }
    char *b = str_ndup(body, blen);
    cJSON_AddStringToObject(j, "body", b ? b : "");
    free(b);
    cJSON_AddStringToObject(j, "fault", fault);
    char *s = cJSON_PrintUnformatted(j);
    if (s) {
        fputs(s, S.log);
        fputc('\n', S.log);
        S.log_dirty = 1;
    }
    free(s);
    cJSON_Delete(j);
}

static void stats(conn *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "requests", (double)S.posts);
    for (int f = 0; f < FK_COUNT; f++) {
        char k[32];
        snprintf(k, sizeof k, "%s%s", f == FK_OK || f >= FK_DROP ? "" : "status_", fault_name[f]);
        cJSON_AddNumberToObject(j, k, (double)S.stat_fault[f]);
    }
    cJSON_AddNumberToObject(j, "bad_request", (double)S.stat_bad);
    cJSON_AddNumberToObject(j, "unauthorized", (double)S.stat_unauth);
    cJSON_AddNumberToObject(j, "connections", (double)S.stat_conns);
    cJSON_AddNumberToObject(j, "other", (double)S.stat_other);
    cJSON_AddNumberToObject(j, "throttled", (double)S.stat_throttled);
    cJSON_AddNumberToObject(j, "peak_inflight", (double)S.stat_peak_inflight);
    char *s = cJSON_PrintUnformatted(j);
    respond(c, 200, "OK", s ? s : "{}", s ? strlen(s) : 2, NULL);
    free(s);
    cJSON_Delete(j);
}

/* POST /v1/embeddings: a bag of words hashed into 16 dimensions (fnv1a of each word), so texts
 * that share words are near each other; usage counts the words. */
static void answer_embedding(conn *c, const cJSON *req, const char *auth)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(req, "input");
    if (cJSON_IsArray(in))
        in = cJSON_GetArrayItem(in, 0);
    if (!cJSON_IsString(in)) {
        S.stat_bad++;
        respond_error(c, 400, "Bad Request", "'input' must be a string", auth, NULL);
        return;
    }
    double v[16] = {0};
    int words = 0;
    char w[256];
    for (const char *p = in->valuestring; *p;) {
        size_t k = 0;
        while (*p && (*p == ' ' || *p == '\n' || *p == '\t'))
            p++;
        while (*p && *p != ' ' && *p != '\n' && *p != '\t') {
            if (k + 1 < sizeof w)
                w[k++] = *p;
            p++;
        }
        if (!k)
            break;
        w[k] = '\0';
        v[fnv1a(w) % 16] += 1;
        words++;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON *d = cJSON_CreateObject();
    cJSON_AddItemToArray(data, d);
    cJSON_AddItemToObject(d, "embedding", cJSON_CreateDoubleArray(v, 16));
    cJSON_AddNumberToObject(d, "index", 0);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", words);
    char *s = cJSON_PrintUnformatted(o);
    respond(c, 200, "OK", s ? s : "{}", s ? strlen(s) : 2, NULL);
    free(s);
    cJSON_Delete(o);
}

/* Handles one complete request. Returns -1 to drop the connection at once. */
static int pending_slow(double now);

static int handle(conn *c, const char *method, const char *path, const char *head, size_t hlen, const req_hdrs *h,
                  const char *body, size_t blen)
{
    int chat = strcmp(path, "/v1/chat/completions") == 0 || strcmp(path, "/chat/completions") == 0;
    int cmpl = strcmp(path, "/v1/completions") == 0 || strcmp(path, "/completions") == 0;
    int anth = strcmp(path, "/v1/messages") == 0 || strcmp(path, "/messages") == 0;
    int olla = strcmp(path, "/api/chat") == 0;
    int emb = strcmp(path, "/v1/embeddings") == 0 || strcmp(path, "/embeddings") == 0;
    int proto = chat || emb ? P_CHAT : cmpl ? P_CMPL : anth ? P_ANTHROPIC : P_OLLAMA;
    const char *auth = cred_of(proto, h);
    if (strcmp(method, "GET") == 0 && strcmp(path, "/stats") == 0) {
        stats(c);
        return 0;
    }
    if (strcmp(method, "GET") == 0 && strcmp(path, "/health") == 0) {
        respond(c, 200, "OK", "\"ok\"", 4, NULL);
        return 0;
    }
    if (!(chat || cmpl || anth || olla || emb)) {
        S.stat_other++;
        respond_error(c, 404, "Not Found", "no such endpoint", NULL, NULL);
        return 0;
    }
    if (strcmp(method, "POST") != 0) {
        S.stat_other++;
        respond_error(c, 405, "Method Not Allowed", "use POST", NULL, "Allow: POST\r\n");
        return 0;
    }
    S.posts++;
    if (S.max_requests > 0 && S.posts >= S.max_requests && !S.draining)
        S.draining = timer_wall();
    if (S.draining)
        c->close_after = 1;
    if (S.require_key) {
        const char *want = S.require_key;
        int ok = anth ? auth && strcmp(auth, want) == 0
                      : auth && strncmp(auth, "Bearer ", 7) == 0 && strcmp(auth + 7, want) == 0;
        if (!ok) {
            log_request(method, path, head, hlen, body, blen, "unauthorized");
            S.stat_unauth++;
            respond_error(c, 401, "Unauthorized", "invalid API key", auth, NULL);
            return 0;
        }
    }
    if (anth && !h->version) {
        log_request(method, path, head, hlen, body, blen, "bad");
        S.stat_bad++;
        respond_error(c, 400, "Bad Request", "anthropic-version: header is required", auth, NULL);
        return 0;
    }
    if (S.max_inflight > 0) {
        /* the replies still held back are the requests "in progress" at the server */
        long inflight = pending_slow(timer_wall()) + 1;
        if (inflight > S.stat_peak_inflight)
            S.stat_peak_inflight = inflight;
        if (inflight > S.max_inflight) {
            log_request(method, path, head, hlen, body, blen, "throttled");
            S.stat_throttled++;
            char ra[128];
            retry_after_header(ra, sizeof ra);
            respond_error(c, 429, "Too Many Requests", "too many requests in flight", auth, ra);
            return 0;
        }
    }
    int f = choose_fault(S.posts);
    log_request(method, path, head, hlen, body, blen, fault_name[f]);
    S.stat_fault[f]++;
    char ra[128];
    switch (f) {
    case FK_DROP:
        return -1;
    case FK_429:
        retry_after_header(ra, sizeof ra);
        respond_error(c, 429, "Too Many Requests", "rate limit reached", auth, ra);
        return 0;
    case FK_500:
        respond_error(c, 500, "Internal Server Error", "the fake model failed", auth, NULL);
        return 0;
    case FK_503:
        retry_after_header(ra, sizeof ra);
        respond_error(c, 503, "Service Unavailable", "overloaded", auth, ra);
        return 0;
    case FK_MALFORMED: {
        static const char bad[] = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"trunc";
        respond(c, 200, "OK", bad, sizeof bad - 1, NULL);
        return 0;
    }
    default:
        break;
    }
    cJSON *req = cJSON_ParseWithLength(body, blen);
    if (!cJSON_IsObject(req)) {
        S.stat_bad++;
        respond_error(c, 400, "Bad Request", "body is not a JSON object", auth, NULL);
    } else if (emb) {
        answer_embedding(c, req, auth);
    } else {
        answer(c, proto, req, h);
    }
    cJSON_Delete(req);
    if (f == FK_SLOW)
        c->ready_at = timer_wall() + S.slow_ms / 1000.0;
    return 0;
}

/* Parses and handles one request from c->in if it is complete. Returns 1 when one was handled,
 * 0 when more bytes are needed, -1 to close the connection now. */
static int try_request(conn *c)
{
    char *d = c->in.data;
    size_t n = c->in.len;
    if (!n)
        return 0;
    char *hend = memmem(d, n, "\r\n\r\n", 4);
    if (!hend) {
        if (n > MAX_HEAD) {
            c->close_after = 1;
            respond_error(c, 431, "Request Header Fields Too Large", "headers too large", NULL, NULL);
            c->in.len = 0;
            return 1;
        }
        return 0;
    }
    size_t hlen = (size_t)(hend - d) + 4;
    char method[16], path[512];
    char *sp1 = memchr(d, ' ', hlen);
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(d + hlen - sp1 - 1)) : NULL;
    char *eol = memchr(d, '\r', hlen);
    if (!sp1 || !sp2 || !eol || sp2 > eol || (size_t)(sp1 - d) >= sizeof method ||
        (size_t)(sp2 - sp1 - 1) >= sizeof path) {
        c->close_after = 1;
        respond_error(c, 400, "Bad Request", "bad request line", NULL, NULL);
        c->in.len = 0;
        return 1;
    }
    memcpy(method, d, (size_t)(sp1 - d));
    method[sp1 - d] = '\0';
    memcpy(path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    path[sp2 - sp1 - 1] = '\0';
    int http10 = (size_t)(eol - sp2 - 1) == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;
    long clen = 0;
    int chunked = 0, close = http10, expect = 0, bad_len = 0;
    char auth[512], xkey[512], version[64];
    int have_auth = 0, have_xkey = 0, have_version = 0;
    for (char *p = eol + 2; p < d + hlen - 2;) {
        char *le = memmem(p, (size_t)(d + hlen - p), "\r\n", 2);
        if (!le)
            break;
        char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon) {
            size_t nl = (size_t)(colon - p);
            char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(le - v);
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
#define HDR(name) (nl == sizeof name - 1 && strncasecmp(p, name, nl) == 0)
            if (HDR("Content-Length")) {
                long x = 0;
                if (!vl || vl > 10)
                    bad_len = 1;
                for (size_t k = 0; k < vl && !bad_len; k++) {
                    if (v[k] < '0' || v[k] > '9')
                        bad_len = 1;
                    else
                        x = x * 10 + (v[k] - '0');
                }
                clen = x;
            } else if (HDR("Transfer-Encoding")) {
                chunked = 1;
            } else if (HDR("Connection")) {
                if (vl == 5 && strncasecmp(v, "close", 5) == 0)
                    close = 1;
                else if (vl == 10 && strncasecmp(v, "keep-alive", 10) == 0)
                    close = 0;
            } else if (HDR("Expect")) {
                expect = vl == 12 && strncasecmp(v, "100-continue", 12) == 0;
            } else if (HDR("Authorization")) {
                if (vl < sizeof auth) {
                    memcpy(auth, v, vl);
                    auth[vl] = '\0';
                    have_auth = 1;
                }
            } else if (HDR("x-api-key")) {
                if (vl < sizeof xkey) {
                    memcpy(xkey, v, vl);
                    xkey[vl] = '\0';
                    have_xkey = 1;
                }
            } else if (HDR("anthropic-version")) {
                if (vl < sizeof version) {
                    memcpy(version, v, vl);
                    version[vl] = '\0';
                    have_version = 1;
                }
            }
#undef HDR
        }
        p = le + 2;
    }
    if (chunked || bad_len || clen > MAX_BODY) {
        c->close_after = 1;
        if (chunked)
            respond_error(c, 501, "Not Implemented", "chunked request bodies are not supported", NULL, NULL);
        else
            respond_error(c, 413, "Payload Too Large", "bad or too large Content-Length", NULL, NULL);
        c->in.len = 0;
        return 1;
    }
    if (n < hlen + (size_t)clen) {
        if (expect && !c->sent_continue) {
            buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            c->sent_continue = 1;
        }
        return 0;
    }
    if (close)
        c->close_after = 1;
    req_hdrs h = {have_auth ? auth : NULL, have_xkey ? xkey : NULL, have_version ? version : NULL};
    int rc = handle(c, method, path, d, hlen, &h, d + hlen, (size_t)clen);
    size_t used = hlen + (size_t)clen;
    memmove(c->in.data, c->in.data + used, c->in.len - used);
    c->in.len -= used;
    c->in.data[c->in.len] = '\0';
    c->sent_continue = 0;
    return rc < 0 ? -1 : 1;
}

/* ---- event loop ---- */

static conn *g_conns[MAX_CONNS];
static int g_nconns;

static int pending_slow(double now)
{
    int n = 0;
    for (int k = 0; k < g_nconns; k++)
        n += g_conns[k]->ready_at > now;
    return n;
}

static void conn_close(int k)
{
    conn *c = g_conns[k];
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
    g_conns[k] = g_conns[--g_nconns];
}

/* Writes pending output; handles buffered requests once the output is out. Returns -1 to close. */
static int pump(conn *c, double now)
{
    for (;;) {
        if (c->ready_at > now)
            return 0;
        c->ready_at = 0;
        while (c->out_off < c->out.len) {
            if (c->hold_off && c->out_off >= c->hold_off) {
                /* a streamed reply's first token is out: the rest follows after the gap */
                c->hold_off = 0;
                c->ready_at = timer_wall() + S.stream_gap_ms / 1000.0;
                return 0;
            }
            size_t lim = c->hold_off > c->out_off ? c->hold_off : c->out.len;
            ssize_t w = send(c->fd, c->out.data + c->out_off, lim - c->out_off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return -1;
            }
            c->out_off += (size_t)w;
        }
        buf_reset(&c->out);
        c->out_off = 0;
        if (c->close_after)
            return -1;
        int r = try_request(c);
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
    }
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 512)) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv))
        return 2;
    rng_init(&S.rng, S.seed);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (S.log_path && !(S.log = fopen(S.log_path, "w"))) {
        fprintf(stderr, "fakellm: cannot write %s\n", S.log_path);
        return 2;
    }
    int lfd = listen_on(S.port);
    if (lfd < 0) {
        fprintf(stderr, "fakellm: cannot listen on 127.0.0.1:%d: %s\n", S.port, strerror(errno));
        return 2;
    }
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    printf("PORT %d\n", ntohs(a.sin_port));
    fflush(stdout);

    static struct pollfd pfd[MAX_CONNS + 1];
    double last = timer_wall();
    while (!g_term) {
        double now = timer_wall();
        if (S.idle_exit > 0 && now - last > S.idle_exit)
            break;
        /* after --max-requests: finish what is queued, give clients a moment, then go */
        if (S.draining && (g_nconns == 0 || now - S.draining > 2.0))
            break;
        int np = 0;
        int listening = !S.draining && g_nconns < MAX_CONNS;
        if (listening)
            pfd[np++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        double wake = now + 0.25;
        for (int k = 0; k < g_nconns; k++) {
            conn *c = g_conns[k];
            short ev = 0;
            if (c->ready_at > now) {
                if (c->ready_at < wake)
                    wake = c->ready_at;
            } else if (c->out_off < c->out.len) {
                ev = POLLOUT;
            } else if (!c->close_after) {
                ev = POLLIN;
            }
            pfd[np++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        int tmo = (int)((wake - now) * 1000.0) + 1;
        int pr = poll(pfd, (nfds_t)np, tmo < 0 ? 0 : tmo);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            perror("fakellm: poll");
            break;
        }
        now = timer_wall();
        int base = 0;
        if (listening) {
            base = 1;
            if (pfd[0].revents & POLLIN) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    if (g_nconns >= MAX_CONNS) {
                        close(fd);
                        break;
                    }
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn *c = calloc(1, sizeof *c);
                    if (!c) {
                        close(fd);
                        break;
                    }
                    c->fd = fd;
                    buf_init(&c->in);
                    buf_init(&c->out);
                    g_conns[g_nconns++] = c;
                    S.stat_conns++;
                    last = now;
                }
            }
        }
        /* Connections accepted just now have no pfd entry; they are polled next round. Walk
         * backwards so that closing (which moves the last entry into k) keeps indices valid. */
        for (int k = np - base - 1; k >= 0; k--) {
            conn *c = g_conns[k];
            short re = pfd[base + k].revents;
            int dead = 0;
            if (re & POLLIN) {
                char tmp[65536];
                for (;;) {
                    ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
                    if (r > 0) {
                        last = now;
                        if (c->in.len + (size_t)r > MAX_HEAD + MAX_BODY || buf_append(&c->in, tmp, (size_t)r)) {
                            dead = 1;
                            break;
                        }
                        if ((size_t)r < sizeof tmp)
                            break;
                    } else if (r == 0) {
                        dead = 1;
                        break;
                    } else {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                            dead = 1;
                        break;
                    }
                }
            } else if (re & (POLLERR | POLLHUP | POLLNVAL)) {
                dead = 1;
            }
            if (re & POLLOUT)
                last = now;
            if (!dead && pump(c, now) < 0)
                dead = 1;
            if (dead)
                conn_close(k);
        }
        if (S.log_dirty) {
            fflush(S.log);
            S.log_dirty = 0;
        }
    }
    while (g_nconns)
        conn_close(g_nconns - 1);
    close(lfd);
    if (S.log)
        fclose(S.log);
    return 0;
}
