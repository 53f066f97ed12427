/*
 * Request authorisation ([auth]), in one place:
 *   entra  an OAuth 2.0 client-credentials grant with a certificate client
 *          assertion signed on the device (firmware/jwt): one bearer token
 *          per scope (Speech: https://cognitiveservices.azure.com/.default,
 *          Blob: https://storage.azure.com/.default), cached in secure memory
 *          and fetched again before expires_in runs out. The token endpoint
 *          ([auth] authority_host/TENANT/oauth2/v2.0/token) is reached through
 *          a transport of its own, under the same policy as every other host.
 *   key    Ocp-Apim-Subscription-Key from key_primary; a 401 switches to
 *          key_secondary (and back), and the log names the slot, never a key.
 *   sas    nothing to add: the SAS rides in the blob URL (firmware/blob).
 * Every request goes through ec_auth_request, so a 401 costs exactly one
 * refresh (a new token, or the other key) and one retry, never a loop.
 *
 * One ec_auth per process, shared by the uploader and the Speech batch
 * thread; it locks internally. Owned by main.
 */
#ifndef EDGECAP_AUTH_H
#define EDGECAP_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "edgecap/audit.h"
#include "edgecap/config.h"
#include "edgecap/status.h"
#include "edgecap/transport.h"

typedef enum { EC_SCOPE_SPEECH = 0, EC_SCOPE_STORAGE = 1 } ec_auth_scope;
#define EC_AUTH_SCOPES 2

#define EC_SCOPE_SPEECH_URI "https://cognitiveservices.azure.com/.default"
#define EC_SCOPE_STORAGE_URI "https://storage.azure.com/.default"

/* Lifetime of the client assertions this device signs (the limit is 600 s). */
#define EC_AUTH_ASSERTION_LIFETIME_S 300

typedef struct {
    const ec_config *cfg;
    const uint8_t *cert_der; /* the device certificate and key (secure memory, */
    size_t cert_len;         /* kept by the caller while the ec_auth is open)  */
    const uint8_t *key_der;
    size_t key_len;
    ec_audit *audit; /* may be NULL */
    /* not NULL when the device key is in a token (key_der is NULL then): TLS
     * and the client assertion are signed there */
    const ec_keystore *key_store;
} ec_auth_params;

typedef struct {
    uint64_t tokens_issued;   /* successful token requests */
    uint64_t token_refreshes; /* of those, replacing a cached token */
    uint64_t token_failures;  /* token requests that failed or were refused */
    uint64_t unauthorized;    /* 401 answers from a resource */
    uint64_t retries;         /* requests retried after a 401 */
    uint64_t key_switches;    /* key mode: slot changes */
    int key_slot;             /* 0 primary, 1 secondary */
} ec_auth_stats;

typedef struct ec_auth ec_auth;

/*
 * Opens the authoriser for cfg's [auth] mode. With entra the device key must
 * suit [auth] assertion_alg and match the certificate: EC_ERR_CONFIG with
 * the reason in `why` otherwise. No network traffic here.
 */
ec_status ec_auth_open(ec_auth **out, const ec_auth_params *params, char *why, size_t why_len);

/*
 * Performs `req` on `t` with the scope's credential added. EC_OK when an
 * HTTP answer arrived (the caller judges it; a 401 that survived the one
 * retry is such an answer). Otherwise the transport's status, or EC_ERR_AUTH
 * when the token endpoint refused the device (resp->reason says why, with
 * Entra's error code), EC_ERR_PROTOCOL when its answer was malformed.
 */
ec_status ec_auth_request(ec_auth *a, ec_auth_scope scope, ec_transport *t,
                          const ec_http_request *req, ec_http_response *resp);

void ec_auth_get_stats(ec_auth *a, ec_auth_stats *stats);

/* Name of the mode in logs: "entra", "key", "sas". */
const char *ec_auth_mode_name(const ec_auth *a);

void ec_auth_close(ec_auth **a);

#endif
