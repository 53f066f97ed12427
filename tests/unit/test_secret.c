/* ec_secret: copies into secure memory, compares in constant time, wipes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "edgecap/secmem.h"
#include "edgecap/secret.h"

static void test_new_copies_and_terminates(void **state)
{
    (void)state;
    char src[] = "sv=2025&sig=abc";
    ec_secret *s = NULL;
    assert_int_equal(ec_secret_new(&s, src, strlen(src)), EC_OK);
    memset(src, 'x', sizeof src - 1); /* the secret owns its copy */
    assert_int_equal(ec_secret_len(s), 15);
    assert_string_equal((const char *)ec_secret_bytes(s), "sv=2025&sig=abc");
    assert_true(ec_secmem_size(s) > 0); /* lives in secure memory */
    ec_secret_free(&s);
    assert_null(s);
    ec_secret_free(&s); /* a second free of the handle is a no-op */
}

static void test_equal(void **state)
{
    (void)state;
    ec_secret *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    assert_int_equal(ec_secret_new(&a, "key-one", 7), EC_OK);
    assert_int_equal(ec_secret_new(&b, "key-one", 7), EC_OK);
    assert_int_equal(ec_secret_new(&c, "key-two", 7), EC_OK);
    assert_int_equal(ec_secret_new(&d, "key-on", 6), EC_OK);
    assert_true(ec_secret_equal(a, b));
    assert_false(ec_secret_equal(a, c));
    assert_false(ec_secret_equal(a, d));
    assert_false(ec_secret_equal(a, NULL));
    ec_secret_free(&a);
    ec_secret_free(&b);
    ec_secret_free(&c);
    ec_secret_free(&d);
}

static void test_rejects_null_source(void **state)
{
    (void)state;
    ec_secret *s = NULL;
    assert_int_equal(ec_secret_new(&s, NULL, 3), EC_ERR_INVALID);
    assert_null(s);
    assert_int_equal(ec_secret_new(NULL, "x", 1), EC_ERR_INVALID);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_copies_and_terminates),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_rejects_null_source),
    };
    return cmocka_run_group_tests_name("secret", tests, NULL, NULL);
}
