/* Prompt search: a method with "optimize" races candidate prompts (templates x instructions x
 * demonstration sets) by successive halving on a held-out slice of its labelled budget, writes
 * the winner as an ordinary template file and scores the cell with it (docs/optimize.md). Every
 * candidate, its held-out score and the search's cost go into SQLite. Deterministic: the pool,
 * the demonstration draws and the order of the race come from the suite's seed. A
 * chain-of-thought template's demonstrations are bootstrapped (DSPy's BootstrapFewShot): the
 * model reasons about seeded demo-pool rows with the candidate's prompt, and only rows whose own
 * reasoning reached the gold label become demonstrations, that reasoning their answer. */
#include "run/run_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
#include "util/log.h"
#include "util/rng.h"
#include "util/str.h"
#include "util/timer.h"

#define OPT_MAX_CANDIDATES 512

typedef struct cand {
    int t;                   /* template: 0 the method's, k the (k-1)th of optimize.templates */
    const char *instruction; /* NULL: the card's */
    size_t demo[RUN_MAX_SHOTS]; /* positions in the pool */
    int n_demo;
    double *prior;           /* calibrated: from its content-free inputs */
    long n_eval, correct;
    int last_round;          /* the last round it ran in */
    int alive;
    int boot;                /* chain of thought with shots: demonstrations bootstrapped */
    uint64_t boot_seed;      /* ... in this seeded order */
    char *rationale[RUN_MAX_SHOTS]; /* ... each showing the model's own reasoning */
    size_t *tried;           /* pool positions the bootstrap tried, in order */
    size_t n_tried;
} cand;

typedef struct search {
    runner *R;
    rcell *c;
    size_t *pool;            /* indices into the shot split: the budget's rows */
    size_t n_pool, n_held;   /* the first n_held are the held-out slice, the rest the demo pool */
    char *read;              /* per pool position: read by the search */
    cand *cands;
    int n_cands;
    long evals, max_evals;
    double cpu_s;
    char *proposed[SUITE_OPT_MAX_LIST]; /* instructions the model proposed (optimize.propose) */
    int n_proposed;
} search;

const pwb_template *run_method_template(const rmethod *m, int t)
{
    return t == 0 ? &m->tpl : &m->xtpl[t - 1];
}

static const char *template_label(const rmethod *m, int t)
{
    return t == 0 ? m->sm->template_path : m->sm->opt.templates[t - 1];
}

/* Each label's share of k demonstrations (labels in a seeded order take the extra ones); returns
 * the number of labels shared among (at most 64). */
static int label_quota(const search *S, pwb_rng *r, int k, int quota[64])
{
    int L = S->R->ds[S->c->d].card.n_labels > 0 ? S->R->ds[S->c->d].card.n_labels : 1;
    size_t lab_order[64];
    if (L > 64)
        L = 64;
    for (int l = 0; l < L; l++)
        lab_order[l] = (size_t)l;
    rng_shuffle_idx(r, lab_order, (size_t)L);
    for (int j = 0; j < L; j++)
        quota[lab_order[j]] = k / L + (j < k % L ? 1 : 0);
    return L;
}

/* The demo pool's positions in a seeded order (malloc'd; NULL when out of memory). */
static size_t *demo_order(const search *S, pwb_rng *r)
{
    size_t nd = S->n_pool - S->n_held;
    size_t *order = malloc((nd ? nd : 1) * sizeof *order);
    if (!order)
        return NULL;
    for (size_t i = 0; i < nd; i++)
        order[i] = S->n_held + i;
    rng_shuffle_idx(r, order, nd);
    return order;
}

/* k demonstrations from the demo pool: label-balanced (labels in a seeded order take the extra
 * ones), in a seeded order. */
static void draw_demos(search *S, pwb_rng *r, int k, cand *cd)
{
    const rds *d = &S->R->ds[S->c->d];
    size_t nd = S->n_pool - S->n_held;
    int quota[64];
    if (k < 1 || nd == 0)
        return;
    size_t *order = demo_order(S, r);
    if (!order)
        return;
    int L = label_quota(S, r, k, quota);
    cd->n_demo = 0;
    for (size_t i = 0; i < nd && cd->n_demo < k; i++) {
        int lab = d->shots.ex[S->pool[order[i]]].label;
        if (lab >= 0 && lab < L && quota[lab] > 0) {
            quota[lab]--;
            cd->demo[cd->n_demo++] = order[i];
            order[i] = SIZE_MAX;
        }
    }
    for (size_t i = 0; i < nd && cd->n_demo < k; i++) /* a label ran short: any row */
        if (order[i] != SIZE_MAX)
            cd->demo[cd->n_demo++] = order[i];
    rng_shuffle_idx(r, cd->demo, (size_t)cd->n_demo);
    free(order);
}

#define OPT_PROPOSE_DEMOS 5
#define OPT_PROPOSE_TOKENS 48

/* APE's instruction induction (Zhou et al. 2023, "Large Language Models Are Human-Level Prompt
 * Engineers"): the model reads labelled pairs from the demo pool and says what the instruction was.
 * Proposal j shows its own seeded draw and samples with seed + j, so the same suite proposes the
 * same instructions. Replies are cut to their first line; empty ones are dropped. */
static int propose_instructions(search *S, pwb_rng *r, pwb_err *e)
{
    runner *R = S->R;
    const rmethod *m = &R->me[S->c->k];
    const ds_card *card = run_cell_card(R, S->c);
    const rds *d = &R->ds[S->c->d];
    rmodel *mo = &R->mo[S->c->m];
    const int n = m->sm->opt.propose;
    pwb_buf text;
    buf_init(&text);
    int rc = PWB_OK;
    for (int j = 0; j < n && !rc; j++) {
        cand tmp;
        memset(&tmp, 0, sizeof tmp);
        draw_demos(S, r, OPT_PROPOSE_DEMOS, &tmp);
        buf_reset(&text);
        buf_printf(&text, "I gave a friend an instruction and %d inputs. The friend read the instruction and wrote an "
                   "output for every one of the inputs. Here are the input-output pairs:\n\n", tmp.n_demo);
        for (int i = 0; i < tmp.n_demo; i++) {
            const ds_example *x = &d->shots.ex[S->pool[tmp.demo[i]]];
            const char *ans = x->label >= 0 && x->label < card->n_labels ? card->labels[x->label].verbalizer
                                                                         : x->answer;
            buf_printf(&text, "Input: %s\nOutput: %s\n\n", x->input ? x->input : "", ans ? ans : "");
            S->read[tmp.demo[i]] = 1;
        }
        buf_puts(&text, "What was the instruction? Reply with the instruction only, in one sentence.");
        if (!text.data) {
            rc = err_set(e, PWB_ENOMEM, "out of memory");
            break;
        }
        llm_message msg = {"user", text.data};
        llm_request q = {.mode = LLM_GENERATE, .max_tokens = OPT_PROPOSE_TOKENS, .temperature = 0.7, .top_p = 0.95,
                         .seed = R->suite.seed + (uint64_t)j, .prompt = text.data};
        if (mo->messages) {
            q.messages = &msg;
            q.n_messages = 1;
        }
        llm_response resp;
        memset(&resp, 0, sizeof resp);
        rc = mo->be->run(mo->be, &q, 1, &resp, NULL, NULL, e);
        S->cpu_s += resp.cpu_s;
        if (!rc && resp.text) {
            char *t = resp.text;
            t[strcspn(t, "\r\n")] = '\0';
            str_trim(t);
            /* a wording the race already has would only repeat a candidate */
            for (int i = 0; t[0] && i < m->sm->opt.n_instructions; i++)
                if (!strcmp(t, m->sm->opt.instructions[i]))
                    t[0] = '\0';
            for (int i = 0; t[0] && i < S->n_proposed; i++)
                if (!strcmp(t, S->proposed[i]))
                    t[0] = '\0';
            if (t[0] && card->instruction && !strcmp(t, card->instruction))
                t[0] = '\0';
            if (t[0] && strlen(t) < 1000 && !(S->proposed[S->n_proposed] = str_dup(t)))
                rc = err_set(e, PWB_ENOMEM, "out of memory");
            else if (t[0] && strlen(t) < 1000)
                log_info("prompt search %s: proposed instruction %d: %s", m->sm->name, j + 1, S->proposed[S->n_proposed++]);
        } else if (!rc) {
            log_warn("prompt search %s: proposal %d failed: %s", m->sm->name, j + 1, resp.error ? resp.error : "no text");
        }
        llm_response_clear(&resp);
    }
    buf_free(&text);
    return rc;
}

static int build_candidates(search *S, pwb_err *e)
{
    runner *R = S->R;
    const rmethod *m = &R->me[S->c->k];
    const suite_optimize *o = &m->sm->opt;
    S->cands = calloc(OPT_MAX_CANDIDATES, sizeof *S->cands);
    if (!S->cands)
        return err_set(e, PWB_ENOMEM, "out of memory");
    pwb_rng r;
    rng_init(&r, R->suite.seed ^ 0x6f7074696d697a65ULL);
    if (o->propose > 0) {
        /* its own stream: the demonstration sets drawn below stay what they were without proposals */
        pwb_rng rp;
        rng_init(&rp, R->suite.seed ^ 0x70726f706f7365ULL);
        int rc = propose_instructions(S, &rp, e);
        if (rc)
            return rc;
    }
    for (int t = 0; t <= m->n_xtpl; t++) {
        const pwb_template *tp = run_method_template(m, t);
        /* a template that does not show the instruction gets one candidate, not one per wording */
        int n_ins = tp->text && strstr(tp->text, "{{instruction}}") ? 1 + o->n_instructions + S->n_proposed : 1;
        int n_sets = tp->shots > 0 ? o->demo_sets : 1;
        for (int i = 0; i < n_ins; i++)
            for (int s = 0; s < n_sets; s++) {
                if (S->n_cands == OPT_MAX_CANDIDATES)
                    return err_set(e, PWB_ERANGE, "%s: method '%s': more than %d prompt candidates", R->suite.path,
                                   m->sm->name, OPT_MAX_CANDIDATES);
                cand *cd = &S->cands[S->n_cands++];
                cd->t = t;
                cd->instruction = i == 0                    ? NULL
                                  : i <= o->n_instructions ? o->instructions[i - 1]
                                                           : S->proposed[i - 1 - o->n_instructions];
                cd->alive = 1;
                cd->last_round = -1;
                if (tp->shots > 0 && tp->kind == TPL_COT) {
                    /* bootstrapped after the candidates are built (bootstrap()) */
                    cd->boot = 1;
                    cd->boot_seed = rng_next(&r);
                } else if (tp->shots > 0) {
                    draw_demos(S, &r, tp->shots, cd);
                    if (cd->n_demo < tp->shots)
                        return err_set(e, PWB_ERANGE, "%s: method '%s': %zu rows beside the held-out slice cannot "
                                       "give %d demonstrations", R->suite.path, m->sm->name, S->n_pool - S->n_held,
                                       tp->shots);
                }
            }
    }
    return PWB_OK;
}

/* A cell that renders candidate cd: its template, its instruction, its demonstrations (a
 * bootstrapped one as a copy of its row in copies, its rationale the model's reasoning). */
static void cand_cell(search *S, const cand *cd, rcell *tmp, ds_card *card, const ds_example **demos,
                      ds_example *copies)
{
    const rds *d = &S->R->ds[S->c->d];
    *tmp = *S->c;
    *card = *run_cell_card(S->R, S->c);
    if (cd->instruction)
        card->instruction = (char *)cd->instruction;
    for (int i = 0; i < cd->n_demo; i++) {
        demos[i] = &d->shots.ex[S->pool[cd->demo[i]]];
        if (cd->rationale[i]) {
            copies[i] = *demos[i];
            copies[i].rationale = cd->rationale[i];
            demos[i] = &copies[i];
        }
    }
    tmp->tpl_over = run_method_template(&S->R->me[S->c->k], cd->t);
    tmp->card_over = card;
    tmp->demos = demos;
    tmp->n_demos = cd->n_demo;
    tmp->fixed_demos = 1;
    tmp->prior = cd->prior;
    tmp->calib_nostore = 1;
}

static void add_cpu(search *S, const item *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!items[i].cached && items[i].resp.cpu_s > 0)
            S->cpu_s += items[i].resp.cpu_s;
}

/* Whether a reply can be a demonstration's literal text in the winner's template. */
static int showable(const char *t)
{
    return t[0] && strlen(t) < 16384 && !strstr(t, "{{") && !strstr(t, "}}") && !strstr(t, CALIB_MARKER);
}

/* DSPy's BootstrapFewShot (Khattab et al. 2023) for one chain-of-thought candidate: demo-pool rows
 * in a seeded order, label-balanced like draw_demos, are answered greedily with the candidate's
 * prompt and no demonstrations, through the cell's backend and the response cache (a rerun
 * regenerates nothing); a row becomes a demonstration only when the template's answer pattern
 * finds its gold label in the reply, which the demonstration then shows as its reasoning. Every row
 * tried counts as read and at most bootstrap_tries are tried: a model that rarely reasons right
 * keeps fewer demonstrations, never reads more. */
static int bootstrap(search *S, cand *cd, pwb_err *e)
{
    runner *R = S->R;
    const rmethod *m = &R->me[S->c->k];
    const rds *d = &R->ds[S->c->d];
    const pwb_template *tp = run_method_template(m, cd->t);
    const int k = tp->shots;
    const size_t nd = S->n_pool - S->n_held;
    const long cap = m->sm->opt.bootstrap_tries > 0 ? m->sm->opt.bootstrap_tries : 4L * k;
    pwb_rng r;
    rng_init(&r, cd->boot_seed);
    size_t *order = demo_order(S, &r);
    cd->tried = malloc((nd ? nd : 1) * sizeof *cd->tried);
    item *items = calloc((size_t)(k > 0 ? k : 1), sizeof *items);
    if (!order || !cd->tried || !items) {
        free(order);
        free(items);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    int quota[64];
    const int L = label_quota(S, &r, k, quota);
    /* the prompt the model reasons with: the candidate's, without demonstrations */
    rcell tmp;
    ds_card card;
    const ds_example *demos[RUN_MAX_SHOTS];
    ds_example copies[RUN_MAX_SHOTS];
    cand_cell(S, cd, &tmp, &card, demos, copies);
    tmp.n_demos = 0;
    tmp.generate = 1;
    tmp.prior = NULL;
    scorer *sc = NULL;
    int rc = scorer_init(&sc, &card, tp->answer_pattern, e);
    pwb_buf scratch;
    buf_init(&scratch);
    size_t next = 0;
    while (!rc && cd->n_demo < k && (long)cd->n_tried < cap && next < nd && !run_stopped(R)) {
        /* one batch: the next rows whose label still lacks demonstrations, one per missing one */
        size_t pos[RUN_MAX_SHOTS];
        int pending[64] = {0};
        int nb = 0;
        for (; next < nd && nb < k - cd->n_demo && (long)cd->n_tried + nb < cap; next++) {
            int lab = d->shots.ex[S->pool[order[next]]].label;
            if (lab < 0 || lab >= L || quota[lab] - pending[lab] <= 0)
                continue;
            pending[lab]++;
            pos[nb++] = order[next];
        }
        if (nb == 0)
            break;
        int built = 0;
        for (; built < nb && !rc; built++)
            rc = run_item_build_example(R, &tmp, &items[built], &d->shots.ex[S->pool[pos[built]]], &scratch, e);
        if (!rc)
            rc = run_items_answer(R, &tmp, items, (size_t)nb, e);
        if (!rc)
            add_cpu(S, items, (size_t)nb);
        for (int i = 0; !rc && i < nb; i++) {
            const ds_example *x = &d->shots.ex[S->pool[pos[i]]];
            const llm_response *rp = &items[i].resp;
            S->read[pos[i]] = 1;
            cd->tried[cd->n_tried++] = pos[i];
            if (rp->error || !rp->text) {
                log_warn("prompt search %s: bootstrap of row %zu failed: %s", m->sm->name, x->row,
                         rp->error ? rp->error : "no text");
                continue;
            }
            char *t = str_dup(rp->text);
            if (!t) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                break;
            }
            str_trim(t);
            score_result sr;
            memset(&sr, 0, sizeof sr);
            int kept = showable(t) && scorer_score(sc, t, x, &sr) == PWB_OK && sr.correct && quota[x->label] > 0;
            score_result_clear(&sr);
            if (kept) {
                quota[x->label]--;
                cd->demo[cd->n_demo] = pos[i];
                cd->rationale[cd->n_demo++] = t;
            } else {
                free(t);
            }
        }
        for (int i = 0; i < built; i++) {
            run_item_free(&items[i]);
            memset(&items[i], 0, sizeof items[i]);
        }
    }
    if (!rc)
        log_info("prompt search %s: bootstrapped %d of %d demonstrations from %zu rows tried", m->sm->name,
                 cd->n_demo, k, cd->n_tried);
    scorer_free(sc);
    buf_free(&scratch);
    free(items);
    free(order);
    return rc;
}

/* Scores candidate cd on held-out rows [from, to), its calibration first when it has none yet. */
static int evaluate(search *S, cand *cd, size_t from, size_t to, pwb_err *e)
{
    runner *R = S->R;
    const rmethod *m = &R->me[S->c->k];
    const rds *d = &R->ds[S->c->d];
    rcell tmp;
    ds_card card;
    const ds_example *demos[RUN_MAX_SHOTS];
    ds_example copies[RUN_MAX_SHOTS];
    cand_cell(S, cd, &tmp, &card, demos, copies);
    int rc = PWB_OK;
    if (m->calib != CALIB_NONE && !cd->prior) {
        rc = run_calibrate(R, &tmp, e);
        S->evals += m->calib == CALIB_PMI ? 1 : CALIB_N_CONTENT_FREE;
        S->cpu_s += tmp.calib_cpu_s;
        cd->prior = tmp.prior;
        tmp.prior = NULL;
        if (rc)
            return rc;
    }
    for (int i = 0; i < cd->n_demo; i++)
        S->read[cd->demo[i]] = 1;
    size_t n = to - from;
    item *items = calloc(n ? n : 1, sizeof *items);
    pwb_buf scratch;
    buf_init(&scratch);
    if (!items)
        return err_set(e, PWB_ENOMEM, "out of memory");
    size_t built = 0;
    for (; built < n && !rc; built++)
        rc = run_item_build_example(R, &tmp, &items[built], &d->shots.ex[S->pool[from + built]], &scratch, e);
    if (!rc)
        rc = run_items_answer(R, &tmp, items, n, e);
    add_cpu(S, items, n);
    for (size_t i = 0; !rc && i < n; i++) {
        const llm_response *rp = &items[i].resp;
        if (rp->error || !rp->choice_logprob) {
            rc = err_set(e, PWB_EIO, "%s: method '%s': prompt search: %s", R->suite.path, m->sm->name,
                         rp->error ? rp->error : "no label scores");
            break;
        }
        int ch = calib_choose(rp->choice_logprob, cd->prior, d->card.n_labels);
        cd->correct += ch >= 0 && ch == d->shots.ex[S->pool[from + i]].label;
        cd->n_eval++;
        S->read[from + i] = 1;
    }
    S->evals += (long)n;
    for (size_t i = 0; i < built; i++)
        run_item_free(&items[i]);
    free(items);
    buf_free(&scratch);
    return rc;
}

static double acc(const cand *cd) { return cd->n_eval ? (double)cd->correct / (double)cd->n_eval : -1; }

/* Better: more accurate; ties go to the earlier candidate (the method's own template first). */
static int better(const cand *a, int ia, const cand *b, int ib)
{
    return acc(a) > acc(b) || (acc(a) == acc(b) && ia < ib);
}

static int race(search *S, int *winner, int *rounds_run, pwb_err *e)
{
    const rmethod *m = &S->R->me[S->c->k];
    int C = S->n_cands, rounds = 1;
    while ((1 << (rounds - 1)) < C && rounds < 30)
        rounds++;
    size_t done = 0;
    int alive = C, rc = PWB_OK;
    *rounds_run = 0;
    for (int r = 0; r < rounds && !rc && !run_stopped(S->R); r++) {
        size_t upto = S->n_held >> (rounds - 1 - r);
        if (upto < 1)
            upto = 1;
        if (r == rounds - 1)
            upto = S->n_held;
        if (upto <= done)
            continue;
        long cost = (long)alive * (long)(upto - done);
        if (r == 0 && m->calib != CALIB_NONE)
            cost += (long)alive * (m->calib == CALIB_PMI ? 1 : CALIB_N_CONTENT_FREE);
        if (S->max_evals > 0 && S->evals + cost > S->max_evals) {
            if (r == 0)
                return err_set(e, PWB_ERANGE, "%s: method '%s': max_evals %ld cannot score %d candidates on %zu "
                               "held-out rows (%ld rankings)", S->R->suite.path, m->sm->name, S->max_evals, C,
                               upto, cost);
            log_info("prompt search %s: the evaluation budget stops the race after round %d", m->sm->name, r);
            break;
        }
        for (int i = 0; i < C && !rc; i++)
            if (S->cands[i].alive) {
                rc = evaluate(S, &S->cands[i], done, upto, e);
                S->cands[i].last_round = r;
            }
        done = upto;
        *rounds_run = r + 1;
        if (rc || r == rounds - 1)
            break;
        /* keep the better half */
        int keep = (alive + 1) / 2;
        for (int i = 0; i < C; i++) {
            if (!S->cands[i].alive)
                continue;
            int above = 0;
            for (int j = 0; j < C; j++)
                above += j != i && S->cands[j].alive && better(&S->cands[j], j, &S->cands[i], i);
            if (above >= keep)
                S->cands[i].alive = 0;
        }
        alive = keep;
    }
    if (rc)
        return rc;
    if (run_stopped(S->R))
        return err_set(e, PWB_EINTR, "interrupted during the prompt search of %s", m->sm->name);
    *winner = -1;
    for (int i = 0; i < C; i++)
        if (S->cands[i].alive && (*winner < 0 || better(&S->cands[i], i, &S->cands[*winner], *winner)))
            *winner = i;
    return *winner < 0 ? err_set(e, PWB_EINVAL, "%s: prompt search found no candidate", S->R->suite.path) : PWB_OK;
}

static void name_part(pwb_buf *b, const char *s)
{
    for (; s && *s; s++)
        buf_putc(b, (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
                            *s == '.' || *s == '_'
                        ? *s
                        : '_');
}

static void one_line(pwb_buf *b, const char *s)
{
    for (; s && *s; s++)
        buf_putc(b, *s == '\n' || *s == '\r' ? ' ' : *s);
}

/* The dataset rows at pool positions pos[0..n) as a JSON array, into out (reset first). */
static void rows_json(const search *S, const size_t *pos, size_t n, pwb_buf *out)
{
    const ds_data *shots = &S->R->ds[S->c->d].shots;
    buf_reset(out);
    buf_putc(out, '[');
    for (size_t k = 0; k < n; k++)
        buf_printf(out, "%s%zu", k ? "," : "", shots->ex[S->pool[pos[k]]].row);
    buf_putc(out, ']');
}

/* The winner as a template: its prompt rendered with a marker for the input, the marker turned
 * into {{input}}: instruction and demonstrations become literal text, so it runs anywhere. */
static int write_winner(search *S, const cand *w, pwb_buf *path, pwb_err *e)
{
    runner *R = S->R;
    const rmethod *m = &R->me[S->c->k];
    const rds *d = &R->ds[S->c->d];
    rcell tmp;
    ds_card card;
    const ds_example *demos[RUN_MAX_SHOTS];
    ds_example copies[RUN_MAX_SHOTS];
    cand_cell(S, w, &tmp, &card, demos, copies);
    item it;
    memset(&it, 0, sizeof it);
    pwb_buf scratch, text, dir;
    buf_init(&scratch);
    buf_init(&text);
    buf_init(&dir);
    int rc = run_item_build_input(R, &tmp, &it, CALIB_MARKER, 0, &scratch, e);
    const pwb_template *tp = run_method_template(m, w->t);
    if (!rc) {
        buf_printf(&text, "# Written by pwb's prompt search (docs/optimize.md) for method %s on %s / %s, seed %llu:\n"
                   "# the winner of %d candidates, %ld of %ld held-out rows right.\nname: ",
                   m->sm->name, d->card.name, R->mo[S->c->m].sm->name, (unsigned long long)R->suite.seed, S->n_cands,
                   w->correct, w->n_eval);
        name_part(&text, m->sm->name);
        /* chain of thought stays so, with its answer pattern: the winner also runs with generate scoring */
        buf_printf(&text, "\nkind: %s\ntask: %s\nmax_tokens: %d\n", tp->kind == TPL_COT ? "cot" : "zero-shot",
                   d->card.name, tp->max_tokens > 0 ? tp->max_tokens : 16);
        if (tp->kind == TPL_COT && tp->answer_pattern) {
            buf_puts(&text, "answer: ");
            one_line(&text, tp->answer_pattern);
            buf_putc(&text, '\n');
        }
        buf_puts(&text, "description: search winner: template ");
        one_line(&text, template_label(m, w->t));
        buf_printf(&text, ", %s instruction, %d demonstrations%s\n---\n", w->instruction ? "a searched" : "the card's",
                   w->n_demo, w->boot ? " with the model's own reasoning" : "");
        for (int i = 0; i < it.prompt.n && !rc; i++) {
            const char *msg = it.prompt.msgs[i].content;
            if (strstr(msg, "{{") || strstr(msg, "}}"))
                rc = err_set(e, PWB_EINVAL, "%s: prompt search: the winner's text holds '{{' or '}}', which a "
                             "template cannot show literally", R->suite.path);
            if (!(it.prompt.n == 1 && !strcmp(it.prompt.msgs[i].role, "user")))
                buf_printf(&text, "[%s]\n", it.prompt.msgs[i].role);
            const char *mk = strstr(msg, CALIB_MARKER);
            if (mk) {
                buf_append(&text, msg, (size_t)(mk - msg));
                buf_puts(&text, "{{input}}");
                buf_puts(&text, mk + strlen(CALIB_MARKER));
            } else {
                buf_puts(&text, msg);
            }
            buf_putc(&text, '\n');
        }
    }
    if (!rc) {
        file_dirname(R->o->db_path, &dir);
        buf_reset(path);
        buf_printf(path, "%s/optimized/", dir.data);
        rc = file_mkdirs(path->data, e);
        name_part(path, R->suite.name);
        buf_putc(path, '-');
        name_part(path, m->sm->name);
        buf_putc(path, '-');
        name_part(path, d->card.name);
        buf_putc(path, '-');
        name_part(path, R->mo[S->c->m].sm->name);
        buf_puts(path, ".tmpl");
    }
    if (!rc)
        rc = file_write_atomic(path->data, text.data, text.len, e);
    run_item_free(&it);
    buf_free(&scratch);
    buf_free(&text);
    buf_free(&dir);
    return rc;
}

static int store_search(search *S, int winner, int rounds, double wall, const char *tpath, pwb_err *e)
{
    runner *R = S->R;
    const rmethod *m = &R->me[S->c->k];
    const rds *d = &R->ds[S->c->d];
    long nread = 0;
    for (size_t i = 0; i < S->n_pool; i++)
        nread += S->read[i] != 0;
    db_prompt_search ps = {.cell_id = S->c->id, .seed = R->suite.seed, .train_limit = (long)S->n_pool,
                           .heldout = (long)S->n_held, .max_evals = S->max_evals, .n_candidates = S->n_cands,
                           .rounds = rounds, .evals = S->evals, .examples_read = nread, .cpu_s = S->cpu_s,
                           .wall_s = wall, .winner = winner, .best_heldout_acc = acc(&S->cands[winner]),
                           .template_path = tpath};
    int64_t sid = 0;
    int rc = db_begin(R->db, e);
    if (!rc)
        rc = db_prompt_search_put(R->db, &ps, &sid, e);
    pwb_buf rows, tried;
    buf_init(&rows);
    buf_init(&tried);
    for (int i = 0; i < S->n_cands && !rc; i++) {
        const cand *cd = &S->cands[i];
        rows_json(S, cd->demo, (size_t)cd->n_demo, &rows);
        rows_json(S, cd->tried, cd->n_tried, &tried);
        char *why = NULL;
        if (cd->boot) { /* the reasoning each demonstration shows, in demo_rows' order */
            cJSON *a = cJSON_CreateArray();
            for (int k = 0; a && k < cd->n_demo; k++)
                if (!cJSON_AddItemToArray(a, cJSON_CreateString(cd->rationale[k]))) {
                    cJSON_Delete(a);
                    a = NULL;
                }
            why = a ? cJSON_PrintUnformatted(a) : NULL;
            cJSON_Delete(a);
            if (!why) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                break;
            }
        }
        if (!rows.data || !tried.data) {
            free(why);
            rc = err_set(e, PWB_ENOMEM, "out of memory");
            break;
        }
        db_prompt_candidate pc = {.search_id = sid, .idx = i, .template_name = template_label(m, cd->t),
                                  .instruction = cd->instruction ? cd->instruction : d->card.instruction,
                                  .demo_rows = rows.data, .last_round = cd->last_round, .n_eval = cd->n_eval,
                                  .correct = cd->correct, .prior = cd->prior,
                                  .n_prior = cd->prior ? d->card.n_labels : 0,
                                  .tried_rows = cd->boot ? tried.data : NULL, .demo_rationales = why};
        rc = db_prompt_candidate_put(R->db, &pc, e);
        free(why);
    }
    buf_free(&rows);
    buf_free(&tried);
    if (rc)
        db_rollback(R->db);
    else
        rc = db_commit(R->db, e);
    S->c->search_evals = S->evals;
    S->c->search_read = nread;
    return rc;
}

int run_optimize(runner *R, rcell *c, pwb_err *e)
{
    const rmethod *m = &R->me[c->k];
    rds *d = &R->ds[c->d];
    pwb_buf path;
    buf_init(&path);
    /* searched before (a resumed run): the winner's file is the result */
    char *prev = NULL;
    int rc = db_prompt_search_template(R->db, c->id, &prev, e);
    if (!rc && prev && file_exists(prev)) {
        buf_puts(&path, prev);
        free(prev);
        goto load;
    }
    free(prev);
    if (rc)
        return rc;
    search S;
    memset(&S, 0, sizeof S);
    S.R = R;
    S.c = c;
    S.max_evals = m->sm->opt.max_evals;
    S.pool = malloc((d->shots.n ? d->shots.n : 1) * sizeof *S.pool);
    if (!S.pool)
        return err_set(e, PWB_ENOMEM, "out of memory");
    S.n_pool = dataset_sample(&d->shots, (size_t)m->sm->train_limit, R->suite.seed ^ 0x706f6f6cULL, S.pool);
    S.n_held = (size_t)m->sm->opt.heldout < S.n_pool / 2 ? (size_t)m->sm->opt.heldout : S.n_pool / 2;
    S.read = calloc(S.n_pool ? S.n_pool : 1, 1);
    rc = !S.read ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    double t0 = timer_wall();
    if (!rc)
        rc = build_candidates(&S, e);
    for (int i = 0; !rc && i < S.n_cands; i++)
        if (S.cands[i].boot)
            rc = bootstrap(&S, &S.cands[i], e);
    if (!rc && R->o->progress)
        fprintf(R->o->progress, "pwb: %s/%s/%s: prompt search over %d candidates on %zu held-out rows of %zu\n",
                d->card.name, R->mo[c->m].sm->name, m->sm->name, S.n_cands, S.n_held, S.n_pool);
    int winner = -1, rounds = 0;
    if (!rc)
        rc = race(&S, &winner, &rounds, e);
    double wall = timer_wall() - t0;
    if (!rc)
        rc = write_winner(&S, &S.cands[winner], &path, e);
    if (!rc)
        rc = store_search(&S, winner, rounds, wall, path.data, e);
    R->r->soft_wall_s += wall; /* searching, like training, is no part of the answering rate */
    R->prog.start += wall;
    for (int i = 0; S.cands && i < S.n_cands; i++) {
        free(S.cands[i].prior);
        free(S.cands[i].tried);
        for (int j = 0; j < S.cands[i].n_demo; j++)
            free(S.cands[i].rationale[j]);
    }
    for (int i = 0; i < S.n_proposed; i++)
        free(S.proposed[i]);
    free(S.cands);
    free(S.pool);
    free(S.read);
    if (rc) {
        buf_free(&path);
        return rc;
    }
load:
    template_free(&c->own_tpl);
    template_init(&c->own_tpl);
    rc = template_load(&c->own_tpl, path.data, e);
    if (!rc)
        rc = template_check(&c->own_tpl, &d->card, e);
    buf_free(&path);
    if (rc)
        return rc;
    free(c->res->search_template);
    c->res->search_template = str_dup(c->own_tpl.path ? c->own_tpl.path : "");
    c->tpl_over = &c->own_tpl;
    c->card_over = NULL;
    c->demos = NULL;
    c->n_demos = 0;
    c->fixed_demos = 1;
    return PWB_OK;
}
