/* SHA-256 for dataset checksums, prompt hashes and cache keys, through OpenSSL's libcrypto (already
 * linked by libcurl): it uses the CPU's SHA instructions where there are some, which matters since
 * soft-prompt and adapter keys hash whole model files. */
#ifndef PWB_UTIL_SHA256_H
#define PWB_UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sha256_ctx {
    void *md; /* EVP_MD_CTX */
} sha256_ctx;

/* Returns 0, or -1 when libcrypto could not make a context (out of memory). */
int sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Writes the digest and frees the context; -1 when any step failed. */
int sha256_final(sha256_ctx *c, uint8_t out[32]);
/* Frees a context that will not be finished (error paths). */
void sha256_free(sha256_ctx *c);
/* out must hold 65 bytes: 64 hex digits and a NUL. Returns -1 (out "") when hashing failed. */
int sha256_hex(const void *data, size_t n, char out[65]);
void sha256_to_hex(const uint8_t digest[32], char out[65]);

#endif
