#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tune/peft.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/str.h"

static char tmpdir[64];

static void mk(void)
{
    str_copy(tmpdir, sizeof tmpdir, "/tmp/pwb-peft-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

Test(peft, save_then_load_round_trips, .init = mk, .fini = rm)
{
    peft_prompt p;
    peft_prompt_init(&p);
    p.n_tokens = 4;
    p.dim = 128;
    p.embeddings = malloc(4 * 128 * sizeof(float));
    for (int i = 0; i < 4 * 128; i++)
        p.embeddings[i] = (float)i * 0.25f - 3.0f;
    p.init = str_dup("TEXT");
    p.init_text = str_dup("Classify the sentiment");
    pwb_err e;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/sp", tmpdir);
    cr_assert_eq(peft_save(dir, &p, "{\"steps\": 2}", &e), PWB_OK, "%s", e.msg);

    peft_prompt q;
    cr_assert_eq(peft_load(dir, &q, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(q.n_tokens, 4);
    cr_assert_eq(q.dim, 128);
    cr_assert_str_eq(q.init, "TEXT");
    cr_assert_str_eq(q.init_text, "Classify the sentiment");
    cr_assert(memcmp(p.embeddings, q.embeddings, 4 * 128 * sizeof(float)) == 0);

    /* The safetensors header is what PEFT expects: one F32 tensor named prompt_embeddings. */
    pwb_buf b;
    buf_init(&b);
    char path[192];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    cr_assert_eq(file_read_all(path, 1 << 20, &b, &e), PWB_OK);
    cr_assert_eq(b.len, 8 + (size_t)(b.data[0] & 0xff) + ((size_t)(b.data[1] & 0xff) << 8) + 4 * 128 * 4);
    cr_assert_not_null(strstr(b.data + 8, "\"prompt_embeddings\":{"));
    cr_assert_not_null(strstr(b.data + 8, "\"shape\":[4,128]"));
    cr_assert_not_null(strstr(b.data + 8, "\"dtype\":\"F32\""));
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    cr_assert_eq(file_read_all(path, 1 << 20, &b, &e), PWB_OK);
    cr_assert_not_null(strstr(b.data, "\"peft_type\":\t\"PROMPT_TUNING\""));
    buf_free(&b);
    peft_prompt_free(&p);
    peft_prompt_free(&q);
}

Test(peft, rejects_wrong_type_and_shape, .init = mk, .fini = rm)
{
    pwb_err e;
    char path[192];
    snprintf(path, sizeof path, "%s/adapter_config.json", tmpdir);
    const char *lora_cfg = "{\"peft_type\": \"LORA\", \"num_virtual_tokens\": 4, \"token_dim\": 8}";
    cr_assert_eq(file_write_atomic(path, lora_cfg, strlen(lora_cfg), &e), PWB_OK);
    peft_prompt q;
    cr_assert_neq(peft_load(tmpdir, &q, &e), PWB_OK);
    cr_assert_not_null(strstr(e.msg, "PROMPT_TUNING"), "%s", e.msg);

    /* A valid artifact whose config then claims another shape. */
    peft_prompt p;
    peft_prompt_init(&p);
    p.n_tokens = 2;
    p.dim = 8;
    p.embeddings = calloc(16, sizeof(float));
    cr_assert_eq(peft_save(tmpdir, &p, NULL, &e), PWB_OK, "%s", e.msg);
    const char *bad = "{\"peft_type\": \"PROMPT_TUNING\", \"num_virtual_tokens\": 3, \"token_dim\": 8}";
    cr_assert_eq(file_write_atomic(path, bad, strlen(bad), &e), PWB_OK);
    cr_assert_neq(peft_load(tmpdir, &q, &e), PWB_OK);
    cr_assert_not_null(strstr(e.msg, "shape"), "%s", e.msg);
    peft_prompt_free(&p);
}

Test(peft, refuses_vectors_that_are_not_finite, .init = mk, .fini = rm)
{
    peft_prompt p;
    peft_prompt_init(&p);
    p.n_tokens = 2;
    p.dim = 8;
    p.embeddings = calloc(16, sizeof(float));
    pwb_err e;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        p.embeddings[11] = bad[k];
        cr_assert_eq(peft_save(tmpdir, &p, NULL, &e), PWB_OK, "%s", e.msg);
        peft_prompt q;
        cr_assert_eq(peft_load(tmpdir, &q, &e), PWB_EPARSE, "value %g was loaded", (double)bad[k]);
        cr_assert(strstr(e.msg, "not finite (virtual token 1, element 3)"), "%s", e.msg);
    }
    peft_prompt_free(&p);
}
