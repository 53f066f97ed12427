/*
 * A token-held EC P-256 or RSA key as an mbedtls_pk_context (see
 * include/edgecap/token_key.h). mbedTLS 2.28 has an "alt" key type only for
 * RSA (mbedtls_pk_setup_rsa_alt); it installs pk_internal.h, whose
 * mbedtls_pk_info_t is the same vtable its own key types use, so each token
 * key type gets its own entry: sign goes to the key store (for RSA with the
 * DigestInfo built here from mbedTLS's md_alg), verify and the bit length to
 * the certificate's public key. The structs are filled by field name, so
 * their layout (which depends on MBEDTLS_ECP_RESTARTABLE in the installed
 * config.h) is the library's own.
 */
#include "edgecap/token_key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk_internal.h>
#include <mbedtls/rsa.h>
#include <mbedtls/x509_crt.h>

#include "edgecap/rng.h"

#define P256_HALF_BYTES 32

typedef struct {
    /* First: code that reads an EC pk context as an mbedtls_ecp_keypair
     * (mbedtls_pk_ec) finds the public key here, and d = 0. */
    mbedtls_ecp_keypair pub;
    const ec_keystore *ks;
} token_ec;

ec_status ec_token_key_sig_to_der(const uint8_t *raw, size_t half, uint8_t *der, size_t der_cap,
                                  size_t *der_len)
{
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    uint8_t buf[MBEDTLS_ECDSA_MAX_LEN];
    unsigned char *p = buf + sizeof buf;
    size_t len = 0;
    int rc = mbedtls_mpi_read_binary(&r, raw, half);
    if (rc == 0)
        rc = mbedtls_mpi_read_binary(&s, raw + half, half);
    /* written back to front: s, r, then the SEQUENCE header */
    int n;
    if (rc == 0 && (n = mbedtls_asn1_write_mpi(&p, buf, &s)) > 0)
        len += (size_t)n;
    else
        rc = -1;
    if (rc == 0 && (n = mbedtls_asn1_write_mpi(&p, buf, &r)) > 0)
        len += (size_t)n;
    else
        rc = -1;
    if (rc == 0 && (n = mbedtls_asn1_write_len(&p, buf, len)) > 0)
        len += (size_t)n;
    else
        rc = -1;
    if (rc == 0 &&
        (n = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) > 0)
        len += (size_t)n;
    else
        rc = -1;
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    if (rc != 0 || len > der_cap)
        return EC_ERR_CRYPTO;
    memcpy(der, p, len);
    *der_len = len;
    return EC_OK;
}

static size_t tk_get_bitlen(const void *ctx)
{
    return ((const token_ec *)ctx)->pub.grp.pbits;
}

static int tk_can_do(mbedtls_pk_type_t type)
{
    return type == MBEDTLS_PK_ECKEY || type == MBEDTLS_PK_ECDSA;
}

static int tk_verify(void *ctx, mbedtls_md_type_t md_alg, const unsigned char *hash,
                     size_t hash_len, const unsigned char *sig, size_t sig_len)
{
    (void)md_alg;
    return mbedtls_ecdsa_read_signature(&((token_ec *)ctx)->pub, hash, hash_len, sig, sig_len);
}

/* mbedTLS 2.28 gives no output size: the caller's buffer holds
 * MBEDTLS_PK_SIGNATURE_MAX_SIZE bytes, more than a P-256 DER signature. */
static int tk_sign(void *ctx, mbedtls_md_type_t md_alg, const unsigned char *hash, size_t hash_len,
                   unsigned char *sig, size_t *sig_len,
                   int (*f_rng)(void *, unsigned char *, size_t), void *p_rng)
{
    (void)md_alg;
    (void)f_rng;
    (void)p_rng;
    const token_ec *k = ctx;
    uint8_t raw[2 * P256_HALF_BYTES];
    size_t raw_len = 0;
    if (k->ks->ops->sign_digest(k->ks->ctx, hash, hash_len, raw, sizeof raw, &raw_len) != EC_OK ||
        raw_len != sizeof raw)
        return MBEDTLS_ERR_PK_HW_ACCEL_FAILED;
    if (ec_token_key_sig_to_der(raw, P256_HALF_BYTES, sig, MBEDTLS_ECDSA_MAX_LEN, sig_len) != EC_OK)
        return MBEDTLS_ERR_PK_BAD_INPUT_DATA;
    return 0;
}

static void *tk_alloc(void)
{
    token_ec *k = calloc(1, sizeof *k);
    if (k != NULL)
        mbedtls_ecp_keypair_init(&k->pub);
    return k;
}

static void tk_free(void *ctx)
{
    token_ec *k = ctx;
    if (k == NULL)
        return;
    mbedtls_ecp_keypair_free(&k->pub);
    free(k);
}

static const mbedtls_pk_info_t token_ec_info = {
    .type = MBEDTLS_PK_ECKEY,
    .name = "EC (PKCS#11 token)",
    .get_bitlen = tk_get_bitlen,
    .can_do = tk_can_do,
    .verify_func = tk_verify,
    .sign_func = tk_sign,
    .ctx_alloc_func = tk_alloc,
    .ctx_free_func = tk_free,
};

/* ---- RSA ------------------------------------------------------------------ */

/* The RSA counterpart: the token makes PKCS#1 v1.5 signatures (CKM_RSA_PKCS
 * over the DigestInfo), the only RSA signatures TLS 1.2 client
 * authentication needs. The public key comes first again, so
 * mbedtls_pk_rsa() (the CSR writer, for one) reads the modulus here. */
typedef struct {
    mbedtls_rsa_context pub;
    const ec_keystore *ks;
} token_rsa;

static size_t tr_get_bitlen(const void *ctx)
{
    return 8 * mbedtls_rsa_get_len(&((const token_rsa *)ctx)->pub);
}

static int tr_can_do(mbedtls_pk_type_t type)
{
    return type == MBEDTLS_PK_RSA;
}

static int tr_verify(void *ctx, mbedtls_md_type_t md_alg, const unsigned char *hash,
                     size_t hash_len, const unsigned char *sig, size_t sig_len)
{
    token_rsa *k = ctx;
    if (sig_len != mbedtls_rsa_get_len(&k->pub) || hash_len > UINT32_MAX)
        return MBEDTLS_ERR_RSA_VERIFY_FAILED;
    return mbedtls_rsa_pkcs1_verify(&k->pub, NULL, NULL, MBEDTLS_RSA_PUBLIC, md_alg,
                                    (unsigned int)hash_len, hash, sig);
}

/* The longest DigestInfo: SHA-512's (19 bytes of header, 64 of digest). */
#define DIGEST_INFO_MAX 83

/*
 * The DER DigestInfo of PKCS#1 v1.5 (RFC 8017, 9.2) for `hash`, named by
 * `md_alg`: SEQUENCE { SEQUENCE { OID, NULL }, OCTET STRING hash }, written
 * back to front from `*p` (the end of a buffer starting at `buf`), which is
 * left at its start. Only SHA-1 and SHA-2, and only a digest
 * of the function's own length; 0 otherwise.
 */
static size_t digest_info(mbedtls_md_type_t md_alg, const unsigned char *hash, size_t hash_len,
                          unsigned char *buf, unsigned char **p)
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(md_alg);
    const char *oid = NULL;
    size_t oid_len = 0, len = 0;
    int n;
    if ((md_alg != MBEDTLS_MD_SHA1 && md_alg != MBEDTLS_MD_SHA224 && md_alg != MBEDTLS_MD_SHA256 &&
         md_alg != MBEDTLS_MD_SHA384 && md_alg != MBEDTLS_MD_SHA512) ||
        md == NULL || mbedtls_md_get_size(md) != hash_len ||
        mbedtls_oid_get_oid_by_md(md_alg, &oid, &oid_len) != 0)
        return 0;
    if ((n = mbedtls_asn1_write_octet_string(p, buf, hash, hash_len)) < 0)
        return 0;
    len += (size_t)n;
    /* a zero parameter length writes the NULL parameters */
    if ((n = mbedtls_asn1_write_algorithm_identifier(p, buf, oid, oid_len, 0)) < 0)
        return 0;
    len += (size_t)n;
    if ((n = mbedtls_asn1_write_len(p, buf, len)) < 0)
        return 0;
    len += (size_t)n;
    if ((n = mbedtls_asn1_write_tag(p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
        return 0;
    len += (size_t)n;
    return len;
}

/* The buffer holds MBEDTLS_PK_SIGNATURE_MAX_SIZE bytes, at least a 4096-bit
 * modulus. The token pads the DigestInfo built here (CKM_RSA_PKCS). */
static int tr_sign(void *ctx, mbedtls_md_type_t md_alg, const unsigned char *hash, size_t hash_len,
                   unsigned char *sig, size_t *sig_len,
                   int (*f_rng)(void *, unsigned char *, size_t), void *p_rng)
{
    (void)f_rng;
    (void)p_rng;
    const token_rsa *k = ctx;
    unsigned char buf[DIGEST_INFO_MAX], *info = buf + sizeof buf;
    size_t info_len = digest_info(md_alg, hash, hash_len, buf, &info);
    if (info_len == 0)
        return MBEDTLS_ERR_PK_BAD_INPUT_DATA;
    if (k->ks->ops->sign_digest(k->ks->ctx, info, info_len, sig, MBEDTLS_PK_SIGNATURE_MAX_SIZE,
                                sig_len) != EC_OK ||
        *sig_len != mbedtls_rsa_get_len(&k->pub))
        return MBEDTLS_ERR_PK_HW_ACCEL_FAILED;
    return 0;
}

static void *tr_alloc(void)
{
    token_rsa *k = calloc(1, sizeof *k);
    if (k != NULL)
        mbedtls_rsa_init(&k->pub, MBEDTLS_RSA_PKCS_V15, 0);
    return k;
}

static void tr_free(void *ctx)
{
    token_rsa *k = ctx;
    if (k == NULL)
        return;
    mbedtls_rsa_free(&k->pub);
    free(k);
}

static const mbedtls_pk_info_t token_rsa_info = {
    .type = MBEDTLS_PK_RSA,
    .name = "RSA (PKCS#11 token)",
    .get_bitlen = tr_get_bitlen,
    .can_do = tr_can_do,
    .verify_func = tr_verify,
    .sign_func = tr_sign,
    .ctx_alloc_func = tr_alloc,
    .ctx_free_func = tr_free,
};

static ec_status rsa_setup(mbedtls_pk_context *pk, const ec_keystore *ks,
                           const mbedtls_pk_context *cert_pk)
{
    if (mbedtls_pk_get_type(cert_pk) != MBEDTLS_PK_RSA)
        return EC_ERR_INVALID;
    if (mbedtls_pk_setup(pk, &token_rsa_info) != 0)
        return EC_ERR_NOMEM;
    token_rsa *k = pk->pk_ctx;
    k->ks = ks;
    if (mbedtls_rsa_copy(&k->pub, mbedtls_pk_rsa(*cert_pk)) != 0) {
        mbedtls_pk_free(pk);
        return EC_ERR_NOMEM;
    }
    return EC_OK;
}

ec_status ec_token_key_setup(mbedtls_pk_context *pk, const ec_keystore *ks,
                             const mbedtls_pk_context *cert_pk)
{
    if (!ec_keystore_has_device_key(ks))
        return EC_ERR_INVALID;
    if (ec_keystore_device_key_type(ks) == EC_KEY_TYPE_RSA_3072)
        return rsa_setup(pk, ks, cert_pk);
    if (!mbedtls_pk_can_do(cert_pk, MBEDTLS_PK_ECKEY))
        return EC_ERR_INVALID;
    const mbedtls_ecp_keypair *cert_ec = mbedtls_pk_ec(*cert_pk);
    if (cert_ec == NULL || cert_ec->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return EC_ERR_INVALID;
    if (mbedtls_pk_setup(pk, &token_ec_info) != 0)
        return EC_ERR_NOMEM;
    token_ec *k = pk->pk_ctx;
    k->ks = ks;
    if (mbedtls_ecp_group_copy(&k->pub.grp, &cert_ec->grp) != 0 ||
        mbedtls_ecp_copy(&k->pub.Q, &cert_ec->Q) != 0) {
        mbedtls_pk_free(pk);
        return EC_ERR_NOMEM;
    }
    return EC_OK;
}

/* Signs a random SHA-256 digest with the token key and verifies it under
 * `pub`; `what` names what `pub` came from, `whose` the key, in the reason. */
static ec_status check_public(const ec_keystore *ks, const mbedtls_pk_context *pub,
                              const char *what, const char *whose, char *why, size_t why_len)
{
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    uint8_t hash[32], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t sig_len = 0;
    ec_status st = EC_ERR_CRYPTO;
    if (ec_token_key_setup(&pk, ks, pub) != EC_OK) {
        snprintf(why, why_len, "%s is not %s (the token key is)", whose,
                 ec_keystore_device_key_type(ks) == EC_KEY_TYPE_RSA_3072 ? "RSA" : "EC P-256");
    } else if (ec_rng_bytes(hash, sizeof hash) != EC_OK ||
               mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, &sig_len, NULL,
                               NULL) != 0) {
        snprintf(why, why_len, "the token did not sign");
    } else if (mbedtls_pk_verify((mbedtls_pk_context *)pub, MBEDTLS_MD_SHA256, hash, sizeof hash,
                                 sig, sig_len) != 0) {
        snprintf(why, why_len, "the token's key does not belong to %s", what);
    } else {
        st = EC_OK;
    }
    mbedtls_pk_free(&pk);
    return st;
}

ec_status ec_token_key_check_public(const ec_keystore *ks, const mbedtls_pk_context *pub, char *why,
                                    size_t why_len)
{
    return check_public(ks, pub, "the public key", "the public key", why, why_len);
}

ec_status ec_token_key_check_pair(const ec_keystore *ks, const uint8_t *cert_der, size_t cert_len,
                                  char *why, size_t why_len)
{
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    ec_status st = EC_ERR_CRYPTO;
    if (mbedtls_x509_crt_parse_der(&crt, cert_der, cert_len) != 0)
        snprintf(why, why_len, "the device certificate does not parse");
    else
        st = check_public(ks, &crt.pk, "the device certificate", "the device certificate's key",
                          why, why_len);
    mbedtls_x509_crt_free(&crt);
    return st;
}
