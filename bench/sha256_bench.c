/* SHA-256 speed: pwb's file_sha256 (libcrypto) against the portable C implementation pwb used
 * before (kept here, and only here, as the baseline), on one file; both digests must agree. Also
 * libcrypto over the file's bytes already in memory: the ceiling for any way of reading it.
 *   build/bench/sha256_bench [FILE]     (no FILE: a 250 MB file of random bytes in $TMPDIR) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/file.h"
#include "util/rng.h"
#include "util/sha256.h"
#include "util/timer.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

typedef struct old_ctx {
    uint32_t h[8];
    uint64_t nbytes;
    uint8_t block[64];
    size_t fill;
} old_ctx;

static void old_init(old_ctx *c)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->nbytes = 0;
    c->fill = 0;
}

static void old_update(old_ctx *c, const void *data, size_t n)
{
    const uint8_t *p = data;
    c->nbytes += n;
    while (n) {
        size_t take = 64 - c->fill;
        if (take > n)
            take = n;
        memcpy(c->block + c->fill, p, take);
        c->fill += take;
        p += take;
        n -= take;
        if (c->fill == 64) {
            compress(c->h, c->block);
            c->fill = 0;
        }
    }
}

static void old_final(old_ctx *c, uint8_t out[32])
{
    uint64_t bits = c->nbytes * 8;
    uint8_t pad = 0x80;
    old_update(c, &pad, 1);
    pad = 0;
    while (c->fill != 56)
        old_update(c, &pad, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    old_update(c, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->h[i];
    }
}

/* The baseline over a whole file, exactly as file_sha256 read it before (64 KiB reads). */
static int portable_file(const char *path, char out[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    old_ctx c;
    old_init(&c);
    unsigned char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        old_update(&c, chunk, n);
    fclose(f);
    uint8_t d[32];
    old_final(&c, d);
    sha256_to_hex(d, out);
    return 0;
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

int main(int argc, char **argv)
{
    char tmp[4096] = "";
    const char *path = argc > 1 ? argv[1] : NULL;
    if (!path) {
        const char *dir = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/pwb-sha256-bench-XXXXXX", dir && dir[0] ? dir : "/tmp");
        int fd = mkstemp(tmp);
        if (fd < 0) {
            perror(tmp);
            return 1;
        }
        pwb_rng r;
        rng_init(&r, 42);
        static uint64_t blk[1 << 17];
        for (int m = 0; m < 250 * 1000 * 1000 / (int)sizeof blk + 1; m++) {
            for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++)
                blk[i] = rng_next(&r);
            if (write(fd, blk, sizeof blk) != (ssize_t)sizeof blk) {
                perror(tmp);
                return 1;
            }
        }
        close(fd);
        path = tmp;
    }
    char a[65], b[65], c[65];
    pwb_err e;
    /* The machine is shared: five rounds of each, interleaved, and their medians. "memory" hashes
     * the file's bytes already in memory, with nothing read: the most any way of reading the file
     * could reach with this SHA-256 (one stream cannot be split across cores). */
    enum { ROUNDS = 5 };
    double fast[ROUNDS], slow[ROUNDS], mem[ROUNDS];
    int rc = 0, rc2 = 0;
    pwb_buf all;
    buf_init(&all);
    rc = file_read_all(path, (size_t)1 << 32, &all, &e);
    for (int round = 0; round < ROUNDS && !rc && !rc2; round++) {
        double t0 = timer_cpu();
        rc = file_sha256(path, a, &e);
        double t1 = timer_cpu();
        rc2 = portable_file(path, b);
        double t2 = timer_cpu();
        if (sha256_hex(all.data, all.len, c))
            rc2 = -1;
        double t3 = timer_cpu();
        fast[round] = t1 - t0;
        slow[round] = t2 - t1;
        mem[round] = t3 - t2;
    }
    buf_free(&all);
    if (rc || rc2) {
        if (tmp[0])
            unlink(tmp);
        fprintf(stderr, "sha256_bench: %s\n", rc ? e.msg : "cannot read the file");
        return 1;
    }
    struct stat st;
    double mb = stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0;
    double f = median(fast, ROUNDS), sl = median(slow, ROUNDS), m = median(mem, ROUNDS);
    printf("sha256 over %.0f MB (CPU seconds, medians of %d): libcrypto file_sha256 %.3f s (%.0f MB/s), portable C "
           "%.3f s (%.0f MB/s): %.1fx faster, digests %s; libcrypto from memory (no reading) %.3f s (%.0f MB/s): "
           "at most %.1fx\n",
           mb, ROUNDS, f, mb / f, sl, mb / sl, sl / f, strcmp(a, b) || strcmp(a, c) ? "DIFFER" : "agree", m, mb / m,
           sl / m);
    if (tmp[0])
        unlink(tmp);
    return strcmp(a, b) != 0 || strcmp(a, c) != 0;
}
