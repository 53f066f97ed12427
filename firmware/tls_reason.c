/*
 * TLS failure reasons (see include/edgecap/tls_reason.h).
 */
#include "edgecap/tls_reason.h"

#include "edgecap/provision.h"

#include <curl/curl.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509.h>
#include <stdio.h>

static const char *const names[EC_TLS_REASONS] = {
    [EC_TLS_PIN_MISMATCH] = "pin_mismatch", [EC_TLS_CERT_UNTRUSTED] = "cert_untrusted",
    [EC_TLS_CERT_EXPIRED] = "cert_expired", [EC_TLS_HOSTNAME] = "hostname",
    [EC_TLS_HANDSHAKE] = "handshake",       [EC_TLS_PROTOCOL_VERSION] = "protocol_version",
    [EC_TLS_CLIENT_CERT] = "client_cert",
};

const char *ec_tls_reason_name(ec_tls_reason r)
{
    return (unsigned)r < EC_TLS_REASONS ? names[r] : "unknown";
}

/* TLS alert numbers (RFC 8446 6.2, RFC 5246 7.2) */
enum {
    ALERT_HANDSHAKE_FAILURE = 40,
    ALERT_BAD_CERTIFICATE = 42,
    ALERT_UNSUPPORTED_CERTIFICATE = 43,
    ALERT_CERTIFICATE_REVOKED = 44,
    ALERT_CERTIFICATE_EXPIRED = 45,
    ALERT_CERTIFICATE_UNKNOWN = 46,
    ALERT_UNKNOWN_CA = 48,
    ALERT_ACCESS_DENIED = 49,
    ALERT_PROTOCOL_VERSION = 70,
    ALERT_CERTIFICATE_REQUIRED = 116,
};

/* The server's certificate: a chain that does not lead to our CA says all
 * there is to say (an attacker's certificate also names the wrong host);
 * then time, then the name. */
static ec_tls_reason from_verify_flags(uint32_t flags)
{
    if (flags &
        (MBEDTLS_X509_BADCERT_NOT_TRUSTED | MBEDTLS_X509_BADCERT_REVOKED |
         MBEDTLS_X509_BADCERT_MISSING | MBEDTLS_X509_BADCERT_SKIP_VERIFY |
         MBEDTLS_X509_BADCERT_OTHER | MBEDTLS_X509_BADCERT_KEY_USAGE |
         MBEDTLS_X509_BADCERT_EXT_KEY_USAGE | MBEDTLS_X509_BADCERT_NS_CERT_TYPE |
         MBEDTLS_X509_BADCERT_BAD_MD | MBEDTLS_X509_BADCERT_BAD_PK | MBEDTLS_X509_BADCERT_BAD_KEY))
        return EC_TLS_CERT_UNTRUSTED;
    if (flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE))
        return EC_TLS_CERT_EXPIRED;
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
        return EC_TLS_HOSTNAME;
    return EC_TLS_CERT_UNTRUSTED;
}

static ec_tls_reason from_alert(int alert)
{
    switch (alert) {
    case ALERT_BAD_CERTIFICATE:
    case ALERT_UNSUPPORTED_CERTIFICATE:
    case ALERT_CERTIFICATE_REVOKED:
    case ALERT_CERTIFICATE_EXPIRED:
    case ALERT_CERTIFICATE_UNKNOWN:
    case ALERT_UNKNOWN_CA:
    case ALERT_ACCESS_DENIED:
    case ALERT_CERTIFICATE_REQUIRED:
        return EC_TLS_CLIENT_CERT; /* the server judged our certificate */
    case ALERT_PROTOCOL_VERSION:
        return EC_TLS_PROTOCOL_VERSION;
    default:
        return EC_TLS_HANDSHAKE;
    }
}

int ec_tls_classify(long curl_code, uint32_t verify_flags, int alert, int version_refused)
{
    switch ((CURLcode)curl_code) {
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return EC_TLS_PIN_MISMATCH;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ISSUER_ERROR:
        return from_verify_flags(verify_flags);
    case CURLE_SSL_CERTPROBLEM:
        return EC_TLS_CLIENT_CERT;
    case CURLE_SSL_CONNECT_ERROR:
        if (version_refused)
            return EC_TLS_PROTOCOL_VERSION;
        return alert >= 0 ? from_alert(alert) : EC_TLS_HANDSHAKE;
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_INITFAILED:
        return EC_TLS_HANDSHAKE;
    default:
        return -1;
    }
}

ec_status ec_tls_spki_pin(const mbedtls_x509_crt *crt, char *out, size_t out_len)
{
    if (out_len < EC_PIN_BYTES)
        return EC_ERR_INVALID;
    return ec_provision_spki_pin((mbedtls_pk_context *)&crt->pk, out) == EC_OK ? EC_OK
                                                                               : EC_ERR_INVALID;
}
