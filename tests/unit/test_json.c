/*
 * JSON arenas: cJSON allocates only from secure memory while an arena is
 * active, nothing at all without one, nested arenas unwind in order, the
 * limit holds, and ending an arena releases (and so wipes) everything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "edgecap/json.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"

static const char doc[] = "{\"access_token\":\"abc.def\",\"expires_in\":3599,"
                          "\"token_type\":\"Bearer\",\"list\":[1,2,3]}";

static size_t live(void)
{
    ec_secmem_stats st;
    ec_secmem_get_stats(&st);
    return st.live_allocations;
}

static void test_parse_in_secure_memory(void **state)
{
    (void)state;
    size_t before = live();
    ec_json_arena *a = NULL;
    assert_int_equal(ec_json_arena_begin(&a, 0), EC_OK);
    cJSON *d = ec_json_parse((const uint8_t *)doc, strlen(doc));
    assert_non_null(d);
    assert_string_equal(ec_json_string(d, "access_token"), "abc.def");
    double v = 0;
    assert_true(ec_json_number(d, "expires_in", &v));
    assert_true(v == 3599);
    assert_null(ec_json_string(d, "expires_in")); /* wrong type */
    assert_false(ec_json_number(d, "token_type", &v));
    assert_null(ec_json_string(d, "missing"));
    assert_true(live() > before);
    char *printed = ec_json_print(d);
    assert_non_null(printed);
    assert_string_equal(printed, doc);
    ec_json_arena_end(&a);
    assert_null(a);
    assert_int_equal(live(), before); /* every chunk released (and wiped) */
    ec_json_arena_end(&a);            /* NULL-safe */
}

static void test_nothing_without_an_arena(void **state)
{
    (void)state;
    size_t before = live();
    assert_null(ec_json_parse((const uint8_t *)doc, strlen(doc)));
    assert_null(cJSON_Parse(doc)); /* the ordinary heap is never used */
    assert_null(cJSON_CreateObject());
    assert_int_equal(live(), before);
}

static void test_malformed_and_truncated(void **state)
{
    (void)state;
    ec_json_arena *a = NULL;
    assert_int_equal(ec_json_arena_begin(&a, 0), EC_OK);
    assert_null(ec_json_parse((const uint8_t *)doc, strlen(doc) - 1));
    assert_null(ec_json_parse((const uint8_t *)"{\"a\":", 5));
    assert_null(ec_json_parse((const uint8_t *)"", 0));
    /* the length bounds the parse: no read past it */
    assert_non_null(ec_json_parse((const uint8_t *)"{}garbage", 2));
    ec_json_arena_end(&a);
}

static void test_nested_arenas_unwind(void **state)
{
    (void)state;
    size_t before = live();
    ec_json_arena *outer = NULL, *inner = NULL;
    assert_int_equal(ec_json_arena_begin(&outer, 0), EC_OK);
    cJSON *o = cJSON_CreateObject();
    assert_non_null(o);
    assert_int_equal(ec_json_arena_begin(&inner, 0), EC_OK);
    assert_non_null(ec_json_parse((const uint8_t *)doc, strlen(doc)));
    ec_json_arena_end(&inner);
    /* the outer arena is active again */
    assert_non_null(cJSON_AddStringToObject(o, "k", "v"));
    char *p = ec_json_print(o);
    assert_string_equal(p, "{\"k\":\"v\"}");
    ec_json_arena_end(&outer);
    assert_int_equal(live(), before);
    assert_null(cJSON_CreateObject());
}

static void test_limit(void **state)
{
    (void)state;
    /* 20000 small numbers need far more than 64 KiB of nodes */
    size_t n = 20000, len = 0;
    char *big = malloc(n * 2 + 3);
    big[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        big[len++] = '1';
        big[len++] = i + 1 < n ? ',' : ']';
    }
    ec_json_arena *a = NULL;
    assert_int_equal(ec_json_arena_begin(&a, 64 * 1024), EC_OK);
    assert_null(ec_json_parse((const uint8_t *)big, len));
    ec_json_arena_end(&a);
    assert_int_equal(ec_json_arena_begin(&a, 0), EC_OK);
    cJSON *d = ec_json_parse((const uint8_t *)big, len);
    assert_non_null(d);
    assert_int_equal(cJSON_GetArraySize(d), (int)n);
    ec_json_arena_end(&a);
    free(big);
}

int main(void)
{
    ec_secmem_init(false);
    ec_json_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_in_secure_memory),
        cmocka_unit_test(test_nothing_without_an_arena),
        cmocka_unit_test(test_malformed_and_truncated),
        cmocka_unit_test(test_nested_arenas_unwind),
        cmocka_unit_test(test_limit),
    };
    int rc = cmocka_run_group_tests_name("json", tests, NULL, NULL);
    ec_rng_free();
    return rc;
}
