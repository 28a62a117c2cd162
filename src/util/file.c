#include "util/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/sha256.h"

int file_read_all(const char *path, size_t max_bytes, pwb_buf *out, pwb_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, PWB_EIO, "%s: %s", path, strerror(errno));
    buf_reset(out);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (out->len + n > max_bytes) {
            fclose(f);
            return err_set(e, PWB_ERANGE, "%s: larger than the limit of %zu bytes", path, max_bytes);
        }
        if (buf_append(out, chunk, n)) {
            fclose(f);
            return err_set(e, PWB_ENOMEM, "%s: out of memory", path);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return err_set(e, PWB_EIO, "%s: read error", path);
    if (!out->data && buf_reserve(out, 0))
        return err_set(e, PWB_ENOMEM, "out of memory");
    return PWB_OK;
}

int file_map_open(file_map *m, const char *path, pwb_err *e)
{
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return err_set(e, PWB_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, PWB_EIO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return err_set(e, PWB_EPARSE, "%s: empty file", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return err_set(e, PWB_EIO, "%s: mmap: %s", path, strerror(errno));
    m->data = p;
    m->size = (size_t)st.st_size;
    return PWB_OK;
}

void file_map_close(file_map *m)
{
    if (m->data)
        munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

int file_write_atomic(const char *path, const void *data, size_t n, pwb_err *e)
{
    pwb_buf tmp;
    buf_init(&tmp);
    if (buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid()))
        return err_set(e, PWB_ENOMEM, "out of memory");
    FILE *f = fopen(tmp.data, "wb");
    if (!f) {
        int rc = err_set(e, err_write_code(errno), "%s: cannot write: %s", path, strerror(errno));
        buf_free(&tmp);
        return rc;
    }
    /* the first failure's errno says why (a full disk is not a bad input) */
    int err = 0;
    if (fwrite(data, 1, n, f) != n)
        err = errno ? errno : EIO;
    if (fflush(f) != 0 && !err)
        err = errno;
    if (fsync(fileno(f)) != 0 && !err)
        err = errno;
    if (fclose(f) != 0 && !err)
        err = errno;
    if (!err && rename(tmp.data, path) != 0)
        err = errno;
    if (err) {
        int rc = err_set(e, err_write_code(err), "%s: write failed: %s", path, strerror(err));
        unlink(tmp.data);
        buf_free(&tmp);
        return rc;
    }
    buf_free(&tmp);
    return PWB_OK;
}

int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int file_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int file_mkdirs(const char *path, pwb_err *e)
{
    pwb_buf p;
    buf_init(&p);
    if (buf_puts(&p, path))
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (size_t i = 1; i <= p.len; i++) {
        if (p.data[i] == '/' || p.data[i] == '\0') {
            char c = p.data[i];
            p.data[i] = '\0';
            if (mkdir(p.data, 0755) != 0 && errno != EEXIST) {
                int rc = err_set(e, PWB_EIO, "%s: %s", p.data, strerror(errno));
                buf_free(&p);
                return rc;
            }
            p.data[i] = c;
        }
    }
    buf_free(&p);
    return PWB_OK;
}

int file_sha256(const char *path, char out[65], pwb_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, PWB_EIO, "%s: %s", path, strerror(errno));
    sha256_ctx c;
    enum { CHUNK = 1 << 20 };
    unsigned char *chunk = malloc(CHUNK);
    if (!chunk || sha256_init(&c)) {
        free(chunk);
        fclose(f);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    size_t n;
    while ((n = fread(chunk, 1, CHUNK, f)) > 0)
        sha256_update(&c, chunk, n);
    int bad = ferror(f);
    fclose(f);
    free(chunk);
    uint8_t d[32];
    if (bad) {
        sha256_free(&c);
        return err_set(e, PWB_EIO, "%s: read error", path);
    }
    if (sha256_final(&c, d))
        return err_set(e, PWB_ENOMEM, "%s: hashing failed", path);
    sha256_to_hex(d, out);
    return PWB_OK;
}

int file_join(pwb_buf *out, const char *a, const char *b)
{
    buf_reset(out);
    if (b[0] == '/' || !a || !a[0])
        return buf_puts(out, b);
    size_t la = strlen(a);
    if (buf_puts(out, a))
        return -1;
    if (la && a[la - 1] != '/' && buf_putc(out, '/'))
        return -1;
    return buf_puts(out, b);
}

void file_dirname(const char *path, pwb_buf *out)
{
    buf_reset(out);
    const char *slash = strrchr(path, '/');
    if (!slash)
        buf_puts(out, ".");
    else if (slash == path)
        buf_puts(out, "/");
    else
        buf_append(out, path, (size_t)(slash - path));
}

const char *file_path_next(const char *p, pwb_buf *dir)
{
    while (p && *p) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        const char *rest = colon ? colon + 1 : p + n;
        if (n) {
            buf_reset(dir);
            buf_append(dir, p, n);
            return rest;
        }
        p = rest;
    }
    return NULL;
}

int file_resolve(const char *name, const char *base_dir, const char *search_path, pwb_buf *out, pwb_err *e)
{
    pwb_buf tried;
    buf_init(&tried);
    if (name[0] == '/') {
        buf_reset(out);
        buf_puts(out, name);
        return file_exists(name) ? PWB_OK : err_set(e, PWB_EIO, "%s: no such file", name);
    }
    if (base_dir) {
        file_join(out, base_dir, name);
        if (file_exists(out->data))
            return PWB_OK;
        buf_printf(&tried, " %s", out->data);
    }
    pwb_buf dir;
    buf_init(&dir);
    for (const char *p = search_path; (p = file_path_next(p, &dir));) {
        file_join(out, dir.data, name);
        if (file_exists(out->data)) {
            buf_free(&dir);
            buf_free(&tried);
            return PWB_OK;
        }
        buf_printf(&tried, " %s", out->data);
    }
    buf_free(&dir);
    int rc = err_set(e, PWB_EIO, "%s: not found (tried:%s)", name, tried.data ? tried.data : " nothing");
    buf_free(&tried);
    return rc;
}
