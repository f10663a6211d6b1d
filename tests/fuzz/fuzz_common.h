/* Shared by the loader harnesses: the input goes to a per-process temp file (tmpfs when
 * there is one) because the loaders take paths; every rejection must name the file. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static char fz_dir[256];

/* A private directory (removed at exit) */
static void fz_rmdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", fz_dir);
}

static const char *fz_tmpdir(void)
{
    if (!fz_dir[0]) {
        struct stat st;
        const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        snprintf(fz_dir, sizeof fz_dir, "%s/cg_fuzz_XXXXXX", base);
        if (!mkdtemp(fz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fz_rmdir);
    }
    return fz_dir;
}

/* dir/name, in a static buffer (one of 4) */
static const char *fz_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", fz_tmpdir(), name);
    return buf[k];
}

static void fz_write(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* a rejection names the file (its basename at least) and says something */
static void fz_check_msg(const cg_err *e, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!e->msg[0] || !strstr(e->msg, base)) {
        fprintf(stderr, "fuzz: error message does not name %s: '%s'\n", base, e->msg);
        abort();
    }
}


/* ---- npz inputs with valid zip structure ----
 * libFuzzer cannot fix up zip CRCs, so a mutated member rarely gets past the zip layer.
 * The "member list" form lets it reach what is inside: records separated by FZ_SEP, each
 * "name\n" followed by the member's bytes; fz_build_npz writes them as a stored zip. */
#include <zip.h>

#define FZ_SEP "@@member@@"

static int fz_build_npz(const char *path, const uint8_t *data, size_t size)
{
    int code = 0;
    remove(path);
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &code);
    if (!za)
        abort();
    const size_t sl = strlen(FZ_SEP);
    size_t at = 0;
    int members = 0;
    while (at < size && members < 64) {
        const uint8_t *end = memmem(data + at, size - at, FZ_SEP, sl);
        size_t rlen = end ? (size_t)(end - (data + at)) : size - at;
        const uint8_t *nl = memchr(data + at, '\n', rlen);
        if (nl) {
            char name[256];
            size_t nlen = (size_t)(nl - (data + at));
            if (nlen > 0 && nlen < sizeof name && !memchr(data + at, 0, nlen)) {
                memcpy(name, data + at, nlen);
                name[nlen] = 0;
                zip_source_t *src = zip_source_buffer(za, nl + 1, rlen - nlen - 1, 0);
                zip_int64_t idx = src ? zip_file_add(za, name, src, ZIP_FL_ENC_UTF_8) : -1;
                if (idx < 0) {
                    if (src)
                        zip_source_free(src);
                } else {
                    zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0);
                    members++;
                }
            }
        }
        at += rlen + (end ? sl : 0);
    }
    if (members == 0) {
        zip_discard(za);
        static const unsigned char eocd[22] = {'P', 'K', 5, 6};
        fz_write(path, eocd, sizeof eocd);
        return 0;
    }
    if (zip_close(za) != 0) {
        zip_discard(za);
        return -1;
    }
    return members;
}

/* the reverse, for seeds: a .npz file as a member list (stdout) */
static void fz_npz_to_list(const char *npz, FILE *out)
{
    int code = 0;
    zip_t *za = zip_open(npz, ZIP_RDONLY, &code);
    if (!za)
        exit(1);
    zip_int64_t n = zip_get_num_entries(za, 0);
    for (zip_int64_t i = 0; i < n; i++) {
        zip_stat_t st;
        zip_stat_index(za, (zip_uint64_t)i, 0, &st);
        unsigned char *b = malloc(st.size + 1);
        zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
        zip_fread(zf, b, st.size);
        zip_fclose(zf);
        if (i)
            fputs(FZ_SEP, out);
        fprintf(out, "%s\n", st.name);
        fwrite(b, 1, st.size, out);
        free(b);
    }
    zip_discard(za);
}
#endif
