#include "util/sha256.h"

#include <openssl/evp.h>

int sha256_init(sha256_ctx *c)
{
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    if (x && EVP_DigestInit_ex(x, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(x);
        x = NULL;
    }
    c->md = x;
    return x ? 0 : -1;
}

void sha256_update(sha256_ctx *c, const void *data, size_t n)
{
    /* A failed update leaves the context unusable, which sha256_final reports. */
    if (c->md && n && EVP_DigestUpdate(c->md, data, n) != 1)
        sha256_free(c);
}

int sha256_final(sha256_ctx *c, uint8_t out[32])
{
    unsigned int len = 0;
    int ok = c->md && EVP_DigestFinal_ex(c->md, out, &len) == 1 && len == 32;
    sha256_free(c);
    return ok ? 0 : -1;
}

void sha256_free(sha256_ctx *c)
{
    EVP_MD_CTX_free(c->md);
    c->md = NULL;
}

int sha256_hex(const void *data, size_t n, char out[65])
{
    uint8_t d[32];
    unsigned int len = 0;
    if (EVP_Digest(data, n, d, &len, EVP_sha256(), NULL) != 1 || len != 32) {
        out[0] = '\0';
        return -1;
    }
    sha256_to_hex(d, out);
    return 0;
}

void sha256_to_hex(const uint8_t digest[32], char out[65])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[digest[i] >> 4];
        out[2 * i + 1] = hx[digest[i] & 15];
    }
    out[64] = '\0';
}
