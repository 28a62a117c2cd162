/* Private to src/run: the canonical form of a request (the response cache's key) and the cached
 * form of a response. */
#ifndef PWB_RUN_REQUEST_H
#define PWB_RUN_REQUEST_H

#include "llm/backend.h"
#include "util/buf.h"
#include "util/err.h"

/* Only deterministic requests are cached: the same request must give the same answer. */
int req_cacheable(const llm_request *r);
/* The canonical request as minified JSON with a fixed key order: what the model sees and every
 * parameter that changes the answer (provider, base_url, model, messages or prompt, mode,
 * max_tokens, temperature, top_p, stop, choices, and a soft prompt's identity and length when the
 * request carries one). The API key is never part of it. */
int req_canonical(const llm_config *cfg, const llm_request *r, pwb_buf *out);
/* sha256 hex of req_canonical. */
int req_cache_key(const llm_config *cfg, const llm_request *r, char key[65], pwb_buf *scratch);

/* A successful response as the JSON kept in the cache, and back (the members malloc'd). */
int resp_encode(const llm_response *r, int n_choices, pwb_buf *out);
int resp_decode(const char *json, int n_choices, llm_response *out);

#endif
