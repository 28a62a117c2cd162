#include <criterion/criterion.h>
#include <string.h>

#include "util/buf.h"
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
