/* Token buckets and AIMD concurrency for HTTP backends. See ratelimit.h. */
#include "llm/ratelimit.h"

#include <math.h>
#include <string.h>

static void bucket_init(rl_bucket *b, double per_minute, double burst_s, double now)
{
    memset(b, 0, sizeof *b);
    if (!(per_minute > 0) || !isfinite(per_minute))
        return;
    b->rate = per_minute / 60.0;
    b->depth = b->rate * burst_s;
    if (b->depth < 1)
        b->depth = 1;
    b->level = b->depth;
    b->t = now;
}

static void bucket_fill(rl_bucket *b, double now)
{
    if (!b->rate)
        return;
    if (now > b->t) {
        b->level += (now - b->t) * b->rate;
        if (b->level > b->depth)
            b->level = b->depth;
    }
    b->t = now > b->t ? now : b->t;
}

/* Seconds until the bucket holds what a request of this cost needs; 0 when it does now. */
static double bucket_wait(const rl_bucket *b, double cost)
{
    if (!b->rate)
        return 0;
    double need = cost < b->depth ? cost : b->depth;
    if (b->level >= need)
        return 0;
    return (need - b->level) / b->rate;
}

void ratelimit_init(ratelimit *rl, const ratelimit_opts *o, double now)
{
    memset(rl, 0, sizeof *rl);
    rl->o = *o;
    if (rl->o.max_concurrency < 1)
        rl->o.max_concurrency = 1;
    if (!(rl->o.burst_s > 0) || !isfinite(rl->o.burst_s))
        rl->o.burst_s = 1.0;
    rl->limit = rl->o.max_concurrency;
    rl->last_cut = -INFINITY;
    bucket_init(&rl->req, o->rpm, rl->o.burst_s, now);
    bucket_init(&rl->tok, o->tpm, rl->o.burst_s, now);
}

int ratelimit_admit(ratelimit *rl, double now, int in_flight, double tokens, double *retry_at)
{
    *retry_at = 0;
    if (in_flight >= rl->limit)
        return 0;
    if (!(tokens >= 0) || !isfinite(tokens))
        tokens = 0;
    bucket_fill(&rl->req, now);
    bucket_fill(&rl->tok, now);
    double w = bucket_wait(&rl->req, 1);
    double wt = bucket_wait(&rl->tok, tokens);
    if (wt > w)
        w = wt;
    if (w > 0) {
        /* a hair past the exact time, so the check then does not fall short by a rounding error */
        *retry_at = now + w + 1e-6;
        return 0;
    }
    if (rl->req.rate)
        rl->req.level -= 1;
    if (rl->tok.rate)
        rl->tok.level -= tokens;
    return 1;
}

void ratelimit_refund(ratelimit *rl, double tokens)
{
    if (rl->req.rate && (rl->req.level += 1) > rl->req.depth)
        rl->req.level = rl->req.depth;
    if (rl->tok.rate && tokens > 0 && isfinite(tokens) && (rl->tok.level += tokens) > rl->tok.depth)
        rl->tok.level = rl->tok.depth;
}

void ratelimit_settle(ratelimit *rl, double estimated, double used)
{
    if (!rl->tok.rate || !(used >= 0) || !isfinite(used) || !isfinite(estimated))
        return;
    rl->tok.level -= used - estimated;
    if (rl->tok.level > rl->tok.depth)
        rl->tok.level = rl->tok.depth;
}

void ratelimit_feedback(ratelimit *rl, double now, double sent_at, int status)
{
    if (status == 429 || status == 503) {
        rl->n_throttled++;
        rl->successes = 0;
        if (!rl->o.adaptive || sent_at < rl->last_cut)
            return;
        int cut = rl->limit / 2;
        rl->limit = cut < 1 ? 1 : cut;
        rl->last_cut = now;
        rl->n_cuts++;
        return;
    }
    if (status < 200 || status >= 300 || !rl->o.adaptive || rl->limit >= rl->o.max_concurrency)
        return;
    int need = rl->o.grow_after > 0 ? rl->o.grow_after : rl->limit;
    if (++rl->successes >= need) {
        rl->limit++;
        rl->successes = 0;
        rl->n_grows++;
    }
}
