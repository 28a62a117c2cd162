/* Helpers for the end-to-end tests: run the built `pwb` binary and the loopback server fakellm,
 * temp folders, files, and small queries on the results database. Paths come from the
 * environment that `make test` sets: PWB_BIN, PWB_FAKELLM, PWB_ROOT, PWB_DATA_PATH. */
#ifndef PWB_TESTS_INTEGRATION_HARNESS_H
#define PWB_TESTS_INTEGRATION_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct proc_out {
    int status;  /* exit code, or 128 + signal */
    char *out;   /* stdout, NUL-terminated */
    char *err;   /* stderr */
} proc_out;

const char *it_env(const char *name, const char *def);
const char *it_pwb(void);
const char *it_root(void);
/* $PWB_SHARED/models/tinystories-656k/TinyStories-656K-Q8_0.gguf into out; 0 when it is there. */
int it_tiny_model(char *out, size_t cap);
/* A fresh folder under $TMPDIR; removed (recursively) by it_rmtree. */
char *it_tmpdir(void);
void it_rmtree(const char *path);
/* "dir/name" (malloc'd). */
char *it_path(const char *dir, const char *name);
void it_write(const char *path, const char *text);
char *it_read(const char *path); /* NULL when missing */
int it_exists(const char *path);
/* sha256 hex of a file, "" when missing. */
void it_sha256(const char *path, char out[65]);

/* Runs argv (NULL-terminated) in the repository root, waits, captures output. */
proc_out it_run(const char *const *argv);
/* it_run with no file written past max_file bytes (> 0): writes beyond fail as on a full disk. */
proc_out it_run_limited(const char *const *argv, long max_file);
/* Starts argv in the background (output to the files, may be NULL). */
pid_t it_spawn(const char *const *argv, const char *out_path, const char *err_path);
/* Waits for a spawned process: exit code or 128 + signal. */
int it_wait(pid_t pid);
void proc_out_free(proc_out *p);

typedef struct fake_llm {
    pid_t pid;
    int port;
    char base_url[64];
    char out_path[512];
} fake_llm;

/* Starts fakellm on port 0 with the extra arguments (NULL-terminated) and reads its port. */
int fake_start(fake_llm *f, const char *dir, const char *const *extra);
void fake_stop(fake_llm *f);

/* A suite with one dataset and one fakellm model over the methods "name=template" (NULL-terminated). */
char *it_suite(const char *dir, const char *file, const char *dataset, const char *split, long limit,
               const fake_llm *f, int concurrency, int max_retries, const char *const *methods);

/* One integer from SQL over the database (read-only sqlite3), -1 on error. */
long it_sql_long(const char *db, const char *sql);
/* The first column of the first row as text (malloc'd), NULL on error. */
char *it_sql_text(const char *db, const char *sql);

#endif
