/* The --max-cost guard. See budget.h. */
#include "llm/budget.h"

#include <math.h>
#include <string.h>

void llm_budget_init(llm_budget *b, double limit_usd, double already_spent_usd)
{
    memset(b, 0, sizeof *b);
    b->limit_usd = isfinite(limit_usd) && limit_usd > 0 ? limit_usd : 0;
    b->spent_usd = isfinite(already_spent_usd) && already_spent_usd > 0 ? already_spent_usd : 0;
    pthread_mutex_init(&b->mu, NULL);
}

void llm_budget_free(llm_budget *b)
{
    if (b)
        pthread_mutex_destroy(&b->mu);
}

int llm_budget_reserve(llm_budget *b, double usd, pwb_err *e)
{
    if (!(usd > 0)) /* NaN and negatives hold nothing; +inf is refused under any limit */
        usd = 0;
    pthread_mutex_lock(&b->mu);
    int rc = PWB_OK;
    /* a free request (a local server, an unpriced model) is never refused */
    if (b->limit_usd > 0 && usd > 0 && b->spent_usd + b->reserved_usd + usd > b->limit_usd) {
        b->refused++;
        rc = err_set(e, PWB_ELIMIT,
                     "cost limit of $%.4f reached: $%.4f spent, $%.4f held for requests in flight, the next "
                     "request may cost up to $%.4f",
                     b->limit_usd, b->spent_usd, b->reserved_usd, usd);
    } else {
        b->reserved_usd += usd;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void llm_budget_settle(llm_budget *b, double reserved_usd, double actual_usd)
{
    pthread_mutex_lock(&b->mu);
    if (reserved_usd > 0 && isfinite(reserved_usd))
        b->reserved_usd -= reserved_usd;
    if (b->reserved_usd < 1e-12) /* rounding: nothing is held below a picodollar */
        b->reserved_usd = 0;
    if (actual_usd > 0 && isfinite(actual_usd))
        b->spent_usd += actual_usd;
    pthread_mutex_unlock(&b->mu);
}

void llm_budget_add(llm_budget *b, double usd) { llm_budget_settle(b, 0, usd); }

double llm_budget_spent(llm_budget *b)
{
    pthread_mutex_lock(&b->mu);
    double s = b->spent_usd;
    pthread_mutex_unlock(&b->mu);
    return s;
}

double llm_budget_remaining(llm_budget *b)
{
    pthread_mutex_lock(&b->mu);
    double r = b->limit_usd > 0 ? b->limit_usd - b->spent_usd - b->reserved_usd : 1e300;
    pthread_mutex_unlock(&b->mu);
    return r > 0 ? r : 0;
}
