/* cnngen runtime: error reporting, checked allocation/IO helpers, seeded PRNG. */
#ifndef CG_UTIL_H
#define CG_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error sink passed explicitly to every fallible runtime function. Functions return 0 on
 * success and -1 on failure with a message (naming the file and the problem) in msg. */
typedef struct cg_err {
    char msg[1024];
} cg_err;

#if defined(__GNUC__) || defined(__clang__)
#define CG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CG_NORETURN __attribute__((noreturn))
#else
#define CG_PRINTF(a, b)
#define CG_NORETURN
#endif

/* Format into err (if not NULL); always returns -1 so callers can `return cg_fail(...)`. */
int cg_fail(cg_err *err, const char *fmt, ...) CG_PRINTF(2, 3);

/* Print "cnngen: <msg>" to stderr and exit(code). */
CG_NORETURN void cg_die(int code, const char *fmt, ...) CG_PRINTF(2, 3);

/* Allocation that exits(1) with a message naming `what` on failure or size overflow.
 * For the trainer's own buffers; loaders use cg_try_alloc and return errors instead.
 * Every block is aligned to CG_ALIGN bytes (a cache line) and released with free(). */
#define CG_ALIGN 64
void *cg_xmalloc(size_t count, size_t elem, const char *what);
void *cg_xcalloc(size_t count, size_t elem, const char *what);
char *cg_xstrdup(const char *s);
/* Non-exiting: NULL + err message on failure / overflow. */
void *cg_try_alloc(size_t count, size_t elem, const char *what, cg_err *err);

/* fopen with a message "PATH: cannot open for reading|writing: reason". */
FILE *cg_fopen(const char *path, const char *mode, cg_err *err);
/* Read a whole file into a malloc'd buffer. */
int cg_read_file(const char *path, unsigned char **buf, size_t *len, cg_err *err);
/* A temporary name next to path, unique to this process and call:
 * "path.tmp.PID.N" (two writers of the same file never share one). */
int cg_tmp_name(char *tmp, size_t cap, const char *path, cg_err *err);
/* Atomically replace `path` with `len` bytes: write a cg_tmp_name, fsync, rename. */
int cg_write_file_atomic(const char *path, const void *buf, size_t len, cg_err *err);
/* fsync an existing file by path (used after libzip wrote it). */
int cg_fsync_path(const char *path, cg_err *err);
/* Join dir and name with '/' into out (size cap); error if too long. */
int cg_path_join(char *out, size_t cap, const char *dir, const char *name, cg_err *err);

/* Checked size arithmetic: return 0 on overflow. */
int cg_mul_size(size_t a, size_t b, size_t *out);

/* xoshiro256** seeded through splitmix64. State is passed explicitly (no globals). */
typedef struct cg_rng {
    uint64_t s[4];
} cg_rng;
void cg_rng_seed(cg_rng *r, uint64_t seed);
uint64_t cg_rng_next(cg_rng *r);
float cg_rng_uniform(cg_rng *r);              /* [0, 1) with 24 random bits */
uint64_t cg_rng_below(cg_rng *r, uint64_t n); /* uniform in [0, n), n > 0, unbiased */

#ifdef __cplusplus
}
#endif

#endif
