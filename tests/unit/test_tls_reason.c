/*
 * TLS failure reasons: every curl result the transport counts as a TLS
 * failure maps to one label of the fixed set, the certificate verify flags
 * and the peer's fatal alert decide between the labels, and every label
 * renders as the Prometheus value the metrics promise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <mbedtls/x509.h>

#include "edgecap/tls_reason.h"

typedef struct {
    const char *what;
    long curl_code;
    uint32_t flags;
    int alert;
    int version_refused;
    int want; /* ec_tls_reason, or -1 */
} tls_case;

static const tls_case cases[] = {
    {"pin mismatch", CURLE_SSL_PINNEDPUBKEYNOTMATCH, 0, -1, 0, EC_TLS_PIN_MISMATCH},
    {"pin mismatch ignores stray flags", CURLE_SSL_PINNEDPUBKEYNOTMATCH,
     MBEDTLS_X509_BADCERT_EXPIRED, -1, 0, EC_TLS_PIN_MISMATCH},
    {"unknown CA", CURLE_PEER_FAILED_VERIFICATION, MBEDTLS_X509_BADCERT_NOT_TRUSTED, -1, 0,
     EC_TLS_CERT_UNTRUSTED},
    {"untrusted and wrong name: untrusted", CURLE_PEER_FAILED_VERIFICATION,
     MBEDTLS_X509_BADCERT_NOT_TRUSTED | MBEDTLS_X509_BADCERT_CN_MISMATCH, -1, 0,
     EC_TLS_CERT_UNTRUSTED},
    {"untrusted and expired: untrusted", CURLE_PEER_FAILED_VERIFICATION,
     MBEDTLS_X509_BADCERT_NOT_TRUSTED | MBEDTLS_X509_BADCERT_EXPIRED, -1, 0, EC_TLS_CERT_UNTRUSTED},
    {"revoked", CURLE_PEER_FAILED_VERIFICATION, MBEDTLS_X509_BADCERT_REVOKED, -1, 0,
     EC_TLS_CERT_UNTRUSTED},
    {"bad key usage", CURLE_PEER_FAILED_VERIFICATION, MBEDTLS_X509_BADCERT_EXT_KEY_USAGE, -1, 0,
     EC_TLS_CERT_UNTRUSTED},
    {"expired", CURLE_PEER_FAILED_VERIFICATION, MBEDTLS_X509_BADCERT_EXPIRED, -1, 0,
     EC_TLS_CERT_EXPIRED},
    {"not yet valid", CURLE_PEER_FAILED_VERIFICATION, MBEDTLS_X509_BADCERT_FUTURE, -1, 0,
     EC_TLS_CERT_EXPIRED},
    {"expired and wrong name: expired", CURLE_PEER_FAILED_VERIFICATION,
     MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_CN_MISMATCH, -1, 0, EC_TLS_CERT_EXPIRED},
    {"wrong name", CURLE_PEER_FAILED_VERIFICATION, MBEDTLS_X509_BADCERT_CN_MISMATCH, -1, 0,
     EC_TLS_HOSTNAME},
    {"verification failed, flags unknown", CURLE_PEER_FAILED_VERIFICATION, 0, -1, 0,
     EC_TLS_CERT_UNTRUSTED},
    {"issuer error", CURLE_SSL_ISSUER_ERROR, MBEDTLS_X509_BADCERT_NOT_TRUSTED, -1, 0,
     EC_TLS_CERT_UNTRUSTED},
    {"our certificate unusable", CURLE_SSL_CERTPROBLEM, 0, -1, 0, EC_TLS_CLIENT_CERT},
    {"server sent bad_certificate", CURLE_SSL_CONNECT_ERROR, 0, 42, 0, EC_TLS_CLIENT_CERT},
    {"server sent unknown_ca", CURLE_SSL_CONNECT_ERROR, 0, 48, 0, EC_TLS_CLIENT_CERT},
    {"server sent certificate_expired", CURLE_SSL_CONNECT_ERROR, 0, 45, 0, EC_TLS_CLIENT_CERT},
    {"server sent certificate_required", CURLE_SSL_CONNECT_ERROR, 0, 116, 0, EC_TLS_CLIENT_CERT},
    {"server sent protocol_version", CURLE_SSL_CONNECT_ERROR, 0, 70, 0, EC_TLS_PROTOCOL_VERSION},
    {"we refused the server's version", CURLE_SSL_CONNECT_ERROR, 0, -1, 1, EC_TLS_PROTOCOL_VERSION},
    {"server sent handshake_failure", CURLE_SSL_CONNECT_ERROR, 0, 40, 0, EC_TLS_HANDSHAKE},
    {"server sent insufficient_security", CURLE_SSL_CONNECT_ERROR, 0, 71, 0, EC_TLS_HANDSHAKE},
    {"handshake failed, no alert", CURLE_SSL_CONNECT_ERROR, 0, -1, 0, EC_TLS_HANDSHAKE},
    {"no common cipher", CURLE_SSL_CIPHER, 0, -1, 0, EC_TLS_HANDSHAKE},
    {"CA file unreadable", CURLE_SSL_CACERT_BADFILE, 0, -1, 0, EC_TLS_HANDSHAKE},
    {"not TLS: connect", CURLE_COULDNT_CONNECT, 0, -1, 0, -1},
    {"not TLS: timeout", CURLE_OPERATION_TIMEDOUT, 0, -1, 0, -1},
    {"not TLS: ok", CURLE_OK, 0, -1, 0, -1},
};

static void test_classify_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tls_case *c = &cases[i];
        int got = ec_tls_classify(c->curl_code, c->flags, c->alert, c->version_refused);
        if (got != c->want)
            fail_msg("%s: got %d (%s), want %d (%s)", c->what, got,
                     ec_tls_reason_name((ec_tls_reason)got), c->want,
                     ec_tls_reason_name((ec_tls_reason)c->want));
    }
}

static void test_label_names(void **state)
{
    (void)state;
    static const char *const want[EC_TLS_REASONS] = {
        "pin_mismatch", "cert_untrusted",   "cert_expired", "hostname",
        "handshake",    "protocol_version", "client_cert",
    };
    for (int r = 0; r < EC_TLS_REASONS; r++)
        assert_string_equal(ec_tls_reason_name((ec_tls_reason)r), want[r]);
    assert_string_equal(ec_tls_reason_name(EC_TLS_REASONS), "unknown");
    assert_string_equal(ec_tls_reason_name((ec_tls_reason)-1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_label_names),
    };
    return cmocka_run_group_tests_name("tls_reason", tests, NULL, NULL);
}
