/* Check suite for the compiler (build/cnngen) as a black box: malformed specs in
 * tests/bad/, the command line, and properties of the emitted C.
 *
 * Every tests/bad/NAME.yaml starts with "# expect: <substring of stderr>" (with
 * file:line:col); further "# expect: ..." lines anywhere in the file must also be
 * present, and "# expect-count: N" requires exactly N "file:line:col:" diagnostics.
 * The compiler runs via posix_spawn (no shell) with stdout/stderr in temp files.
 * Tests run from the repository root; CNNGEN_BIN is "build/cnngen". */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CNNGEN_BIN
#define CNNGEN_BIN "build/cnngen"
#endif
#define BAD_DIR "tests/bad"

extern char **environ;

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    int status;   /* exit status, or 128 + signal */
    int signaled;
    char *out, *err;
    size_t out_len, err_len;
    double secs;
} run_result;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s: %s", path, strerror(errno));
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Run CNNGEN_BIN with args (NULL-terminated, without argv[0]). */
static void run_cnngen(run_result *r, const char *const *args)
{
    char outp[] = "/tmp/cnngen_check_out_XXXXXX", errp[] = "/tmp/cnngen_check_err_XXXXXX";
    int ofd = mkstemp(outp), efd = mkstemp(errp);
    ck_assert_msg(ofd >= 0 && efd >= 0, "mkstemp: %s", strerror(errno));
    const char *argv[64];
    int argc = 0;
    argv[argc++] = CNNGEN_BIN;
    for (int i = 0; args[i]; i++) {
        ck_assert_int_lt(argc, 62);
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, ofd, 1);
    posix_spawn_file_actions_adddup2(&fa, efd, 2);
    double t0 = now();
    pid_t pid;
    int rc = posix_spawn(&pid, CNNGEN_BIN, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    ck_assert_msg(rc == 0, "cannot run %s: %s (run the tests from the repository root after make)",
                  CNNGEN_BIN, strerror(rc));
    int st;
    while (waitpid(pid, &st, 0) < 0)
        ck_assert_msg(errno == EINTR, "waitpid: %s", strerror(errno));
    r->secs = now() - t0;
    close(ofd);
    close(efd);
    r->signaled = WIFSIGNALED(st);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = slurp(outp, &r->out_len);
    r->err = slurp(errp, &r->err_len);
    unlink(outp);
    unlink(errp);
    ck_assert_ptr_nonnull(r->out);
    ck_assert_ptr_nonnull(r->err);
}

static void free_result(run_result *r)
{
    free(r->out);
    free(r->err);
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/cnngen_check_dir_XXXXXX";
    char *d = mkdtemp(tmpl);
    ck_assert_msg(d != NULL, "mkdtemp: %s", strerror(errno));
    return strdup(d);
}

/* Names in dir (sorted, without . and ..), joined by ' '; "" when empty. */
static char *dir_listing(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 256) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(names[i]) + 1;
    char *s = calloc(len, 1);
    for (int i = 0; i < n; i++) {
        if (i) strcat(s, " ");
        strcat(s, names[i]);
        free(names[i]);
    }
    return s;
}

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Clean diagnostics: no traces of the implementation leaking out. */
static void assert_clean_stderr(const char *what, const run_result *r)
{
    static const char *const bad[] = {"internal error", "traceback", "stack traceback", ".lua:",
                                      "attempt to ", "(null)", "nil value", NULL};
    for (int i = 0; bad[i]; i++)
        ck_assert_msg(strstr(r->err, bad[i]) == NULL,
                      "%s: stderr contains \"%s\" (crash or leaked internal error); got:\n%s", what, bad[i], r->err);
    ck_assert_msg(!r->signaled, "%s: compiler killed by signal %d; stderr:\n%s", what, r->status - 128, r->err);
}

static uint64_t fnv1a64(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ------------------------------------------------------------------------ */
/* 1. malformed specs                                                       */
/* ------------------------------------------------------------------------ */

static char **bad_files;
static int n_bad;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void collect_bad_files(void)
{
    DIR *d = opendir(BAD_DIR);
    if (!d) return;
    struct dirent *e;
    int cap = 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".yaml") != 0) continue;
        if (n_bad == cap) {
            cap = cap ? 2 * cap : 64;
            bad_files = realloc(bad_files, sizeof *bad_files * (size_t)cap);
        }
        bad_files[n_bad++] = strdup(e->d_name);
    }
    closedir(d);
    if (n_bad) qsort(bad_files, (size_t)n_bad, sizeof *bad_files, cmp_str);
}

START_TEST(test_bad_dir_populated)
{
    ck_assert_msg(n_bad >= 25, "expected at least 25 specs in " BAD_DIR "/*.yaml, found %d", n_bad);
}
END_TEST

/* Line `ln` (1-based) of text, malloc'd, or NULL. */
static char *nth_line(const char *text, long ln)
{
    const char *p = text;
    for (long i = 1; i < ln; i++) {
        p = strchr(p, '\n');
        if (!p) return NULL;
        p++;
    }
    const char *q = strchr(p, '\n');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    if (!q && n == 0 && ln > 1) return NULL;
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Where expect occurs in a diagnostic of stderr (not in an echoed source line,
 * which starts with two spaces): expectations naming the file must start a line,
 * others may be anywhere in a message line. NULL when absent. */
static const char *find_diag(const char *err, const char *path, const char *expect)
{
    int anchored = strncmp(expect, path, strlen(path)) == 0;
    size_t el = strlen(expect);
    for (const char *p = err; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, "  ", 2) == 0) continue;
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (anchored) {
            if (n >= el && strncmp(p, expect, el) == 0) return p;
        } else {
            char *l = strndup(p, n);
            char *f = strstr(l, expect);
            const char *r = f ? p + (f - l) : NULL;
            free(l);
            if (r) return r;
        }
    }
    return NULL;
}

/* Given an expected "PATH:L:C: msg" found in stderr, check the two lines after it:
 * the source line L indented by two spaces, and a caret under column C. */
static void check_caret(const char *path, const char *spec_text, const char *err, const char *expect)
{
    size_t pl = strlen(path);
    long line, col;
    if (strncmp(expect, path, pl) != 0 || sscanf(expect + pl, ":%ld:%ld:", &line, &col) != 2) return;
    const char *at = find_diag(err, path, expect);
    if (!at) return;
    const char *l1 = strchr(at, '\n');
    ck_assert_msg(l1 != NULL, "%s: no source line after the message; stderr:\n%s", path, err);
    l1++;
    const char *l2 = strchr(l1, '\n');
    ck_assert_msg(l2 != NULL, "%s: no caret line after the source line; stderr:\n%s", path, err);
    l2++;
    const char *l3 = strchr(l2, '\n');
    size_t n1 = (size_t)(l2 - 1 - l1), n2 = l3 ? (size_t)(l3 - l2) : strlen(l2);
    char *src = nth_line(spec_text, line);
    ck_assert_msg(src != NULL, "%s: message names line %ld, the file has fewer lines", path, line);
    int printable = 1;
    for (char *c = src; *c; c++) {
        if (*c == '\t') *c = ' ';
        else if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) printable = 0;
    }
    if (printable) {
        ck_assert_msg(n1 == strlen(src) + 2 && strncmp(l1, "  ", 2) == 0 && strncmp(l1 + 2, src, strlen(src)) == 0,
                      "%s: after \"%s\" expected the source line \"  %s\", got \"%.*s\"", path, expect, src, (int)n1, l1);
    }
    free(src);
    int ok = n2 == (size_t)col + 2 && l2[n2 - 1] == '^';
    for (size_t i = 0; ok && i + 1 < n2; i++) ok = l2[i] == ' ';
    ck_assert_msg(ok, "%s: expected a caret at column %ld under the source line, got \"%.*s\"", path, col, (int)n2, l2);
}

START_TEST(test_bad_spec)
{
    ck_assert_int_lt(_i, n_bad);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", BAD_DIR, bad_files[_i]);
    size_t text_len;
    char *text = slurp(path, &text_len);
    ck_assert_msg(text != NULL, "cannot read %s", path);
    ck_assert_msg(strncmp(text, "# expect: ", 10) == 0, "%s: first line must be '# expect: <stderr substring>'", path);

    /* every "# expect: " line, and "# expect-count: N" */
    char *expects[64];
    int n_exp = 0;
    long want_count = -1;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 10 && strncmp(p, "# expect: ", 10) == 0 && n_exp < 64) {
            expects[n_exp] = strndup(p + 10, n - 10);
            n_exp++;
        } else if (strncmp(p, "# expect-count: ", 16) == 0) {
            want_count = strtol(p + 16, NULL, 10);
        }
    }
    ck_assert_msg(strncmp(expects[0], path, strlen(path)) == 0,
                  "%s: the first expectation must start with the file name, got \"%s\"", path, expects[0]);

    char *dir = make_tmpdir();
    run_result r;
    run_cnngen(&r, (const char *const[]){path, "-o", dir, NULL});
    char *left = dir_listing(dir);
    rm_tree(dir);

    assert_clean_stderr(path, &r);
    ck_assert_msg(r.status == 1, "%s: exit status %d, expected 1 (spec error); stdout:\n%s\nstderr:\n%s",
                  path, r.status, r.out, r.err);
    for (int i = 0; i < n_exp; i++)
        ck_assert_msg(find_diag(r.err, path, expects[i]) != NULL, "%s: stderr lacks the expected\n  %s\ngot:\n%s",
                      path, expects[i], r.err);
    ck_assert_msg(left[0] == '\0', "%s: files were written despite the error: %s", path, left);
    ck_assert_msg(r.out_len == 0, "%s: stdout should be empty on error, got:\n%s", path, r.out);
    for (int i = 0; i < n_exp; i++) check_caret(path, text, r.err, expects[i]);
    if (want_count >= 0) {
        long n = 0;
        size_t pl = strlen(path);
        for (const char *p = r.err; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
            if (strncmp(p, path, pl) == 0 && p[pl] == ':' && isdigit((unsigned char)p[pl + 1])) n++;
        ck_assert_msg(n == want_count, "%s: expected %ld diagnostics, got %ld:\n%s", path, want_count, n, r.err);
    }
    for (int i = 0; i < n_exp; i++) free(expects[i]);
    free(left);
    free(dir);
    free(text);
    free_result(&r);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 2. command line                                                          */
/* ------------------------------------------------------------------------ */

#define RUN(r, ...) run_cnngen(&(r), (const char *const[]){__VA_ARGS__, NULL})
#define RUN0(r) run_cnngen(&(r), (const char *const[]){NULL})

static void expect_status(const char *what, const run_result *r, int want)
{
    assert_clean_stderr(what, r);
    ck_assert_msg(r->status == want, "%s: exit status %d, expected %d; stdout:\n%s\nstderr:\n%s",
                  what, r->status, want, r->out, r->err);
}

START_TEST(test_cli_help)
{
    run_result r;
    RUN(r, "--help");
    expect_status("cnngen --help", &r, 0);
    ck_assert_msg(strstr(r.out, "usage") != NULL, "cnngen --help: stdout lacks \"usage\", got:\n%s", r.out);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_version)
{
    run_result r;
    RUN(r, "--version");
    expect_status("cnngen --version", &r, 0);
    ck_assert_msg(strncmp(r.out, "cnngen ", 7) == 0 && r.out_len > 8,
                  "cnngen --version: expected \"cnngen <version>\", got \"%s\"", r.out);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_no_args)
{
    run_result r;
    RUN0(r);
    expect_status("cnngen (no arguments)", &r, 2);
    ck_assert_msg(strstr(r.err, "usage") != NULL, "cnngen (no arguments): stderr lacks usage, got:\n%s", r.err);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_unknown_option)
{
    run_result r;
    RUN(r, "--frobnicate", "specs/lenet5.yaml");
    expect_status("cnngen --frobnicate", &r, 2);
    ck_assert_msg(strstr(r.err, "--frobnicate") != NULL, "cnngen --frobnicate: stderr does not name the option:\n%s",
                  r.err);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_two_specs)
{
    run_result r;
    RUN(r, "specs/lenet5.yaml", "specs/lecture_conv1d.yaml");
    expect_status("cnngen SPEC SPEC", &r, 2);
    free_result(&r);
}
END_TEST

/* --team T: a count from 1 to 64; a replica's batch, ceil(batch / T), must reach the
 * batch-innermost layout (16), else an error at the spec naming --team and the numbers */
START_TEST(test_cli_team)
{
    run_result r;
    RUN(r, "--team", "0", "tests/nets/t_team_resbn_ln.yaml", "--check");
    expect_status("cnngen --team 0", &r, 2);
    ck_assert_msg(strstr(r.err, "--team") != NULL, "cnngen --team 0: stderr does not name the option:\n%s", r.err);
    free_result(&r);
    RUN(r, "--team", "x2", "tests/nets/t_team_resbn_ln.yaml", "--check");
    expect_status("cnngen --team x2", &r, 2);
    free_result(&r);
    RUN(r, "--team", "3", "tests/nets/t_team_resbn_ln.yaml", "--check");
    expect_status("cnngen --team 3 (batch 34: 12 a replica)", &r, 1);
    ck_assert_msg(strstr(r.err, "t_team_resbn_ln.yaml:23:") && strstr(r.err, "ceil(train.batch 34 / 3) = 12"),
                  "cnngen --team 3: stderr does not point at train.batch (line 23) and name the replica batch:\n%s",
                  r.err);
    free_result(&r);
    RUN(r, "--team", "2", "tests/nets/t_team_resbn_ln.yaml", "--check");
    expect_status("cnngen --team 2 (batch 34: 17 a replica)", &r, 0);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_o_without_dir)
{
    run_result r;
    RUN(r, "specs/lenet5.yaml", "-o");
    expect_status("cnngen SPEC -o", &r, 2);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_missing_file)
{
    run_result r;
    RUN(r, "tests/no_such_spec.yaml");
    expect_status("cnngen tests/no_such_spec.yaml", &r, 1);
    ck_assert_msg(strstr(r.err, "tests/no_such_spec.yaml") != NULL,
                  "cnngen tests/no_such_spec.yaml: message does not name the file:\n%s", r.err);
    free_result(&r);
}
END_TEST

/* -o beneath a regular file cannot be created (even by root): error naming it, nothing left */
START_TEST(test_cli_bad_outdir)
{
    char *dir = make_tmpdir();
    char f[512], d[600];
    snprintf(f, sizeof f, "%s/plainfile", dir);
    write_file(f, "x\n");
    snprintf(d, sizeof d, "%s/new/sub", f);
    run_result r;
    RUN(r, "specs/lecture_conv1d.yaml", "-o", d);
    char *left = dir_listing(dir);
    rm_tree(dir);
    expect_status("cnngen -o FILE/new/sub", &r, 1);
    ck_assert_msg(strstr(r.err, d) != NULL, "cnngen -o %s: message does not name the directory:\n%s", d, r.err);
    ck_assert_msg(r.out_len == 0, "cnngen -o %s: printed a path although nothing was written: %s", d, r.out);
    ck_assert_msg(strcmp(left, "plainfile") == 0, "cnngen -o FILE/new/sub: left behind: %s", left);
    free(left);
    free(dir);
    free_result(&r);
}
END_TEST

/* -o "" is an error (it used to write into /), exit 1, nothing written */
START_TEST(test_cli_empty_outdir)
{
    int before = access("/lecture_conv1d.c", F_OK) == 0 || access("/lecture_conv1d.h", F_OK) == 0;
    run_result r;
    RUN(r, "specs/lecture_conv1d.yaml", "-o", "");
    expect_status("cnngen -o ''", &r, 1);
    ck_assert_msg(strstr(r.err, "-o ''") && strstr(r.err, "empty"), "cnngen -o '': unclear message:\n%s", r.err);
    ck_assert_msg(r.out_len == 0, "cnngen -o '': printed %s", r.out);
    ck_assert_msg(before || (access("/lecture_conv1d.c", F_OK) != 0 && access("/lecture_conv1d.h", F_OK) != 0),
                  "cnngen -o '' wrote into /");
    free_result(&r);
}
END_TEST

/* -o DIR creates DIR and its missing parents (mkdir -p); a trailing slash is fine */
START_TEST(test_cli_outdir_created)
{
    char *dir = make_tmpdir();
    char d[600], sub[600];
    snprintf(d, sizeof d, "%s/a/b/", dir);
    run_result r;
    RUN(r, "specs/lecture_conv1d.yaml", "-o", d);
    expect_status("cnngen -o DIR/a/b/", &r, 0);
    char want[700];
    snprintf(want, sizeof want, "%slecture_conv1d.c\n", d);
    ck_assert_msg(strcmp(r.out, want) == 0, "cnngen -o DIR/a/b/: printed \"%s\", expected \"%s\"", r.out, want);
    char *left = dir_listing(d);
    ck_assert_msg(strcmp(left, "lecture_conv1d.c lecture_conv1d.h") == 0, "DIR/a/b holds: %s", left);
    free(left);
    rm_tree(d);
    snprintf(sub, sizeof sub, "%s/a", dir);
    rmdir(sub);
    rmdir(dir);
    free(dir);
    free_result(&r);
}
END_TEST

/* --inference -o DIR creates DIR and its parents too (it wrote into a missing directory's
 * path and failed); beneath a regular file: error naming it, nothing left; -o '' an error */
START_TEST(test_cli_infer_outdir_created)
{
    char *dir = make_tmpdir();
    char d[600], sub[600], bad[700];
    snprintf(d, sizeof d, "%s/a/b", dir);
    run_result r;
    RUN(r, "specs/lecture_conv1d.yaml", "--inference", "-o", d);
    expect_status("cnngen --inference -o DIR/a/b", &r, 0);
    char want[700];
    snprintf(want, sizeof want, "%s/lecture_conv1d_infer.c\n", d);
    ck_assert_msg(strcmp(r.out, want) == 0, "cnngen --inference -o DIR/a/b: printed \"%s\", expected \"%s\"", r.out, want);
    char *left = dir_listing(d);
    ck_assert_msg(strcmp(left, "lecture_conv1d_infer.c lecture_conv1d_infer.h") == 0, "DIR/a/b holds: %s", left);
    free(left);
    free_result(&r);
    snprintf(bad, sizeof bad, "%s/lecture_conv1d_infer.c/x", d);
    RUN(r, "specs/lecture_conv1d.yaml", "--inference", "-o", bad);
    expect_status("cnngen --inference -o FILE/x", &r, 1);
    ck_assert_msg(strstr(r.err, bad) != NULL, "cnngen --inference -o %s: message does not name it:\n%s", bad, r.err);
    ck_assert_msg(r.out_len == 0, "cnngen --inference -o FILE/x: printed %s", r.out);
    free_result(&r);
    /* -o '': an error (it wrote into /) */
    RUN(r, "specs/lecture_conv1d.yaml", "--inference", "-o", "");
    expect_status("cnngen --inference -o ''", &r, 1);
    ck_assert_msg(strstr(r.err, "-o ''") && strstr(r.err, "empty"), "cnngen --inference -o '': unclear message:\n%s", r.err);
    rm_tree(d);
    snprintf(sub, sizeof sub, "%s/a", dir);
    rmdir(sub);
    rmdir(dir);
    free(dir);
    free_result(&r);
}
END_TEST

/* -o naming a regular file: error, and nothing (no .tmp either) left next to it */
START_TEST(test_cli_outdir_is_file)
{
    char *dir = make_tmpdir();
    char f[512];
    snprintf(f, sizeof f, "%s/plainfile", dir);
    write_file(f, "x\n");
    run_result r;
    RUN(r, "specs/lecture_conv1d.yaml", "-o", f);
    char *left = dir_listing(dir);
    rm_tree(dir);
    expect_status("cnngen -o <regular file>", &r, 1);
    ck_assert_msg(strcmp(left, "plainfile") == 0, "cnngen -o <regular file>: left behind: %s", left);
    free(left);
    free(dir);
    free_result(&r);
}
END_TEST

static char *read_generated(const char *dir, const char *file, size_t *len)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    char *s = slurp(p, len);
    ck_assert_msg(s != NULL, "cannot read generated %s", p);
    return s;
}

/* A wisdom file's team line (make tune's bench/tune.py --decide-team): "isa, the network's
 * signature (cnngen --net-signature), team=T" makes the team's code without --team;
 * team=1, --team 1, another network's line, or a batch too small for the team: plain */
static char *gen_header(const char *dir, const char *wisdom, const char *team)
{
    run_result r;
    if (team)
        RUN(r, "--target", "avx512", "--wisdom", wisdom, "--team", team, "tests/nets/t_team_resbn_ln.yaml", "-o", dir);
    else
        RUN(r, "--target", "avx512", "--wisdom", wisdom, "tests/nets/t_team_resbn_ln.yaml", "-o", dir);
    expect_status("cnngen --wisdom (a team line)", &r, 0);
    free_result(&r);
    return read_generated(dir, "t_team_resbn_ln.h", NULL);
}

START_TEST(test_cli_team_wisdom)
{
    char *dir = make_tmpdir();
    char w[600], line[400];
    snprintf(w, sizeof w, "%s/wisdom.tsv", dir);
    run_result r;
    RUN(r, "--net-signature", "tests/nets/t_team_resbn_ln.yaml");
    expect_status("cnngen --net-signature", &r, 0);
    ck_assert_msg(!strncmp(r.out, "net:t_team_resbn_ln:b34:", 24) && strlen(r.out) == 24 + 16 + 1,
                  "cnngen --net-signature: expected net:NAME:bBATCH:<16 hex digits>, got %s", r.out);
    r.out[strlen(r.out) - 1] = '\0';
    const char *team_macro = "T_TEAM_RESBN_LN_BATCH 17 /* largest batch forward/backward accept: one replica's of a team of 2 (make tune's wisdom)";
    const char *plain_macro = "T_TEAM_RESBN_LN_BATCH 34 /* largest batch forward/backward accept */";
    struct { const char *value, *sig, *team, *macro; } cases[] = {
        {"team=2", r.out, NULL, team_macro},
        {"team=1", r.out, NULL, plain_macro},
        {"team=2", r.out, "1", plain_macro},                                /* --team 1 overrides */
        {"team=3", r.out, NULL, plain_macro},                               /* 12 a replica: too few */
        {"team=0", r.out, NULL, plain_macro},                               /* no team of 0 */
        {"team=2", "net:t_team_resbn_ln:b34:0123456789abcdef", NULL, plain_macro}, /* an edited net's */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(line, sizeof line, "avx512\t%s\t%s\n", cases[i].sig, cases[i].value);
        write_file(w, line);
        char *h = gen_header(dir, w, cases[i].team);
        ck_assert_msg(strstr(h, cases[i].macro) != NULL, "wisdom line %s, --team %s: the header lacks \"%s\"", line,
                      cases[i].team ? cases[i].team : "(none)", cases[i].macro);
        ck_assert_msg((strstr(h, "_forward_team") != NULL) == (cases[i].macro == team_macro),
                      "wisdom line %s: team entry points %s", line, cases[i].macro == team_macro ? "missing" : "present");
        free(h);
    }
    free_result(&r);
    rm_tree(dir);
    free(dir);
}
END_TEST

/* A truly empty file (the tests/bad/empty.yaml has its expect comment) */
START_TEST(test_cli_empty_file)
{
    char *dir = make_tmpdir();
    char spec[512];
    snprintf(spec, sizeof spec, "%s/empty.yaml", dir);
    write_file(spec, "");
    run_result r;
    RUN(r, spec, "-o", dir);
    char *left = dir_listing(dir);
    rm_tree(dir);
    expect_status("cnngen <empty file>", &r, 1);
    char want[600];
    snprintf(want, sizeof want, "%s:1:1: empty document", spec);
    ck_assert_msg(strstr(r.err, want) != NULL, "cnngen <empty file>: expected \"%s\", got:\n%s", want, r.err);
    ck_assert_msg(strcmp(left, "empty.yaml") == 0, "cnngen <empty file>: wrote files: %s", left);
    free(left);
    free(dir);
    free_result(&r);
}
END_TEST

/* YAML limits apply while parsing: 40,000 and 200,000 levels of flow nesting (80 KB and
 * 400 KB, which libyaml's document loader took 9 s and more than 10 s over) are refused
 * at the 65th level, fast. */
START_TEST(test_cli_deep_nesting_fast)
{
    static const int levels[] = {40000, 200000};
    for (int k = 0; k < 2; k++) {
        char *dir = make_tmpdir();
        char spec[512];
        snprintf(spec, sizeof spec, "%s/deep.yaml", dir);
        int n = levels[k];
        char *text = malloc((size_t)2 * n + 64);
        ck_assert_ptr_nonnull(text);
        int len = sprintf(text, "name: ");
        memset(text + len, '[', n);
        memset(text + len + n, ']', n);
        strcpy(text + len + 2 * n, "\n");
        write_file(spec, text);
        free(text);
        run_result r;
        RUN(r, "--check", spec);
        rm_tree(dir);
        expect_status("cnngen <deep nesting>", &r, 1);
        ck_assert_msg(strstr(r.err, "YAML nested too deeply") != NULL, "deep nesting: got:\n%s", r.err);
        ck_assert_msg(r.secs < 2.0, "%d levels of nesting took %.3f s to refuse (libyaml's loader: 30 s for 40,000)", n, r.secs);
        free(dir);
        free_result(&r);
    }
}
END_TEST

/* A spec that never ends (/dev/zero) is refused by size, not by running out of memory. */
START_TEST(test_cli_dev_zero)
{
    run_result r;
    RUN(r, "--check", "/dev/zero");
    expect_status("cnngen /dev/zero", &r, 1);
    ck_assert_msg(strstr(r.err, "cnngen: /dev/zero: larger than 1,048,576 bytes") != NULL, "got:\n%s", r.err);
    free_result(&r);
}
END_TEST

/* Escape bytes of a spec (a double-quoted "\e" key) are shown escaped, never raw. */
START_TEST(test_cli_escapes_not_raw)
{
    char *dir = make_tmpdir();
    char spec[512];
    snprintf(spec, sizeof spec, "%s/esc.yaml", dir);
    write_file(spec, "name: x\ninput: [4]\nlayers: [relu]\n\"a\\e]0;pwned\\a\\e[31m\\x9b\": 1\nloss: mse\n");
    run_result r;
    RUN(r, "--check", spec);
    rm_tree(dir);
    expect_status("cnngen <escape bytes>", &r, 1);
    ck_assert_msg(strstr(r.err, "unknown key 'a\\x1b]0;pwned\\x07\\x1b[31m\\xc2\\x9b'") != NULL, "got:\n%s", r.err);
    for (size_t i = 0; i < r.err_len; i++)
        ck_assert_msg(r.err[i] == '\n' || (unsigned char)r.err[i] >= 32, "stderr has the control byte 0x%02x:\n%s",
                      (unsigned char)r.err[i], r.err);
    free(dir);
    free_result(&r);
}
END_TEST

/* A write that fails (file size limit: EFBIG, as a full disk gives ENOSPC) names the file
 * and leaves nothing behind. */
START_TEST(test_cli_write_error_names_file)
{
    char *dir = make_tmpdir();
    char out[600];
    snprintf(out, sizeof out, "%s/out", dir);
    signal(SIGXFSZ, SIG_IGN); /* inherited by the compiler: write() fails with EFBIG */
    struct rlimit rl = {16384, 16384};
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    run_result r;
    RUN(r, "specs/lenet5.yaml", "-o", out);
    char *left = dir_listing(dir);
    rm_tree(dir);
    expect_status("cnngen <file size limit>", &r, 1);
    char want[700];
    snprintf(want, sizeof want, "cannot write %s/lenet5.", out);
    ck_assert_msg(strstr(r.err, want) != NULL, "expected \"%s\", got:\n%s", want, r.err);
    ck_assert_msg(strcmp(left, "") == 0, "left behind: %s", left);
    free(left);
    free(dir);
    free_result(&r);
}
END_TEST

/* The spec path goes into C comments: a path containing the comment terminator
 * must not end the banner comment early (the .c would not compile). */
START_TEST(test_cli_path_comment_injection)
{
    char *dir = make_tmpdir();
    char sub[512], spec[600];
    snprintf(sub, sizeof sub, "%s/a*", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    snprintf(spec, sizeof spec, "%s/s.yaml", sub);
    write_file(spec, "name: star\ninput: [4]\nloss: mse\nlayers: [relu]\n");
    run_result r;
    RUN(r, spec, "-o", dir);
    expect_status("cnngen DIR/a*/s.yaml", &r, 0);
    char *c = read_generated(dir, "star.c", NULL);
    unlink(spec);
    rmdir(sub);
    rm_tree(dir);
    char *end = strstr(c, "*/");
    ck_assert_msg(end != NULL && strstr(c, "Do not edit") != NULL && strstr(c, "Do not edit") < end,
                  "spec path %s ends the banner comment early; star.c begins:\n%.300s", spec, c);
    /* a layer comment (its position line, then its schedule line) ends after the path */
    for (const char *p = strstr(c, "/* layer "); p; p = strstr(p + 1, "/* layer ")) {
        const char *e = strstr(p, "*/"), *nl = strchr(p, '\n'), *path = strstr(p, "s.yaml:");
        ck_assert_msg(e && nl && path && path < nl && e > nl && e[2] == '\n', "spec path %s breaks a layer comment: %.*s",
                      spec, (int)(nl ? nl - p : 80), p);
    }
    free(c);
    free(dir);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_summary_vgg16)
{
    run_result r;
    RUN(r, "--summary", "specs/vgg16.yaml");
    expect_status("cnngen --summary specs/vgg16.yaml", &r, 0);
    ck_assert_msg(strstr(r.out, "138,357,544") != NULL,
                  "cnngen --summary specs/vgg16.yaml: no 138,357,544 parameters in:\n%s", r.out);
    free_result(&r);
}
END_TEST

static int has_line_with(const char *text, const char *a, const char *b)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *l = strndup(p, n);
        int ok = strstr(l, a) && strstr(l, b);
        free(l);
        if (ok) return 1;
    }
    return 0;
}

START_TEST(test_cli_summary_conv1d)
{
    run_result r;
    RUN(r, "--summary", "specs/lecture_conv1d.yaml");
    expect_status("cnngen --summary specs/lecture_conv1d.yaml", &r, 0);
    ck_assert_msg(strstr(r.out, "Total params: 4\n") != NULL,
                  "--summary specs/lecture_conv1d.yaml: expected \"Total params: 4\", got:\n%s", r.out);
    ck_assert_msg(has_line_with(r.out, "conv1d", "1x8"),
                  "--summary specs/lecture_conv1d.yaml: no conv1d row with output 1x8 in:\n%s", r.out);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_summary_dense)
{
    char *dir = make_tmpdir();
    char spec[512];
    snprintf(spec, sizeof spec, "%s/dense10.yaml", dir);
    write_file(spec, "name: dense10\ninput: [10]\nloss: mse\nlayers:\n  - dense: {out: 8}\n");
    run_result r;
    RUN(r, "--summary", spec);
    rm_tree(dir);
    expect_status("cnngen --summary (dense 10 -> 8)", &r, 0);
    ck_assert_msg(strstr(r.out, "Total params: 88\n") != NULL,
                  "--summary dense 10 -> 8: expected \"Total params: 88\", got:\n%s", r.out);
    free(dir);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_check_writes_nothing)
{
    char *dir = make_tmpdir();
    run_result r;
    RUN(r, "--check", "specs/lenet5.yaml", "-o", dir);
    char *left = dir_listing(dir);
    rm_tree(dir);
    expect_status("cnngen --check specs/lenet5.yaml", &r, 0);
    ck_assert_msg(left[0] == '\0', "cnngen --check wrote files: %s", left);
    free(left);
    free(dir);
    free_result(&r);
}
END_TEST

START_TEST(test_cli_generate)
{
    char *dir = make_tmpdir();
    run_result r;
    RUN(r, "specs/lecture_conv1d.yaml", "-o", dir);
    char *left = dir_listing(dir);
    rm_tree(dir);
    expect_status("cnngen specs/lecture_conv1d.yaml -o DIR", &r, 0);
    ck_assert_msg(strcmp(left, "lecture_conv1d.c lecture_conv1d.h") == 0,
                  "generation should write exactly lecture_conv1d.c and .h, the directory holds: %s", left);
    char want[600];
    snprintf(want, sizeof want, "%s/lecture_conv1d.c\n", dir);
    ck_assert_msg(strcmp(r.out, want) == 0, "generation should print \"%s\", printed \"%s\"", want, r.out);
    ck_assert_msg(r.err_len == 0, "successful generation wrote to stderr:\n%s", r.err);
    free(left);
    free(dir);
    free_result(&r);
}
END_TEST


START_TEST(test_cli_deterministic)
{
    char *d1 = make_tmpdir(), *d2 = make_tmpdir();
    run_result r1, r2;
    RUN(r1, "specs/lenet5.yaml", "-o", d1);
    RUN(r2, "specs/lenet5.yaml", "-o", d2);
    expect_status("cnngen specs/lenet5.yaml (1st)", &r1, 0);
    expect_status("cnngen specs/lenet5.yaml (2nd)", &r2, 0);
    static const char *const files[] = {"lenet5.c", "lenet5.h"};
    for (int i = 0; i < 2; i++) {
        size_t n1, n2;
        char *a = read_generated(d1, files[i], &n1), *b = read_generated(d2, files[i], &n2);
        size_t k = 0;
        while (k < n1 && k < n2 && a[k] == b[k]) k++;
        ck_assert_msg(n1 == n2 && k == n1, "%s differs between two runs (sizes %zu and %zu, first difference at byte %zu)",
                      files[i], n1, n2, k);
        free(a);
        free(b);
    }
    rm_tree(d1);
    rm_tree(d2);
    free(d1);
    free(d2);
    free_result(&r1);
    free_result(&r2);
}
END_TEST

START_TEST(test_cli_banner)
{
    const char *spec = "specs/lenet5.yaml";
    size_t slen;
    char *stext = slurp(spec, &slen);
    ck_assert_ptr_nonnull(stext);
    char hash[32];
    snprintf(hash, sizeof hash, "fnv1a64 %016llx", (unsigned long long)fnv1a64(stext, slen));
    run_result v;
    RUN(v, "--version");
    char version[64];
    ck_assert_int_eq(sscanf(v.out, "cnngen %63s", version), 1);
    char *dir = make_tmpdir();
    run_result r;
    RUN(r, spec, "-o", dir);
    expect_status("cnngen specs/lenet5.yaml", &r, 0);
    static const char *const files[] = {"lenet5.c", "lenet5.h"};
    for (int i = 0; i < 2; i++) {
        char *g = read_generated(dir, files[i], NULL);
        char *end = strstr(g, "*/");
        ck_assert_msg(strncmp(g, "/*", 2) == 0 && end != NULL, "%s does not start with a comment", files[i]);
        *end = '\0';
        ck_assert_msg(strstr(g, spec) != NULL, "%s: header comment does not name %s:\n%s", files[i], spec, g);
        ck_assert_msg(strstr(g, hash) != NULL, "%s: header comment lacks \"%s\":\n%s", files[i], hash, g);
        ck_assert_msg(strstr(g, version) != NULL, "%s: header comment lacks generator version %s:\n%s", files[i],
                      version, g);
        free(g);
    }
    rm_tree(dir);
    free(dir);
    free(stext);
    free_result(&v);
    free_result(&r);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 3. generated code                                                        */
/* ------------------------------------------------------------------------ */

/* Generate spec into a fresh temp dir; returns the .c text (dir removed). */
static char *generate(const char *spec, const char *name, size_t *len, double *secs)
{
    char *dir = make_tmpdir();
    run_result r;
    RUN(r, spec, "-o", dir);
    expect_status(spec, &r, 0);
    char file[300];
    snprintf(file, sizeof file, "%s.c", name);
    char *c = read_generated(dir, file, len);
    if (secs) *secs = r.secs;
    rm_tree(dir);
    free(dir);
    free_result(&r);
    return c;
}

/* Body (from the opening brace to the matching close) of the function whose
 * definition starts at sig; malloc'd, comments replaced by spaces. */
static char *function_body(const char *sig)
{
    const char *open = strchr(sig, '{');
    ck_assert_ptr_nonnull(open);
    int depth = 0;
    const char *p = open;
    for (; *p; p++) {
        if (*p == '{') depth++;
        else if (*p == '}' && --depth == 0) break;
    }
    ck_assert_msg(*p == '}', "unbalanced braces after %.60s", sig);
    size_t n = (size_t)(p - open + 1);
    char *b = strndup(open, n);
    for (char *q = b; *q; q++) {
        if (q[0] == '/' && q[1] == '*') {
            char *e = strstr(q + 2, "*/");
            char *stop = e ? e + 2 : q + strlen(q);
            memset(q, ' ', (size_t)(stop - q));
            q = stop - 1;
        }
    }
    return b;
}

/* the first place at or after from where w stands in s as a word (not inside a longer
 * identifier), or NULL */
static const char *find_word(const char *s, const char *from, const char *w)
{
    size_t wl = strlen(w);
    for (const char *p = strstr(from, w); p; p = strstr(p + 1, w)) {
        int before = p > s && (isalnum((unsigned char)p[-1]) || p[-1] == '_');
        int after = isalnum((unsigned char)p[wl]) || p[wl] == '_';
        if (!before && !after) return p;
    }
    return NULL;
}

static int count_word(const char *s, const char *w)
{
    int n = 0;
    for (const char *p = find_word(s, s, w); p; p = find_word(s, p + 1, w)) n++;
    return n;
}

/* the text a failure message quotes: from 400 characters before p in s (s if p is NULL);
 * Check exits with status 2 on a message over 4 KiB, so the messages take 1000 of it */
static const char *quote_at(const char *s, const char *p)
{
    return p && p - s > 400 ? p - 400 : s;
}

static int count_str(const char *s, const char *w)
{
    int n = 0;
    for (const char *p = strstr(s, w); p; p = strstr(p + 1, w)) n++;
    return n;
}

static char *function_name(const char *sig)
{
    const char *p = sig + strlen("static void ");
    const char *e = strchr(p, '(');
    return strndup(p, (size_t)(e - p));
}

START_TEST(test_gen_conv1d_straight_line)
{
    char *c = generate("specs/lecture_conv1d.yaml", "lecture_conv1d", NULL, NULL);
    int nfn = 0;
    for (const char *p = strstr(c, "static void l00_"); p; p = strstr(p + 1, "static void l00_")) {
        char *name = function_name(p);
        char *b = function_body(p);
        int loops = count_word(b, "for"), batch = count_str(b, "for (int n = 0; n < nb; n++)");
        ck_assert_msg(loops == batch && batch <= 1,
                      "lecture_conv1d.c %s: only the batch loop is allowed, found %d for-loops:\n%s", name, loops, b);
        ck_assert_msg(count_word(b, "while") == 0 && count_word(b, "if") == 0,
                      "lecture_conv1d.c %s: contains while/if:\n%s", name, b);
        free(name);
        free(b);
        nfn++;
    }
    ck_assert_msg(nfn >= 2, "lecture_conv1d.c: expected forward and backward 'static void l00_' functions, found %d", nfn);
    free(c);
}
END_TEST

/* pad3.yaml (one padded 3x3 conv) generated with the schedule `form` forced through a
 * wisdom file (NULL: the heuristic's); `listed`: form must be one of --schedules' */
static char *gen_pad3(const char *form, int listed)
{
    char *dir = make_tmpdir();
    char spec[512];
    snprintf(spec, sizeof spec, "%s/pad3.yaml", dir);
    write_file(spec, "name: pad3\ninput: [8, 32, 32]\nloss: mse\nlayers:\n"
                     "  - conv2d: {out: 8, kernel: 3, padding: 1}\n");
    char wisdom[600];
    if (form) {
        /* the layer's signature (second field of its --schedules line), both ISAs */
        run_result r;
        RUN(r, spec, "--schedules");
        expect_status(spec, &r, 0);
        char *tab = strchr(r.out, '\t');
        ck_assert_ptr_nonnull(tab);
        size_t n = strcspn(tab + 1, "\t");
        ck_assert_msg(!listed || strstr(tab + 1 + n, form) != NULL, "pad3.yaml: %s is not among the legal schedules: %s",
                      form, r.out);
        char line[400];
        snprintf(wisdom, sizeof wisdom, "%s/w.tsv", dir);
        snprintf(line, sizeof line, "avx2\t%.*s\t%s\navx512\t%.*s\t%s\n", (int)n, tab + 1, form, (int)n, tab + 1, form);
        write_file(wisdom, line);
        free_result(&r);
        setenv("CNNGEN_WISDOM", wisdom, 1);
    }
    char *c = generate(spec, "pad3", NULL, NULL);
    unsetenv("CNNGEN_WISDOM");
    rm_tree(dir);
    free(dir);
    return c;
}

/* pad3.yaml's conv functions under schedule `form`: loops and no test, ?:, % or / */
static void check_pad3_no_branches(const char *form)
{
    char *c = gen_pad3(form, 1);
    const char *what = form ? form : "heuristic";
    if (form) {
        char sched[200];
        snprintf(sched, sizeof sched, "schedule %s:", form);
        ck_assert_msg(strstr(c, sched) != NULL, "pad3.c (%s): no layer with the forced schedule", what);
    }
    int nfn = 0;
    for (const char *p = strstr(c, "static void l00_conv2d_"); p; p = strstr(p + 1, "static void l00_conv2d_")) {
        char *name = function_name(p);
        char *b = function_body(p);
        ck_assert_msg(count_word(b, "for") > 1, "pad3.c (%s) %s: expected looped code (more than the batch loop):\n%.2000s",
                      what, name, b);
        ck_assert_msg(count_word(b, "if") == 0, "pad3.c (%s) %s: contains 'if' (padding not resolved at generation time):\n...%.1000s",
                      what, name, quote_at(b, find_word(b, b, "if")));
        ck_assert_msg(strchr(b, '?') == NULL, "pad3.c (%s) %s: contains a ?: conditional:\n...%.1000s", what, name,
                      quote_at(b, strchr(b, '?')));
        ck_assert_msg(strchr(b, '%') == NULL, "pad3.c (%s) %s: contains a runtime %% in the code:\n...%.1000s", what, name,
                      quote_at(b, strchr(b, '%')));
        ck_assert_msg(strchr(b, '/') == NULL, "pad3.c (%s) %s: contains a runtime division in the code:\n...%.1000s", what,
                      name, quote_at(b, strchr(b, '/')));
        free(name);
        free(b);
        nfn++;
    }
    ck_assert_msg(nfn >= 2, "pad3.c (%s): expected l00_conv2d_forward and l00_conv2d_backward(_dx), found %d functions",
                  what, nfn);
    free(c);
}

START_TEST(test_gen_padded_conv_no_branches)
{
    check_pad3_no_branches(NULL);
}
END_TEST

/* the Winograd forms' border tiles are classes resolved at generation time too */
START_TEST(test_gen_wino_no_branches)
{
    check_pad3_no_branches("lanes+wino");
    check_pad3_no_branches("lanes+wino4");
    check_pad3_no_branches("lanes+wino4+dw4");
}
END_TEST

/* conv_wino.lua's M.tb: the forward's and dx's tiles of 2 lane vectors when a tile's
 * transformed inputs and products fit L1 (48 KiB), else 1; the other is a candidate of
 * its own, "+tbK". pad3 (8 -> 8 channels): F(2x2) needs 16 x 16 x 2 vectors, F(4x4)
 * 36 x 16 x 2: 32 and 72 KiB of AVX-512's, 16 and 36 KiB of AVX2's. */
START_TEST(test_gen_wino_lane_tiles)
{
    static const char *const forms[] = {"lanes+wino", "lanes+wino4"};
    for (int f = 0; f < 2; f++) {
        char *c = gen_pad3(forms[f], 1);
        int avx512 = strstr(c, "Register tiles for avx512") != NULL;
        char key[64];
        snprintf(key, sizeof key, "fwd %s[TB=", forms[f] + 6);
        const char *s = strstr(c, key);
        ck_assert_msg(s != NULL, "pad3.c: no '%s' in %s's header", key, forms[f]);
        int tb = atoi(s + strlen(key));
        int want = (f == 1 && avx512) ? 1 : 2;
        ck_assert_msg(tb == want, "pad3.c: %s took tiles of %d lane vectors, expected %d", forms[f], tb, want);
        char alt[64];
        snprintf(alt, sizeof alt, "%s+tb%d", forms[f], 3 - tb);
        char *d = gen_pad3(alt, 1);
        const char *t = strstr(d, key);
        ck_assert_msg(t != NULL && atoi(t + strlen(key)) == 3 - tb, "pad3.c: %s did not take tiles of %d lane vectors", alt,
                      3 - tb);
        char dx[64];
        snprintf(dx, sizeof dx, "dx %s[TB=%d", forms[f] + 6, 3 - tb);
        ck_assert_msg(strstr(d, dx) != NULL, "pad3.c: %s's dx is not '%s'", alt, dx);
        free(c);
        free(d);
    }
}
END_TEST

/* Winograd's dW transforms a tile row a channel at a time (channel loop outside the
 * tile-column loop: a few sequential streams; the tile-major order ran channels x rows of
 * streams, too many for the prefetchers), and every transform row of M is filled: 4 of
 * F(2x2, 3x3)'s, 6 of F(4x4, 3x3)'s */
static const struct {
    const char *form, *dw;
    int rows;
} wino_dw[] = {{"lanes+wino", "dw wino[", 4}, {"lanes+wino4+dw4", "dw wino4[", 6}};

START_TEST(test_gen_wino_dw_channel_outer)
{
    const int want = wino_dw[_i].rows;
    char *c = gen_pad3(wino_dw[_i].form, 1);
    ck_assert_msg(strstr(c, wino_dw[_i].dw) != NULL, "pad3.c: %s's dW is not %s...]", wino_dw[_i].form, wino_dw[_i].dw);
    const char *p = strstr(c, "static void l00_conv2d_backward(");
    ck_assert_ptr_nonnull(p);
    /* the function's text with its comments (function_body blanks them) */
    const char *next = strstr(p + 1, "\nstatic ");
    char *b = next ? strndup(p, (size_t)(next - p)) : strdup(p);
    int sections = 0, rows = 0;
    for (const char *q = strstr(b, "/* transform rows "); q; q = strstr(q + 1, "/* transform rows ")) {
        int r0, r1;
        ck_assert_int_eq(sscanf(q, "/* transform rows %d..%d", &r0, &r1), 2);
        ck_assert_msg(r0 == rows && r1 >= r0, "pad3.c: transform rows %d..%d after rows 0..%d", r0, r1, rows - 1);
        rows = r1 + 1;
        sections++;
        /* in the section, the first channel loop comes before the first tile-column loop */
        const char *end = strstr(q + 1, "/* transform rows ");
        const char *ci = strstr(q, "for (int ci = 0;"), *tx = strstr(q, "for (int tx = ");
        ck_assert_msg(ci && tx && ci < tx && (!end || tx < end),
                      "pad3.c: the dW's input transform is not a channel at a time along the row:\n%.3000s", q);
    }
    ck_assert_msg(sections >= 1 && rows == want, "pad3.c: the dW's sections cover transform rows 0..%d, not 0..%d", rows - 1,
                  want - 1);
    /* the products' register tile keeps both sides in registers: every vector loaded
     * from dY's transform (e0, e1, ...) is VKEEP'd, as the inputs' f is (else gcc folds
     * the e loads into each FMA: a load per FMA) */
    const char *k = strstr(b, "e0 = dp[");
    ck_assert_msg(k != NULL, "pad3.c: no dY vector e0 in the dW's products");
    const char *eol = strchr(k, '\n');
    int ne = 0, nkeep = 0;
    for (const char *q = k; (q = strstr(q, " = dp[")) && q < eol; q++) ne++;
    for (const char *q = k; (q = strstr(q, "VKEEP(e")) && q < eol; q++) nkeep++;
    ck_assert_msg(ne >= 1 && nkeep == ne, "pad3.c: %d of the dW's %d dY vectors kept in registers:\n%.300s", nkeep, ne, k);
    free(b);
    free(c);
}
END_TEST

/* A wisdom line mixing three candidates' passes, "F|W|X" (schedule.lua): taken when the
 * module accepts it, each pass in its candidate's form; refused (the heuristic's schedule,
 * no "from wisdom") for a padded form, whose copies passes share, or an unknown name */
START_TEST(test_gen_schedule_mix)
{
    char *c = gen_pad3("lanes+wino4|lanes|lanes+wino4", 0);
    const char *s = strstr(c, "schedule lanes+wino4|lanes|lanes+wino4: fwd wino4[");
    ck_assert_msg(s != NULL, "pad3.c: the mix lanes+wino4|lanes|lanes+wino4 was not taken:\n%.1500s", c);
    const char *eol = strchr(s, '\n');
    ck_assert_ptr_nonnull(eol);
    char line[400];
    snprintf(line, sizeof line, "%.*s", (int)(eol - s), s);
    ck_assert_msg(strstr(line, " dw lanes[") && strstr(line, " dx wino4[") && strstr(line, "(from wisdom)"),
                  "pad3.c: the mix's passes are not F(4x4)'s forward, the direct dW and F(4x4)'s dx: %s", line);
    free(c);
    static const char *const refused[] = {"lanes+pad|lanes|lanes", "lanes|lanes+pad|lanes", "lanes+wino4|nosuch|lanes"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        c = gen_pad3(refused[i], 0);
        char want[200];
        snprintf(want, sizeof want, "schedule %s:", refused[i]);
        ck_assert_msg(strstr(c, want) == NULL && strstr(c, "(from wisdom)") == NULL,
                      "pad3.c: the mix %s should have been refused", refused[i]);
        ck_assert_msg(strstr(c, "schedule ") != NULL, "pad3.c (%s): no schedule comment", refused[i]);
        free(c);
    }
}
END_TEST

START_TEST(test_gen_vgg16_fast_and_small)
{
    size_t len;
    double secs;
    char *c = generate("specs/vgg16.yaml", "vgg16", &len, &secs);
    ck_assert_msg(secs < 1.0, "specs/vgg16.yaml: generation took %.3f s, expected under 1 s", secs);
    ck_assert_msg(len < 2u * 1024 * 1024, "specs/vgg16.yaml: vgg16.c is %zu bytes, expected under 2 MB", len);
    free(c);
}
END_TEST

/* The header of a net with no parameter and no buffer: C linkage for C++, the counts 0
 * and the _ALLOC sizes 1; no zero-size array anywhere in the generated C. */
START_TEST(test_gen_header_embedding)
{
    char *dir = make_tmpdir();
    char spec[512];
    snprintf(spec, sizeof spec, "%s/bare.yaml", dir);
    write_file(spec, "name: bare\ninput: [4]\nloss: mse\nlayers: [relu]\n");
    run_result r;
    RUN(r, spec, "-o", dir);
    expect_status("cnngen bare.yaml", &r, 0);
    char *h = read_generated(dir, "bare.h", NULL), *c = read_generated(dir, "bare.c", NULL);
    rm_tree(dir);
    static const char *const want[] = {
        "#define BARE_N_PARAMS ((size_t)0)", "#define BARE_N_PARAMS_ALLOC ((size_t)1)",
        "#define BARE_N_BUFFERS ((size_t)0)", "#define BARE_N_BUFFERS_ALLOC ((size_t)1)",
        "#ifdef __cplusplus\nextern \"C\" {\n#endif", "#ifdef __cplusplus\n}\n#endif",
        "-DCNNGEN_NO_MAIN", NULL};
    for (int i = 0; want[i]; i++)
        ck_assert_msg(strstr(h, want[i]) != NULL, "bare.h lacks \"%s\":\n%s", want[i], h);
    const char *open = strstr(h, "extern \"C\" {"), *decl = strstr(h, "extern const cg_net bare_net;");
    ck_assert_msg(open && decl && open < decl && strstr(decl, "\n}\n"),
                  "bare.h: the declarations are not inside extern \"C\":\n%s", h);
    ck_assert_msg(strstr(c, "[0]") == NULL && strstr(h, "[0]") == NULL, "a zero-size array in bare.c/.h");
    ck_assert_msg(strstr(c, "#ifndef CNNGEN_NO_MAIN") != NULL, "bare.c: main() not behind CNNGEN_NO_MAIN");
    free(h);
    free(c);
    free(dir);
    free_result(&r);
}
END_TEST

Suite *make_compiler_suite(void)
{
    Suite *s = suite_create("compiler");
    collect_bad_files();

    TCase *bad = tcase_create("bad_specs");
    tcase_set_timeout(bad, 30);
    tcase_add_test(bad, test_bad_dir_populated);
    if (n_bad > 0) tcase_add_loop_test(bad, test_bad_spec, 0, n_bad);
    suite_add_tcase(s, bad);

    TCase *cli = tcase_create("cli");
    tcase_set_timeout(cli, 30);
    tcase_add_test(cli, test_cli_help);
    tcase_add_test(cli, test_cli_version);
    tcase_add_test(cli, test_cli_no_args);
    tcase_add_test(cli, test_cli_unknown_option);
    tcase_add_test(cli, test_cli_two_specs);
    tcase_add_test(cli, test_cli_team);
    tcase_add_test(cli, test_cli_team_wisdom);
    tcase_add_test(cli, test_cli_o_without_dir);
    tcase_add_test(cli, test_cli_missing_file);
    tcase_add_test(cli, test_cli_bad_outdir);
    tcase_add_test(cli, test_cli_empty_outdir);
    tcase_add_test(cli, test_cli_outdir_created);
    tcase_add_test(cli, test_cli_infer_outdir_created);
    tcase_add_test(cli, test_cli_outdir_is_file);
    tcase_add_test(cli, test_cli_empty_file);
    tcase_add_test(cli, test_cli_path_comment_injection);
    tcase_add_test(cli, test_cli_deep_nesting_fast);
    tcase_add_test(cli, test_cli_dev_zero);
    tcase_add_test(cli, test_cli_escapes_not_raw);
    tcase_add_test(cli, test_cli_write_error_names_file);
    tcase_add_test(cli, test_cli_summary_vgg16);
    tcase_add_test(cli, test_cli_summary_conv1d);
    tcase_add_test(cli, test_cli_summary_dense);
    tcase_add_test(cli, test_cli_check_writes_nothing);
    tcase_add_test(cli, test_cli_generate);
    tcase_add_test(cli, test_cli_deterministic);
    tcase_add_test(cli, test_cli_banner);
    suite_add_tcase(s, cli);

    TCase *gen = tcase_create("generated_code");
    tcase_set_timeout(gen, 30);
    tcase_add_test(gen, test_gen_conv1d_straight_line);
    tcase_add_test(gen, test_gen_padded_conv_no_branches);
    tcase_add_test(gen, test_gen_wino_no_branches);
    tcase_add_loop_test(gen, test_gen_wino_dw_channel_outer, 0, (int)(sizeof wino_dw / sizeof wino_dw[0]));
    tcase_add_test(gen, test_gen_wino_lane_tiles);
    tcase_add_test(gen, test_gen_schedule_mix);
    tcase_add_test(gen, test_gen_vgg16_fast_and_small);
    tcase_add_test(gen, test_gen_header_embedding);
    suite_add_tcase(s, gen);
    return s;
}
