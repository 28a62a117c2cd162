/* Engine benchmark: rank classification of SST-2 dev (zero-shot ChatML prompt, labels
 * "negative"/"positive" scored as the assistant's first tokens), then prompt and generation
 * throughput at batch 1 and batched, and peak RSS.
 *
 * Build by hand (the Makefile's `make bench` wires it up):
 *   make build/lib/libpwb_engine.a build/lib/libpwb_util.a && cc -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -Isrc \
 *     -o build/engine_bench bench/engine_bench.c build/lib/libpwb_engine.a build/lib/libpwb_util.a \
 *     -lcjson -lpcre2-8 -lm
 * Run:
 *   OMP_WAIT_POLICY=passive build/engine_bench models/SmolLM2-135M-Instruct.Q4_1.gguf \
 *     ../shared/datasets/sst2/dev.tsv [--threads 2] [--limit N] [--batch N] [--no-prefix] [--rank-only]
 *
 * The prompt is the one tests/reference/pwbref.py gives llama.cpp, so the numbers compare with
 * its baseline. OMP_WAIT_POLICY=passive matters on a busy machine: spinning OpenMP threads fight
 * the other processes for the cores. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/file.h"
#include "util/str.h"
#include "util/timer.h"

#define SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

static void die(const char *what, const pwb_err *e)
{
    fprintf(stderr, "engine_bench: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

static int32_t *encode(const engine *en, const char *text, int *n)
{
    int32_t *ids = NULL;
    size_t k = 0;
    pwb_err e = {0};
    if (tokenizer_encode(engine_tokenizer(en), text, strlen(text), 1, 1, &ids, &k, &e) < 0)
        die("tokenize", &e);
    *n = (int)k;
    return ids;
}

static void sst2_prompt(pwb_buf *b, const char *sentence)
{
    buf_reset(b);
    buf_printf(b,
               "<|im_start|>system\n" SYSTEM "<|im_end|>\n<|im_start|>user\nReview: %s\n"
               "Is the sentiment of this review positive or negative? Answer with one word.<|im_end|>\n"
               "<|im_start|>assistant\n",
               sentence);
}

typedef struct example {
    int32_t *ids;
    int n;
    int32_t *cont[2];
    int clen[2];
    int label;
} example;

/* Continuation ids of label after the prompt text, the way the reference tokenizes them. */
static void continuation(const engine *en, const char *prompt, const int32_t *pids, int np, const char *label,
                         example *x, int k)
{
    pwb_buf b;
    buf_init(&b);
    buf_printf(&b, "%s%s", prompt, label);
    int n;
    int32_t *full = encode(en, b.data, &n);
    if (n <= np || memcmp(full, pids, (size_t)np * sizeof *pids) != 0) {
        fprintf(stderr, "label %s changes the prompt's tokens\n", label);
        exit(1);
    }
    x->clen[k] = n - np;
    x->cont[k] = malloc((size_t)x->clen[k] * sizeof(int32_t));
    memcpy(x->cont[k], full + np, (size_t)x->clen[k] * sizeof(int32_t));
    free(full);
    buf_free(&b);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: engine_bench MODEL SST2_DEV.tsv [--threads N] [--limit N] [--batch N] "
                        "[--no-prefix] [--rank-only] [--int8]\n");
        return 2;
    }
    const char *model_path = argv[1], *tsv = argv[2];
    int threads = 2, limit = 0, batch = 0, use_prefix = 1, rank_only = 0, int8 = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc)
            limit = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-prefix"))
            use_prefix = 0;
        else if (!strcmp(argv[i], "--rank-only"))
            rank_only = 1;
        else if (!strcmp(argv[i], "--int8"))
            int8 = 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress visible when redirected */
    pwb_err e = {0};
    engine *en = NULL;
    engine_opts o = {.n_threads = threads, .batch_items = batch, .int8_activations = int8};
    double t0 = timer_wall();
    if (engine_open(&en, model_path, &o, &e))
        die("open", &e);
    printf("model %s  threads %d  %s arithmetic  load %.2fs\n", model_path, threads, int8 ? "8-bit activation" : "exact",
           timer_wall() - t0);

    /* ---- SST-2 dev, rank classification ---- */
    pwb_buf data, prompt;
    buf_init(&data);
    buf_init(&prompt);
    if (file_read_all(tsv, 16u << 20, &data, &e))
        die("read", &e);
    example *xs = calloc(2000, sizeof *xs);
    int nx = 0;
    char *save = NULL;
    char *line = strtok_r(data.data, "\n", &save); /* header */
    while ((line = strtok_r(NULL, "\n", &save)) && nx < 2000 && (!limit || nx < limit)) {
        char *tab = strrchr(line, '\t');
        if (!tab)
            continue;
        *tab = '\0';
        example *x = &xs[nx];
        x->label = atoi(tab + 1);
        sst2_prompt(&prompt, str_trim(line));
        x->ids = encode(en, prompt.data, &x->n);
        continuation(en, prompt.data, x->ids, x->n, "negative", x, 0);
        continuation(en, prompt.data, x->ids, x->n, "positive", x, 1);
        nx++;
    }
    /* Shared prefix: the longest common run of ids, one short of the shortest prompt. */
    int lcp = xs[0].n - 1;
    for (int i = 1; i < nx; i++) {
        int k = 0;
        while (k < lcp && k < xs[i].n - 1 && xs[i].ids[k] == xs[0].ids[k])
            k++;
        lcp = k;
    }
    if (!use_prefix)
        lcp = 0;
    long total_tok = 0;
    for (int i = 0; i < nx; i++)
        total_tok += xs[i].n;
    engine_rank_item *items = calloc((size_t)nx, sizeof *items);
    double *lp = calloc((size_t)nx * 2, sizeof *lp);
    const int32_t **conts = calloc((size_t)nx * 2, sizeof *conts);
    for (int i = 0; i < nx; i++) {
        conts[2 * i] = xs[i].cont[0];
        conts[2 * i + 1] = xs[i].cont[1];
        items[i] = (engine_rank_item){.prompt = xs[i].ids + lcp, .n_prompt = xs[i].n - lcp, .conts = conts + 2 * i,
                                      .cont_lens = xs[i].clen, .n_conts = 2, .logprob = lp + 2 * i};
    }
    double w0 = timer_wall(), c0 = timer_cpu();
    engine_prefix *pre = NULL;
    if (engine_prefix_new(en, NULL, 0, xs[0].ids, lcp, &pre, &e))
        die("prefix", &e);
    if (engine_rank(en, pre, items, nx, &e))
        die("rank", &e);
    double wall = timer_wall() - w0, cpu = timer_cpu() - c0;
    int correct = 0;
    for (int i = 0; i < nx; i++)
        correct += (lp[2 * i + 1] > lp[2 * i]) == (xs[i].label == 1);
    long computed = lcp;
    for (int i = 0; i < nx; i++)
        computed += xs[i].n - lcp + (xs[i].clen[0] - 1) + (xs[i].clen[1] - 1);
    printf("rank  sst2-dev %d examples: %.2fs wall, %.2fs cpu, %.1f examples/s, accuracy %.4f\n", nx, wall, cpu,
           nx / wall, (double)correct / nx);
    printf("      prompt tokens %ld (shared prefix %d), computed %ld, %.0f prompt tok/s (%.0f computed tok/s)\n",
           total_tok, lcp, computed, total_tok / wall, computed / wall);
    printf("      label tokens: negative %d, positive %d\n", xs[0].clen[0], xs[0].clen[1]);
    engine_prefix_free(pre);

    if (!rank_only) {
        /* ---- prompt processing, batch 1 ---- */
        const char *q = "<|im_start|>system\n" SYSTEM "<|im_end|>\n<|im_start|>user\n"
                        "Write a short story about a robot who learns to paint. Describe the colours, the "
                        "studio, the first painting and what the other robots say about it.<|im_end|>\n"
                        "<|im_start|>assistant\n";
        int nq;
        int32_t *qi = encode(en, q, &nq);
        float *lg = malloc((size_t)8 * engine_n_vocab(en) * sizeof *lg);
        int reps = 5;
        w0 = timer_wall();
        for (int r = 0; r < reps; r++)
            if (engine_logits_padded(en, NULL, qi, nq, &nq, 1, 0, lg, &e))
                die("prefill", &e);
        wall = timer_wall() - w0;
        printf("prefill batch 1: %d tokens, %.1f tok/s\n", nq, reps * nq / wall);
        /* ---- prompt processing, batch 8 (8 distinct prompts, no shared prefix) ---- */
        int32_t *pb = malloc((size_t)8 * 128 * sizeof *pb);
        int lens[8];
        long ptoks = 0;
        for (int b = 0; b < 8; b++) {
            lens[b] = xs[b].n < 128 ? xs[b].n : 128;
            memcpy(pb + b * 128, xs[b].ids, (size_t)lens[b] * sizeof *pb);
            ptoks += lens[b];
        }
        w0 = timer_wall();
        if (engine_logits_padded(en, NULL, pb, 128, lens, 8, 0, lg, &e))
            die("prefill batch", &e);
        wall = timer_wall() - w0;
        printf("prefill batch 8: %ld tokens, %.1f tok/s\n", ptoks, ptoks / wall);

        /* ---- generation ---- */
        int gen = 64;
        engine_gen_item g1 = {.prompt = qi, .n_prompt = nq, .max_tokens = gen, .ignore_eos = 1};
        w0 = timer_wall();
        if (engine_generate(en, NULL, &g1, 1, &e))
            die("generate", &e);
        wall = timer_wall() - w0;
        printf("generate batch 1: %d prompt + %d new tokens in %.2fs: %.1f tok/s overall\n", nq, g1.n_out, wall,
               g1.n_out / wall);
        /* decode-only rate: the same minus one prefill */
        w0 = timer_wall();
        if (engine_logits_padded(en, NULL, qi, nq, &nq, 1, 0, lg, &e))
            die("prefill", &e);
        double pf = timer_wall() - w0;
        printf("                  decode %.1f tok/s (prefill %.3fs subtracted)\n", g1.n_out / (wall - pf), pf);
        printf("text: %.120s...\n", g1.text);
        engine_gen_item_clear(&g1);
        engine_gen_item g8[8];
        for (int b = 0; b < 8; b++)
            g8[b] = (engine_gen_item){.prompt = xs[b].ids, .n_prompt = xs[b].n, .max_tokens = gen, .ignore_eos = 1,
                                      .temperature = 0.7f, .top_p = 0.9f, .seed = (uint64_t)b};
        w0 = timer_wall();
        if (engine_generate(en, NULL, g8, 8, &e))
            die("generate batch", &e);
        wall = timer_wall() - w0;
        int out = 0;
        for (int b = 0; b < 8; b++) {
            out += g8[b].n_out;
            engine_gen_item_clear(&g8[b]);
        }
        printf("generate batch 8: %ld prompt + %d new tokens in %.2fs: %.1f new tok/s\n", ptoks, out, wall, out / wall);
        free(lg);
        free(pb);
        free(qi);
    }
    printf("peak RSS %.1f MiB\n", timer_peak_rss_kb() / 1024.0);

    for (int i = 0; i < nx; i++) {
        free(xs[i].ids);
        free(xs[i].cont[0]);
        free(xs[i].cont[1]);
    }
    free(xs);
    free(items);
    free(lp);
    free(conts);
    buf_free(&data);
    buf_free(&prompt);
    engine_close(en);
    return 0;
}
