/*
 * The transport policy, in one place (DESIGN invariant 4): every byte leaves
 * through an ec_transport, a libcurl easy handle on mbedTLS configured so
 * that
 *   - only https, to a host on [tls] allowed_hosts (checked before any
 *     connection is opened), redirects never followed (a 3xx is a failure),
 *     no proxy unless [upload] proxy names one (the environment's proxy
 *     variables are ignored);
 *   - TLS >= 1.2 ([tls] min_version), ECDHE key exchange with AEAD ciphers
 *     only, the peer chained to [tls] ca_file (read when the transport
 *     opens, not at each handshake), its name checked, and its
 *     SubjectPublicKeyInfo SHA-256 equal to pin_current or pin_next;
 *   - the device's client certificate and key (DER, from secure memory), or
 *     the key in a token, which signs the handshake (include/edgecap/token_key.h);
 *   - connect and low-speed timeouts; keep-alive reuse of the one handle;
 *   - [upload] connect_to maps the real host name to a private-endpoint
 *     address while SNI, Host and the certificate name stay the real name.
 * The negotiated TLS version and cipher suite are reported per request.
 * Request URLs may hold a SAS token: they are never logged.
 *
 * One transport per endpoint, used by one thread at a time. Owned by
 * firmware/upload.
 */
#ifndef EDGECAP_TRANSPORT_H
#define EDGECAP_TRANSPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/audit.h"
#include "edgecap/config.h"
#include "edgecap/keystore.h"
#include "edgecap/status.h"
#include "edgecap/tls_reason.h"

typedef struct {
    const ec_config *cfg;
    const uint8_t *client_cert_der; /* caller's secure memory, kept while open */
    size_t client_cert_len;
    const uint8_t *client_key_der;
    size_t client_key_len;
    /* Called from libcurl's progress callback (at least about once a second
     * while a request runs, moving or not): a liveness heartbeat for the
     * calling thread. NULL: none. */
    void (*heartbeat)(void *user);
    void *heartbeat_user;
    ec_audit *audit; /* may be NULL: where a pin mismatch is recorded */
    /* NULL, or a CLOCK_MONOTONIC time in ms (0: none yet) after which a
     * transfer in progress is abandoned (EC_ERR_NETWORK, reason "abandoned:
     * ..."), so that stopping an uploader never waits for a stalled peer */
    const _Atomic int64_t *abandon_at_ms;
    /* When not NULL and it holds the device key (a PKCS#11 token), the TLS
     * client signature is made there and client_key_der is not used. */
    const ec_keystore *client_key_store;
} ec_transport_params;

/* One part of a multipart/form-data body, sent from the caller's memory
 * (no copy: audio stays in secure memory). */
typedef struct {
    const char *name;         /* form field name */
    const char *content_type; /* e.g. "audio/ogg", "application/json" */
    const char *filename;     /* NULL: none */
    const uint8_t *data;
    size_t len;
} ec_http_part;

typedef struct {
    const char *method;         /* "PUT", "HEAD", "GET", "POST" */
    const char *url;            /* https://host/path?query (the query may carry a SAS) */
    const char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
    const uint8_t *body;
    size_t body_len;
    const ec_http_part *parts; /* POST as multipart/form-data instead of body */
    size_t n_parts;
    size_t body_max; /* most answer bytes kept; 0 = EC_HTTP_BODY_MAX */
} ec_http_request;

#define EC_HTTP_BODY_MAX (64 * 1024)
#define EC_HTTP_BODY_LIMIT (8 * 1024 * 1024)

typedef struct {
    long status;          /* HTTP status; 0 when no answer */
    char content_md5[48]; /* Content-MD5 response header, if any */
    char error_code[64];  /* x-ms-error-code header, or <Code> of the error body */
    bool have_content_length;
    uint64_t content_length;
    long retry_after_s;   /* Retry-After in seconds; -1 when absent */
    char tls_version[16]; /* as negotiated, e.g. "TLSv1.2" */
    char tls_cipher[64];  /* e.g. "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256" */
    char reason[160];     /* why a request failed before an answer (no secrets) */
    uint8_t *body;        /* the answer's first body_max bytes, NUL-terminated, in
                           * secure memory (tokens and transcripts arrive here) */
    size_t body_len;
    bool body_truncated; /* the answer was longer than body_max */
} ec_http_response;

typedef struct ec_transport ec_transport;

ec_status ec_transport_open(ec_transport **out, const ec_transport_params *params);

/*
 * Reads and checks a CA bundle ([tls] ca_file): every certificate in it
 * parses (PEM or DER) and there is at least one. EC_OK with the file's bytes
 * in *pem (heap; free()), or the status (EC_ERR_NOT_FOUND, EC_ERR_IO, or
 * EC_ERR_CONFIG for a file that is not a CA bundle) with `why` naming the
 * key, the path and the reason. ec_transport_open reads the file this way, once: a
 * reload checks a replaced file with it before it swaps anything.
 */
ec_status ec_transport_load_ca(const char *path, uint8_t **pem, size_t *len, char *why,
                               size_t why_len);

/*
 * Performs one request. EC_OK means an HTTP answer arrived (any status; the
 * caller judges it). Otherwise: EC_ERR_POLICY (host not allowed, not https,
 * bad URL), EC_ERR_TLS (handshake refused: pin, CA, name, version, client
 * certificate), EC_ERR_NETWORK (connect, reset, timeout), with
 * resp->reason saying why.
 */
ec_status ec_transport_request(ec_transport *t, const ec_http_request *req, ec_http_response *resp);

void ec_http_response_free(ec_http_response *resp);

/* RFC 3986 percent-encoding of all but the unreserved characters, truncated
 * to fit `out_len` (callers size `out` at 3x the input plus one). */
void ec_url_encode(const char *in, char *out, size_t out_len);

/* Refused handshakes so far, per ec_tls_reason (any thread). */
void ec_transport_get_tls_failures(ec_transport *t, uint64_t counts[EC_TLS_REASONS]);

void ec_transport_close(ec_transport **t);

/* curl's global init/cleanup, once per process (main). */
ec_status ec_transport_global_init(void);
void ec_transport_global_cleanup(void);

#endif
