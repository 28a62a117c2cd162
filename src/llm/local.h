/* The "local" backend: llm_backend on top of the built-in engine (src/engine).
 *
 * cfg->model is a GGUF file or a Hugging Face folder; cfg->chat_template overrides the template
 * family the model's own template names ("chatml", "llama3", "gemma", "mistral", "llama2",
 * "none"); cfg->threads sets the OpenMP threads (0: OMP_NUM_THREADS / all cores); cfg->batch (default 16) is
 * the number of requests scored or generated together.
 *
 * run() renders each request's messages with the chat template (or takes the raw prompt), finds
 * the longest common token prefix of the whole call and computes its KV once (kept across calls,
 * so consecutive calls sharing an instruction or few-shot shots reuse it), then works through the
 * requests in batches. LLM_RANK scores each choice as the continuation of the prompt (summed
 * log-probability, tokenized jointly with the prompt when that leaves the prompt's tokens intact).
 * latency_s and cpu_s are the batch's wall and CPU time shared out by each request's share of the
 * batch's tokens (plus an even share of the prefix), so they add up to the real totals.
 *
 * A request with prefix_embeds (a soft prompt) is read as [vectors][rendered input]: consecutive
 * requests with the same vectors form one group whose shared prefix starts with them (kept across
 * calls while the vectors are equal). tokens_in counts the rendered input only. */
#ifndef PWB_LLM_LOCAL_H
#define PWB_LLM_LOCAL_H

#include "llm/backend.h"
#include "util/err.h"

int llm_local_create(llm_backend **out, const llm_config *cfg, pwb_err *e);

#endif
