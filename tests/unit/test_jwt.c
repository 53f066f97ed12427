/*
 * The client assertion (firmware/jwt): base64url against RFC 4648's vectors;
 * the header and claims decoded back and compared with JSON built here from
 * an independent SHA-256 of the certificate; PS256 verified by mbedTLS with
 * the salt length pinned to 32; ES256 converted back to DER and verified;
 * tampering caught; every refusal (lifetime, clock, key type and size, curve,
 * key not matching the certificate, malformed inputs, non-UTF-8 strings) with
 * its reason; the output in secure memory; every failure path (no memory,
 * random generator, signer) leaves no secure allocation behind.
 *
 * Keys and certificates are generated at test time with mbedTLS (PKCS#1,
 * SEC1, and PKCS#8 wrapped here); none is stored.
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

#include <cjson/cJSON.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "edgecap/fault.h"
#include "edgecap/jwt.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "support.h"

#define NOW_S INT64_C(1795000000)
#define CLIENT_ID "6731de76-14a6-49ae-97bc-6eba6914391e"
#define AUDIENCE                                                                                   \
    "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"

/* ---- credentials made at test time ------------------------------------------------------- */

typedef struct {
    uint8_t *key_der; /* PKCS#1 (RSA) or SEC1 (EC) */
    size_t key_len;
    uint8_t *pkcs8_der;
    size_t pkcs8_len;
    uint8_t *cert_der; /* self-signed with its own key */
    size_t cert_len;
} cred;

enum { RSA_A, RSA_B, RSA_1024, EC_A, EC_B, EC_P384, N_CREDS };
static cred creds[N_CREDS];

static uint8_t *dup_tail(const uint8_t *buf, size_t cap, int n, size_t *len)
{
    assert_true(n > 0);
    uint8_t *out = malloc((size_t)n);
    assert_non_null(out);
    memcpy(out, buf + cap - (size_t)n, (size_t)n);
    *len = (size_t)n;
    return out;
}

/* PrivateKeyInfo (RFC 5208) around a PKCS#1 or SEC1 key, which mbedTLS 2.28
 * parses but does not write. */
static uint8_t *wrap_pkcs8(const mbedtls_pk_context *pk, const uint8_t *inner, size_t inner_len,
                           size_t *len)
{
    uint8_t buf[4096];
    unsigned char *p = buf + sizeof buf;
    size_t n = 0;
    int rc;
#define W(call)                                                                                    \
    do {                                                                                           \
        rc = (call);                                                                               \
        assert_true(rc >= 0);                                                                      \
        n += (size_t)rc;                                                                           \
    } while (0)
    W(mbedtls_asn1_write_raw_buffer(&p, buf, inner, inner_len));
    W(mbedtls_asn1_write_len(&p, buf, inner_len));
    W(mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_OCTET_STRING));
    size_t alg_n = 0;
    if (mbedtls_pk_get_type(pk) == MBEDTLS_PK_RSA) {
        rc = mbedtls_asn1_write_algorithm_identifier(&p, buf, MBEDTLS_OID_PKCS1_RSA,
                                                     MBEDTLS_OID_SIZE(MBEDTLS_OID_PKCS1_RSA), 0);
        assert_true(rc > 0);
        alg_n = (size_t)rc;
    } else {
        const char *curve_oid;
        size_t curve_oid_len;
        assert_int_equal(
            mbedtls_oid_get_oid_by_ec_grp(mbedtls_pk_ec(*pk)->grp.id, &curve_oid, &curve_oid_len),
            0);
        int m = mbedtls_asn1_write_oid(&p, buf, curve_oid, curve_oid_len);
        assert_true(m > 0);
        rc = mbedtls_asn1_write_algorithm_identifier(
            &p, buf, MBEDTLS_OID_EC_ALG_UNRESTRICTED,
            MBEDTLS_OID_SIZE(MBEDTLS_OID_EC_ALG_UNRESTRICTED), (size_t)m);
        assert_true(rc > 0);
        alg_n = (size_t)rc;
    }
    n += alg_n;
    W(mbedtls_asn1_write_int(&p, buf, 0));
    W(mbedtls_asn1_write_len(&p, buf, n));
    W(mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
#undef W
    return dup_tail(buf, sizeof buf, (int)n, len);
}

static void make_cred(cred *c, bool rsa, int size)
{
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    if (rsa) {
        assert_int_equal(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)), 0);
        assert_int_equal(
            mbedtls_rsa_gen_key(mbedtls_pk_rsa(pk), ec_rng_mbedtls, NULL, (unsigned)size, 65537),
            0);
    } else {
        assert_int_equal(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
        assert_int_equal(mbedtls_ecp_gen_key((mbedtls_ecp_group_id)size, mbedtls_pk_ec(pk),
                                             ec_rng_mbedtls, NULL),
                         0);
    }
    static uint8_t buf[8192];
    c->key_der =
        dup_tail(buf, sizeof buf, mbedtls_pk_write_key_der(&pk, buf, sizeof buf), &c->key_len);
    c->pkcs8_der = wrap_pkcs8(&pk, c->key_der, c->key_len, &c->pkcs8_len);

    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    assert_int_equal(mbedtls_mpi_lset(&serial, 4242), 0);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &pk);
    mbedtls_x509write_crt_set_issuer_key(&w, &pk);
    assert_int_equal(mbedtls_x509write_crt_set_subject_name(&w, "CN=edgecap-jwt-test,O=edgecap"),
                     0);
    assert_int_equal(mbedtls_x509write_crt_set_issuer_name(&w, "CN=edgecap-jwt-test,O=edgecap"), 0);
    assert_int_equal(mbedtls_x509write_crt_set_serial(&w, &serial), 0);
    assert_int_equal(mbedtls_x509write_crt_set_validity(&w, "20240101000000", "20440101000000"), 0);
    c->cert_der = dup_tail(buf, sizeof buf,
                           mbedtls_x509write_crt_der(&w, buf, sizeof buf, ec_rng_mbedtls, NULL),
                           &c->cert_len);
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    mbedtls_pk_free(&pk);
}

static int group_setup(void **state)
{
    (void)state;
    make_cred(&creds[RSA_A], true, 2048);
    make_cred(&creds[RSA_B], true, 2048);
    make_cred(&creds[RSA_1024], true, 1024);
    make_cred(&creds[EC_A], false, MBEDTLS_ECP_DP_SECP256R1);
    make_cred(&creds[EC_B], false, MBEDTLS_ECP_DP_SECP256R1);
    make_cred(&creds[EC_P384], false, MBEDTLS_ECP_DP_SECP384R1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_CREDS; i++) {
        free(creds[i].key_der);
        free(creds[i].pkcs8_der);
        free(creds[i].cert_der);
    }
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static size_t live_secure_allocations(void)
{
    ec_secmem_stats s;
    ec_secmem_get_stats(&s);
    return s.live_allocations;
}

/* A base64url decoder written for the test (strict: no padding, no other
 * characters); returns a malloc'd buffer with a NUL after the bytes. */
static uint8_t *b64url_decode(const char *in, size_t len, size_t *out_len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_true(len % 4 != 1);
    uint8_t *out = malloc(len * 3 / 4 + 2);
    assert_non_null(out);
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        const char *at = in[i] != '\0' ? strchr(alphabet, in[i]) : NULL;
        assert_non_null(at);
        acc = acc << 6 | (uint32_t)(at - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    assert_int_equal(acc & ((1u << bits) - 1), 0); /* no stray bits */
    out[n] = '\0';
    *out_len = n;
    return out;
}

static char *b64url(const uint8_t *in, size_t len)
{
    char *out = malloc(EC_BASE64URL_LEN(len) + 1);
    assert_non_null(out);
    assert_int_equal(ec_base64url_encode(in, len, out, EC_BASE64URL_LEN(len) + 1),
                     EC_BASE64URL_LEN(len));
    return out;
}

/* A token taken apart: decoded header, claims and signature, and the SHA-256
 * of its signing input. */
typedef struct {
    char *header;
    char *claims;
    uint8_t *sig;
    size_t sig_len;
    uint8_t hash[32];
} parts;

static void split(const char *jws, parts *pt)
{
    const char *d1 = strchr(jws, '.');
    assert_non_null(d1);
    const char *d2 = strchr(d1 + 1, '.');
    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));
    assert_null(strchr(jws, '=')); /* no padding */
    size_t n;
    pt->header = (char *)b64url_decode(jws, (size_t)(d1 - jws), &n);
    assert_int_equal(strlen(pt->header), n);
    pt->claims = (char *)b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &n);
    assert_int_equal(strlen(pt->claims), n);
    pt->sig = b64url_decode(d2 + 1, strlen(d2 + 1), &pt->sig_len);
    assert_int_equal(
        mbedtls_sha256_ret((const unsigned char *)jws, (size_t)(d2 - jws), pt->hash, 0), 0);
}

static void parts_free(parts *pt)
{
    free(pt->header);
    free(pt->claims);
    free(pt->sig);
}

static void parse_cert(mbedtls_x509_crt *crt, const cred *c)
{
    mbedtls_x509_crt_init(crt);
    assert_int_equal(mbedtls_x509_crt_parse_der(crt, c->cert_der, c->cert_len), 0);
}

/* PS256: RSASSA-PSS, MGF1-SHA-256, and a salt of exactly `salt_len` bytes. */
static int verify_ps256(const cred *c, const uint8_t hash[32], const uint8_t *sig, size_t sig_len,
                        int salt_len)
{
    mbedtls_x509_crt crt;
    parse_cert(&crt, c);
    mbedtls_rsa_context *rsa = mbedtls_pk_rsa(crt.pk);
    assert_int_equal(sig_len, mbedtls_rsa_get_len(rsa));
    int rc =
        mbedtls_rsa_rsassa_pss_verify_ext(rsa, NULL, NULL, MBEDTLS_RSA_PUBLIC, MBEDTLS_MD_SHA256,
                                          32, hash, MBEDTLS_MD_SHA256, salt_len, sig);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

/* ES256: r || s back to the DER ECDSA-Sig-Value, then mbedtls_pk_verify. */
static int verify_es256(const cred *c, const uint8_t hash[32], const uint8_t *sig, size_t sig_len)
{
    assert_int_equal(sig_len, 64);
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    assert_int_equal(mbedtls_mpi_read_binary(&r, sig, 32), 0);
    assert_int_equal(mbedtls_mpi_read_binary(&s, sig + 32, 32), 0);
    uint8_t der[80];
    unsigned char *p = der + sizeof der;
    size_t n = 0;
    int rc = mbedtls_asn1_write_mpi(&p, der, &s);
    assert_true(rc > 0);
    n += (size_t)rc;
    rc = mbedtls_asn1_write_mpi(&p, der, &r);
    assert_true(rc > 0);
    n += (size_t)rc;
    rc = mbedtls_asn1_write_len(&p, der, n);
    assert_true(rc > 0);
    n += (size_t)rc;
    rc = mbedtls_asn1_write_tag(&p, der, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
    assert_true(rc > 0);
    n += (size_t)rc;
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    mbedtls_x509_crt crt;
    parse_cert(&crt, c);
    rc = mbedtls_pk_verify(&crt.pk, MBEDTLS_MD_SHA256, hash, 32, p, n);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

static int verify(ec_jwt_alg alg, const cred *c, const uint8_t hash[32], const uint8_t *sig,
                  size_t sig_len)
{
    return alg == EC_JWT_PS256 ? verify_ps256(c, hash, sig, sig_len, 32)
                               : verify_es256(c, hash, sig, sig_len);
}

static ec_jwt_assertion_params params_for(ec_jwt_alg alg, const cred *c)
{
    return (ec_jwt_assertion_params){.alg = alg,
                                     .cert_der = c->cert_der,
                                     .cert_len = c->cert_len,
                                     .client_id = CLIENT_ID,
                                     .audience = AUDIENCE,
                                     .now_s = NOW_S,
                                     .lifetime_s = 300};
}

static void signer_ok(ec_jwt_signer_der *s, ec_jwt_alg alg, const cred *c)
{
    char why[256];
    assert_int_equal(ec_jwt_signer_from_der(s, alg, c->key_der, c->key_len, c->cert_der,
                                            c->cert_len, why, sizeof why),
                     EC_OK);
    assert_string_equal(why, "");
}

static bool is_uuid_v4(const char *u)
{
    if (strlen(u) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? u[i] != '-' : strchr("0123456789abcdef", u[i]) == NULL || u[i] == '\0')
            return false;
    }
    return u[14] == '4' && strchr("89ab", u[19]) != NULL;
}

/* ---- base64url --------------------------------------------------------------------------- */

static void test_base64url_rfc4648_vectors(void **state)
{
    (void)state;
    /* RFC 4648 section 10, padding dropped (section 5 alphabet; these
     * vectors contain neither '+' nor '/'). */
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
             {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[16];
        memset(out, 'x', sizeof out);
        size_t n = ec_base64url_encode((const uint8_t *)v[i].in, strlen(v[i].in), out, sizeof out);
        assert_int_equal(n, strlen(v[i].out));
        assert_string_equal(out, v[i].out);
        assert_int_equal(EC_BASE64URL_LEN(strlen(v[i].in)), strlen(v[i].out));
    }
    /* The URL-safe characters: standard base64 would say "+/+/" and "-_" is
     * what base64url must give. */
    static const uint8_t high[] = {0xfb, 0xff, 0xbf};
    char out[8];
    assert_int_equal(ec_base64url_encode(high, sizeof high, out, sizeof out), 4);
    assert_string_equal(out, "-_-_");
    static const uint8_t all[] = {0x00, 0x10, 0x83, 0x10, 0x51, 0x87, 0x20, 0x92, 0x8b, 0x30,
                                  0xd3, 0x8f, 0x41, 0x14, 0x93, 0x51, 0x55, 0x97, 0x61, 0x96,
                                  0x9b, 0x71, 0xd7, 0x9f, 0x82, 0x18, 0xa3, 0x92, 0x59, 0xa7,
                                  0xa2, 0x9a, 0xab, 0xb2, 0xdb, 0xaf, 0xc3, 0x1c, 0xb3, 0xd3,
                                  0x5d, 0xb7, 0xe3, 0x9e, 0xbb, 0xf3, 0xdf, 0xbf};
    char every[65];
    assert_int_equal(ec_base64url_encode(all, sizeof all, every, sizeof every), 64);
    assert_string_equal(every, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
}

static void test_base64url_refuses_short_output(void **state)
{
    (void)state;
    char out[8];
    /* "foobar" needs 8 characters and the NUL. */
    memset(out, 'x', sizeof out);
    assert_int_equal(ec_base64url_encode((const uint8_t *)"foobar", 6, out, 8), 0);
    assert_int_equal(out[0], '\0');
    char exact[9];
    assert_int_equal(ec_base64url_encode((const uint8_t *)"foobar", 6, exact, 9), 8);
    assert_string_equal(exact, "Zm9vYmFy");
    assert_int_equal(ec_base64url_encode((const uint8_t *)"f", 1, out, 0), 0);
    assert_int_equal(ec_base64url_encode(NULL, 3, out, sizeof out), 0);
}

/* ---- the assertion ----------------------------------------------------------------------- */

/* Signs with `alg`, takes the token apart and checks every field. */
static void check_assertion(ec_jwt_alg alg, const cred *c)
{
    ec_jwt_signer_der der;
    signer_ok(&der, alg, c);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    ec_jwt_assertion_params p = params_for(alg, c);
    char *jws = NULL;
    size_t len = 0;
    char jti[EC_JWT_JTI_BYTES];
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, &len, jti), EC_OK);
    assert_non_null(jws);
    assert_int_equal(strlen(jws), len);
    /* the output is secure memory, NUL included */
    assert_true(ec_secmem_size(jws) >= len + 1);

    parts pt;
    split(jws, &pt);
    uint8_t thumb[32];
    assert_int_equal(mbedtls_sha256_ret(c->cert_der, c->cert_len, thumb, 0), 0);
    char *x5t = b64url(thumb, sizeof thumb);
    assert_int_equal(strlen(x5t), 43);
    char *want_header = ts_strf("{\"alg\":\"%s\",\"typ\":\"JWT\",\"x5t#S256\":\"%s\"}",
                                alg == EC_JWT_PS256 ? "PS256" : "ES256", x5t);
    assert_string_equal(pt.header, want_header);

    assert_true(is_uuid_v4(jti));
    char *want_claims = ts_strf("{\"aud\":\"%s\",\"iss\":\"%s\",\"sub\":\"%s\",\"jti\":\"%s\","
                                "\"nbf\":%lld,\"iat\":%lld,\"exp\":%lld}",
                                AUDIENCE, CLIENT_ID, CLIENT_ID, jti, (long long)NOW_S,
                                (long long)NOW_S, (long long)NOW_S + 300);
    assert_string_equal(pt.claims, want_claims);

    assert_int_equal(verify(alg, c, pt.hash, pt.sig, pt.sig_len), 0);

    ec_secmem_free(jws);
    free(x5t);
    free(want_header);
    free(want_claims);
    parts_free(&pt);
    ec_jwt_signer_der_free(&der);
}

static void test_ps256_fields_and_signature(void **state)
{
    (void)state;
    check_assertion(EC_JWT_PS256, &creds[RSA_A]);
}

static void test_es256_fields_and_signature(void **state)
{
    (void)state;
    check_assertion(EC_JWT_ES256, &creds[EC_A]);
}

/* RFC 7518 section 3.5: the PSS salt is as long as the hash (32 bytes). The
 * verifier is told the exact length, so a longer or shorter salt fails. */
static void test_ps256_salt_is_hash_length(void **state)
{
    (void)state;
    const cred *c = &creds[RSA_A];
    ec_jwt_signer_der der;
    signer_ok(&der, EC_JWT_PS256, c);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    ec_jwt_assertion_params p = params_for(EC_JWT_PS256, c);
    char *jws = NULL;
    size_t len;
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL), EC_OK);
    parts pt;
    split(jws, &pt);
    assert_int_equal(pt.sig_len, 256);
    assert_int_equal(verify_ps256(c, pt.hash, pt.sig, pt.sig_len, 32), 0);
    assert_int_not_equal(verify_ps256(c, pt.hash, pt.sig, pt.sig_len, 20), 0);
    assert_int_not_equal(verify_ps256(c, pt.hash, pt.sig, pt.sig_len, 222), 0);
    ec_secmem_free(jws);
    parts_free(&pt);
    ec_jwt_signer_der_free(&der);
}

/* A changed claim or a changed signature no longer verifies. */
static void check_tamper(ec_jwt_alg alg, const cred *c)
{
    ec_jwt_signer_der der;
    signer_ok(&der, alg, c);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    ec_jwt_assertion_params p = params_for(alg, c);
    char *jws = NULL;
    size_t len;
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL), EC_OK);
    char *copy = strdup(jws);
    assert_non_null(copy);
    parts pt;

    /* one character of the claims part */
    char *claims = strchr(copy, '.') + 1;
    claims[5] = claims[5] == 'A' ? 'B' : 'A';
    split(copy, &pt);
    assert_int_not_equal(verify(alg, c, pt.hash, pt.sig, pt.sig_len), 0);
    parts_free(&pt);

    /* one bit of the signature */
    strcpy(copy, jws);
    split(copy, &pt);
    pt.sig[pt.sig_len / 2] ^= 0x01;
    assert_int_not_equal(verify(alg, c, pt.hash, pt.sig, pt.sig_len), 0);
    parts_free(&pt);

    /* the untouched token still verifies (the checks above are not vacuous) */
    split(jws, &pt);
    assert_int_equal(verify(alg, c, pt.hash, pt.sig, pt.sig_len), 0);
    parts_free(&pt);

    free(copy);
    ec_secmem_free(jws);
    ec_jwt_signer_der_free(&der);
}

static void test_tampering_detected(void **state)
{
    (void)state;
    check_tamper(EC_JWT_PS256, &creds[RSA_A]);
    check_tamper(EC_JWT_ES256, &creds[EC_A]);
}

static void test_jti_unique_and_v4(void **state)
{
    (void)state;
    const cred *c = &creds[EC_A];
    ec_jwt_signer_der der;
    signer_ok(&der, EC_JWT_ES256, c);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    ec_jwt_assertion_params p = params_for(EC_JWT_ES256, c);
    char *a = NULL, *b = NULL;
    size_t la, lb;
    char jti_a[EC_JWT_JTI_BYTES], jti_b[EC_JWT_JTI_BYTES];
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, &a, &la, jti_a), EC_OK);
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, &b, &lb, jti_b), EC_OK);
    assert_true(is_uuid_v4(jti_a));
    assert_true(is_uuid_v4(jti_b));
    assert_string_not_equal(jti_a, jti_b);
    /* the jti in the token is the one reported */
    parts pa;
    split(a, &pa);
    char *field = ts_strf("\"jti\":\"%s\"", jti_a);
    assert_non_null(strstr(pa.claims, field));
    free(field);
    parts_free(&pa);
    assert_string_not_equal(a, b);
    ec_secmem_free(a);
    ec_secmem_free(b);
    ec_jwt_signer_der_free(&der);
}

static void test_lifetime_bounds(void **state)
{
    (void)state;
    const cred *c = &creds[EC_A];
    ec_jwt_signer_der der;
    signer_ok(&der, EC_JWT_ES256, c);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    static const struct {
        int lifetime_s;
        ec_status want;
    } v[] = {{1, EC_OK},          {600, EC_OK},         {601, EC_ERR_INVALID},
             {0, EC_ERR_INVALID}, {-1, EC_ERR_INVALID}, {3600, EC_ERR_INVALID}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ec_jwt_assertion_params p = params_for(EC_JWT_ES256, c);
        p.lifetime_s = v[i].lifetime_s;
        char *jws = (char *)1;
        size_t len = 99;
        assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL), v[i].want);
        if (v[i].want != EC_OK) {
            assert_null(jws);
            assert_int_equal(len, 0);
            continue;
        }
        parts pt;
        split(jws, &pt);
        char *exp = ts_strf(",\"exp\":%lld}", (long long)NOW_S + v[i].lifetime_s);
        assert_non_null(strstr(pt.claims, exp));
        free(exp);
        parts_free(&pt);
        ec_secmem_free(jws);
    }
    ec_jwt_signer_der_free(&der);
}

/* Impossible arguments: each refused with EC_ERR_INVALID and no output. */
static void test_invalid_params(void **state)
{
    (void)state;
    const cred *c = &creds[EC_A];
    ec_jwt_signer_der der;
    signer_ok(&der, EC_JWT_ES256, c);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    char *pem = ts_strf("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    uint8_t *trailing = malloc(c->cert_len + 1);
    assert_non_null(trailing);
    memcpy(trailing, c->cert_der, c->cert_len);
    trailing[c->cert_len] = 0;
    char *long_id = malloc(EC_JWT_FIELD_MAX_BYTES + 2);
    assert_non_null(long_id);
    memset(long_id, 'a', EC_JWT_FIELD_MAX_BYTES + 1);
    long_id[EC_JWT_FIELD_MAX_BYTES + 1] = '\0';
    size_t before = live_secure_allocations();

    for (int i = 0;; i++) {
        ec_jwt_assertion_params p = params_for(EC_JWT_ES256, c);
        switch (i) {
        case 0:
            p.client_id = NULL;
            break;
        case 1:
            p.client_id = "";
            break;
        case 2:
            p.audience = NULL;
            break;
        case 3:
            p.audience = "";
            break;
        case 4:
            p.now_s = 0; /* the clock of a board that has not synchronised */
            break;
        case 5:
            p.now_s = INT64_C(1577836799); /* one second before 2020 */
            break;
        case 6:
            p.now_s = INT64_MAX - 1; /* exp would overflow */
            break;
        case 7:
            p.cert_der = NULL;
            break;
        case 8:
            p.cert_len = 0;
            break;
        case 9: /* PEM is not DER */
            p.cert_der = (const uint8_t *)pem;
            p.cert_len = strlen(pem);
            break;
        case 10: /* not exactly one certificate */
            p.cert_der = trailing;
            p.cert_len = c->cert_len + 1;
            break;
        case 11: /* the certificate's key does not suit the algorithm */
            p.cert_der = creds[RSA_A].cert_der;
            p.cert_len = creds[RSA_A].cert_len;
            break;
        case 12:
            p.alg = (ec_jwt_alg)7;
            break;
        case 13:
            p.client_id = long_id;
            break;
        case 14: /* the signer is for ES256 */
            p = params_for(EC_JWT_PS256, &creds[RSA_A]);
            break;
        default:
            goto done;
        }
        char *jws = (char *)1;
        size_t len = 99;
        char jti[EC_JWT_JTI_BYTES] = "x";
        ec_status st = ec_jwt_client_assertion(&p, &signer, &jws, &len, jti);
        if (st != EC_ERR_INVALID)
            fail_msg("case %d: status %d, expected EC_ERR_INVALID", i, st);
        assert_null(jws);
        assert_int_equal(len, 0);
        assert_string_equal(jti, "");
        assert_int_equal(live_secure_allocations(), before);
    }
done:;
    /* NULL pointers */
    ec_jwt_assertion_params p = params_for(EC_JWT_ES256, c);
    char *jws = NULL;
    size_t len;
    assert_int_equal(ec_jwt_client_assertion(NULL, &signer, &jws, &len, NULL), EC_ERR_INVALID);
    assert_int_equal(ec_jwt_client_assertion(&p, NULL, &jws, &len, NULL), EC_ERR_INVALID);
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, NULL, &len, NULL), EC_ERR_INVALID);
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, NULL, NULL), EC_ERR_INVALID);
    ec_jwt_signer none = {0};
    assert_int_equal(ec_jwt_client_assertion(&p, &none, &jws, &len, NULL), EC_ERR_INVALID);
    /* exactly EC_JWT_FIELD_MAX_BYTES is accepted */
    long_id[EC_JWT_FIELD_MAX_BYTES] = '\0';
    p.client_id = long_id;
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL), EC_OK);
    ec_secmem_free(jws);

    free(long_id);
    free(trailing);
    free(pem);
    ec_jwt_signer_der_free(&der);
}

/* Strings are JSON-escaped, not trusted: quotes, backslashes, control
 * characters and non-ASCII UTF-8 come back intact through cJSON, and the
 * escaping is the expected one. */
static void test_json_escaping(void **state)
{
    (void)state;
    const cred *c = &creds[EC_A];
    ec_jwt_signer_der der;
    signer_ok(&der, EC_JWT_ES256, c);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    static const char client[] = "a\"b\\c/d\x01\x1f\b\f\n\r\t\x7f"
                                 "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf";
    static const char audience[] = "https://login.example/t/oauth2/v2.0/token?a=\"b\"&c=\\";
    ec_jwt_assertion_params p = params_for(EC_JWT_ES256, c);
    p.client_id = client;
    p.audience = audience;
    char *jws = NULL;
    size_t len;
    assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL), EC_OK);
    parts pt;
    split(jws, &pt);
    assert_non_null(strstr(pt.claims, "\"iss\":\"a\\\"b\\\\c/d\\u0001\\u001f\\b\\f\\n\\r\\t\x7f"
                                      "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\","));

    cJSON *json = cJSON_Parse(pt.claims);
    assert_non_null(json);
    static const char *const names[] = {"iss", "sub"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, names[i]);
        assert_true(cJSON_IsString(v));
        assert_string_equal(v->valuestring, client);
    }
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(json, "aud");
    assert_true(cJSON_IsString(aud));
    assert_string_equal(aud->valuestring, audience);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(json, "exp");
    assert_true(cJSON_IsNumber(exp));
    assert_true(exp->valuedouble == (double)(NOW_S + 300));
    cJSON_Delete(json);
    assert_int_equal(verify_es256(c, pt.hash, pt.sig, pt.sig_len), 0);
    parts_free(&pt);
    ec_secmem_free(jws);
    ec_jwt_signer_der_free(&der);
}

/* Bytes that are not UTF-8 cannot be put in a JSON string: refused. */
static void test_not_utf8_refused(void **state)
{
    (void)state;
    const cred *c = &creds[EC_A];
    ec_jwt_signer_der der;
    signer_ok(&der, EC_JWT_ES256, c);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    static const char *const bad[] = {
        "\x80",             /* a lone continuation byte */
        "a\xc3",            /* truncated two-byte sequence */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, three bytes */
        "\xed\xa0\x80",     /* a UTF-16 surrogate */
        "\xe2\x82",         /* truncated three-byte sequence */
        "\xf0\x8f\xbf\xbf", /* overlong, four bytes */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xff",             /* never in UTF-8 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int field = 0; field < 2; field++) {
            ec_jwt_assertion_params p = params_for(EC_JWT_ES256, c);
            if (field == 0)
                p.client_id = bad[i];
            else
                p.audience = bad[i];
            char *jws = NULL;
            size_t len;
            if (ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL) != EC_ERR_INVALID)
                fail_msg("bad[%zu] in field %d was accepted", i, field);
            assert_null(jws);
        }
    }
    ec_jwt_signer_der_free(&der);
}

/* ---- the signer -------------------------------------------------------------------------- */

/* PKCS#1, SEC1 and PKCS#8 keys are all accepted and sign verifiably. */
static void test_signer_key_formats(void **state)
{
    (void)state;
    static const struct {
        ec_jwt_alg alg;
        int cred;
    } v[] = {{EC_JWT_PS256, RSA_A}, {EC_JWT_ES256, EC_A}};
    for (size_t i = 0; i < 2; i++) {
        const cred *c = &creds[v[i].cred];
        for (int pkcs8 = 0; pkcs8 < 2; pkcs8++) {
            ec_jwt_signer_der der;
            char why[256];
            assert_int_equal(ec_jwt_signer_from_der(&der, v[i].alg,
                                                    pkcs8 ? c->pkcs8_der : c->key_der,
                                                    pkcs8 ? c->pkcs8_len : c->key_len, c->cert_der,
                                                    c->cert_len, why, sizeof why),
                             EC_OK);
            /* the signer keeps its own copy, in secure memory */
            assert_true(ec_secmem_size(der.key_der) >= der.key_len);
            ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
            ec_jwt_assertion_params p = params_for(v[i].alg, c);
            char *jws = NULL;
            size_t len;
            assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL), EC_OK);
            parts pt;
            split(jws, &pt);
            assert_int_equal(verify(v[i].alg, c, pt.hash, pt.sig, pt.sig_len), 0);
            parts_free(&pt);
            ec_secmem_free(jws);
            ec_jwt_signer_der_free(&der);
            assert_null(der.key_der);
        }
    }
}

/* Every refusal of a key or certificate, with the reason the user sees. */
static void test_signer_refusals(void **state)
{
    (void)state;
    static const uint8_t garbage[] = {0x30, 0x03, 0x02, 0x01, 0x00};
    /* A key marked encrypted, made here from the test's own EC key (its PEM
     * with the RFC 1421 headers added): mbedTLS asks for a password before
     * it decrypts anything. */
    static char encrypted[4096];
    {
        mbedtls_pk_context pk;
        mbedtls_pk_init(&pk);
        assert_int_equal(
            mbedtls_pk_parse_key(&pk, creds[EC_A].key_der, creds[EC_A].key_len, NULL, 0), 0);
        char pem[2048];
        assert_int_equal(mbedtls_pk_write_key_pem(&pk, (unsigned char *)pem, sizeof pem), 0);
        mbedtls_pk_free(&pk);
        const char *body = strchr(pem, '\n') + 1;
        snprintf(encrypted, sizeof encrypted,
                 "%.*sProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
                 "00112233445566778899AABBCCDDEEFF\n\n%s",
                 (int)(body - pem), pem, body);
    }
    const struct {
        const char *name;
        ec_jwt_alg alg;
        const uint8_t *key;
        size_t key_len;
        const uint8_t *cert;
        size_t cert_len;
        const char *why;
    } v[] = {
        {"EC key for PS256", EC_JWT_PS256, creds[EC_A].key_der, creds[EC_A].key_len,
         creds[EC_A].cert_der, creds[EC_A].cert_len,
         "PS256 needs an RSA key; the private key is an EC key"},
        {"RSA key for ES256", EC_JWT_ES256, creds[RSA_A].key_der, creds[RSA_A].key_len,
         creds[RSA_A].cert_der, creds[RSA_A].cert_len,
         "ES256 needs an EC key on P-256; the private key is an RSA key"},
        {"RSA 1024", EC_JWT_PS256, creds[RSA_1024].key_der, creds[RSA_1024].key_len,
         creds[RSA_1024].cert_der, creds[RSA_1024].cert_len,
         "PS256 needs an RSA key of 2048 to 8192 bits; the private key has 1024"},
        {"P-384", EC_JWT_ES256, creds[EC_P384].key_der, creds[EC_P384].key_len,
         creds[EC_P384].cert_der, creds[EC_P384].cert_len,
         "ES256 needs an EC key on P-256 (secp256r1); the private key is on secp384r1"},
        {"RSA key of another certificate", EC_JWT_PS256, creds[RSA_B].key_der, creds[RSA_B].key_len,
         creds[RSA_A].cert_der, creds[RSA_A].cert_len,
         "the private key does not belong to the certificate"},
        {"EC key of another certificate", EC_JWT_ES256, creds[EC_B].pkcs8_der,
         creds[EC_B].pkcs8_len, creds[EC_A].cert_der, creds[EC_A].cert_len,
         "the private key does not belong to the certificate"},
        {"RSA key, EC certificate", EC_JWT_PS256, creds[RSA_A].key_der, creds[RSA_A].key_len,
         creds[EC_A].cert_der, creds[EC_A].cert_len,
         "the private key does not belong to the certificate"},
        {"key not DER", EC_JWT_ES256, garbage, sizeof garbage, creds[EC_A].cert_der,
         creds[EC_A].cert_len, "the private key is not a DER private key (PKCS#8, PKCS#1 or SEC1)"},
        {"certificate not DER", EC_JWT_ES256, creds[EC_A].key_der, creds[EC_A].key_len, garbage,
         sizeof garbage, "the certificate is not a DER X.509 certificate"},
        {"encrypted key", EC_JWT_ES256, (const uint8_t *)encrypted, strlen(encrypted) + 1,
         creds[EC_A].cert_der, creds[EC_A].cert_len,
         "the private key is encrypted (an unencrypted key is needed)"},
        {"certificate given as key", EC_JWT_ES256, creds[EC_A].cert_der, creds[EC_A].cert_len,
         creds[EC_A].cert_der, creds[EC_A].cert_len,
         "the private key is not a DER private key (PKCS#8, PKCS#1 or SEC1)"},
    };
    size_t before = live_secure_allocations();
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ec_jwt_signer_der der;
        memset(&der, 0xA5, sizeof der);
        char why[256];
        ec_status st = ec_jwt_signer_from_der(&der, v[i].alg, v[i].key, v[i].key_len, v[i].cert,
                                              v[i].cert_len, why, sizeof why);
        if (st != EC_ERR_CONFIG || strcmp(why, v[i].why) != 0)
            fail_msg("%s: status %d, why \"%s\"; expected EC_ERR_CONFIG, \"%s\"", v[i].name, st,
                     why, v[i].why);
        assert_null(der.key_der);
        ec_jwt_signer_der_free(&der); /* safe after a failure */
        assert_int_equal(live_secure_allocations(), before);
    }
    /* impossible arguments */
    ec_jwt_signer_der der;
    char why[64];
    const cred *c = &creds[EC_A];
    assert_int_equal(ec_jwt_signer_from_der(NULL, EC_JWT_ES256, c->key_der, c->key_len, c->cert_der,
                                            c->cert_len, why, sizeof why),
                     EC_ERR_INVALID);
    assert_int_equal(ec_jwt_signer_from_der(&der, (ec_jwt_alg)2, c->key_der, c->key_len,
                                            c->cert_der, c->cert_len, why, sizeof why),
                     EC_ERR_INVALID);
    assert_int_equal(ec_jwt_signer_from_der(&der, EC_JWT_ES256, NULL, 0, c->cert_der, c->cert_len,
                                            why, sizeof why),
                     EC_ERR_INVALID);
    assert_int_equal(ec_jwt_signer_from_der(&der, EC_JWT_ES256, c->key_der, c->key_len, NULL, 0,
                                            why, sizeof why),
                     EC_ERR_INVALID);
    /* `why` is optional */
    assert_int_equal(ec_jwt_signer_from_der(&der, EC_JWT_PS256, c->key_der, c->key_len, c->cert_der,
                                            c->cert_len, NULL, 0),
                     EC_ERR_CONFIG);
    /* free is safe on a zeroed signer and twice */
    ec_jwt_signer_der zero = {0};
    ec_jwt_signer_der_free(&zero);
    ec_jwt_signer_der_free(&zero);
    ec_jwt_signer_der_free(NULL);
}

/* The software signer refuses a digest for the other algorithm. */
static void test_signer_alg_mismatch(void **state)
{
    (void)state;
    ec_jwt_signer_der der;
    signer_ok(&der, EC_JWT_ES256, &creds[EC_A]);
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
    uint8_t hash[32] = {1}, sig[EC_JWT_SIG_MAX_BYTES];
    size_t sig_len = 7;
    assert_int_equal(signer.sign(signer.ctx, EC_JWT_PS256, hash, sig, sizeof sig, &sig_len),
                     EC_ERR_INVALID);
    assert_int_equal(sig_len, 0);
    assert_int_equal(signer.sign(signer.ctx, EC_JWT_ES256, hash, sig, 63, &sig_len),
                     EC_ERR_INVALID);
    assert_int_equal(signer.sign(signer.ctx, EC_JWT_ES256, hash, sig, sizeof sig, &sig_len), EC_OK);
    assert_int_equal(sig_len, 64);
    ec_jwt_signer_der_free(&der);
    /* a freed signer signs nothing */
    assert_int_equal(signer.sign(signer.ctx, EC_JWT_ES256, hash, sig, sizeof sig, &sig_len),
                     EC_ERR_INVALID);
}

/* ---- failure paths ----------------------------------------------------------------------- */

typedef struct {
    ec_status result;
    size_t sig_len;
} fake_signer;

static ec_status fake_sign(void *ctx, ec_jwt_alg alg, const uint8_t hash[32], uint8_t *sig,
                           size_t sig_cap, size_t *sig_len)
{
    const fake_signer *f = ctx;
    (void)alg;
    (void)hash;
    assert_true(f->sig_len <= sig_cap);
    memset(sig, 0x5a, f->sig_len);
    *sig_len = f->sig_len;
    return f->result;
}

/* A signer that fails, or returns a signature of the wrong length, yields
 * no assertion. */
static void test_signer_failure_propagates(void **state)
{
    (void)state;
    static const struct {
        ec_jwt_alg alg;
        int cred;
        fake_signer f;
        ec_status want;
    } v[] = {
        {EC_JWT_ES256, EC_A, {EC_ERR_UNSUPPORTED, 0}, EC_ERR_UNSUPPORTED},
        {EC_JWT_ES256, EC_A, {EC_OK, 63}, EC_ERR_CRYPTO},
        {EC_JWT_ES256, EC_A, {EC_OK, 65}, EC_ERR_CRYPTO},
        {EC_JWT_ES256, EC_A, {EC_OK, 64}, EC_OK},
        {EC_JWT_PS256, RSA_A, {EC_OK, 255}, EC_ERR_CRYPTO},
        {EC_JWT_PS256, RSA_A, {EC_OK, 256}, EC_OK},
        {EC_JWT_PS256, RSA_A, {EC_ERR_CRYPTO, 256}, EC_ERR_CRYPTO},
    };
    size_t before = live_secure_allocations();
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        fake_signer f = v[i].f;
        ec_jwt_signer signer = {.sign = fake_sign, .ctx = &f};
        ec_jwt_assertion_params p = params_for(v[i].alg, &creds[v[i].cred]);
        char *jws = NULL;
        size_t len;
        assert_int_equal(ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL), v[i].want);
        if (v[i].want == EC_OK) {
            assert_non_null(jws);
            ec_secmem_free(jws);
        } else {
            assert_null(jws);
        }
        assert_int_equal(live_secure_allocations(), before);
    }
}

/* Every secure allocation failing in turn, the random generator failing and
 * the signature failing: the right status, no output, nothing left over. */
static void test_fault_paths(void **state)
{
    (void)state;
    for (int a = 0; a < 2; a++) {
        ec_jwt_alg alg = a == 0 ? EC_JWT_PS256 : EC_JWT_ES256;
        const cred *c = &creds[a == 0 ? RSA_A : EC_A];
        size_t before = live_secure_allocations();

        /* the signer's copy of the key */
        ec_jwt_signer_der der;
        char why[128];
        ec_fault_reset();
        ec_fault_arm("secmem.mmap", 0, 1);
        assert_int_equal(ec_jwt_signer_from_der(&der, alg, c->key_der, c->key_len, c->cert_der,
                                                c->cert_len, why, sizeof why),
                         EC_ERR_NOMEM);
        ec_fault_reset();
        assert_string_equal(why, "out of memory");
        assert_null(der.key_der);
        assert_int_equal(live_secure_allocations(), before);

        signer_ok(&der, alg, c);
        ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
        ec_jwt_assertion_params p = params_for(alg, c);
        size_t with_signer = live_secure_allocations();
        unsigned failures = 0;
        for (unsigned skip = 0; skip < 10; skip++) {
            ec_fault_reset();
            ec_fault_arm("secmem.mmap", skip, 1);
            char *jws = NULL;
            size_t len;
            ec_status st = ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL);
            ec_fault_reset();
            if (st == EC_OK) {
                ec_secmem_free(jws);
                break;
            }
            failures++;
            assert_int_equal(st, EC_ERR_NOMEM);
            assert_null(jws);
            assert_int_equal(live_secure_allocations(), with_signer);
        }
        assert_int_equal(failures, 4); /* header, claims, output, signature */

        static const char *const points[] = {"rng.bytes", "jwt.sign"};
        for (size_t i = 0; i < 2; i++) {
            ec_fault_reset();
            ec_fault_arm(points[i], 0, 1);
            char *jws = NULL;
            size_t len;
            ec_status st = ec_jwt_client_assertion(&p, &signer, &jws, &len, NULL);
            unsigned hits = ec_fault_hits(points[i]);
            ec_fault_reset();
            assert_true(hits >= 1);
            assert_int_equal(st, EC_ERR_CRYPTO);
            assert_null(jws);
            assert_int_equal(live_secure_allocations(), with_signer);
        }
        ec_jwt_signer_der_free(&der);
        assert_int_equal(live_secure_allocations(), before);
    }
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64url_rfc4648_vectors),
        cmocka_unit_test(test_base64url_refuses_short_output),
        cmocka_unit_test(test_ps256_fields_and_signature),
        cmocka_unit_test(test_es256_fields_and_signature),
        cmocka_unit_test(test_ps256_salt_is_hash_length),
        cmocka_unit_test(test_tampering_detected),
        cmocka_unit_test(test_jti_unique_and_v4),
        cmocka_unit_test(test_lifetime_bounds),
        cmocka_unit_test(test_invalid_params),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_not_utf8_refused),
        cmocka_unit_test(test_signer_key_formats),
        cmocka_unit_test(test_signer_refusals),
        cmocka_unit_test(test_signer_alg_mismatch),
        cmocka_unit_test(test_signer_failure_propagates),
        cmocka_unit_test(test_fault_paths),
    };
    int rc = cmocka_run_group_tests_name("jwt", tests, group_setup, group_teardown);
    ec_rng_free();
    return rc;
}
