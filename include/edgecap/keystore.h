/*
 * HAL key store: holds the device key-encryption key (KEK) and uses it without
 * handing it out. Segment data keys are wrapped and unwrapped through it, so a
 * board with a TPM or PKCS#11 token can keep the KEK inside the token. The
 * file backend (hal/keystore_file.c) keeps a random 32-byte KEK in a 0600
 * file created on first use and in secure memory while open. The PKCS#11
 * backend (hal/keystore_pkcs11.c) keeps the KEK, and the device's private key,
 * inside a token (a secure element, or SoftHSM2 in the tests) as
 * non-extractable objects: wrapping, unwrapping and signing happen there.
 *
 * Wrapping is AES-256-GCM: out = nonce(12) || ciphertext(32) || tag(16), with
 * caller-supplied AAD that binds the wrapped key to its context.
 */
#ifndef EDGECAP_KEYSTORE_H
#define EDGECAP_KEYSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/secret.h"
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
    /* Optional (NULL where a backend cannot): destroys the KEK for good, for
     * decommissioning (`edgecap wipe`); afterwards wrap and unwrap fail. */
    ec_status (*destroy)(void *ctx);
    /* Signs with the device's private key when the store holds it (NULL
     * otherwise: the file store's key is a file). ECDSA P-256: `hash` is the
     * digest (20..64 bytes), `sig` gets the raw r || s, 64 bytes. RSA:
     * `hash` is the DER DigestInfo naming the digest's function (built by
     * firmware/token_key.c from mbedTLS's md_alg), signed PKCS#1 v1.5; `sig`
     * gets the modulus's length. EC_ERR_INVALID for a `sig_cap` below it. */
    ec_status (*sign_digest)(void *ctx, const uint8_t *hash, size_t hash_len, uint8_t *sig,
                             size_t sig_cap, size_t *sig_len);
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
    /* Destroys the key pair this store's generate_identity made at `ref` (optional;
     * NULL: the caller says where the key is): for a key that was never
     * certified, when its CSR could not be made. EC_ERR_NOT_FOUND when this
     * store made none; EC_ERR_IO when the backend refused (logged). */
    ec_status (*discard_identity)(void *ctx, const char *ref);
    /* Decommissioning (`edgecap wipe`; optional, NULL: the key is a file the
     * caller shreds): destroys every private and public key object under
     * `ref`, whoever made it. EC_ERR_NOT_FOUND when there is none; EC_ERR_IO
     * when the backend refused (logged; what it destroyed before stays
     * destroyed). */
    ec_status (*destroy_identity)(void *ctx, const char *ref);
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

/* As ec_keystore_file_open, but never creates a KEK: EC_ERR_NOT_FOUND when
 * `dir`/kek does not exist (a wipe must not mint a key to destroy). Its
 * destroy op overwrites the KEK file with zeros, fsyncs, unlinks it and
 * fsyncs the directory. */
ec_status ec_keystore_file_open_existing(ec_keystore *ks, const char *dir);

/*
 * Loads the device's TLS client certificate and private key (PEM or DER) for
 * the file key store, converted to DER in secure memory (libcurl on mbedTLS
 * takes key blobs as DER). The key file must be owned by the running user
 * with no group/other access. Free both with ec_secmem_free.
 */
ec_status ec_keystore_file_client_credentials(const char *cert_path, const char *key_path,
                                              uint8_t **cert_der, size_t *cert_len,
                                              uint8_t **key_der, size_t *key_len);

/* Only the certificate (PEM or DER, converted to DER in secure memory), for
 * a device key that lives in a token. */
ec_status ec_keystore_file_certificate(const char *cert_path, uint8_t **cert_der, size_t *cert_len);

/* The [pkcs11] settings of the provisioning file. */
typedef struct {
    const char *module;      /* absolute path of the PKCS#11 module (dlopen'ed) */
    const char *token_label; /* the token (CKA_LABEL of its token info) */
    const ec_secret *pin;    /* the user PIN */
    const char *kek_label;   /* the AES-256 KEK, created on the token when absent */
    const char *key_label;   /* the device's private key (EC P-256 or RSA); "" = none */
    /* With a key_label: open even when the token has no key under it yet
     * (`provision` runs before and while the key is made); the device key is
     * then absent until generate_identity makes it. */
    bool key_optional;
    /* For a wipe: never create the KEK; with none on the token the store
     * opens without one (kek_id all zeros, wrap/unwrap fail, destroy is
     * EC_ERR_NOT_FOUND). */
    bool kek_existing;
} ec_keystore_pkcs11_params;

/*
 * Opens the PKCS#11 key store: loads the module, finds the token by label,
 * logs in with the PIN (never logged or copied), finds the KEK by label or
 * generates it on the token (AES-256, CKA_TOKEN, CKA_SENSITIVE,
 * not CKA_EXTRACTABLE, a random CKA_ID), and, with a key_label, finds the
 * device's private key (EC P-256 or RSA 2048-4096, sensitive, not
 * extractable, sign only: CKA_DECRYPT, CKA_UNWRAP and CKA_DERIVE false). An
 * existing KEK
 * or key that is extractable or of the wrong kind is refused, never used.
 * The KEK id is a hash of the KEK's CKA_ID (public), never of key bytes.
 * Its generate_identity makes an EC P-256 or RSA 3072 (e = 65537) key pair
 * on the token under the label `ref` (CKA_LABEL and CKA_ID = the label on
 * both halves; the private half CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, not
 * CKA_EXTRACTABLE, CKA_SIGN only, not CKA_MODIFIABLE, CKA_ALLOWED_MECHANISMS
 * CKM_ECDSA or CKM_RSA_PKCS where the token takes it), refusing with
 * EC_ERR_EXISTS when any key already has that label or the store holds a
 * device key; two processes making one at once leave exactly one;
 * the key it hands back signs through the token (firmware/token_key.c), and
 * the store's device key is the new key from then on, until discard_identity
 * destroys it. Its destroy op destroys the KEK object and destroy_identity
 * every key object under a label (C_DestroyObject), for `edgecap wipe`. identity_public reads the
 * public key object under `ref` (firmware/provision.c trusts it only when the private key signs for
 * it). Wrapping is CKM_AES_GCM on the token with the same layout and AAD as the file store, so the
 * spool format does not depend on the backend. EC_ERR_NOT_FOUND: no module at the path, no such
 * token, no such key; EC_ERR_AUTH: the PIN was refused; EC_ERR_CRYPTO: an object is unsuitable;
 * EC_ERR_IO: the token failed. The reason is logged (pkcs11_* events).
 */
ec_status ec_keystore_pkcs11_open(ec_keystore *ks, const ec_keystore_pkcs11_params *p);

/* Whether `ks` holds the device's private key (sign_digest is available). */
bool ec_keystore_has_device_key(const ec_keystore *ks);

/* The device key's type when `ks` holds one (EC P-256, or RSA of 2048 to
 * 4096 bits, reported as EC_KEY_TYPE_RSA_3072); EC_KEY_TYPE_EC_P256 otherwise. */
ec_key_type ec_keystore_device_key_type(const ec_keystore *ks);

/* Closes any backend; safe on a zeroed or closed ec_keystore. */
void ec_keystore_close(ec_keystore *ks);

#endif
