/* Prompt-tuning step benchmark: seconds per training step (forward keeping activations, loss,
 * backward to the soft prompt, Adafactor update) and peak RSS, at batch 8 with 20 virtual tokens
 * on SmolLM2 by default. The examples are SST-2 training rows in the zero-shot ChatML prompt of
 * tests/reference/pwbref.py, the target the label verbalizer then <|im_end|>; the PyTorch
 * reference (tests/reference/torch_grad_reference.py --bench) times the same step on the same
 * weights and tokens.
 *
 * Build by hand (the Makefile's `make bench` wires it up):
 *   make BUILD=build build/lib/libpwb_tune.a build/lib/libpwb_engine.a build/lib/libpwb_util.a
 *   cc -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -Isrc -o build/tune_bench bench/tune_bench.c \
 *     build/lib/libpwb_tune.a build/lib/libpwb_engine.a build/lib/libpwb_util.a -lcjson -lpcre2-8 -lm
 * Run:
 *   OMP_WAIT_POLICY=passive build/tune_bench models/SmolLM2-135M-Instruct.Q4_1.gguf \
 *     ../shared/datasets/sst2/train.tsv [--threads 2] [--batch 8] [--tokens 20] [--steps 4] [--exact]
 * With --lora R the step is LoRA's instead (rank R on q and v, alpha 2R, AdamW, no soft prompt):
 * tests/reference/peft_reference.py --bench times PEFT + PyTorch on the same step.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backward.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "engine/lora.h"
#include "tune/method.h"
#include "tune/optim.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/rng.h"
#include "util/timer.h"

#define SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

static void die(const char *what, const pwb_err *e)
{
    fprintf(stderr, "tune_bench: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

static int32_t *encode(const model *m, const char *text, int *n)
{
    int32_t *ids = NULL;
    size_t k = 0;
    pwb_err e = {0};
    if (tokenizer_encode(m->tok, text, strlen(text), 0, 1, &ids, &k, &e) < 0)
        die("tokenize", &e);
    *n = (int)k;
    return ids;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tune_bench MODEL SST2_TRAIN_TSV [--threads N] [--batch N] [--tokens N] "
                        "[--steps N] [--exact]\n");
        return 2;
    }
    int threads = 2, B = 8, n_soft = 20, steps = 4, exact = 0, prefix = 0, no_t = 0, lora_r = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            n_soft = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--exact"))
            exact = 1;
        else if (!strcmp(argv[i], "--prefix"))
            prefix = 1;
        else if (!strcmp(argv[i], "--no-transposed"))
            no_t = 1;
        else if (!strcmp(argv[i], "--lora") && i + 1 < argc)
            lora_r = atoi(argv[++i]);
    }
    if (lora_r > 0) /* LoRA: no leading vectors, no shared prefix sequence */
        n_soft = 0, prefix = 0;
    if (threads > 0)
        omp_set_num_threads(threads);
    pwb_err e = {0};
    double t0 = timer_wall();
    model *m;
    if (model_load(&m, argv[1], &e))
        die("load", &e);
    const int d = m->hp.n_embd;
    double t_load = timer_wall() - t0;

    /* The first B rows of the training file. */
    pwb_buf file, text;
    buf_init(&file);
    buf_init(&text);
    if (file_read_all(argv[2], 64u << 20, &file, &e))
        die("read", &e);
    int32_t *ids[64], *lab[2];
    int n_ids[64], label[64], lab_n[2];
    lab[0] = encode(m, "negative", &lab_n[0]);
    lab[1] = encode(m, "positive", &lab_n[1]);
    int32_t im_end = tokenizer_token_id(m->tok, "<|im_end|>");
    if (B > 64)
        B = 64;
    char *line = strchr(file.data, '\n');
    int got = 0;
    while (line && got < B) {
        line++;
        char *end = strchr(line, '\n'), *tab = strchr(line, '\t');
        if (!end || !tab || tab > end)
            break;
        *tab = 0;
        char *s = line;
        while (*s == ' ')
            s++;
        char *z = tab;
        while (z > s && z[-1] == ' ')
            *--z = 0;
        buf_reset(&text);
        buf_printf(&text,
                   "<|im_start|>system\n" SYSTEM "<|im_end|>\n<|im_start|>user\nReview: %s\n"
                   "Is the sentiment of this review positive or negative? Answer with one word.<|im_end|>\n"
                   "<|im_start|>assistant\n",
                   s);
        label[got] = tab[1] == '1';
        /* prompt, then the label tokens and <|im_end|> as teacher-forced input */
        int np;
        int32_t *p = encode(m, text.data, &np);
        const int nl = lab_n[label[got]];
        ids[got] = malloc((size_t)(np + nl + 1) * sizeof(int32_t));
        memcpy(ids[got], p, (size_t)np * sizeof(int32_t));
        memcpy(ids[got] + np, lab[label[got]], (size_t)nl * sizeof(int32_t));
        ids[got][np + nl] = im_end;
        n_ids[got] = np + nl; /* the last target (<|im_end|>) is not fed */
        free(p);
        got++;
        line = end;
    }
    B = got;

    float *soft = malloc((size_t)n_soft * d * sizeof(float)), *grad = malloc((size_t)n_soft * d * sizeof(float));
    pwb_rng r;
    rng_init(&r, 42);
    for (int i = 0; i < n_soft * d; i++)
        soft[i] = (float)(rng_uniform(&r) - 0.5);
    /* With --prefix the soft prompt and the ids every example starts with are one shared prefix
     * sequence, computed once per step. */
    int lcp = 0;
    if (prefix) {
        lcp = n_ids[0] - 1;
        for (int b = 1; b < B; b++) {
            int k = 0;
            while (k < lcp && k < n_ids[b] - 1 && ids[b][k] == ids[0][k])
                k++;
            lcp = k;
        }
    }
    bwd_seq seqs[65];
    int tpos[64][8];
    int32_t tgt[64][8];
    long tokens = 0;
    int ns = 0;
    if (prefix) {
        seqs[ns++] = (bwd_seq){.embeds = soft, .n_embeds = n_soft, .ids = ids[0], .n_ids = lcp, .d_embeds = grad};
        tokens += n_soft + lcp;
    }
    for (int b = 0; b < B; b++) {
        int nl = lab_n[label[b]] + 1;
        int np = n_ids[b] - (nl - 1);
        int off = prefix ? -lcp : n_soft;
        for (int k = 0; k < nl; k++) {
            tpos[b][k] = off + np - 1 + k;
            tgt[b][k] = ids[b][np + k];
        }
        if (prefix)
            seqs[ns++] = (bwd_seq){.prefix = &seqs[0], .ids = ids[b] + lcp, .n_ids = n_ids[b] - lcp, .n_tgt = nl,
                                   .tgt_pos = tpos[b], .targets = tgt[b]};
        else
            seqs[ns++] = (bwd_seq){.embeds = n_soft ? soft : NULL, .n_embeds = n_soft, .ids = ids[b], .n_ids = n_ids[b],
                                   .n_tgt = nl, .tgt_pos = tpos[b], .targets = tgt[b], .d_embeds = n_soft ? grad : NULL};
        tokens += prefix ? n_ids[b] - lcp : n_soft + n_ids[b];
    }
    bwd_opts bo = {.exact = exact, .no_transposed = no_t};
    bwd_ctx *c;
    if (bwd_ctx_new(&c, m, &bo, &e))
        die("bwd_ctx", &e);
    optim_config oc;
    optim_config_default(&oc, lora_r > 0 ? OPTIM_ADAMW : OPTIM_ADAFACTOR);
    optimizer opt, *lopt = NULL;
    if (optim_init(&opt, &oc, (size_t)(n_soft > 0 ? n_soft : 1), (size_t)d, &e))
        die("optim", &e);
    tune_adapter ad, adg;
    tune_params lp, lg;
    if (lora_r > 0) {
        tune_method_config mc;
        tune_method_config_default(&mc);
        mc.kind = TUNE_LORA;
        mc.lora_r = lora_r;
        mc.lora_alpha = 2 * lora_r;
        if (tune_adapter_new(&ad, m, &mc, 0, &e) || tune_adapter_like(&adg, &ad, &e) || tune_params_of(&ad, &lp, &e) ||
            tune_params_of(&adg, &lg, &e))
            die("lora", &e);
        lora_init_peft(&ad.lora, 42);
        lopt = calloc((size_t)lp.n, sizeof *lopt);
        for (int i = 0; i < lp.n; i++)
            if (optim_init(&lopt[i], &oc, lp.rows[i], lp.cols[i], &e))
                die("optim", &e);
        bwd_ctx_set_lora(c, &ad.lora, &adg.lora);
        printf("LoRA r %d on q, v: %zu trainable parameters, AdamW\n", lora_r, lora_n_params(&ad.lora));
    }
    long rss_before = timer_peak_rss_kb();
    printf("model %s: %d layers, hidden %d, vocab %d; load %.2f s\n", argv[1], m->hp.n_layer, d, m->hp.n_vocab,
           t_load);
    printf("batch %d, %d virtual tokens, %ld tokens per step (shared prefix %d), threads %d, %s weight products%s\n",
           B, n_soft, tokens, prefix ? n_soft + lcp : 0, omp_get_max_threads(),
           exact ? "exact (F32 activations)" : "engine (8-bit activations)",
           !exact && !no_t ? ", transposed Q8_0 copies" : "");
    double sum = 0;
    int counted = 0;
    for (int s = 0; s < steps; s++) {
        memset(grad, 0, (size_t)n_soft * d * sizeof(float));
        if (lora_r > 0) {
            lora_zero(&adg.lora);
            lora_set_training(&ad.lora, 1, (uint64_t)s);
        }
        double ts = timer_wall(), loss;
        if (bwd_run(c, seqs, ns, 1, &loss, &e))
            die("step", &e);
        double tf = timer_wall();
        if (lora_r > 0)
            for (int i = 0; i < lp.n; i++)
                optim_step(&lopt[i], lp.w[i], lg.w[i]);
        else
            optim_step(&opt, soft, grad);
        double dt = timer_wall() - ts;
        printf("step %d: loss %.4f, %.3f s (fwd+bwd %.3f s)\n", s + 1, loss, dt, tf - ts);
        if (s > 0 || steps == 1) {
            sum += dt;
            counted++;
        }
    }
    long rss = timer_peak_rss_kb();
    printf("seconds/step %.3f (mean of %d after the first)\n", sum / counted, counted);
    printf("peak RSS %.1f MiB (%.1f MiB before the first step); activations %.1f MiB\n", rss / 1024.0,
           rss_before / 1024.0, bwd_ctx_bytes(c) / 1048576.0);
    optim_free(&opt);
    if (lora_r > 0) {
        for (int i = 0; i < lp.n; i++)
            optim_free(&lopt[i]);
        free(lopt);
        tune_params_free(&lp);
        tune_params_free(&lg);
        tune_adapter_free(&ad);
        tune_adapter_free(&adg);
    }
    bwd_ctx_free(c);
    model_free(m);
    return 0;
}
