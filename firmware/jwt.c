/*
 * The Entra ID certificate client assertion (see include/edgecap/jwt.h): JSON
 * built by hand with a small escaper (the inputs are ours, but nothing
 * assumes they are plain ASCII), base64url, SHA-256 over the signing input,
 * and the software signer on mbedTLS 2.28.
 *
 * PS256 uses mbedtls_rsa_rsassa_pss_sign_ext with a salt of exactly 32 bytes
 * (RFC 7518 section 3.5: salt length = hash length), MGF1 with SHA-256. Two
 * traps in mbedTLS 2.28 it avoids: mbedtls_pk_sign on a parsed RSA key signs
 * PKCS#1 v1.5 (RS256) unless the context's padding is changed first, and
 * mbedtls_rsa_rsassa_pss_sign takes "the largest salt up to the hash
 * length", which is 32 for every key we accept only by the arithmetic of key
 * sizes; the explicit length makes it a property.
 *
 * ES256 uses deterministic ECDSA (RFC 6979, with the DRBG only for blinding)
 * so that a weak random generator early in a board's boot cannot leak the
 * key through a repeated or biased nonce, and verifies each signature before
 * releasing it (a faulted ECDSA signature can give the key away too). The
 * JWS form is r || s, each zero-padded to 32 bytes, not ASN.1 DER.
 */
#include "edgecap/jwt.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/asn1.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>

#include "edgecap/fault.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"

#define SHA256_BYTES 32
#define P256_BYTES 32
/* 2020-01-01T00:00:00Z: a clock before this has not been set yet. */
#define CLOCK_SET_AFTER_S INT64_C(1577836800)
/* The header is fixed apart from the thumbprint. */
#define HEADER_CAP 128
/* Claims without the escaped strings: names, quotes, jti, three numbers. */
#define CLAIMS_FIXED_CAP 200

const char *ec_jwt_alg_name(ec_jwt_alg alg)
{
    switch (alg) {
    case EC_JWT_PS256:
        return "PS256";
    case EC_JWT_ES256:
        return "ES256";
    }
    return "?";
}

static bool alg_valid(ec_jwt_alg alg)
{
    return alg == EC_JWT_PS256 || alg == EC_JWT_ES256;
}

__attribute__((format(printf, 3, 4))) static void say(char *why, size_t why_len, const char *fmt,
                                                      ...)
{
    if (why == NULL || why_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

/* mbedTLS errors combine a high-level (module) and a low-level code; an
 * allocation failure at either level is ours to report as such. */
static ec_status mbedtls_status(int rc, ec_status otherwise)
{
    int e = -rc;
    int high = e & 0x7F80, low = e & 0x007F;
    if (high == -MBEDTLS_ERR_PK_ALLOC_FAILED || high == -MBEDTLS_ERR_X509_ALLOC_FAILED ||
        high == -MBEDTLS_ERR_ECP_ALLOC_FAILED || low == -MBEDTLS_ERR_MPI_ALLOC_FAILED ||
        low == -MBEDTLS_ERR_ASN1_ALLOC_FAILED)
        return EC_ERR_NOMEM;
    return otherwise;
}

/* ---- base64url --------------------------------------------------------------------------- */

size_t ec_base64url_encode(const uint8_t *in, size_t len, char *out, size_t out_cap)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if (out == NULL || out_cap == 0)
        return 0;
    out[0] = '\0';
    if ((in == NULL && len > 0) || len / 3 > (SIZE_MAX - 4) / 4)
        return 0;
    size_t n = EC_BASE64URL_LEN(len);
    if (out_cap < n + 1)
        return 0;
    size_t i = 0, o = 0;
    for (; len - i >= 3; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i > 0) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (len - i == 2)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        if (len - i == 2)
            out[o++] = alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/* ---- JSON text --------------------------------------------------------------------------- */

/* A bounded text buffer; `overflow` records that something did not fit (the
 * capacities are computed beforehand, so that is a bug, not an input). */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
    bool overflow;
} text;

static void put_bytes(text *t, const char *s, size_t n)
{
    if (t->overflow || n >= t->cap - t->len) {
        t->overflow = true;
        return;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void put(text *t, const char *s)
{
    put_bytes(t, s, strlen(s));
}

static void put_int(text *t, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRId64, v);
    put_bytes(t, num, (size_t)n);
}

/* Length (1..4) of the well-formed UTF-8 sequence at `s`, or 0 (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF). Stops at a NUL,
 * which is never a continuation byte. */
static size_t utf8_sequence(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c < 0xF5) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* The length of `s` as a JSON string body (RFC 8259 section 7), or false when
 * it is empty, longer than EC_JWT_FIELD_MAX_BYTES or not UTF-8. */
static bool json_escaped_length(const char *s, size_t *escaped)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = 0, i = 0;
    while (u[i] != '\0') {
        if (i >= EC_JWT_FIELD_MAX_BYTES)
            return false;
        size_t seq = utf8_sequence(u + i);
        if (seq == 0)
            return false;
        if (seq == 1 && (u[i] == '"' || u[i] == '\\' || u[i] == '\b' || u[i] == '\f' ||
                         u[i] == '\n' || u[i] == '\r' || u[i] == '\t'))
            n += 2;
        else if (seq == 1 && u[i] < 0x20)
            n += 6; /* \u00XX */
        else
            n += seq;
        i += seq;
    }
    *escaped = n;
    return i > 0;
}

/* Appends "s" escaped; `s` passed json_escaped_length. */
static void put_json_string(text *t, const char *s)
{
    put(t, "\"");
    for (const unsigned char *u = (const unsigned char *)s; *u != '\0'; u++) {
        char esc[8];
        switch (*u) {
        case '"':
            put(t, "\\\"");
            break;
        case '\\':
            put(t, "\\\\");
            break;
        case '\b':
            put(t, "\\b");
            break;
        case '\f':
            put(t, "\\f");
            break;
        case '\n':
            put(t, "\\n");
            break;
        case '\r':
            put(t, "\\r");
            break;
        case '\t':
            put(t, "\\t");
            break;
        default:
            if (*u < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", (unsigned)*u);
                put(t, esc);
            } else {
                put_bytes(t, (const char *)u, 1);
            }
        }
    }
    put(t, "\"");
}

/* ---- the software signer ----------------------------------------------------------------- */

static const char *key_kind(const mbedtls_pk_context *pk)
{
    switch (mbedtls_pk_get_type(pk)) {
    case MBEDTLS_PK_RSA:
        return "an RSA key";
    case MBEDTLS_PK_ECKEY:
    case MBEDTLS_PK_ECDSA:
        return "an EC key";
    case MBEDTLS_PK_ECKEY_DH:
        return "an EC key for key agreement only";
    default:
        return "a key of another type";
    }
}

static ec_status check_key_suits(mbedtls_pk_context *pk, ec_jwt_alg alg, char *why, size_t why_len)
{
    if (alg == EC_JWT_PS256) {
        if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_RSA) {
            say(why, why_len, "PS256 needs an RSA key; the private key is %s", key_kind(pk));
            return EC_ERR_CONFIG;
        }
        size_t bits = mbedtls_pk_get_bitlen(pk);
        if (bits < EC_JWT_RSA_MIN_BITS || mbedtls_pk_get_len(pk) > EC_JWT_SIG_MAX_BYTES) {
            say(why, why_len, "PS256 needs an RSA key of %d to %d bits; the private key has %zu",
                EC_JWT_RSA_MIN_BITS, EC_JWT_SIG_MAX_BYTES * 8, bits);
            return EC_ERR_CONFIG;
        }
        return EC_OK;
    }
    if (!mbedtls_pk_can_do(pk, MBEDTLS_PK_ECDSA)) {
        say(why, why_len, "ES256 needs an EC key on P-256; the private key is %s", key_kind(pk));
        return EC_ERR_CONFIG;
    }
    mbedtls_ecp_group_id curve = mbedtls_pk_ec(*pk)->grp.id;
    if (curve != MBEDTLS_ECP_DP_SECP256R1) {
        const mbedtls_ecp_curve_info *info = mbedtls_ecp_curve_info_from_grp_id(curve);
        say(why, why_len, "ES256 needs an EC key on P-256 (secp256r1); the private key is on %s",
            info != NULL ? info->name : "another curve");
        return EC_ERR_CONFIG;
    }
    return EC_OK;
}

ec_status ec_jwt_signer_from_der(ec_jwt_signer_der *s, ec_jwt_alg alg, const uint8_t *key_der,
                                 size_t key_len, const uint8_t *cert_der, size_t cert_len,
                                 char *why, size_t why_len)
{
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (s == NULL)
        return EC_ERR_INVALID;
    memset(s, 0, sizeof *s);
    if (!alg_valid(alg) || key_der == NULL || key_len == 0 || cert_der == NULL || cert_len == 0)
        return EC_ERR_INVALID;

    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pk);
    ec_status st = EC_OK;
    int rc = mbedtls_x509_crt_parse_der(&crt, cert_der, cert_len);
    if (rc != 0) {
        st = mbedtls_status(rc, EC_ERR_CONFIG);
        say(why, why_len, "the certificate is not a DER X.509 certificate");
        goto out;
    }
    rc = mbedtls_pk_parse_key(&pk, key_der, key_len, NULL, 0);
    if (rc != 0) {
        st = mbedtls_status(rc, EC_ERR_CONFIG);
        if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED)
            say(why, why_len, "the private key is encrypted (an unencrypted key is needed)");
        else
            say(why, why_len, "the private key is not a DER private key (PKCS#8, PKCS#1 or SEC1)");
        goto out;
    }
    st = check_key_suits(&pk, alg, why, why_len);
    if (st != EC_OK)
        goto out;
    rc = mbedtls_pk_check_pair(&crt.pk, &pk);
    if (rc != 0) {
        st = mbedtls_status(rc, EC_ERR_CONFIG);
        say(why, why_len, "the private key does not belong to the certificate");
        goto out;
    }
    s->key_der = ec_secmem_dup(key_der, key_len);
    if (s->key_der == NULL) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    s->key_len = key_len;
    s->alg = alg;
out:
    if (st == EC_ERR_NOMEM)
        say(why, why_len, "out of memory");
    mbedtls_pk_free(&pk);
    mbedtls_x509_crt_free(&crt);
    if (st != EC_OK)
        ec_jwt_signer_der_free(s);
    return st;
}

void ec_jwt_signer_der_free(ec_jwt_signer_der *s)
{
    if (s == NULL)
        return;
    ec_secmem_free(s->key_der);
    s->key_der = NULL;
    s->key_len = 0;
}

static ec_status sign_ps256(mbedtls_pk_context *pk, const uint8_t hash[SHA256_BYTES], uint8_t *sig,
                            size_t sig_cap, size_t *sig_len)
{
    if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_RSA)
        return EC_ERR_INTERNAL;
    mbedtls_rsa_context *rsa = mbedtls_pk_rsa(*pk);
    size_t n = mbedtls_rsa_get_len(rsa);
    if (n > sig_cap)
        return EC_ERR_INVALID;
    /* The context's hash selects MGF1's hash; the salt length is explicit. */
    mbedtls_rsa_set_padding(rsa, MBEDTLS_RSA_PKCS_V21, MBEDTLS_MD_SHA256);
    if (EC_FAULT("jwt.sign"))
        return EC_ERR_CRYPTO;
    int rc = mbedtls_rsa_rsassa_pss_sign_ext(rsa, ec_rng_mbedtls, NULL, MBEDTLS_MD_SHA256,
                                             SHA256_BYTES, hash, SHA256_BYTES, sig);
    if (rc != 0)
        return mbedtls_status(rc, EC_ERR_CRYPTO);
    *sig_len = n;
    return EC_OK;
}

static ec_status sign_es256(mbedtls_pk_context *pk, const uint8_t hash[SHA256_BYTES], uint8_t *sig,
                            size_t sig_cap, size_t *sig_len)
{
    if (!mbedtls_pk_can_do(pk, MBEDTLS_PK_ECDSA))
        return EC_ERR_INTERNAL;
    if (sig_cap < EC_JWT_ES256_SIG_BYTES)
        return EC_ERR_INVALID;
    mbedtls_ecp_keypair *ec = mbedtls_pk_ec(*pk);
    if (ec->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return EC_ERR_INTERNAL;
    if (EC_FAULT("jwt.sign"))
        return EC_ERR_CRYPTO;
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    int rc = mbedtls_ecdsa_sign_det_ext(&ec->grp, &r, &s, &ec->d, hash, SHA256_BYTES,
                                        MBEDTLS_MD_SHA256, ec_rng_mbedtls, NULL);
    if (rc == 0)
        rc = mbedtls_ecdsa_verify(&ec->grp, hash, SHA256_BYTES, &ec->Q, &r, &s);
    if (rc == 0)
        rc = mbedtls_mpi_write_binary(&r, sig, P256_BYTES);
    if (rc == 0)
        rc = mbedtls_mpi_write_binary(&s, sig + P256_BYTES, P256_BYTES);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    if (rc != 0) {
        mbedtls_platform_zeroize(sig, EC_JWT_ES256_SIG_BYTES);
        return mbedtls_status(rc, EC_ERR_CRYPTO);
    }
    *sig_len = EC_JWT_ES256_SIG_BYTES;
    return EC_OK;
}

/* Parses the key for this one signature (see ec_jwt_signer_der in the header:
 * mbedTLS keeps the key's numbers on the ordinary heap, and frees them wiped). */
static ec_status der_sign(void *ctx, ec_jwt_alg alg, const uint8_t hash[SHA256_BYTES], uint8_t *sig,
                          size_t sig_cap, size_t *sig_len)
{
    const ec_jwt_signer_der *s = ctx;
    if (sig_len != NULL)
        *sig_len = 0;
    if (s == NULL || s->key_der == NULL || alg != s->alg || hash == NULL || sig == NULL ||
        sig_len == NULL)
        return EC_ERR_INVALID;
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    ec_status st;
    int rc = mbedtls_pk_parse_key(&pk, s->key_der, s->key_len, NULL, 0);
    if (rc != 0) {
        /* It parsed when the signer was set up: only memory can fail now. */
        st = mbedtls_status(rc, EC_ERR_INTERNAL);
        goto out;
    }
    if (alg == EC_JWT_PS256)
        st = sign_ps256(&pk, hash, sig, sig_cap, sig_len);
    else
        st = sign_es256(&pk, hash, sig, sig_cap, sig_len);
out:
    mbedtls_pk_free(&pk);
    return st;
}

ec_jwt_signer ec_jwt_signer_der_get(ec_jwt_signer_der *s)
{
    return (ec_jwt_signer){.sign = der_sign, .ctx = s};
}

static ec_status keystore_sign(void *ctx, ec_jwt_alg alg, const uint8_t hash[SHA256_BYTES],
                               uint8_t *sig, size_t sig_cap, size_t *sig_len)
{
    const ec_keystore *ks = ctx;
    if (sig_len != NULL)
        *sig_len = 0;
    if (ks == NULL || alg != EC_JWT_ES256 || hash == NULL || sig == NULL || sig_len == NULL ||
        sig_cap < EC_JWT_ES256_SIG_BYTES)
        return EC_ERR_INVALID;
    return ks->ops->sign_digest(ks->ctx, hash, SHA256_BYTES, sig, sig_cap, sig_len);
}

ec_status ec_jwt_signer_keystore(ec_jwt_signer *out, ec_jwt_alg alg, const ec_keystore *ks,
                                 char *why, size_t why_len)
{
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (out == NULL)
        return EC_ERR_INVALID;
    *out = (ec_jwt_signer){0};
    if (!ec_keystore_has_device_key(ks)) {
        say(why, why_len, "the key store holds no device key");
        return EC_ERR_CONFIG;
    }
    if (ec_keystore_device_key_type(ks) == EC_KEY_TYPE_RSA_3072) {
        /* PS256 would need CKM_RSA_PKCS_PSS on the token */
        say(why, why_len,
            "the token's device key is RSA: a client assertion signed on the token needs an EC "
            "P-256 key (ES256)");
        return EC_ERR_CONFIG;
    }
    if (alg != EC_JWT_ES256) {
        say(why, why_len, "the token's device key is EC P-256: set [auth] assertion_alg = ES256");
        return EC_ERR_CONFIG;
    }
    *out = (ec_jwt_signer){.sign = keystore_sign, .ctx = (void *)ks};
    return EC_OK;
}

/* ---- the assertion ----------------------------------------------------------------------- */

/* x5t#S256 of a certificate that must be exactly one DER X.509 certificate
 * whose key suits `alg` (a PEM file passed by mistake would otherwise give a
 * thumbprint Entra cannot match, refused with an opaque error). */
static ec_status thumbprint(ec_jwt_alg alg, const uint8_t *cert_der, size_t cert_len,
                            char out[EC_BASE64URL_LEN(SHA256_BYTES) + 1])
{
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    uint8_t digest[SHA256_BYTES];
    ec_status st = EC_OK;
    int rc = mbedtls_x509_crt_parse_der(&crt, cert_der, cert_len);
    if (rc != 0) {
        st = mbedtls_status(rc, EC_ERR_INVALID);
        goto out;
    }
    bool suits = alg == EC_JWT_PS256 ? mbedtls_pk_get_type(&crt.pk) == MBEDTLS_PK_RSA
                                     : mbedtls_pk_can_do(&crt.pk, MBEDTLS_PK_ECDSA);
    if (crt.raw.len != cert_len || crt.next != NULL || !suits) {
        st = EC_ERR_INVALID;
        goto out;
    }
    if (mbedtls_sha256_ret(crt.raw.p, crt.raw.len, digest, 0) != 0) {
        st = EC_ERR_CRYPTO;
        goto out;
    }
    ec_base64url_encode(digest, sizeof digest, out, EC_BASE64URL_LEN(SHA256_BYTES) + 1);
out:
    mbedtls_x509_crt_free(&crt);
    return st;
}

/* A random (version 4, RFC 9562) UUID in lower-case text form. */
static ec_status new_jti(char out[EC_JWT_JTI_BYTES])
{
    uint8_t b[16];
    ec_status st = ec_rng_bytes(b, sizeof b);
    if (st != EC_OK)
        return st;
    b[6] = (uint8_t)(0x40 | (b[6] & 0x0F));
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3F));
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < sizeof b; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 0x0F];
    }
    out[o] = '\0';
    mbedtls_platform_zeroize(b, sizeof b);
    return EC_OK;
}

static bool signature_length_ok(ec_jwt_alg alg, size_t len)
{
    if (alg == EC_JWT_ES256)
        return len == EC_JWT_ES256_SIG_BYTES;
    return len >= EC_JWT_RSA_MIN_BITS / 8 && len <= EC_JWT_SIG_MAX_BYTES;
}

ec_status ec_jwt_client_assertion(const ec_jwt_assertion_params *p, const ec_jwt_signer *signer,
                                  char **out, size_t *out_len, char jti_out[EC_JWT_JTI_BYTES])
{
    if (out != NULL)
        *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    if (jti_out != NULL)
        jti_out[0] = '\0';
    size_t aud_len, client_len;
    if (p == NULL || signer == NULL || signer->sign == NULL || out == NULL || out_len == NULL ||
        !alg_valid(p->alg) || p->cert_der == NULL || p->cert_len == 0 || p->client_id == NULL ||
        p->audience == NULL || !json_escaped_length(p->client_id, &client_len) ||
        !json_escaped_length(p->audience, &aud_len) || p->lifetime_s < 1 ||
        p->lifetime_s > EC_JWT_LIFETIME_MAX_S || p->now_s < CLOCK_SET_AFTER_S ||
        p->now_s > INT64_MAX - EC_JWT_LIFETIME_MAX_S)
        return EC_ERR_INVALID;

    char x5t[EC_BASE64URL_LEN(SHA256_BYTES) + 1];
    char jti[EC_JWT_JTI_BYTES];
    uint8_t hash[SHA256_BYTES];
    text header = {0}, claims = {0};
    char *jws = NULL;
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    ec_status st = thumbprint(p->alg, p->cert_der, p->cert_len, x5t);
    if (st == EC_OK)
        st = new_jti(jti);
    if (st != EC_OK)
        goto out;

    header.cap = HEADER_CAP;
    claims.cap = CLAIMS_FIXED_CAP + aud_len + 2 * client_len;
    header.buf = ec_secmem_alloc(header.cap);
    claims.buf = ec_secmem_alloc(claims.cap);
    if (header.buf == NULL || claims.buf == NULL) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    put(&header, "{\"alg\":");
    put_json_string(&header, ec_jwt_alg_name(p->alg));
    put(&header, ",\"typ\":\"JWT\",\"x5t#S256\":");
    put_json_string(&header, x5t);
    put(&header, "}");

    put(&claims, "{\"aud\":");
    put_json_string(&claims, p->audience);
    put(&claims, ",\"iss\":");
    put_json_string(&claims, p->client_id);
    put(&claims, ",\"sub\":");
    put_json_string(&claims, p->client_id);
    put(&claims, ",\"jti\":");
    put_json_string(&claims, jti);
    put(&claims, ",\"nbf\":");
    put_int(&claims, p->now_s);
    put(&claims, ",\"iat\":");
    put_int(&claims, p->now_s);
    put(&claims, ",\"exp\":");
    put_int(&claims, p->now_s + p->lifetime_s);
    put(&claims, "}");
    if (header.overflow || claims.overflow) {
        st = EC_ERR_INTERNAL;
        goto out;
    }

    /* header.claims.signature, built in place: the signing input is the
     * output's prefix, so it never exists outside secure memory. */
    size_t jws_cap = EC_BASE64URL_LEN(header.len) + 1 + EC_BASE64URL_LEN(claims.len) + 1 +
                     EC_BASE64URL_LEN((size_t)EC_JWT_SIG_MAX_BYTES) + 1;
    jws = ec_secmem_alloc(jws_cap);
    sig = ec_secmem_alloc(EC_JWT_SIG_MAX_BYTES);
    if (jws == NULL || sig == NULL) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    size_t len = ec_base64url_encode((const uint8_t *)header.buf, header.len, jws, jws_cap);
    jws[len++] = '.';
    len += ec_base64url_encode((const uint8_t *)claims.buf, claims.len, jws + len, jws_cap - len);
    if (mbedtls_sha256_ret((const unsigned char *)jws, len, hash, 0) != 0) {
        st = EC_ERR_CRYPTO;
        goto out;
    }
    st = signer->sign(signer->ctx, p->alg, hash, sig, EC_JWT_SIG_MAX_BYTES, &sig_len);
    if (st != EC_OK)
        goto out;
    if (!signature_length_ok(p->alg, sig_len)) {
        st = EC_ERR_CRYPTO;
        goto out;
    }
    jws[len++] = '.';
    len += ec_base64url_encode(sig, sig_len, jws + len, jws_cap - len);

    *out = jws;
    *out_len = len;
    jws = NULL;
    if (jti_out != NULL)
        memcpy(jti_out, jti, EC_JWT_JTI_BYTES);
out:
    ec_secmem_free(header.buf);
    ec_secmem_free(claims.buf);
    ec_secmem_free(sig);
    ec_secmem_free(jws);
    mbedtls_platform_zeroize(hash, sizeof hash);
    mbedtls_platform_zeroize(jti, sizeof jti);
    return st;
}
