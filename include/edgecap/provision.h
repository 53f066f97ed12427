/*
 * Device identity provisioning: the commands a field team runs once per
 * device (`edgecap provision init|show|install-cert`).
 *
 * - init: the key store generates the device key pair (EC P-256 or RSA
 *   3072) at [tls] client_key, never replacing one (the file backend: a 0600
 *   file created with O_EXCL), or, with [device] keystore = pkcs11 and
 *   [pkcs11] key_label, on the token under that label (EC P-256 or RSA
 *   3072, never extractable, sign only, never replacing a key with that
 *   label; destroyed again when its CSR cannot be made); the key store's
 *   KEK exists afterwards; a PEM CSR for subject O=edgecap, CN=<[device] id>
 *   is written; the key's sha256// SPKI pin is printed and audited
 *   (provision_init).
 * - show: the installed certificate (subject, issuer, serial, validity, pin),
 *   whether it belongs to the device key, and the KEK id. On a token the
 *   private key decides: a public key object is used only when the token key
 *   signs for it.
 * - install-cert: a signed certificate replaces [tls] client_cert only when
 *   it parses, carries the device key's public key, is valid now, allows
 *   clientAuth (when it has an EKU) and chains to [tls] client_ca_file (or,
 *   when that is empty, [tls] ca_file). The replacement is atomic (temporary
 *   file 0644 in the same directory, fsync, rename, directory fsync); any
 *   refusal or failure leaves the old file as it was. Audited
 *   (cert_installed / cert_install_refused).
 *
 * Nothing here reads or prints private key bytes: the key store generates
 * and keeps them. Called by main (firmware/main.c) only.
 */
#ifndef EDGECAP_PROVISION_H
#define EDGECAP_PROVISION_H

#include <stddef.h>
#include <stdio.h>

#include <mbedtls/pk.h>

#include "edgecap/audit.h"
#include "edgecap/config.h"
#include "edgecap/keystore.h"
#include "edgecap/status.h"

/* "sha256//" + 44 base64 characters + NUL */
#define EC_PIN_BYTES 53

/* Room for a reason given back to the caller (paths included). */
#define EC_PROVISION_WHY_BYTES (2 * EC_CFG_PATH_MAX + 256)

/*
 * The sha256// pin of `pk`'s public key: base64 of the SHA-256 of its DER
 * SubjectPublicKeyInfo, the form [tls] pin_current and nginx/curl take.
 */
ec_status ec_provision_spki_pin(mbedtls_pk_context *pk, char out[EC_PIN_BYTES]);

/* "ec-p256", "rsa-3072" and so on, for a key of any type. */
void ec_provision_key_type_name(const mbedtls_pk_context *pk, char *out, size_t out_len);

/* "ec-p256" / "rsa-3072" to the type; EC_ERR_INVALID for anything else. */
ec_status ec_provision_parse_key_type(const char *name, ec_key_type *type);

typedef struct {
    const ec_config *cfg;
    ec_keystore *keystore; /* open (so its KEK exists) */
    ec_audit *audit;       /* may record nothing */
    ec_key_type key_type;
    /* NULL: [tls] client_key with .key replaced by .csr (or + .csr); for a
     * key on the token, [tls] client_cert with .pem/.crt replaced by .csr */
    const char *csr_path;
} ec_provision_init_params;

/*
 * Creates the key pair and the CSR and prints what it made to `out`. On
 * failure `why` names what failed: EC_ERR_EXISTS (a key is already there;
 * untouched), EC_ERR_UNSUPPORTED (the key store cannot generate), EC_ERR_IO
 * and so on. The CSR's directory is checked (a temporary file is created
 * there) before the key is generated, so a key is not left without its CSR.
 */
ec_status ec_provision_init(const ec_provision_init_params *p, FILE *out, char *why,
                            size_t why_len);

/*
 * Prints the installed certificate, the key match and the KEK id. EC_OK when
 * a certificate is installed, valid now and belongs to the device key;
 * EC_ERR_NOT_FOUND when no certificate is installed (the key's pin is still
 * printed when there is a key); EC_ERR_CRYPTO when it is expired, not yet
 * valid, unreadable or for another key.
 */
ec_status ec_provision_show(const ec_config *cfg, ec_keystore *keystore, FILE *out);

/*
 * Checks `cert_path` and installs it as [tls] client_cert (see above);
 * prints what it installed. On refusal `why` says which check failed and
 * the old certificate is byte for byte what it was.
 */
ec_status ec_provision_install_cert(const ec_config *cfg, ec_keystore *keystore, ec_audit *audit,
                                    const char *cert_path, FILE *out, char *why, size_t why_len);

#endif
