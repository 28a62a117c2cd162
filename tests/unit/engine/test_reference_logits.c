/* SmolLM2-135M-Instruct and Gemma 3 270M against llama.cpp: the committed reference vectors in
 * tests/fixtures/reference/ (format and prompts: docs/reference-tests.md, made by
 * the scripts in tests/reference/). Targets from issue 3: the same argmax at >= 99% of positions, the same
 * rank decision on >= 99.5% of SST-2 dev. By default a fixed subset runs (every 15th prompt, every
 * 16th SST-2 example) to keep the unit tests short; PWB_REF_FULL=1 checks everything.
 * Gemma 3 (issue 12): 99.9% argmax over every position of the fixture (always all of it), every
 * SST-2 decision, greedy generations. Each model's tests are
 * skipped when models/ lacks its GGUF (make model; make model MODEL=gemma3-270m). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/quant.h"
#include "util/buf.h"
#include "util/file.h"

#define FIXTURE_MAX (16u << 20)
#define MAX_PROMPTS 4096
#define MAX_IDS 8192
#define TOPK_MAX 16

static char g_model[4096];

/* One reference set, the engine mode checked against it, and what it must meet. */
typedef struct ref_set {
    const char *model_file;           /* under models/ */
    int n_vocab;
    const char *logits, *full, *rank; /* fixture file names (full may be NULL) */
    const char *who;                  /* for messages */
    int int8;                         /* pwb's engine with engine_opts.int8_activations */
    int ggml_gelu;                    /* ... with engine_opts.ggml_gelu (llama.cpp's fp16 GELU) */
    int all_prompts;                  /* logits: every prompt even without PWB_REF_FULL */
    double min_argmax;                /* argmax agreement over the positions checked */
    double decisive_gap;              /* reference top-1 lead beyond which the argmax must agree */
    double max_mean_dlp;              /* mean |d log-prob| over the reference's top-k */
    double max_kl;                    /* KL(reference || pwb) on the full rows */
    double min_rank;                  /* same decision; with PWB_REF_FULL=1 over all 872 */
    double decisive_margin;           /* reference margin beyond which the decision must agree */
    double max_mean_dlp_rank;         /* mean |d log-prob| of the label tokens */
} ref_set;

#define SMOLLM2 "SmolLM2-135M-Instruct.Q4_1.gguf", 49152
#define GEMMA3 "gemma-3-270m-q4_k_m.gguf", 262144
#define F32_SET SMOLLM2, "smollm2_exact_logits.txt", "smollm2_exact_logits_full.bin", "sst2_dev_rank_exact.txt"
#define LLAMACPP_SET SMOLLM2, "smollm2_logits.txt", "smollm2_logits_full.bin", "sst2_dev_rank.txt"

/* The targets (0.99 argmax, 0.995 rank) against llama.cpp computing the same function in
 * F32 (the Q4_1 weights dequantized exactly, F32 KV cache): pwb's default, exact arithmetic. */
static const ref_set EXACT_VS_F32 = {F32_SET, "llama.cpp F32", 0, 0, 0, 0.99, 1.0, 0.01, 0.001, 0.995, 0.05, 0.01};
/* Against llama.cpp's default arithmetic (8-bit activation blocks, F16 K/V) no accurate engine
 * reaches those targets: llama.cpp's own F32 run agrees with it on 0.979 of the argmaxes and 0.914
 * of the decisions (docs/reference-tests.md). The bounds are that measured spread. */
static const ref_set EXACT_VS_LLAMACPP = {LLAMACPP_SET, "llama.cpp", 0, 0, 0, 0.97, 1.0, 0.15, 0.01, 0.90, 0.40, 0.15};
/* pwb's faster 8-bit path, held at its measured level (0.981 / 0.927 / KL 0.012 against F32). */
static const ref_set INT8_VS_F32 = {F32_SET, "llama.cpp F32 (pwb int8)", 1, 0, 0, 0.97, 1.0, 0.15, 0.03, 0.90, 0.40, 0.15};
/* Gemma 3 270M (issue 12) against llama.cpp computing the Q4_K_M file's function in F32: the issue's
 * 0.999 argmax over all 7,324 positions of the 210 prompts, checked whole every time, because a
 * subset is too small to measure it (one near-tie is 0.27% of the 374 default positions). pwb
 * computes the tanh GELU in F32; llama.cpp's CPU backend reads an fp16 table indexed by the input
 * rounded to fp16 (GGML_GELU_FP16), which moves log-probabilities by ~0.002 and flips near-ties:
 * measured 0.9990 (7 positions, the reference's lead at most 0.10 logits; mean |d log-prob| 0.0021,
 * max 0.13), none where the reference leads by more than 0.25. With that GELU reproduced
 * (engine_opts.ggml_gelu) the rest of the computation agrees closer: 0.9997 over all positions (2,
 * where the reference leads by 0.0003 at most), mean 0.0012, max 0.024; its test reads the default
 * subset (1.0000, mean 0.0014), and its mean bound of 0.002 is below the F32 GELU's. The same rank
 * decision on every SST-2 example of the set. Measurements: docs/engine.md. */
static const ref_set GEMMA3_VS_F32 = {GEMMA3, "gemma3_exact_logits.txt", NULL, "gemma3_sst2_dev_rank_exact.txt",
                                      "llama.cpp F32 (Gemma 3)", 0, 0, 1, 0.999, 0.25, 0.005, 0.001, 1.0, 0.0, 0.005};
static const ref_set GEMMA3_GGML_GELU_VS_F32 = {GEMMA3, "gemma3_exact_logits.txt", NULL, NULL,
                                                "llama.cpp F32 (Gemma 3, pwb with ggml's GELU)", 0, 1, 0, 0.999, 0.25,
                                                0.002, 0.001, 1.0, 0.0, 0.005};

static const char *root_dir(void)
{
    const char *r = getenv("PWB_ROOT");
    return r && *r ? r : ".";
}

static int full_mode(void)
{
    const char *f = getenv("PWB_REF_FULL");
    return f && *f && strcmp(f, "0") != 0;
}

static engine *open_model(const ref_set *rs)
{
    snprintf(g_model, sizeof g_model, "%s/models/%s", root_dir(), rs->model_file);
    if (!file_exists(g_model))
        cr_skip_test("models/ has no %s (make model%s)", rs->model_file,
                     rs->n_vocab == 262144 ? " MODEL=gemma3-270m" : "");
    engine *en = NULL;
    pwb_err e = {0};
    engine_opts o = {.int8_activations = rs->int8, .ggml_gelu = rs->ggml_gelu};
    cr_assert_eq(engine_open(&en, g_model, &o, &e), PWB_OK, "engine_open: %s", e.msg);
    cr_assert_eq(engine_n_vocab(en), rs->n_vocab);
    return en;
}

static void read_fixture(const char *name, pwb_buf *b)
{
    pwb_buf p;
    pwb_err e = {0};
    buf_init(&p);
    buf_printf(&p, "%s/tests/fixtures/reference/%s", root_dir(), name);
    buf_init(b);
    cr_assert_eq(file_read_all(p.data, FIXTURE_MAX, b, &e), PWB_OK, "%s", e.msg);
    buf_free(&p);
}

/* ---- a small line reader over a NUL-terminated buffer ---------------------------------------- */

typedef struct lines {
    char *p;
    int lineno;
} lines;

/* Next line, NUL-terminated in place, or NULL at the end. */
static char *next_line(lines *l)
{
    if (!l->p || !*l->p)
        return NULL;
    char *s = l->p;
    char *nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        l->p = nl + 1;
    } else {
        l->p = NULL;
    }
    l->lineno++;
    return s;
}

static int parse_long(char **s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(*s, &end, 10);
    if (end == *s || errno || v < lo || v > hi || (*end != ' ' && *end != '\0'))
        return -1;
    *s = end;
    *out = v;
    return 0;
}

static int parse_double(char **s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(*s, &end);
    if (end == *s || errno || !isfinite(v) || (*end != ' ' && *end != '\0'))
        return -1;
    *s = end;
    *out = v;
    return 0;
}

/* ---- smollm2_logits.txt ---------------------------------------------------------------------- */

typedef struct ref_prompt {
    int index, n;
    char source[16];
    int32_t *ids;        /* [n] */
    int32_t *top;        /* [n][topk] */
    float *val;          /* [n][topk] */
    float *lse;          /* [n] */
} ref_prompt;

typedef struct ref_logits {
    int n_vocab, topk, n_prompts;
    ref_prompt *p;
} ref_logits;

static void ref_logits_free(ref_logits *r)
{
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->p[i].ids);
        free(r->p[i].top);
        free(r->p[i].val);
        free(r->p[i].lse);
    }
    free(r->p);
}

static void load_ref_logits(ref_logits *r, pwb_buf *b, const char *name)
{
    read_fixture(name, b);
    lines l = {b->data, 0};
    memset(r, 0, sizeof *r);
    /* The header keys come in a fixed order; read them in one pass. */
    char *s;
    while ((s = next_line(&l)) && strcmp(s, "end_header") != 0) {
        long v;
        char *q;
        if (strncmp(s, "n_vocab ", 8) == 0 && (q = s + 8, parse_long(&q, 1, 1 << 22, &v) == 0))
            r->n_vocab = (int)v;
        else if (strncmp(s, "topk ", 5) == 0 && (q = s + 5, parse_long(&q, 1, TOPK_MAX, &v) == 0))
            r->topk = (int)v;
        else if (strncmp(s, "n_prompts ", 10) == 0 && (q = s + 10, parse_long(&q, 1, MAX_PROMPTS, &v) == 0))
            r->n_prompts = (int)v;
    }
    cr_assert(s && r->n_vocab > 0 && r->topk > 0 && r->n_prompts > 0, "bad header");
    r->p = calloc((size_t)r->n_prompts, sizeof *r->p);
    cr_assert_not_null(r->p);
    int k = r->topk;
    for (int i = 0; i < r->n_prompts; i++) {
        ref_prompt *p = &r->p[i];
        long v;
        s = next_line(&l);
        cr_assert(s && strncmp(s, "prompt ", 7) == 0, "line %d: expected prompt %d", l.lineno, i);
        char *q = s + 7;
        cr_assert_eq(parse_long(&q, 0, MAX_PROMPTS, &v), 0);
        p->index = (int)v;
        cr_assert_eq(p->index, i, "line %d: prompt index", l.lineno);
        q++;
        size_t sl = strcspn(q, " ");
        cr_assert(sl > 0 && sl < sizeof p->source);
        memcpy(p->source, q, sl);
        p->source[sl] = '\0';
        q += sl;
        cr_assert_eq(parse_long(&q, 0, 1 << 24, &v), 0); /* data row */
        cr_assert_eq(parse_long(&q, 1, MAX_IDS, &v), 0, "line %d: n_tokens", l.lineno);
        p->n = (int)v;
        s = next_line(&l);
        cr_assert(s && strncmp(s, "text ", 5) == 0, "line %d: expected text", l.lineno);
        s = next_line(&l);
        cr_assert(s && strncmp(s, "ids", 3) == 0, "line %d: expected ids", l.lineno);
        p->ids = malloc((size_t)p->n * sizeof *p->ids);
        p->top = malloc((size_t)p->n * (size_t)k * sizeof *p->top);
        p->val = malloc((size_t)p->n * (size_t)k * sizeof *p->val);
        p->lse = malloc((size_t)p->n * sizeof *p->lse);
        cr_assert(p->ids && p->top && p->val && p->lse);
        q = s + 3;
        for (int j = 0; j < p->n; j++) {
            cr_assert_eq(*q, ' ', "line %d: short ids", l.lineno);
            q++;
            cr_assert_eq(parse_long(&q, 0, r->n_vocab - 1, &v), 0, "line %d: id %d", l.lineno, j);
            p->ids[j] = (int32_t)v;
        }
        cr_assert_eq(*q, '\0', "line %d: extra ids", l.lineno);
        for (int j = 0; j < p->n; j++) {
            s = next_line(&l);
            cr_assert(s && s[0] == 't' && s[1] == ' ', "line %d: expected t", l.lineno);
            q = s + 1;
            for (int t = 0; t < k; t++) {
                double d;
                q++;
                cr_assert_eq(parse_long(&q, 0, r->n_vocab - 1, &v), 0, "line %d", l.lineno);
                p->top[(size_t)j * k + t] = (int32_t)v;
                q++;
                cr_assert_eq(parse_double(&q, &d), 0, "line %d", l.lineno);
                p->val[(size_t)j * k + t] = (float)d;
            }
            double d;
            q++;
            cr_assert_eq(parse_double(&q, &d), 0, "line %d: lse", l.lineno);
            p->lse[j] = (float)d;
            cr_assert_eq(*q, '\0', "line %d: trailing fields", l.lineno);
        }
    }
    s = next_line(&l);
    cr_assert(s && strcmp(s, "end") == 0, "line %d: expected end", l.lineno);
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

static double log_sum_exp(const float *x, int n)
{
    double m = x[0], z = 0;
    for (int i = 1; i < n; i++)
        m = fmax(m, x[i]);
    for (int i = 0; i < n; i++)
        z += exp(x[i] - m);
    return m + log(z);
}

static void check_logits(const ref_set *rs)
{
    engine *en = open_model(rs);
    ref_logits r;
    pwb_buf b;
    load_ref_logits(&r, &b, rs->logits);
    cr_assert_eq(r.n_vocab, engine_n_vocab(en));
    int stride = full_mode() || rs->all_prompts ? 1 : 15;
    int V = r.n_vocab, k = r.topk;
    long pos = 0, same = 0, decisive_diff = 0;
    double sum_d = 0, max_d = 0;
    for (int i = 0; i < r.n_prompts; i += stride) {
        ref_prompt *p = &r.p[i];
        float *out = malloc((size_t)p->n * (size_t)V * sizeof *out);
        cr_assert_not_null(out);
        pwb_err e = {0};
        cr_assert_eq(engine_logits(en, NULL, p->ids, p->n, out, &e), PWB_OK, "prompt %d: %s", i, e.msg);
        for (int j = 0; j < p->n; j++) {
            const float *row = out + (size_t)j * V;
            const int32_t *top = p->top + (size_t)j * k;
            const float *val = p->val + (size_t)j * k;
            int am = argmax(row, V);
            double lse = log_sum_exp(row, V);
            pos++;
            /* A tie in pwb's row with the reference's argmax counts as agreement. */
            if (am == top[0] || row[am] == row[top[0]]) {
                same++;
            } else {
                /* Each disagreement named, with both sides' leads, so a near-tie can be told from a bug. */
                cr_log_info("prompt %d position %d: reference top-1 %d leads its #2 by %.4f; pwb's top-1 %d "
                            "leads the reference's by %.4f",
                            i, j, top[0], val[0] - val[1], am, row[am] - row[top[0]]);
                if (val[0] - val[1] > rs->decisive_gap)
                    decisive_diff++;
            }
            /* Log-probabilities, not raw logits: a shift of a whole row changes nothing. */
            for (int t = 0; t < k; t++) {
                double d = fabs(((double)row[top[t]] - lse) - ((double)val[t] - p->lse[j]));
                sum_d += d;
                if (!(d <= max_d))
                    max_d = d;
            }
        }
        free(out);
    }
    double agree = (double)same / (double)pos;
    double mean_d = sum_d / (double)(pos * k);
    cr_log_info("vs %s logits: %ld positions, argmax agreement %.4f, |dlogprob| on the top-%d mean %.4f "
                "max %.4f, disagreements where the reference's top-1 leads by > %.2f: %ld",
                rs->who, pos, agree, k, mean_d, max_d, rs->decisive_gap, decisive_diff);
    cr_expect_geq(agree, rs->min_argmax, "argmax agreement with %s %.4f < %.3f over %ld positions", rs->who,
                  agree, rs->min_argmax, pos);
    cr_expect_eq(decisive_diff, 0, "%ld argmax disagreements with %s where it leads by > %.2f", decisive_diff,
                 rs->who, rs->decisive_gap);
    cr_expect_leq(mean_d, rs->max_mean_dlp, "mean |dlogprob| vs %s %.4f", rs->who, mean_d);
    ref_logits_free(&r);
    buf_free(&b);
    engine_close(en);
}

/* Whole distributions at a few positions (the *_full.bin files, float16 rows). */
static void check_full_rows(const ref_set *rs)
{
    engine *en = open_model(rs);
    ref_logits r;
    pwb_buf b, fb;
    load_ref_logits(&r, &b, rs->logits);
    read_fixture(rs->full, &fb);
    const unsigned char *d = (const unsigned char *)fb.data;
    cr_assert(fb.len >= 16 && memcmp(d, "PWBLOGF1", 8) == 0, "bad magic");
    uint32_t V, nrec;
    memcpy(&V, d + 8, 4);
    memcpy(&nrec, d + 12, 4);
    cr_assert_eq((int)V, r.n_vocab);
    cr_assert(nrec > 0 && nrec < 1024);
    size_t rec = 8 + 2 * (size_t)V;
    cr_assert_eq(fb.len, 16 + (size_t)nrec * rec, "size %zu", fb.len);
    float *ref = malloc(V * sizeof *ref);
    float *out = malloc(2 * (size_t)V * sizeof *out);
    cr_assert(ref && out);
    double worst_kl = 0, worst_max = 0;
    for (uint32_t i = 0; i < nrec; i++) {
        const unsigned char *q = d + 16 + (size_t)i * rec;
        uint32_t pi, pos;
        memcpy(&pi, q, 4);
        memcpy(&pos, q + 4, 4);
        cr_assert(pi < (uint32_t)r.n_prompts && pos < (uint32_t)r.p[pi].n, "record %u out of range", i);
        for (uint32_t v = 0; v < V; v++) {
            uint16_t h;
            memcpy(&h, q + 8 + 2 * (size_t)v, 2);
            ref[v] = fp16_to_f32(h);
        }
        /* Only the one position's logits: the model runs over ids[0..pos]. */
        int opos = (int)pos;
        pwb_err e = {0};
        cr_assert_eq(engine_forward_embeds(en, NULL, 0, r.p[pi].ids, opos + 1, &opos, 1, out, &e), PWB_OK,
                     "%s", e.msg);
        const float *row = out;
        /* KL(ref || pwb) over the full vocabulary, in double. */
        double mr = ref[0], mp = row[0];
        for (uint32_t v = 1; v < V; v++) {
            mr = fmax(mr, ref[v]);
            mp = fmax(mp, row[v]);
        }
        double zr = 0, zp = 0, maxd = 0;
        for (uint32_t v = 0; v < V; v++) {
            zr += exp(ref[v] - mr);
            zp += exp(row[v] - mp);
            maxd = fmax(maxd, fabs((double)row[v] - ref[v]));
        }
        double lzr = mr + log(zr), lzp = mp + log(zp), kl = 0;
        for (uint32_t v = 0; v < V; v++) {
            double lr = ref[v] - lzr, lp = row[v] - lzp;
            kl += exp(lr) * (lr - lp);
        }
        worst_kl = fmax(worst_kl, kl);
        worst_max = fmax(worst_max, maxd);
    }
    free(out);
    cr_log_info("vs %s full rows: %u rows, worst KL(reference || pwb) %.5f, worst max |dlogit| %.4f", rs->who,
                nrec, worst_kl, worst_max);
    cr_expect_leq(worst_kl, rs->max_kl, "KL(%s || pwb) %.5f", rs->who, worst_kl);
    free(ref);
    buf_free(&fb);
    ref_logits_free(&r);
    buf_free(&b);
    engine_close(en);
}

/* ---- sst2_dev_rank*.txt ---------------------------------------------------------------------- */

static void check_rank(const ref_set *rs)
{
    engine *en = open_model(rs);
    pwb_buf b;
    read_fixture(rs->rank, &b);
    lines l = {b.data, 0};
    int32_t lab[2] = {-1, -1};
    long n_ex = -1;
    char *s;
    while ((s = next_line(&l)) && strcmp(s, "end_header") != 0) {
        long v;
        char *q;
        if (strncmp(s, "n_examples ", 11) == 0) {
            q = s + 11;
            cr_assert_eq(parse_long(&q, 1, 100000, &v), 0);
            n_ex = v;
        } else if (strncmp(s, "label ", 6) == 0) {
            /* label <k> "<verbalizer>" <n> <ids>: the verbalizers are single tokens. */
            q = s + 6;
            long li, nt, id;
            cr_assert_eq(parse_long(&q, 0, 1, &li), 0, "line %d", l.lineno);
            q = strrchr(s, '"');
            cr_assert_not_null(q);
            q += 2;
            cr_assert_eq(parse_long(&q, 1, 1, &nt), 0, "line %d: multi-token label", l.lineno);
            q++;
            cr_assert_eq(parse_long(&q, 0, engine_n_vocab(en) - 1, &id), 0, "line %d", l.lineno);
            lab[li] = (int32_t)id;
        }
    }
    cr_assert(s && n_ex > 0 && lab[0] >= 0 && lab[1] >= 0, "bad header");
    /* A short set is checked whole. */
    int stride = full_mode() || n_ex <= 200 ? 1 : 16;
    int cap = (int)(n_ex + stride - 1) / stride;
    engine_rank_item *items = calloc((size_t)cap, sizeof *items);
    int32_t **ids = calloc((size_t)cap, sizeof *ids);
    double (*ref)[2] = calloc((size_t)cap, sizeof *ref);
    double(*lp)[2] = calloc((size_t)cap, sizeof *lp);
    cr_assert(items && ids && ref && lp);
    static const int32_t *conts[2];
    static int cont_lens[2] = {1, 1};
    conts[0] = &lab[0];
    conts[1] = &lab[1];
    int n = 0;
    for (long i = 0; i < n_ex; i++) {
        s = next_line(&l);
        cr_assert(s && strncmp(s, "ex ", 3) == 0, "line %d: expected ex", l.lineno);
        if (i % stride)
            continue;
        char *q = s + 3;
        long v, nid;
        double a, c;
        cr_assert_eq(parse_long(&q, 0, 1 << 24, &v), 0);
        q++;
        cr_assert_eq(parse_long(&q, 0, 1, &v), 0); /* gold */
        q++;
        cr_assert_eq(parse_double(&q, &a), 0, "line %d", l.lineno);
        q++;
        cr_assert_eq(parse_double(&q, &c), 0, "line %d", l.lineno);
        q++;
        cr_assert_eq(parse_long(&q, 0, 1, &v), 0); /* decision: recomputed from the scores */
        q++;
        cr_assert_eq(parse_long(&q, 1, MAX_IDS, &nid), 0, "line %d", l.lineno);
        ids[n] = malloc((size_t)nid * sizeof **ids);
        cr_assert_not_null(ids[n]);
        for (long j = 0; j < nid; j++) {
            cr_assert_eq(*q, ' ', "line %d: short ids", l.lineno);
            q++;
            cr_assert_eq(parse_long(&q, 0, engine_n_vocab(en) - 1, &v), 0, "line %d", l.lineno);
            ids[n][j] = (int32_t)v;
        }
        cr_assert_eq(*q, '\0', "line %d: extra ids", l.lineno);
        ref[n][0] = a;
        ref[n][1] = c;
        items[n] = (engine_rank_item){.prompt = ids[n], .n_prompt = (int)nid, .conts = conts,
                                      .cont_lens = cont_lens, .n_conts = 2, .logprob = lp[n]};
        n++;
    }
    pwb_err e = {0};
    cr_assert_eq(engine_rank(en, NULL, items, n, &e), PWB_OK, "%s", e.msg);
    int same = 0, decisive_diff = 0;
    double sum_d = 0, max_d = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(items[i].status, PWB_OK, "example %d", i * stride);
        int rd = ref[i][1] > ref[i][0], pd = lp[i][1] > lp[i][0];
        if (rd == pd)
            same++;
        else if (fabs(ref[i][1] - ref[i][0]) > rs->decisive_margin)
            decisive_diff++;
        for (int c = 0; c < 2; c++) {
            double d = fabs(lp[i][c] - ref[i][c]);
            sum_d += d;
            if (!(d <= max_d))
                max_d = d;
        }
    }
    double agree = (double)same / n;
    double mean_d = sum_d / (2.0 * n);
    cr_log_info("vs %s rank: %d SST-2 dev examples, same decision %.4f, |dlogprob| mean %.4f max %.4f, "
                "disagreements where the reference's margin > %.2f: %d",
                rs->who, n, agree, mean_d, max_d, rs->decisive_margin, decisive_diff);
    cr_expect_geq(agree, rs->min_rank, "same decision as %s on %.4f < %.3f", rs->who, agree, rs->min_rank);
    cr_expect_eq(decisive_diff, 0, "%d decisions differ where %s's margin exceeds %.2f", decisive_diff, rs->who,
                 rs->decisive_margin);
    cr_expect_leq(mean_d, rs->max_mean_dlp_rank, "mean |dlogprob| vs %s %.4f", rs->who, mean_d);
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    free(items);
    free(ref);
    free(lp);
    buf_free(&b);
    engine_close(en);
}

/* ---- NAME_greedy*.txt: greedy generations from raw prompts ------------------------------------ */

#define GREEDY_MIN_EQUAL 16

/* Reads "<key> <n> <ids...>" into a malloc'd array. */
static int32_t *read_ids_line(lines *l, const char *key, int n_vocab, int *n)
{
    char *s = next_line(l);
    size_t kl = strlen(key);
    cr_assert(s && strncmp(s, key, kl) == 0 && s[kl] == ' ', "line %d: expected %s", l->lineno, key);
    char *q = s + kl;
    long v;
    if (strcmp(key, "prompt") == 0) {
        q++;
        cr_assert_eq(parse_long(&q, 0, MAX_PROMPTS, &v), 0, "line %d", l->lineno);
    }
    q++;
    cr_assert_eq(parse_long(&q, 0, MAX_IDS, &v), 0, "line %d: count", l->lineno);
    *n = (int)v;
    int32_t *ids = malloc(((size_t)v + 1) * sizeof *ids);
    cr_assert_not_null(ids);
    for (int j = 0; j < *n; j++) {
        cr_assert_eq(*q, ' ', "line %d: short ids", l->lineno);
        q++;
        cr_assert_eq(parse_long(&q, 0, n_vocab - 1, &v), 0, "line %d", l->lineno);
        ids[j] = (int32_t)v;
    }
    cr_assert_eq(*q, '\0', "line %d: extra ids", l->lineno);
    return ids;
}

/* Each prompt's greedy continuation equals the reference's for at least GREEDY_MIN_EQUAL tokens
 * (or all of it, when the reference stopped sooner). */
static void check_greedy(const ref_set *rs, const char *fixture)
{
    engine *en = open_model(rs);
    pwb_buf b;
    read_fixture(fixture, &b);
    lines l = {b.data, 0};
    long max_tokens = 0, n_prompts = 0;
    char *s;
    while ((s = next_line(&l)) && strcmp(s, "end_header") != 0) {
        char *q = s + strcspn(s, " ");
        if (strncmp(s, "max_tokens ", 11) == 0)
            cr_assert_eq(parse_long(&q, 1, 4096, &max_tokens), 0);
        else if (strncmp(s, "n_prompts ", 10) == 0)
            cr_assert_eq(parse_long(&q, 1, MAX_PROMPTS, &n_prompts), 0);
    }
    cr_assert(s && max_tokens > 0 && n_prompts > 0, "bad header");
    engine_gen_item *items = calloc((size_t)n_prompts, sizeof *items);
    int32_t **prompts = calloc((size_t)n_prompts, sizeof *prompts), **refs = calloc((size_t)n_prompts, sizeof *refs);
    int *n_ref = calloc((size_t)n_prompts, sizeof *n_ref);
    cr_assert(items && prompts && refs && n_ref);
    for (long i = 0; i < n_prompts; i++) {
        int np;
        prompts[i] = read_ids_line(&l, "prompt", rs->n_vocab, &np);
        refs[i] = read_ids_line(&l, "out", rs->n_vocab, &n_ref[i]);
        items[i] = (engine_gen_item){.prompt = prompts[i], .n_prompt = np, .max_tokens = (int)max_tokens};
    }
    s = next_line(&l);
    cr_assert(s && strcmp(s, "end") == 0, "line %d: expected end", l.lineno);
    pwb_err e = {0};
    cr_assert_eq(engine_generate(en, NULL, items, (int)n_prompts, &e), PWB_OK, "%s", e.msg);
    int all_equal = 0;
    for (long i = 0; i < n_prompts; i++) {
        cr_assert_eq(items[i].status, PWB_OK, "prompt %ld", i);
        int k = 0;
        while (k < items[i].n_out && k < n_ref[i] && items[i].out_ids[k] == refs[i][k])
            k++;
        all_equal += k == n_ref[i] && items[i].n_out == n_ref[i];
        int need = n_ref[i] < GREEDY_MIN_EQUAL ? n_ref[i] : GREEDY_MIN_EQUAL;
        cr_expect_geq(k, need, "prompt %ld: the first %d greedy tokens agree with %s, %d needed (%d generated)", i,
                      k, rs->who, need, items[i].n_out);
        engine_gen_item_clear(&items[i]);
        free(prompts[i]);
        free(refs[i]);
    }
    cr_log_info("vs %s greedy: %d of %ld prompts equal over all %ld tokens", rs->who, all_equal, n_prompts,
                max_tokens);
    free(items);
    free(prompts);
    free(refs);
    free(n_ref);
    buf_free(&b);
    engine_close(en);
}

Test(reference, smollm2_logits_vs_f32, .timeout = 900) { check_logits(&EXACT_VS_F32); }
Test(reference, smollm2_full_rows_vs_f32, .timeout = 600) { check_full_rows(&EXACT_VS_F32); }
Test(reference, smollm2_sst2_rank_vs_f32, .timeout = 900) { check_rank(&EXACT_VS_F32); }
Test(reference, smollm2_logits_vs_llama_cpp, .timeout = 900) { check_logits(&EXACT_VS_LLAMACPP); }
Test(reference, smollm2_full_rows_vs_llama_cpp, .timeout = 600) { check_full_rows(&EXACT_VS_LLAMACPP); }
Test(reference, smollm2_sst2_rank_vs_llama_cpp, .timeout = 900) { check_rank(&EXACT_VS_LLAMACPP); }
Test(reference, smollm2_int8_logits_vs_f32, .timeout = 900) { check_logits(&INT8_VS_F32); }
Test(reference, smollm2_int8_sst2_rank_vs_f32, .timeout = 900) { check_rank(&INT8_VS_F32); }
Test(reference, gemma3_logits_vs_f32, .timeout = 1800) { check_logits(&GEMMA3_VS_F32); }
Test(reference, gemma3_logits_vs_f32_ggml_gelu, .timeout = 1800) { check_logits(&GEMMA3_GGML_GELU_VS_F32); }
Test(reference, gemma3_sst2_rank_vs_f32, .timeout = 1800) { check_rank(&GEMMA3_VS_F32); }
Test(reference, gemma3_greedy_vs_f32, .timeout = 1800) { check_greedy(&GEMMA3_VS_F32, "gemma3_greedy_exact.txt"); }
