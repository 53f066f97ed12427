/*
 * The Entra ID certificate client assertion (OAuth 2.0 private_key_jwt,
 * RFC 7523): a compact JWS signed on the device with the key that belongs to
 * the device certificate. Header {"alg","typ":"JWT","x5t#S256"}; claims aud
 * (the token endpoint), iss = sub (the client id), jti (a random UUID v4),
 * nbf = iat = now, exp = now + lifetime (at most EC_JWT_LIFETIME_MAX_S).
 *
 * Signing goes through ec_jwt_signer, which signs a SHA-256 digest and never
 * hands out the key, so a board with a PKCS#11 token or a TPM can sign inside
 * it. ec_jwt_signer_der is the software signer over a DER private key.
 *
 * Everything that makes up an assertion (header and claims JSON, signing
 * input, signature, the output) lives in secure memory and is wiped on every
 * path. Used by firmware/auth; the module logs nothing (reasons go back to
 * the caller in `why`).
 */
#ifndef EDGECAP_JWT_H
#define EDGECAP_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "edgecap/keystore.h"
#include "edgecap/status.h"

typedef enum {
    EC_JWT_PS256 = 0, /* RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 bytes; RSA >= 2048 bits */
    EC_JWT_ES256 = 1, /* ECDSA on P-256 with SHA-256; JWS form r || s, 64 bytes */
} ec_jwt_alg;

#define EC_JWT_LIFETIME_MAX_S 600
#define EC_JWT_RSA_MIN_BITS 2048
/* Largest signature a signer may return (an 8192-bit RSA modulus). */
#define EC_JWT_SIG_MAX_BYTES 1024
#define EC_JWT_ES256_SIG_BYTES 64
/* A UUID in its 36-character text form plus the NUL. */
#define EC_JWT_JTI_BYTES 37
/* Longest client id and audience accepted, in bytes before escaping. */
#define EC_JWT_FIELD_MAX_BYTES 2048

/* "PS256" / "ES256" ("?" for anything else). */
const char *ec_jwt_alg_name(ec_jwt_alg alg);

/*
 * Signs a SHA-256 digest in JWS form: PS256 returns the RSA modulus length in
 * bytes, ES256 exactly 64 bytes (r || s, each big-endian, zero-padded to 32).
 * `sig` has `sig_cap` bytes (EC_JWT_SIG_MAX_BYTES from the caller here).
 */
typedef struct {
    ec_status (*sign)(void *ctx, ec_jwt_alg alg, const uint8_t hash[32], uint8_t *sig,
                      size_t sig_cap, size_t *sig_len);
    void *ctx;
} ec_jwt_signer;

/*
 * The software signer. It keeps only a secure-memory copy of the DER key and
 * parses it for each signature, so the key's big numbers (which mbedTLS keeps
 * on its ordinary heap) exist only for the few milliseconds of a signature and
 * are wiped by mbedTLS when it frees them. Signing is reentrant (nothing in
 * the signer changes). Not to be touched directly.
 */
typedef struct {
    ec_jwt_alg alg;
    uint8_t *key_der; /* secure memory */
    size_t key_len;
} ec_jwt_signer_der;

/*
 * Sets up `s` over `key_der` (PKCS#8 unencrypted, PKCS#1 or SEC1 DER; copied)
 * after checking that the key suits `alg` (an RSA key of at least 2048 bits
 * for PS256, an EC key on P-256 for ES256) and that it belongs to the
 * certificate `cert_der` (DER X.509). EC_ERR_CONFIG with a one-line reason in
 * `why` (never key material) when it does not; EC_ERR_INVALID for impossible
 * arguments; EC_ERR_NOMEM. `why` may be NULL. On failure `s` is left freed.
 */
ec_status ec_jwt_signer_from_der(ec_jwt_signer_der *s, ec_jwt_alg alg, const uint8_t *key_der,
                                 size_t key_len, const uint8_t *cert_der, size_t cert_len,
                                 char *why, size_t why_len);

/* Wipes the key copy; safe on a zeroed, failed or already freed signer. */
void ec_jwt_signer_der_free(ec_jwt_signer_der *s);

/* The ec_jwt_signer view of `s` (valid while `s` lives). */
ec_jwt_signer ec_jwt_signer_der_get(ec_jwt_signer_der *s);

/*
 * The signer over a key store that holds the device key (a PKCS#11 token,
 * hal/keystore_pkcs11.c): the token signs the digest with CKM_ECDSA, whose
 * raw r || s is the JWS ES256 form, so ES256 only (the token key is EC
 * P-256). The caller has checked that the key belongs to the certificate
 * (ec_token_key_check_pair). EC_ERR_CONFIG with a reason in `why` for PS256
 * or a store without a device key. `ks` must outlive the signer.
 */
ec_status ec_jwt_signer_keystore(ec_jwt_signer *out, ec_jwt_alg alg, const ec_keystore *ks,
                                 char *why, size_t why_len);

typedef struct {
    ec_jwt_alg alg;
    const uint8_t *cert_der; /* the device certificate (DER), for x5t#S256 */
    size_t cert_len;
    const char *client_id; /* iss and sub; UTF-8 */
    const char *audience;  /* aud: the token endpoint URL; UTF-8 */
    int64_t now_s;         /* Unix seconds; the caller's clock */
    int lifetime_s;        /* 1..EC_JWT_LIFETIME_MAX_S */
} ec_jwt_assertion_params;

/*
 * Builds and signs one assertion. *out is the NUL-terminated compact JWS in
 * secure memory (free with ec_secmem_free), *out_len its length; `jti_out`,
 * when not NULL, receives the jti (EC_JWT_JTI_BYTES). On failure *out is NULL
 * and everything allocated is wiped.
 *
 * EC_ERR_INVALID: a NULL or empty field, a client id or audience that is not
 * UTF-8 or longer than EC_JWT_FIELD_MAX_BYTES, a lifetime outside
 * 1..EC_JWT_LIFETIME_MAX_S, a clock before 2020 (not yet set: Entra would
 * refuse the assertion anyway), a certificate that is not exactly one DER
 * X.509 certificate, a signer built for another algorithm. EC_ERR_CRYPTO: the
 * random generator or the signature failed, or the signer returned a
 * signature of the wrong length. EC_ERR_NOMEM.
 */
ec_status ec_jwt_client_assertion(const ec_jwt_assertion_params *p, const ec_jwt_signer *signer,
                                  char **out, size_t *out_len, char jti_out[EC_JWT_JTI_BYTES]);

/* Length of the unpadded base64url encoding of `len` bytes. */
#define EC_BASE64URL_LEN(len) ((len) / 3 * 4 + ((len) % 3 == 0 ? 0 : (len) % 3 + 1))

/*
 * base64url (RFC 4648 section 5) without padding, NUL-terminated. Returns the
 * length without the NUL, or 0 when `out_cap` is smaller than that length + 1
 * (an empty input also returns 0, with out = "" when out_cap >= 1).
 */
size_t ec_base64url_encode(const uint8_t *in, size_t len, char *out, size_t out_cap);

#endif
