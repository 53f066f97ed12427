/*
 * The device's private key when it lives in a token (a key store whose
 * sign_digest op holds it, hal/keystore_pkcs11.c): an mbedtls_pk_context
 * whose signatures are made by the token, for TLS client authentication
 * (mbedtls_ssl_conf_own_cert in the transport's SSL context callback), and a
 * pair check against the device certificate. EC P-256 (ECDSA) or RSA
 * (PKCS#1 v1.5, what TLS 1.2 client authentication signs with).
 *
 * The context's private half is only a handle: the token signs the digest
 * (CKM_ECDSA, raw r || s) and this module encodes the DER signature mbedTLS
 * expects. Its public half is the certificate's key, so that anything in
 * mbedTLS reading the context as an EC key pair sees the public point (the
 * private scalar stays zero; it never leaves the token). Used by
 * firmware/transport and main.
 */
#ifndef EDGECAP_TOKEN_KEY_H
#define EDGECAP_TOKEN_KEY_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/pk.h>

#include "edgecap/keystore.h"
#include "edgecap/status.h"

/*
 * Sets up `pk` (initialised, empty) over `ks`'s device key, with `cert_pk`
 * (the device certificate's public key, of the token key's type) as its
 * public half. `ks` must outlive `pk`. EC_ERR_INVALID when `ks` holds no
 * device key or the certificate's key is not of its type; EC_ERR_NOMEM.
 */
ec_status ec_token_key_setup(mbedtls_pk_context *pk, const ec_keystore *ks,
                             const mbedtls_pk_context *cert_pk);

/*
 * Whether the token's device key belongs to the certificate `cert_der`: a
 * random digest signed by the token must verify under the certificate's
 * public key. EC_OK, or EC_ERR_CRYPTO with a one-line reason in `why`.
 */
ec_status ec_token_key_check_pair(const ec_keystore *ks, const uint8_t *cert_der, size_t cert_len,
                                  char *why, size_t why_len);

/*
 * Whether the token's device key belongs to the public key `pub` (a public
 * key object read from the token, say): the same signing check. EC_OK, or
 * EC_ERR_CRYPTO with a one-line reason in `why`.
 */
ec_status ec_token_key_check_public(const ec_keystore *ks, const mbedtls_pk_context *pub, char *why,
                                    size_t why_len);

/* Raw ECDSA r || s (2 x `half` bytes) to the DER SEQUENCE of two INTEGERs. */
ec_status ec_token_key_sig_to_der(const uint8_t *raw, size_t half, uint8_t *der, size_t der_cap,
                                  size_t *der_len);

#endif
