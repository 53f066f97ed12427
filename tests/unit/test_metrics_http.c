/*
 * The metrics listener's own address check: loopback TCP and absolute Unix
 * socket paths parse; every other address is refused (EC_ERR_POLICY) even
 * when it reaches the listener without config validation; malformed ones
 * are EC_ERR_INVALID. And a started server refuses to start on them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "edgecap/metrics_http.h"

typedef struct {
    const char *spec;
    ec_status want;
    int family;
} listen_case;

static const listen_case cases[] = {
    {"127.0.0.1:9464", EC_OK, AF_INET},
    {"127.0.0.1:1", EC_OK, AF_INET},
    {"127.0.0.1:65535", EC_OK, AF_INET},
    {"127.1.2.3:9464", EC_OK, AF_INET},
    {"[::1]:9464", EC_OK, AF_INET6},
    {"unix:/run/edgecap/metrics.sock", EC_OK, AF_UNIX},
    {"0.0.0.0:9464", EC_ERR_POLICY, 0},
    {"192.168.1.10:9464", EC_ERR_POLICY, 0},
    {"10.0.0.1:80", EC_ERR_POLICY, 0},
    {"128.0.0.1:9464", EC_ERR_POLICY, 0},
    {"[::]:9464", EC_ERR_POLICY, 0},
    {"[::ffff:127.0.0.1]:9464", EC_ERR_POLICY, 0},
    {"[fe80::1]:9464", EC_ERR_POLICY, 0},
    {"localhost:9464", EC_ERR_INVALID, 0},
    {"127.0.0.1", EC_ERR_INVALID, 0},
    {"127.0.0.1:", EC_ERR_INVALID, 0},
    {"127.0.0.1:0", EC_ERR_INVALID, 0},
    {"127.0.0.1:65536", EC_ERR_INVALID, 0},
    {"127.0.0.1:94a4", EC_ERR_INVALID, 0},
    {"127.0.0.1:+80", EC_ERR_INVALID, 0},
    {"[::1]9464", EC_ERR_INVALID, 0},
    {"[::1:9464", EC_ERR_INVALID, 0},
    {"::1:9464", EC_ERR_INVALID, 0},
    {"unix:relative.sock", EC_ERR_INVALID, 0},
    {"unix:", EC_ERR_INVALID, 0},
    {"unix:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
     EC_ERR_INVALID, 0},
    {"", EC_ERR_INVALID, 0},
};

static void test_listen_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ec_metrics_addr a;
        ec_status st = ec_metrics_listen_parse(cases[i].spec, &a);
        if (st != cases[i].want)
            fail_msg("\"%s\": got %d, want %d", cases[i].spec, st, cases[i].want);
        if (st == EC_OK && a.family != cases[i].family)
            fail_msg("\"%s\": family %d, want %d", cases[i].spec, a.family, cases[i].family);
    }
}

static void test_port_and_address(void **state)
{
    (void)state;
    ec_metrics_addr a;
    assert_int_equal(ec_metrics_listen_parse("127.0.0.1:9464", &a), EC_OK);
    const struct sockaddr_in *in = (const struct sockaddr_in *)&a.addr;
    assert_int_equal(ntohs(in->sin_port), 9464);
    assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000001);
    assert_int_equal(ec_metrics_listen_parse("unix:/tmp/x.sock", &a), EC_OK);
    assert_string_equal(a.path, "/tmp/x.sock");
}

static void test_server_refuses_beyond_loopback(void **state)
{
    (void)state;
    ec_metrics_server *s = NULL;
    char why[256];
    assert_int_equal(ec_metrics_server_start(&s, "0.0.0.0:9464", why, sizeof why), EC_ERR_POLICY);
    assert_null(s);
    assert_string_equal(why, "0.0.0.0:9464 is not a loopback address: refused");
    assert_int_equal(ec_metrics_server_start(&s, "nonsense", why, sizeof why), EC_ERR_INVALID);
    assert_null(s);
    assert_string_equal(why,
                        "nonsense: expected 127.0.0.1:PORT, [::1]:PORT or unix:/absolute/path");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listen_parse_table),
        cmocka_unit_test(test_port_and_address),
        cmocka_unit_test(test_server_refuses_beyond_loopback),
    };
    return cmocka_run_group_tests_name("metrics_http", tests, NULL, NULL);
}
