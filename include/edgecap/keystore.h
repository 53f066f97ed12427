/*
 * HAL key store: holds the device key-encryption key (KEK) and uses it without
 * handing it out. Segment data keys are wrapped and unwrapped through it, so a
 * board with a TPM or PKCS#11 token can keep the KEK inside the token. The
 * file backend (hal/keystore_file.c) keeps a random 32-byte KEK in a 0600
 * file created on first use and in secure memory while open.
 *
 * Wrapping is AES-256-GCM: out = nonce(12) || ciphertext(32) || tag(16), with
 * caller-supplied AAD that binds the wrapped key to its context.
 */
#ifndef EDGECAP_KEYSTORE_H
#define EDGECAP_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/pk.h>

#include "edgecap/status.h"

#define EC_KEK_ID_BYTES 16
#define EC_DATA_KEY_BYTES 32
#define EC_WRAP_NONCE_BYTES 12
#define EC_WRAP_TAG_BYTES 16
#define EC_WRAPPED_KEY_BYTES (EC_WRAP_NONCE_BYTES + EC_DATA_KEY_BYTES + EC_WRAP_TAG_BYTES)

/* The device identity key pair (the TLS client key that `provision init` makes). */
typedef enum { EC_KEY_TYPE_EC_P256 = 0, EC_KEY_TYPE_RSA_3072 = 1 } ec_key_type;

typedef struct {
    const char *name;
    /* Wraps `key` under the KEK; `out` is EC_WRAPPED_KEY_BYTES. */
    ec_status (*wrap)(void *ctx, const uint8_t *key, const uint8_t *aad, size_t aad_len,
                      uint8_t *out);
    /* Unwraps into `key` (caller's secure memory); EC_ERR_CRYPTO if it does
     * not authenticate. */
    ec_status (*unwrap)(void *ctx, const uint8_t *in, const uint8_t *aad, size_t aad_len,
                        uint8_t *key);
    /* A public identifier of the KEK (EC_KEK_ID_BYTES), recorded in headers. */
    void (*kek_id)(void *ctx, uint8_t *out);
    void (*close)(void *ctx);
    /*
     * The device identity key pair, named by `ref` (for the file backend the
     * [tls] client_key path; a token backend may take a label). Both are
     * optional (NULL: this backend cannot), so a backend that keeps keys in a
     * token generates them there and hands back a context that signs through
     * it.
     *
     * generate_identity creates a new key pair of `type` and never replaces
     * an existing one (EC_ERR_EXISTS, nothing touched); `key` (initialised by
     * the caller, freed by the caller) is set up to sign with it (the CSR)
     * and carries its public key. The private key leaves the backend only to
     * its own store (the file backend: a 0600 file created with O_EXCL).
     */
    ec_status (*generate_identity)(void *ctx, ec_key_type type, const char *ref,
                                   mbedtls_pk_context *key);
    /* Sets up `pub` (initialised by the caller) with the public key of the
     * identity at `ref`; EC_ERR_NOT_FOUND when there is none. */
    ec_status (*identity_public)(void *ctx, const char *ref, mbedtls_pk_context *pub);
} ec_keystore_ops;

typedef struct {
    const ec_keystore_ops *ops;
    void *ctx;
} ec_keystore;

/*
 * Opens the file key store in `dir` (created 0700 if missing): the KEK is
 * `dir`/kek, 32 random bytes, created 0600 on first use. An existing KEK file
 * must be owned by the running user with mode 0600 and exactly 32 bytes, else
 * EC_ERR_PERM / EC_ERR_IO (never replaced: that would orphan every segment).
 */
ec_status ec_keystore_file_open(ec_keystore *ks, const char *dir);

/*
 * Loads the device's TLS client certificate and private key (PEM or DER) for
 * the file key store, converted to DER in secure memory (libcurl on mbedTLS
 * takes key blobs as DER). The key file must be owned by the running user
 * with no group/other access. Free both with ec_secmem_free.
 */
ec_status ec_keystore_file_client_credentials(const char *cert_path, const char *key_path,
                                              uint8_t **cert_der, size_t *cert_len,
                                              uint8_t **key_der, size_t *key_len);

/* Closes any backend; safe on a zeroed or closed ec_keystore. */
void ec_keystore_close(ec_keystore *ks);

#endif
