/* shot_pick similar: the k training rows nearest each query, by cosine similarity of the local
 * model's mean-pooled last hidden state, or of what an HTTP model's /embeddings endpoint returns
 * (Liu et al. 2022, "What Makes Good In-Context Examples for GPT-3?"). Embeddings go through the response cache like answers: a rerun, another method or
 * another suite over the same texts computes none again. */
#include "run/run_internal.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "run/request.h"
#include "util/log.h"
#include "util/json.h"
#include "util/timer.h"

#define EMBED_MAX_POOL 100000 /* rows a similar pick may embed (give a train_limit) */
#define EMBED_CHUNK 256

/* A cached embedding: {"embedding": [...], "tokens_in": n}; anything else is a miss. */
static int embed_decode(const char *json, int dim, float *out)
{
    cJSON *o = cJSON_Parse(json);
    const cJSON *a = o ? cJSON_GetObjectItemCaseSensitive(o, "embedding") : NULL;
    int ok = cJSON_IsArray(a) && (dim <= 0 || cJSON_GetArraySize(a) == dim);
    int n = ok ? cJSON_GetArraySize(a) : 0;
    for (int i = 0; ok && i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(x))
            ok = 0;
        else if (out)
            out[i] = (float)x->valuedouble;
    }
    cJSON_Delete(o);
    return ok ? n : -1;
}

static int embed_encode(const llm_response *r, pwb_buf *out)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *a = o ? cJSON_AddArrayToObject(o, "embedding") : NULL;
    int bad = !a;
    for (int i = 0; !bad && i < r->n_embedding; i++) {
        cJSON *x = cJSON_CreateNumber((double)r->embedding[i]);
        bad = !x || !cJSON_AddItemToArray(a, x);
    }
    bad = bad || !cJSON_AddNumberToObject(o, "tokens_in", r->tokens_in);
    bad = bad || !cJSON_AddNumberToObject(o, "cpu_s", r->cpu_s);
    buf_reset(out);
    return json_append(out, o, bad);
}

/* The first vector fixes the width: n rows of it. Returns -1 when out of memory. */
static int vectors_size(float **vec, size_t n, int *dim, int width)
{
    float *v = realloc(*vec, n * (size_t)width * sizeof *v);
    if (!v)
        return -1;
    *vec = v;
    *dim = width;
    return 0;
}

/* Embeds texts[0..n) into vec ([n][*dim]; *dim is set by the first embedding and vec grown to fit),
 * the cache first. */
static int embed_texts(runner *R, rmodel *mo, const char *const *texts, size_t n, float **vec, int *dim,
                       double *cpu_s, size_t *n_cached, pwb_err *e)
{
    llm_request *reqs = calloc(EMBED_CHUNK, sizeof *reqs);
    llm_response *out = calloc(EMBED_CHUNK, sizeof *out);
    char(*keys)[65] = calloc(EMBED_CHUNK, sizeof *keys);
    size_t *map = calloc(EMBED_CHUNK, sizeof *map);
    pwb_buf scratch;
    buf_init(&scratch);
    int rc = !reqs || !out || !keys || !map ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    for (size_t s0 = 0; !rc && s0 < n; s0 += EMBED_CHUNK) {
        size_t s1 = s0 + EMBED_CHUNK < n ? s0 + EMBED_CHUNK : n, nm = 0;
        for (size_t i = s0; !rc && i < s1; i++) {
            llm_request q = {.mode = LLM_EMBED, .prompt = texts[i] ? texts[i] : ""};
            if (req_cache_key(&mo->cfg, &q, keys[i - s0], &scratch)) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                break;
            }
            char *json = NULL;
            if (!R->o->no_cache && (rc = db_cache_get(R->db, keys[i - s0], &json, e)))
                break;
            int got = -1;
            if (json && *dim > 0)
                got = embed_decode(json, *dim, *vec + i * (size_t)*dim);
            else if (json && (got = embed_decode(json, 0, NULL)) > 0) {
                if (vectors_size(vec, n, dim, got)) {
                    free(json);
                    rc = err_set(e, PWB_ENOMEM, "out of memory");
                    break;
                }
                embed_decode(json, got, *vec + i * (size_t)got);
            }
            free(json);
            if (got > 0) {
                (*n_cached)++;
                continue;
            }
            reqs[nm] = q;
            map[nm++] = i;
        }
        if (rc || nm == 0)
            continue;
        memset(out, 0, nm * sizeof *out);
        rc = mo->be->run(mo->be, reqs, nm, out, NULL, NULL, e);
        int began = !rc && (rc = db_begin(R->db, e)) == PWB_OK;
        for (size_t j = 0; !rc && j < nm; j++) {
            const llm_response *r = &out[j];
            if (r->error || !r->embedding || r->n_embedding <= 0 || (*dim > 0 && r->n_embedding != *dim)) {
                rc = err_set(e, PWB_EMODEL, "embedding text %zu: %s", map[j], r->error ? r->error : "no embedding");
                break;
            }
            if (*dim <= 0 && vectors_size(vec, n, dim, r->n_embedding)) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                break;
            }
            memcpy(*vec + map[j] * (size_t)*dim, r->embedding, (size_t)*dim * sizeof(float));
            *cpu_s += r->cpu_s;
            if (!R->o->no_cache) {
                if (embed_encode(r, &scratch))
                    rc = err_set(e, PWB_ENOMEM, "out of memory");
                else
                    rc = db_cache_put(R->db, keys[map[j] - s0], scratch.data, e);
            }
        }
        if (began && rc == PWB_OK)
            rc = db_commit(R->db, e);
        else if (began)
            db_rollback(R->db);
        for (size_t j = 0; j < nm; j++)
            llm_response_clear(&out[j]);
    }
    free(reqs);
    free(out);
    free(keys);
    free(map);
    buf_free(&scratch);
    return rc;
}

int run_cell_neighbours(runner *R, rcell *c, pwb_err *e)
{
    const rmethod *m = &R->me[c->k];
    const int k = m->tpl.shots;
    if (m->tpl.shot_pick != SHOTS_SIMILAR || k <= 0 || m->soft || m->sm->optimize || c->near || c->n_todo == 0)
        return PWB_OK;
    rmodel *mo = &R->mo[c->m];
    const rds *d = &R->ds[c->d];
    const char *kind = mo->be && mo->be->kind ? mo->be->kind : "";
    if (strcmp(kind, "local") && strcmp(kind, "openai") && strcmp(kind, "openai-completions"))
        return err_set(e, PWB_EUNSUP, "%s: method '%s': shot_pick similar embeds texts with the local engine or an "
                       "OpenAI-compatible /embeddings endpoint; model '%s' is provider %s", R->suite.path, m->sm->name,
                       mo->sm->name, mo->cfg.provider);
    const ds_data *pool = run_cell_shot_pool(R, c);
    const int same = d->shots_same && !c->has_pool;
    if (pool->n > EMBED_MAX_POOL)
        return err_set(e, PWB_ERANGE, "%s: method '%s': shot_pick similar would embed %zu rows; give a train_limit "
                       "(at most %d)", R->suite.path, m->sm->name, pool->n, EMBED_MAX_POOL);
    size_t n = pool->n + c->n_rows;
    const char **texts = malloc((n ? n : 1) * sizeof *texts);
    unsigned char *skip = calloc(pool->n ? pool->n : 1, 1);
    size_t *best = malloc((size_t)k * sizeof *best);
    c->near = malloc((c->n_rows ? c->n_rows : 1) * (size_t)k * sizeof *c->near);
    float *vec = NULL;
    int dim = 0, rc = PWB_OK;
    if (!texts || !skip || !best || !c->near) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < pool->n; i++)
        texts[i] = pool->ex[i].input;
    for (size_t i = 0; i < c->n_rows; i++)
        texts[pool->n + i] = d->eval.ex[c->rows[i]].input;
    double t0 = timer_wall(), cpu = 0;
    size_t cached = 0;
    if ((rc = embed_texts(R, mo, texts, n, &vec, &dim, &cpu, &cached, e)))
        goto done;
    log_info("%s/%s/%s: shot_pick similar: %zu texts embedded (%zu from the cache), %.1f CPU-s, %.1f s",
             d->card.name, mo->sm->name, m->sm->name, n, cached, cpu, timer_wall() - t0);
    for (size_t i = 0; i < c->n_rows && !rc; i++) {
        const ds_example *q = &d->eval.ex[c->rows[i]];
        /* never the query itself, the same text under another id, or a row without an answer */
        for (size_t r = 0; r < pool->n; r++)
            skip[r] = !pool->ex[r].answer || (same && r == c->rows[i]) ||
                      (q->input && pool->ex[r].input && !strcmp(q->input, pool->ex[r].input));
        int got = template_nearest(vec, pool->n, dim, vec + (pool->n + i) * (size_t)dim, skip, k, best);
        if (got < k) {
            rc = err_set(e, PWB_ERANGE, "%s: method '%s': the shot pool has fewer than %d usable rows", R->suite.path,
                         m->sm->name, k);
            break;
        }
        /* the nearest last, next to the query (what Liu et al. found works best) */
        for (int j = 0; j < k; j++)
            c->near[i * (size_t)k + (size_t)j] = best[k - 1 - j];
    }
    c->near_k = k;
done:
    if (rc) {
        free(c->near);
        c->near = NULL;
    }
    free(texts);
    free(skip);
    free(best);
    free(vec);
    return rc;
}
