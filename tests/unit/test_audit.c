/*
 * The audit trail's hash chain and HMAC: intact files verify (across a
 * reopen), and an edited, removed, reordered or torn line, or another key,
 * is found at the first line it breaks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "edgecap/audit.h"
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
    };
    int rc = cmocka_run_group_tests_name("audit", tests, NULL, NULL);
    ec_rng_free();
    return rc;
}
