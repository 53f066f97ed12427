/*
 * Why a TLS handshake was refused, as one of a small fixed set of reasons:
 * the label values of edgecap_tls_failures_total{reason=...}. Classified
 * from what the transport sees (curl's result, mbedTLS's certificate verify
 * flags, a fatal alert the peer sent), never from a message text.
 *
 * Owned by firmware/transport; read by upload and metrics.
 */
#ifndef EDGECAP_TLS_REASON_H
#define EDGECAP_TLS_REASON_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/x509_crt.h>

#include "edgecap/status.h"

typedef enum {
    EC_TLS_PIN_MISMATCH = 0, /* chain and name fine, key not pin_current/pin_next */
    EC_TLS_CERT_UNTRUSTED,   /* not chained to [tls] ca_file (or revoked, bad key/usage) */
    EC_TLS_CERT_EXPIRED,     /* outside its validity period */
    EC_TLS_HOSTNAME,         /* the certificate does not name the host */
    EC_TLS_HANDSHAKE,        /* any other handshake failure (cipher suites, a broken peer) */
    EC_TLS_PROTOCOL_VERSION, /* no common TLS version */
    EC_TLS_CLIENT_CERT,      /* our client certificate was unusable or refused */
    EC_TLS_REASONS
} ec_tls_reason;

/* "pin_mismatch", "cert_untrusted", ...: a Prometheus label value. */
const char *ec_tls_reason_name(ec_tls_reason r);

/*
 * `curl_code` is the CURLcode of a failed transfer that the transport
 * counted as EC_ERR_TLS; `verify_flags` the MBEDTLS_X509_BADCERT_* bits the
 * peer's chain collected (0 when unknown); `alert` the TLS alert the peer
 * sent as fatal (-1 when none); `version_refused` whether we refused the
 * server's version. Returns -1 when `curl_code` is no TLS failure.
 */
int ec_tls_classify(long curl_code, uint32_t verify_flags, int alert, int version_refused);

/* The "sha256//BASE64" pin of `crt`'s SubjectPublicKeyInfo (public: it is
 * what [tls] pin_current holds). `out` takes EC_TLS_PIN_MAX bytes. */
#define EC_TLS_PIN_MAX 54
ec_status ec_tls_spki_pin(const mbedtls_x509_crt *crt, char *out, size_t out_len);

#endif
