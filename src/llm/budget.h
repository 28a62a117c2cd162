/* The --max-cost guard: a running total of USD spent and held for requests in flight, which
 * refuses a request that could take the total past the limit.
 *
 * Each HTTP attempt reserves its worst case before it is sent (estimated prompt tokens and
 * max_tokens at the model's price, see llm_request_estimate) and settles to the reply's real
 * usage when it ends; a failed attempt settles to 0 (providers do not bill errors). So the total
 * passes the limit only if a prompt's real token count exceeds its estimate. Thread-safe: one
 * budget may be shared by every model of a run. */
#ifndef PWB_LLM_BUDGET_H
#define PWB_LLM_BUDGET_H

#include <pthread.h>

#include "util/err.h"

typedef struct llm_budget {
    double limit_usd;    /* <= 0: no limit */
    double spent_usd;    /* settled */
    double reserved_usd; /* held for requests in flight */
    long refused;        /* reservations refused */
    pthread_mutex_t mu;
} llm_budget;

/* already_spent_usd: what earlier invocations of a resumed run spent (counts towards the limit). */
void llm_budget_init(llm_budget *b, double limit_usd, double already_spent_usd);
void llm_budget_free(llm_budget *b);
/* Holds usd for a request about to be sent; PWB_ELIMIT (e says how much is left) when spent +
 * reserved + usd would pass the limit. */
int llm_budget_reserve(llm_budget *b, double usd, pwb_err *e);
/* Releases a reservation and adds what the request really cost. */
void llm_budget_settle(llm_budget *b, double reserved_usd, double actual_usd);
/* Adds a cost paid outside any reservation (the local backend's CPU time, say). */
void llm_budget_add(llm_budget *b, double usd);
double llm_budget_spent(llm_budget *b);
/* limit - spent - reserved (never below 0); a large number when there is no limit. */
double llm_budget_remaining(llm_budget *b);

#endif
