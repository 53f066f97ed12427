/*
 * ec_transport_load_ca (firmware/transport): the [tls] ca_file check that a
 * transport runs when it opens and a reload runs before it swaps anything.
 * A table of files: PEM (one, two), DER, and every refusal with its reason
 * (missing, empty, not a certificate, one bad certificate in a bundle, too
 * large). The certificates are generated here with mbedTLS; none is stored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mbedtls/ecp.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/transport.h"
#include "support.h"

static char *dir;
static uint8_t cert_der[2048];
static size_t cert_der_len;
static char cert_pem[4096];

/* A self-signed EC P-256 CA certificate, as DER and as PEM. */
static void make_ca(const char *cn)
{
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    assert_int_equal(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk), ec_rng_mbedtls, NULL), 0);
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    assert_int_equal(mbedtls_mpi_lset(&serial, 7), 0);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &pk);
    mbedtls_x509write_crt_set_issuer_key(&w, &pk);
    assert_int_equal(mbedtls_x509write_crt_set_subject_name(&w, cn), 0);
    assert_int_equal(mbedtls_x509write_crt_set_issuer_name(&w, cn), 0);
    assert_int_equal(mbedtls_x509write_crt_set_serial(&w, &serial), 0);
    assert_int_equal(mbedtls_x509write_crt_set_validity(&w, "20240101000000", "20440101000000"), 0);
    assert_int_equal(mbedtls_x509write_crt_set_basic_constraints(&w, 1, 0), 0);
    uint8_t buf[2048];
    int n = mbedtls_x509write_crt_der(&w, buf, sizeof buf, ec_rng_mbedtls, NULL);
    assert_true(n > 0);
    memcpy(cert_der, buf + sizeof buf - (size_t)n, (size_t)n);
    cert_der_len = (size_t)n;
    size_t olen = 0;
    assert_int_equal(mbedtls_pem_write_buffer("-----BEGIN CERTIFICATE-----\n",
                                              "-----END CERTIFICATE-----\n", cert_der, cert_der_len,
                                              (uint8_t *)cert_pem, sizeof cert_pem, &olen),
                     0);
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    mbedtls_pk_free(&pk);
}

static char *write_bytes(const char *name, const void *data, size_t len)
{
    char *path = ts_strf("%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

static void accepts(const char *path, size_t want_len)
{
    uint8_t *pem = NULL;
    size_t len = 0;
    char why[600] = "";
    assert_int_equal(ec_transport_load_ca(path, &pem, &len, why, sizeof why), EC_OK);
    assert_non_null(pem);
    assert_int_equal(len, want_len);
    free(pem);
}

static void refuses(const char *path, ec_status want, const char *reason)
{
    uint8_t *pem = (uint8_t *)"unchanged";
    size_t len = 99;
    char why[600] = "";
    assert_int_equal(ec_transport_load_ca(path, &pem, &len, why, sizeof why), want);
    assert_null(pem);
    assert_int_equal(len, 0);
    char *expected = ts_strf("[tls] ca_file %s: %s", path, reason);
    if (strncmp(why, expected, strlen(expected)) != 0)
        fail_msg("reason \"%s\", expected it to start with \"%s\"", why, expected);
    free(expected);
}

static void test_pem_one_and_bundle(void **state)
{
    (void)state;
    char *one = write_bytes("one.pem", cert_pem, strlen(cert_pem));
    accepts(one, strlen(cert_pem));
    char *two_text = ts_strf("%s%s", cert_pem, cert_pem);
    char *two = write_bytes("two.pem", two_text, strlen(two_text));
    accepts(two, strlen(two_text));
    free(one);
    free(two_text);
    free(two);
}

static void test_der(void **state)
{
    (void)state;
    char *der = write_bytes("ca.der", cert_der, cert_der_len);
    accepts(der, cert_der_len);
    free(der);
}

static void test_refusals(void **state)
{
    (void)state;
    char *missing = ts_strf("%s/missing.pem", dir);
    refuses(missing, EC_ERR_NOT_FOUND, "No such file or directory");
    free(missing);

    char *empty = write_bytes("empty.pem", "", 0);
    refuses(empty, EC_ERR_CONFIG, "no PEM or DER certificate");
    free(empty);

    static const char junk[] =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    char *bad = write_bytes("junk.pem", junk, strlen(junk));
    refuses(bad, EC_ERR_CONFIG, "no PEM or DER certificate");
    free(bad);

    char *text = write_bytes("text.pem", "hello\n", 6);
    refuses(text, EC_ERR_CONFIG, "no PEM or DER certificate");
    free(text);

    /* a bundle with one good and one broken certificate is refused whole */
    char *mixed_text = ts_strf("%s%s", cert_pem, junk);
    char *mixed = write_bytes("mixed.pem", mixed_text, strlen(mixed_text));
    refuses(mixed, EC_ERR_CONFIG, "1 certificate(s) do not parse");
    free(mixed_text);
    free(mixed);

    size_t big_len = 1024 * 1024 + 1;
    char *big_data = malloc(big_len);
    assert_non_null(big_data);
    memset(big_data, 'A', big_len);
    char *big = write_bytes("big.pem", big_data, big_len);
    refuses(big, EC_ERR_CONFIG, "larger than 1048576 bytes");
    free(big_data);
    free(big);
}

static int setup(void **state)
{
    (void)state;
    dir = ts_mkdtemp();
    make_ca("CN=edgecap-transport-test,O=edgecap");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ts_rmtree(dir);
    free(dir);
    return 0;
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pem_one_and_bundle),
        cmocka_unit_test(test_der),
        cmocka_unit_test(test_refusals),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    ec_rng_free();
    return rc;
}
