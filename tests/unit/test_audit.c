/*
 * The audit trail's hash chain and HMAC: intact files verify (across a
 * reopen), and an edited, removed, reordered or torn line, or another key,
 * is found at the first line it breaks. Rotation: the boundary, a rotated
 * file verifying alone, tampering across a boundary found at the right file
 * and line, a rotation cut short (fault seams) rolled back. Two processes
 * appending at once keep one chain. The syslog copy reaches a datagram
 * socket this test owns, and a dead or full receiver never blocks a line.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include <mbedtls/sha256.h>

#include "edgecap/audit.h"
#include "edgecap/fault.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/secret.h"
#include "support.h"

typedef struct {
    char *dir;
    char *path;
    ec_secret *key;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = ts_mkdtemp();
    f->path = ts_strf("%s/audit/audit.log", f->dir);
    assert_int_equal(ec_secret_new(&f->key, "k3y-for-the-audit-trail", 23), EC_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ec_fault_reset();
    ec_secret_free(&f->key);
    ts_rmtree(f->dir);
    free(f->dir);
    free(f->path);
    free(f);
    return 0;
}

static void write_events(const char *path, const ec_secret *key, int n, int from)
{
    ec_audit *a = NULL;
    assert_int_equal(ec_audit_open(&a, path, key), EC_OK);
    for (int i = 0; i < n; i++) {
        char seg[32];
        snprintf(seg, sizeof seg, "seg-%04d", from + i);
        assert_int_equal(ec_audit(a, "segment_acknowledged", EC_LOG_STR("segment", seg),
                                  EC_LOG_UINT("bytes", 1000u + (unsigned)i),
                                  EC_LOG_BOOL("wiped", true)),
                         EC_OK);
    }
    ec_audit_close(&a);
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strdup(buf);
}

static void spit(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* The start of line `n` (1-based) in text. */
static char *line_at(char *text, int n)
{
    char *p = text;
    for (int i = 1; i < n; i++)
        p = strchr(p, '\n') + 1;
    return p;
}

static void test_intact_chain_with_and_without_key(void **state)
{
    fixture *f = *state;
    write_events(f->path, f->key, 3, 0);
    write_events(f->path, f->key, 2, 3); /* a reopen continues the chain */
    ec_audit_report r;
    assert_int_equal(ec_audit_verify(f->path, f->key, &r), EC_OK);
    assert_int_equal(r.lines, 5);
    assert_int_equal(r.first_bad_line, 0);
    assert_true(r.macs_checked);
    assert_int_equal(ec_audit_verify(f->path, NULL, &r), EC_OK);
    assert_false(r.macs_checked);
    char *text = slurp(f->path);
    /* the first line links to nothing (64 zeros), and every line is JSON
     * ending with prev and hmac */
    assert_non_null(strstr(text, "\"prev\":\"0000000000000000000000000000000000000000000000000000"
                                 "000000000000\",\"hmac\":\""));
    assert_int_equal(strncmp(text, "{\"ts\":\"", 7), 0);
    free(text);
}

static void test_edited_line_found(void **state)
{
    fixture *f = *state;
    write_events(f->path, f->key, 4, 0);
    char *text = slurp(f->path);
    char *l2 = line_at(text, 2);
    char *digit = strstr(l2, "\"bytes\":1001");
    assert_non_null(digit);
    digit[11] = '9'; /* 1001 -> 1009 */
    spit(f->path, text);
    free(text);
    ec_audit_report r;
    /* with the key the edited line's own MAC fails */
    assert_int_equal(ec_audit_verify(f->path, f->key, &r), EC_ERR_CRYPTO);
    assert_int_equal(r.first_bad_line, 2);
    assert_non_null(strstr(r.reason, "hmac does not match"));
    /* without it, the next line's link does */
    assert_int_equal(ec_audit_verify(f->path, NULL, &r), EC_ERR_CRYPTO);
    assert_int_equal(r.first_bad_line, 3);
    assert_non_null(strstr(r.reason, "prev does not match"));
}

static void test_removed_and_swapped_lines_found(void **state)
{
    fixture *f = *state;
    write_events(f->path, f->key, 4, 0);
    char *text = slurp(f->path);
    char *l2 = line_at(text, 2), *l3 = line_at(text, 3);
    char *removed = ts_strf("%.*s%s", (int)(l2 - text), text, l3);
    spit(f->path, removed);
    ec_audit_report r;
    assert_int_equal(ec_audit_verify(f->path, f->key, &r), EC_ERR_CRYPTO);
    assert_int_equal(r.first_bad_line, 2);
    char *l4 = line_at(text, 4);
    char *swapped = ts_strf("%.*s%.*s%.*s%s", (int)(l2 - text), text, (int)(l4 - l3), l3,
                            (int)(l3 - l2), l2, l4);
    spit(f->path, swapped);
    assert_int_equal(ec_audit_verify(f->path, NULL, &r), EC_ERR_CRYPTO);
    assert_int_equal(r.first_bad_line, 2);
    free(removed);
    free(swapped);
    free(text);
}

static void test_another_key_and_missing_mac(void **state)
{
    fixture *f = *state;
    write_events(f->path, f->key, 2, 0);
    ec_secret *other = NULL;
    assert_int_equal(ec_secret_new(&other, "another-key", 11), EC_OK);
    ec_audit_report r;
    assert_int_equal(ec_audit_verify(f->path, other, &r), EC_ERR_CRYPTO);
    assert_int_equal(r.first_bad_line, 1);
    /* lines written without a key do not pass a keyed check */
    char *plain = ts_strf("%s/plain.log", f->dir);
    write_events(plain, NULL, 2, 0);
    assert_int_equal(ec_audit_verify(plain, NULL, &r), EC_OK);
    assert_int_equal(ec_audit_verify(plain, f->key, &r), EC_ERR_CRYPTO);
    assert_non_null(strstr(r.reason, "no hmac"));
    ec_secret_free(&other);
    free(plain);
}

static void test_torn_line_reported_and_chain_goes_on(void **state)
{
    fixture *f = *state;
    write_events(f->path, f->key, 2, 0);
    FILE *fp = fopen(f->path, "a");
    fputs("{\"ts\":\"2026-01-01T00:00:00.000Z\",\"event\":\"segm", fp);
    fclose(fp);
    ec_audit_report r;
    assert_int_equal(ec_audit_verify(f->path, f->key, &r), EC_ERR_CRYPTO);
    assert_int_equal(r.first_bad_line, 3);
    assert_non_null(strstr(r.reason, "torn"));
    write_events(f->path, f->key, 1, 2); /* the torn fragment becomes a bad line */
    assert_int_equal(ec_audit_verify(f->path, f->key, &r), EC_ERR_CRYPTO);
    assert_int_equal(r.first_bad_line, 3);
    assert_int_equal(r.lines, 3);
}

static void test_secret_refused_and_nothing_without_path(void **state)
{
    fixture *f = *state;
    ec_audit *a = NULL;
    assert_int_equal(ec_audit_open(&a, f->path, NULL), EC_OK);
    assert_int_equal(ec_audit(a, "x", EC_LOG_SECRET("key", f->key)), EC_ERR_INVALID);
    ec_audit_close(&a);
    ec_audit_report r;
    assert_int_equal(ec_audit_verify(f->path, NULL, &r), EC_OK);
    assert_int_equal(r.lines, 0);
    assert_int_equal(ec_audit_open(&a, "", NULL), EC_OK);
    assert_int_equal(ec_audit(a, "x", EC_LOG_INT("n", 1)), EC_OK);
    ec_audit_close(&a);
    assert_int_equal(ec_audit_verify("/nonexistent/audit.log", NULL, &r), EC_ERR_NOT_FOUND);
}

/* ---- rotation ------------------------------------------------------------------ */

#define MAX_BYTES 16384

static ec_audit *open_rotating(const char *path, const ec_secret *key, int keep)
{
    ec_audit *a = NULL;
    ec_audit_params p = {.path = path, .hmac_key = key, .max_bytes = MAX_BYTES, .keep = keep};
    assert_int_equal(ec_audit_open_params(&a, &p), EC_OK);
    return a;
}

static void record_n(ec_audit *a, int n, int from)
{
    for (int i = 0; i < n; i++) {
        char seg[32];
        snprintf(seg, sizeof seg, "seg-%06d", from + i);
        ec_status st = ec_audit(a, "segment_acknowledged", EC_LOG_STR("segment", seg),
                                EC_LOG_UINT("bytes", 100000u + (unsigned)i));
        if (st != EC_OK)
            fail_msg("recording %s: %s (%s)", seg, ec_strerror(st), strerror(errno));
    }
}

static long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static size_t count_lines_in(const char *path)
{
    char *t = slurp(path);
    size_t n = 0;
    for (const char *p = t; *p != '\0'; p++)
        n += *p == '\n';
    free(t);
    return n;
}

/* SHA-256 (hex) of the last line of `path`, without its newline. */
static void last_hash(const char *path, char *hex)
{
    char *t = slurp(path);
    size_t len = strlen(t);
    assert_true(len > 1 && t[len - 1] == '\n');
    size_t start = len - 1;
    while (start > 0 && t[start - 1] != '\n')
        start--;
    uint8_t d[32];
    mbedtls_sha256_ret((const unsigned char *)t + start, len - 1 - start, d, 0);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", d[i]);
    free(t);
}

static ec_status verify_list(const ec_secret *key, ec_audit_report *r, int n, ...)
{
    const char *paths[8];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        paths[i] = va_arg(ap, const char *);
    va_end(ap);
    return ec_audit_verify_files(paths, (size_t)n, key, r);
}

static void test_rotation_boundary_and_rotated_first_line(void **state)
{
    fixture *f = *state;
    char *one = ts_strf("%s.1", f->path), *two = ts_strf("%s.2", f->path);
    ec_audit *a = open_rotating(f->path, f->key, 3);
    int written = 0;
    long long before = 0;
    /* fill FILE line by line up to the rotation */
    while (!exists(one)) {
        before = file_size(f->path);
        record_n(a, 1, written++);
        assert_true(file_size(f->path) <= MAX_BYTES);
        assert_true(written < 1000);
    }
    /* the line that did not fit went to the new file, after the rotated record */
    long long line_len = file_size(one) / (long long)count_lines_in(one);
    assert_int_equal(file_size(one), before);
    assert_true(before + line_len > MAX_BYTES);
    assert_true(before + line_len - line_len <= MAX_BYTES);
    assert_int_equal(count_lines_in(f->path), 2);
    char h1[65];
    last_hash(one, h1);
    char *text = slurp(f->path);
    char *want = ts_strf("\"event\":\"rotated\",\"previous_sha256\":\"%s\",\"previous_lines\":%zu,"
                         "\"previous_bytes\":%lld,\"prev\":\"%s\",\"hmac\":\"",
                         h1, count_lines_in(one), file_size(one), h1);
    assert_non_null(strstr(text, want));
    free(want);
    free(text);

    ec_audit_report r;
    assert_int_equal(verify_list(f->key, &r, 2, one, f->path), EC_OK);
    assert_int_equal(r.files, 2);
    assert_int_equal(r.lines, (size_t)written + 1);
    assert_true(r.macs_checked);
    assert_false(r.continues);
    /* the new file alone: intact, continuing from FILE.1's last hash */
    assert_int_equal(ec_audit_verify(f->path, f->key, &r), EC_OK);
    assert_true(r.continues);
    assert_string_equal(r.continues_from, h1);
    assert_int_equal(r.continues_after, count_lines_in(one));
    assert_int_equal(r.first_bad_line, 0);

    /* three more rotations with keep = 3: FILE.4 never exists; FILE.3 alone
     * continues from a file that is gone */
    char *three = ts_strf("%s.3", f->path), *four = ts_strf("%s.4", f->path);
    for (int i = 0; i < 3; i++) {
        ec_audit_stats st0;
        ec_audit_get_stats(a, &st0);
        while (true) {
            record_n(a, 1, written++);
            ec_audit_stats st1;
            ec_audit_get_stats(a, &st1);
            if (st1.rotations > st0.rotations)
                break;
        }
    }
    ec_audit_close(&a);
    assert_false(exists(four));
    assert_int_equal(verify_list(f->key, &r, 4, three, two, one, f->path), EC_OK);
    assert_true(r.continues);
    assert_int_equal(verify_list(NULL, &r, 3, three, two, one), EC_OK);
    free(one);
    free(two);
    free(three);
    free(four);
}

/* FILE.1 and FILE, rotated once, with a few lines in FILE. */
static void rotated_pair(fixture *f, char **one)
{
    *one = ts_strf("%s.1", f->path);
    ec_audit *a = open_rotating(f->path, f->key, 3);
    int i = 0;
    while (!exists(*one))
        record_n(a, 1, i++);
    record_n(a, 3, i);
    ec_audit_close(&a);
    assert_int_equal(count_lines_in(f->path), 5); /* rotated + 4 */
}

/* Rewrites `path` keeping the lines for which keep[i] names the source line
 * (1-based) of `from` (or 0 to stop). */
static void rewrite(const char *path, const char *from_text, const int *keep)
{
    char *copy = strdup(from_text);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; keep[i] != 0; i++) {
        char *l = line_at(copy, keep[i]);
        fwrite(l, 1, (size_t)(strchr(l, '\n') + 1 - l), fp);
    }
    fclose(fp);
    free(copy);
}

static void test_tamper_across_rotation_found_at_file_and_line(void **state)
{
    fixture *f = *state;
    char *one = NULL;
    rotated_pair(f, &one);
    char *old_text = slurp(one), *new_text = slurp(f->path);
    size_t n_old = count_lines_in(one);
    ec_audit_report r;

    /* the old file's last line removed: FILE.1 is still a chain, FILE's
     * first line no longer continues it */
    int keep_all_but_last[256] = {0};
    for (size_t i = 0; i + 1 < n_old; i++)
        keep_all_but_last[i] = (int)i + 1;
    rewrite(one, old_text, keep_all_but_last);
    assert_int_equal(verify_list(f->key, &r, 2, one, f->path), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 1);
    assert_int_equal(r.first_bad_line, 1);
    assert_non_null(strstr(r.reason, "does not continue the file before it"));
    spit(one, old_text);

    /* that line moved to the new file's second place (a reorder across the
     * boundary): found at the same place */
    rewrite(one, old_text, keep_all_but_last);
    {
        FILE *fp = fopen(f->path, "w");
        char *l1 = line_at(new_text, 1), *l2 = line_at(new_text, 2);
        fwrite(l1, 1, (size_t)(l2 - l1), fp);
        char *moved = line_at(old_text, (int)n_old);
        fwrite(moved, 1, strlen(moved), fp);
        fputs(l2, fp);
        fclose(fp);
    }
    assert_int_equal(verify_list(NULL, &r, 2, one, f->path), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 1);
    assert_int_equal(r.first_bad_line, 1);
    spit(one, old_text);
    spit(f->path, new_text);

    /* an edited line in the old file: its MAC (key) or the next link */
    char *edited = strdup(old_text);
    char *digit = strstr(line_at(edited, 2), "\"bytes\":1");
    assert_non_null(digit);
    digit[9] = '7';
    spit(one, edited);
    assert_int_equal(verify_list(f->key, &r, 2, one, f->path), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 0);
    assert_int_equal(r.first_bad_line, 2);
    assert_int_equal(verify_list(NULL, &r, 2, one, f->path), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 0);
    assert_int_equal(r.first_bad_line, 3);
    free(edited);
    spit(one, old_text);

    /* the rotated record removed from the new file */
    const int drop_first[] = {2, 3, 4, 5, 0};
    rewrite(f->path, new_text, drop_first);
    assert_int_equal(verify_list(NULL, &r, 2, one, f->path), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 1);
    assert_int_equal(r.first_bad_line, 1);
    assert_non_null(strstr(r.reason, "does not begin with a rotated record"));
    assert_int_equal(ec_audit_verify(f->path, NULL, &r), EC_ERR_CRYPTO);
    assert_int_equal(r.first_bad_line, 1);

    /* a line removed inside the new file */
    const int drop_third[] = {1, 2, 4, 5, 0};
    rewrite(f->path, new_text, drop_third);
    assert_int_equal(verify_list(f->key, &r, 2, one, f->path), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 1);
    assert_int_equal(r.first_bad_line, 3);
    spit(f->path, new_text);

    /* the rotated record's line count edited: reported there, key or not */
    char *lied = strdup(new_text);
    char *count = strstr(lied, "\"previous_lines\":");
    assert_non_null(count);
    count[17] = count[17] == '9' ? '8' : '9';
    spit(f->path, lied);
    assert_int_equal(verify_list(NULL, &r, 2, one, f->path), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 1);
    assert_int_equal(r.first_bad_line, 1);
    assert_non_null(strstr(r.reason, "lines for the file before it"));
    free(lied);
    spit(f->path, new_text);

    /* files out of order, or an empty current file */
    assert_int_equal(verify_list(NULL, &r, 2, f->path, one), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 1);
    assert_int_equal(r.first_bad_line, 1);
    spit(f->path, "");
    assert_int_equal(verify_list(NULL, &r, 2, one, f->path), EC_ERR_CRYPTO);
    assert_int_equal(r.bad_file, 1);
    assert_non_null(strstr(r.reason, "empty"));
    spit(f->path, new_text);
    assert_int_equal(verify_list(f->key, &r, 2, one, f->path), EC_OK);
    /* a missing file is named */
    char *gone = ts_strf("%s.9", f->path);
    assert_int_equal(verify_list(NULL, &r, 3, gone, one, f->path), EC_ERR_NOT_FOUND);
    assert_int_equal(r.bad_file, 0);
    free(gone);
    free(old_text);
    free(new_text);
    free(one);
}

static void same_inode(const char *x, const char *y, bool want)
{
    struct stat a, b;
    assert_int_equal(stat(x, &a), 0);
    assert_int_equal(stat(y, &b), 0);
    assert_int_equal(a.st_ino == b.st_ino, want);
}

/* Each step of a rotation cut short, as a crash would leave it: the current
 * file still verifies; the next writer rolls the rotation back and rotates
 * again; every file verifies in order. */
static void test_rotation_cut_short_rolls_back(void **state)
{
    fixture *f = *state;
    char *one = NULL, *two = ts_strf("%s.2", f->path), *next = ts_strf("%s.new", f->path);
    rotated_pair(f, &one); /* FILE.1, FILE */
    ec_audit_report r;
    ec_audit *a = open_rotating(f->path, f->key, 3);

    /* the new file written, FILE not yet linked to FILE.1 */
    ec_fault_reset();
    ec_fault_arm("audit.rotate.link", 0, 1);
    int i = 100;
    while (ec_fault_hits("audit.rotate.link") == 0)
        record_n(a, 1, i++); /* the line goes to the current file */
    assert_true(exists(next));
    assert_true(exists(two)); /* FILE.1 shifted before the link */
    assert_false(exists(one));
    assert_int_equal(verify_list(f->key, &r, 2, two, f->path), EC_OK);
    record_n(a, 1, i++); /* rolled back and rotated */
    assert_false(exists(next));
    assert_int_equal(verify_list(f->key, &r, 3, two, one, f->path), EC_OK);

    /* FILE linked to FILE.1, FILE.new not yet renamed over FILE; the
     * process dies there (the handle is dropped) */
    unsigned renames = ec_fault_hits("audit.rotate.rename");
    ec_fault_arm("audit.rotate.rename", 0, 1);
    while (ec_fault_hits("audit.rotate.rename") == renames)
        record_n(a, 1, i++);
    ec_audit_close(&a);
    assert_true(exists(next));
    same_inode(one, f->path, true);
    assert_int_equal(ec_audit_verify(f->path, f->key, &r), EC_OK);
    /* the next start rolls back: FILE.1 (an extra name) and FILE.new go */
    char *three = ts_strf("%s.3", f->path);
    ts_log_begin();
    a = open_rotating(f->path, f->key, 3);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "audit_rotation_rolled_back"));
    free(log);
    assert_false(exists(next));
    assert_false(exists(one));
    assert_int_equal(verify_list(f->key, &r, 3, three, two, f->path), EC_OK);
    ec_fault_reset();
    ec_audit_stats st0, st1;
    ec_audit_get_stats(a, &st0);
    do {
        record_n(a, 1, i++);
        ec_audit_get_stats(a, &st1);
    } while (st1.rotations == st0.rotations);
    ec_audit_close(&a);
    same_inode(one, f->path, false);
    assert_int_equal(verify_list(f->key, &r, 4, three, two, one, f->path), EC_OK);

    /* the new file's own write fails (a crash mid-write): rolled back too */
    a = open_rotating(f->path, f->key, 3);
    unsigned writes = ec_fault_hits("audit.rotate.write");
    ec_fault_arm("audit.rotate.write", 0, 1);
    while (ec_fault_hits("audit.rotate.write") == writes)
        record_n(a, 1, i++);
    assert_true(exists(next));
    assert_int_equal(verify_list(f->key, &r, 4, three, two, one, f->path), EC_OK);
    ec_fault_reset();
    ec_audit_get_stats(a, &st0);
    do {
        record_n(a, 1, i++);
        ec_audit_get_stats(a, &st1);
    } while (st1.rotations == st0.rotations);
    ec_audit_close(&a);
    assert_false(exists(next));
    assert_int_equal(verify_list(f->key, &r, 4, three, two, one, f->path), EC_OK);
    free(one);
    free(two);
    free(three);
    free(next);
}

/* ---- two writers ----------------------------------------------------------------- */

#define WRITERS 2
#define PER_WRITER 250

static void test_two_processes_append_one_chain(void **state)
{
    fixture *f = *state;
    /* secure memory is wiped in a forked child (MADV_WIPEONFORK), so the
     * writers chain without a key */
    write_events(f->path, NULL, 1, 0); /* creates the directory */
    pid_t pids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            /* each process its own handle, rotating as it goes */
            ec_audit *a = NULL;
            ec_audit_params p = {.path = f->path, .max_bytes = MAX_BYTES, .keep = 99};
            int rc = ec_audit_open_params(&a, &p) == EC_OK ? 0 : 1;
            for (int i = 0; rc == 0 && i < PER_WRITER; i++) {
                char seg[32];
                snprintf(seg, sizeof seg, "w%d-%04d", w, i);
                rc = ec_audit(a, "segment_sealed", EC_LOG_STR("segment", seg)) == EC_OK ? 0 : 1;
            }
            ec_audit_close(&a);
            _exit(rc);
        }
    }
    for (int w = 0; w < WRITERS; w++) {
        int status = 0;
        assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    /* every file, oldest first */
    const char *paths[100];
    char *names[100];
    int n = 0;
    for (int k = 99; k >= 1; k--) {
        char *p = ts_strf("%s.%d", f->path, k);
        if (exists(p))
            names[n] = p, paths[n] = p, n++;
        else
            free(p);
    }
    paths[n++] = f->path;
    assert_true(n >= 3); /* the writers rotated, more than once */
    ec_audit_report r;
    ec_status st = ec_audit_verify_files(paths, (size_t)n, NULL, &r);
    if (st != EC_OK)
        fail_msg("%s:%zu: %s", paths[r.bad_file], r.first_bad_line, r.reason);
    assert_int_equal(r.lines, 1 + WRITERS * PER_WRITER + (size_t)(n - 1));
    for (int k = 0; k < n - 1; k++)
        free(names[k]);
}

/* ---- syslog copy ------------------------------------------------------------------ */

static int bind_dgram(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* The next datagram (waiting at most a few seconds), NUL-terminated. */
static ssize_t next_dgram(int fd, char *buf, size_t cap)
{
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

static void test_syslog_copy_reaches_a_socket_and_never_blocks(void **state)
{
    fixture *f = *state;
    char *sock = ts_strf("%s/log.sock", f->dir);
    int rx = bind_dgram(sock);
    ec_audit *a = NULL;
    ec_audit_params p = {.path = f->path,
                         .hmac_key = f->key,
                         .syslog = true,
                         .syslog_socket = sock,
                         .syslog_facility = LOG_LOCAL3,
                         .syslog_format = EC_AUDIT_RFC3164};
    assert_int_equal(ec_audit_open_params(&a, &p), EC_OK);
    assert_int_equal(ec_audit(a, "started", EC_LOG_STR("version", "t")), EC_OK);
    char buf[4096];
    assert_true(next_dgram(rx, buf, sizeof buf) > 0);
    /* <PRI> = local3 (19) * 8 + notice (5); then "Mmm dd hh:mm:ss edgecap[pid]: LINE" */
    char *head = ts_strf("edgecap[%ld]: {", (long)getpid());
    assert_int_equal(strncmp(buf, "<157>", 5), 0);
    char *body = strstr(buf, head);
    assert_non_null(body);
    assert_int_equal(body - buf, 5 + 15 + 1);
    char *file = slurp(f->path);
    size_t flen = strlen(file);
    assert_int_equal(strlen(body + strlen(head) - 1) + 1, flen); /* the line, without \n */
    assert_int_equal(memcmp(body + strlen(head) - 1, file, flen - 1), 0);
    free(file);
    free(head);
    ec_audit_close(&a);

    /* RFC 5424, authpriv: <85>1 TIMESTAMP HOST edgecap PID audit - LINE */
    p.syslog_facility = LOG_AUTHPRIV;
    p.syslog_format = EC_AUDIT_RFC5424;
    assert_int_equal(ec_audit_open_params(&a, &p), EC_OK);
    assert_int_equal(ec_audit(a, "stopped", EC_LOG_INT("exit_status", 0)), EC_OK);
    assert_true(next_dgram(rx, buf, sizeof buf) > 0);
    assert_int_equal(strncmp(buf, "<85>1 20", 8), 0);
    char *tail = ts_strf(" edgecap %ld audit - {\"ts\":", (long)getpid());
    assert_non_null(strstr(buf, tail));
    assert_non_null(strstr(buf, "\"event\":\"stopped\""));
    free(tail);

    /* the receiver gone: the line is in the file, the copy counted as
     * dropped, nothing waits */
    close(rx);
    unlink(sock);
    assert_int_equal(ec_audit(a, "x", EC_LOG_INT("n", 1)), EC_OK);
    ec_audit_stats st;
    ec_audit_get_stats(a, &st);
    assert_int_equal(st.syslog_sent, 1);
    assert_int_equal(st.syslog_dropped, 1);
    /* a receiver that never reads: its queue fills, lines go on */
    rx = bind_dgram(sock);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ec_audit(a, "y", EC_LOG_INT("n", i)), EC_OK);
    ec_audit_get_stats(a, &st);
    assert_true(st.syslog_sent > 1);
    assert_true(st.syslog_dropped > 1);
    assert_int_equal(st.syslog_sent + st.syslog_dropped, 1002);
    ec_audit_close(&a);
    ec_audit_report r;
    assert_int_equal(ec_audit_verify(f->path, f->key, &r), EC_OK);
    assert_int_equal(r.lines, 1003);
    close(rx);
    free(sock);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_intact_chain_with_and_without_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edited_line_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removed_and_swapped_lines_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_another_key_and_missing_mac, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_line_reported_and_chain_goes_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_refused_and_nothing_without_path, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rotation_boundary_and_rotated_first_line, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tamper_across_rotation_found_at_file_and_line, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rotation_cut_short_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_processes_append_one_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syslog_copy_reaches_a_socket_and_never_blocks, setup,
                                        teardown),
    };
    int rc = cmocka_run_group_tests_name("audit", tests, NULL, NULL);
    ec_rng_free();
    return rc;
}
