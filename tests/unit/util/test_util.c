#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "util/buf.h"
#include "util/progress.h"
#include "util/rng.h"
#include "util/sha256.h"
#include "util/str.h"
#include "util/utf8.h"

Test(sha256, known_vectors)
{
    char hex[65];
    sha256_hex("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(m, strlen(m), hex);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* Streaming in uneven pieces gives the one-shot digest (the FIPS 180-2 million-'a' vector). */
Test(sha256, streaming_matches_one_shot)
{
    static char m[1000000];
    memset(m, 'a', sizeof m);
    char one[65], hex[65];
    cr_assert_eq(sha256_hex(m, sizeof m, one), 0);
    cr_assert_str_eq(one, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    sha256_ctx c;
    cr_assert_eq(sha256_init(&c), 0);
    for (size_t at = 0, step = 1; at < sizeof m; at += step, step = step * 3 + 1)
        sha256_update(&c, m + at, at + step <= sizeof m ? step : sizeof m - at);
    uint8_t d[32];
    cr_assert_eq(sha256_final(&c, d), 0);
    sha256_to_hex(d, hex);
    cr_assert_str_eq(hex, one);
}

Test(buf, grows_and_formats)
{
    pwb_buf b;
    buf_init(&b);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(buf_printf(&b, "%d,", i), 0);
    cr_assert(strncmp(b.data, "0,1,2,", 6) == 0);
    cr_assert_eq(b.data[b.len], '\0');
    char *s = buf_take(&b);
    cr_assert_eq(b.data, NULL);
    free(s);
}

Test(str, utf8_validation)
{
    cr_assert(utf8_valid("h\xc3\xa9llo", 6));
    cr_assert(!utf8_valid("\xc0\xaf", 2));       /* overlong */
    cr_assert(!utf8_valid("\xed\xa0\x80", 3));   /* surrogate */
    cr_assert(!utf8_valid("\xe2\x82", 2));       /* truncated */
}

Test(rng, reproducible_and_in_range)
{
    pwb_rng a, b;
    rng_init(&a, 42);
    rng_init(&b, 42);
    for (int i = 0; i < 100; i++) {
        uint64_t x = rng_below(&a, 7);
        cr_assert_eq(x, rng_below(&b, 7));
        cr_assert(x < 7);
    }
}

/* The whole line one draw of p writes to a temporary file. */
static void progress_line(pwb_progress *p, long done, char *out, size_t cap)
{
    rewind(p->out);
    p->last_draw = 0; /* draw now, whatever the throttle says */
    progress_update(p, done, NULL);
    rewind(p->out);
    size_t n = fread(out, 1, cap - 1, p->out);
    out[n] = '\0';
}

Test(progress, eta_counts_the_work_after_and_an_idle_bar_draws_nothing)
{
    pwb_progress p;
    char line[512];
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    progress_init(&p, f, "run", 10);
    /* half done in no time: the bar's own ETA is 00:00, the 10 minutes of training after it count */
    progress_set_after(&p, 600, NULL);
    progress_line(&p, 5, line, sizeof line);
    cr_assert(strstr(line, "eta 10:00"), "%s", line);
    /* work after it that cannot be timed yet is named */
    progress_set_after(&p, -1, "training");
    progress_line(&p, 5, line, sizeof line);
    cr_assert(strstr(line, "eta 00:00 + training"), "%s", line);
    fclose(f);

    /* nothing to count and never drawn: finishing writes nothing */
    f = tmpfile();
    progress_init(&p, f, "run", 0);
    progress_finish(&p);
    cr_assert_eq(ftell(f), 0, "an empty progress line");
    fclose(f);
}
