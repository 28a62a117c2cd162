/* File helpers: bounded whole-file reads, read-only mappings, atomic writes, search paths. */
#ifndef PWB_UTIL_FILE_H
#define PWB_UTIL_FILE_H

#include <stddef.h>
#include "util/buf.h"
#include "util/err.h"

/* Reads the whole file into out (NUL-terminated); fails with PWB_ERANGE past max_bytes. */
int file_read_all(const char *path, size_t max_bytes, pwb_buf *out, pwb_err *e);

typedef struct file_map {
    const unsigned char *data;
    size_t size;
} file_map;

int file_map_open(file_map *m, const char *path, pwb_err *e);
void file_map_close(file_map *m);

/* Writes to path.tmp then renames, so readers never see a half-written file. */
int file_write_atomic(const char *path, const void *data, size_t n, pwb_err *e);
int file_exists(const char *path);
int file_is_dir(const char *path);
/* mkdir -p */
int file_mkdirs(const char *path, pwb_err *e);
/* sha256 of a file's bytes, as 64 hex digits. */
int file_sha256(const char *path, char out[65], pwb_err *e);

/* Resolves name against base_dir (if relative) and then each dir of a ':'-separated search path.
 * Writes the first existing candidate into out. Returns PWB_OK or PWB_EIO naming what was tried. */
/* The next non-empty folder of a ':'-separated search path, into dir; returns where the rest starts,
 * or NULL when no folder is left. Loop: for (p = list; (p = file_path_next(p, &dir));) use(dir.data). */
const char *file_path_next(const char *p, pwb_buf *dir);
int file_resolve(const char *name, const char *base_dir, const char *search_path, pwb_buf *out, pwb_err *e);
/* Directory part of a path ("." when none), into out. */
void file_dirname(const char *path, pwb_buf *out);
/* Joins a and b with one '/' into out. */
int file_join(pwb_buf *out, const char *a, const char *b);

#endif
