/*
 * The transport policy (see include/edgecap/transport.h). Every request goes
 * through apply_policy() on a reset handle, so no option from an earlier
 * request (a method, a body, a header) can leak into the next, while curl
 * keeps the connection and the TLS session for reuse.
 */
#include "edgecap/transport.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <mbedtls/debug.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509_crt.h>

#include "edgecap/log.h"
#include "edgecap/secmem.h"
#include "edgecap/tls_reason.h"
#include "edgecap/token_key.h"

struct ec_transport {
    CURL *curl;
    const ec_config *cfg;
    struct curl_blob cert;
    struct curl_blob key;
    struct curl_blob ca; /* [tls] ca_file as read when the transport opened */
    /* the device key in a token: curl gets no key blob; restrict_tls hands
     * mbedTLS this certificate and a key whose signatures the token makes */
    bool token_key;
    mbedtls_x509_crt own_crt;
    mbedtls_pk_context own_pk;
    char pins[200];
    struct curl_slist *connect_to;
    const _Atomic int64_t *abandon_at_ms;
    char errbuf[CURL_ERROR_SIZE];
    void (*heartbeat)(void *user);
    void *heartbeat_user;
    ec_audit *audit;
    /* what the handshake of the current request showed, for the reason of
     * a refusal (written by mbedTLS callbacks on the requesting thread) */
    uint32_t verify_flags;
    int alert;
    bool version_refused;
    char peer_pin[EC_TLS_PIN_MAX];
    pthread_mutex_t lock; /* guards tls_failures: metrics read them */
    uint64_t tls_failures[EC_TLS_REASONS];
};

/* ECDHE key exchange with AEAD ciphers only; the order is our preference. */
static const int aead_ecdhe_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

/* Every certificate of the peer's chain passes here (curl sets no callback
 * of its own): the flags say why a chain was refused, and the leaf's key
 * gives the pin it showed. Nothing is changed. */
static int on_verify(void *user, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    ec_transport *t = user;
    t->verify_flags |= *flags;
    if (depth == 0 && ec_tls_spki_pin(crt, t->peer_pin, sizeof t->peer_pin) != EC_OK)
        t->peer_pin[0] = '\0';
    return 0;
}

/* mbedTLS's level-1 (error) debug lines are the only place that names the
 * alert a peer sent, or that we refused the server's version. */
static void on_debug(void *user, int level, const char *file, int line, const char *msg)
{
    (void)level;
    (void)file;
    (void)line;
    ec_transport *t = user;
    const char *a = strstr(msg, "is a fatal alert message (msg ");
    int alert = 0;
    if (a != NULL && sscanf(a + strlen("is a fatal alert message (msg "), "%d", &alert) == 1)
        t->alert = alert;
    if (strstr(msg, "version out of bounds") != NULL)
        t->version_refused = true;
}

static CURLcode restrict_tls(CURL *curl, void *ssl_config, void *user)
{
    (void)curl;
    ec_transport *t = user;
    mbedtls_ssl_config *conf = ssl_config;
    if (t != NULL && t->token_key && mbedtls_ssl_conf_own_cert(conf, &t->own_crt, &t->own_pk) != 0)
        return CURLE_SSL_CERTPROBLEM;
    mbedtls_ssl_conf_verify(conf, on_verify, user);
    mbedtls_ssl_conf_dbg(conf, on_debug, user);
    mbedtls_ssl_conf_ciphersuites(conf, aead_ecdhe_suites);
    /* curl set this from CURLOPT_SSLVERSION already; say it again here, where
     * it cannot be lost */
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    return CURLE_OK;
}

/* curl keeps copies of what it is given (URLs with a SAS, header lines with
 * a bearer token or subscription key) on the ordinary heap: every block it
 * frees is wiped first. */
static void wiping_free(void *p)
{
    if (p == NULL)
        return;
    mbedtls_platform_zeroize(p, malloc_usable_size(p));
    free(p);
}

static void *wiping_realloc(void *p, size_t n)
{
    if (p == NULL)
        return malloc(n);
    if (n == 0) {
        wiping_free(p);
        return NULL;
    }
    void *q = malloc(n);
    if (q == NULL)
        return NULL;
    size_t old = malloc_usable_size(p);
    memcpy(q, p, old < n ? old : n);
    wiping_free(p);
    return q;
}

ec_status ec_transport_global_init(void)
{
    mbedtls_debug_set_threshold(1); /* errors only: see on_debug */
    return curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, wiping_free, wiping_realloc, strdup,
                                calloc) == CURLE_OK
               ? EC_OK
               : EC_ERR_INTERNAL;
}

void ec_transport_global_cleanup(void)
{
    curl_global_cleanup();
}

/* A CA bundle larger than this is not a CA bundle. */
#define CA_FILE_MAX_BYTES (1024 * 1024)

ec_status ec_transport_load_ca(const char *path, uint8_t **pem, size_t *len, char *why,
                               size_t why_len)
{
    *pem = NULL;
    *len = 0;
    uint8_t *buf = NULL;
    size_t have = 0;
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    ec_status st = EC_ERR_IO;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, why_len, "[tls] ca_file %s: %s", path, strerror(errno));
        st = errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
        goto out;
    }
    /* one byte more than the cap, and one for the NUL that PEM parsing wants */
    buf = malloc(CA_FILE_MAX_BYTES + 2);
    if (buf == NULL) {
        st = EC_ERR_NOMEM;
        snprintf(why, why_len, "[tls] ca_file %s: out of memory", path);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + have, CA_FILE_MAX_BYTES + 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, why_len, "[tls] ca_file %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0 || (have += (size_t)n) > CA_FILE_MAX_BYTES)
            break;
    }
    if (have > CA_FILE_MAX_BYTES) {
        st = EC_ERR_CONFIG;
        snprintf(why, why_len, "[tls] ca_file %s: larger than %d bytes", path, CA_FILE_MAX_BYTES);
        goto out;
    }
    buf[have] = '\0';
    /* PEM wants the terminating NUL counted; DER must not have it */
    bool is_pem = strstr((const char *)buf, "-----BEGIN CERTIFICATE-----") != NULL;
    int rc = mbedtls_x509_crt_parse(&crt, buf, is_pem ? have + 1 : have);
    if (rc != 0 || crt.version == 0) {
        st = EC_ERR_CONFIG;
        if (rc > 0)
            snprintf(why, why_len, "[tls] ca_file %s: %d certificate(s) do not parse", path, rc);
        else
            snprintf(why, why_len, "[tls] ca_file %s: no PEM or DER certificate", path);
        goto out;
    }
    *pem = buf;
    *len = have;
    buf = NULL;
    st = EC_OK;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    mbedtls_x509_crt_free(&crt);
    return st;
}

ec_status ec_transport_open(ec_transport **out, const ec_transport_params *p)
{
    *out = NULL;
    const ec_config *cfg = p->cfg;
    if (cfg->tls.min_version == EC_TLS_1_3) {
        ec_log(EC_LOG_ERROR, "transport_unsupported",
               EC_LOG_STR("reason", "[tls] min_version = 1.3: this build's mbedTLS 2.28 "
                                    "has no TLS 1.3"));
        return EC_ERR_UNSUPPORTED;
    }
    ec_transport *t = calloc(1, sizeof *t);
    if (t == NULL)
        return EC_ERR_NOMEM;
    t->cfg = cfg;
    t->heartbeat = p->heartbeat;
    t->heartbeat_user = p->heartbeat_user;
    t->audit = p->audit;
    /* The CA bundle is read now, not at each handshake: a file replaced on
     * disk takes effect at the next reload, which validates it first. */
    uint8_t *ca = NULL;
    size_t ca_len = 0;
    char why[EC_CFG_PATH_MAX + 96];
    ec_status st = ec_transport_load_ca(cfg->tls.ca_file, &ca, &ca_len, why, sizeof why);
    if (st != EC_OK) {
        ec_log(EC_LOG_ERROR, "tls_ca_unusable", EC_LOG_STR("reason", why));
        free(t);
        return st;
    }
    t->ca = (struct curl_blob){.data = ca, .len = ca_len, .flags = CURL_BLOB_NOCOPY};
    mbedtls_x509_crt_init(&t->own_crt);
    mbedtls_pk_init(&t->own_pk);
    t->curl = curl_easy_init();
    if (t->curl == NULL || pthread_mutex_init(&t->lock, NULL) != 0) {
        curl_easy_cleanup(t->curl);
        free(ca);
        free(t);
        return EC_ERR_NOMEM;
    }
    if (ec_keystore_has_device_key(p->client_key_store)) {
        st = EC_ERR_CRYPTO;
        if (mbedtls_x509_crt_parse_der(&t->own_crt, p->client_cert_der, p->client_cert_len) != 0 ||
            (st = ec_token_key_setup(&t->own_pk, p->client_key_store, &t->own_crt.pk)) != EC_OK) {
            ec_log(EC_LOG_ERROR, "transport_client_key_unusable",
                   EC_LOG_STR("reason", "the device certificate does not go with the token's "
                                        "key (EC P-256 or RSA)"));
            ec_transport_close(&t);
            return st;
        }
        t->token_key = true;
    }
    /* NOCOPY: the key stays in our secure memory only */
    t->abandon_at_ms = p->abandon_at_ms;
    t->cert = (struct curl_blob){
        .data = (void *)p->client_cert_der, .len = p->client_cert_len, .flags = CURL_BLOB_NOCOPY};
    t->key = (struct curl_blob){
        .data = (void *)p->client_key_der, .len = p->client_key_len, .flags = CURL_BLOB_NOCOPY};
    snprintf(t->pins, sizeof t->pins, "%s%s%s", cfg->tls.pin_current,
             cfg->tls.pin_next[0] != '\0' ? ";" : "", cfg->tls.pin_next);
    for (size_t i = 0; i < cfg->upload.n_connect_to; i++) {
        struct curl_slist *l = curl_slist_append(t->connect_to, cfg->upload.connect_to[i]);
        if (l == NULL) {
            ec_transport_close(&t);
            return EC_ERR_NOMEM;
        }
        t->connect_to = l;
    }
    *out = t;
    return EC_OK;
}

void ec_transport_close(ec_transport **tp)
{
    if (tp == NULL || *tp == NULL)
        return;
    ec_transport *t = *tp;
    curl_easy_cleanup(t->curl);
    curl_slist_free_all(t->connect_to);
    pthread_mutex_destroy(&t->lock);
    free(t->ca.data);
    mbedtls_pk_free(&t->own_pk);
    mbedtls_x509_crt_free(&t->own_crt);
    free(t);
    *tp = NULL;
}

/* ---- per-request state -------------------------------------------------- */

typedef struct {
    ec_transport *t;
    ec_http_response *resp;
    const uint8_t *body;
    size_t body_len;
    size_t body_off;
    size_t body_max;
    size_t body_cap;
    bool tls_seen;
} exchange;

static size_t on_read(char *buf, size_t size, size_t n, void *user)
{
    exchange *x = user;
    size_t room = size * n, left = x->body_len - x->body_off;
    size_t k = left < room ? left : room;
    memcpy(buf, x->body + x->body_off, k);
    x->body_off += k;
    return k;
}

/* curl rewinds a body it must send again (a kept-alive connection that died
 * under the request): the body is in memory, so any offset is fine. */
static int on_seek(void *user, curl_off_t offset, int origin)
{
    exchange *x = user;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > x->body_len)
        return CURL_SEEKFUNC_FAIL;
    x->body_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t on_write(char *data, size_t size, size_t n, void *user)
{
    exchange *x = user;
    size_t len = size * n;
    ec_http_response *r = x->resp;
    size_t keep = len;
    if (r->body_len + keep > x->body_max) {
        keep = x->body_max - r->body_len;
        r->body_truncated = true;
    }
    if (keep > 0) {
        if (r->body_len + keep + 1 > x->body_cap) {
            /* answers may hold tokens or transcripts: locked memory only */
            size_t cap = x->body_cap == 0 ? 4096 : x->body_cap;
            while (cap < r->body_len + keep + 1)
                cap *= 2;
            uint8_t *grown = ec_secmem_alloc(cap);
            if (grown == NULL)
                return 0;
            if (r->body_len > 0)
                memcpy(grown, r->body, r->body_len);
            ec_secmem_free(r->body);
            r->body = grown;
            x->body_cap = cap;
        }
        memcpy(r->body + r->body_len, data, keep);
        r->body_len += keep;
        r->body[r->body_len] = '\0';
    }
    return len; /* the rest is read and dropped */
}

/* The TLS session is only reachable during the transfer: note it on the
 * first header. */
static void note_tls(exchange *x)
{
    if (x->tls_seen)
        return;
    x->tls_seen = true;
    struct curl_tlssessioninfo *info = NULL;
    if (curl_easy_getinfo(x->t->curl, CURLINFO_TLS_SSL_PTR, &info) != CURLE_OK || info == NULL ||
        info->backend != CURLSSLBACKEND_MBEDTLS || info->internals == NULL)
        return;
    const mbedtls_ssl_context *ssl = info->internals;
    snprintf(x->resp->tls_version, sizeof x->resp->tls_version, "%s", mbedtls_ssl_get_version(ssl));
    snprintf(x->resp->tls_cipher, sizeof x->resp->tls_cipher, "%s",
             mbedtls_ssl_get_ciphersuite(ssl));
}

/* Copies a header's value (trimmed) when `line` is that header. */
static bool header_value(const char *line, size_t len, const char *name, char *out, size_t out_len)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    size_t k = (size_t)(end - v) < out_len - 1 ? (size_t)(end - v) : out_len - 1;
    memcpy(out, v, k);
    out[k] = '\0';
    return true;
}

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
    exchange *x = user;
    size_t len = size * n;
    ec_http_response *r = x->resp;
    note_tls(x);
    char v[64];
    if (header_value(data, len, "Content-MD5", r->content_md5, sizeof r->content_md5))
        return len;
    if (header_value(data, len, "x-ms-error-code", r->error_code, sizeof r->error_code))
        return len;
    if (header_value(data, len, "Retry-After", v, sizeof v)) {
        char *end = NULL;
        long s = strtol(v, &end, 10);
        if (end != v && *end == '\0' && s >= 0)
            r->retry_after_s = s;
        return len;
    }
    if (header_value(data, len, "Content-Length", v, sizeof v)) {
        char *end = NULL;
        unsigned long long cl = strtoull(v, &end, 10);
        if (end != v && *end == '\0') {
            r->content_length = cl;
            r->have_content_length = true;
        }
    }
    return len;
}

/* The <Code> of an Azure error body, when there is one. */
static void error_code_from_body(ec_http_response *r)
{
    if (r->error_code[0] != '\0' || r->body == NULL)
        return;
    const char *start = strstr((const char *)r->body, "<Code>");
    if (start == NULL)
        return;
    start += 6;
    const char *end = strstr(start, "</Code>");
    if (end == NULL)
        return;
    size_t k = (size_t)(end - start);
    if (k >= sizeof r->error_code)
        k = sizeof r->error_code - 1;
    memcpy(r->error_code, start, k);
    r->error_code[k] = '\0';
}

/* ---- policy ------------------------------------------------------------- */

static ec_status check_url(const ec_config *cfg, const char *url, char *reason, size_t len)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    ec_status st = EC_ERR_POLICY;
    if (u == NULL)
        return EC_ERR_NOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(reason, len, "not a URL");
    } else if (strcmp(scheme, "https") != 0) {
        snprintf(reason, len, "scheme %s refused: https only", scheme);
    } else if (!ec_config_host_allowed(cfg, host)) {
        snprintf(reason, len, "host %s is not on [tls] allowed_hosts", host);
    } else {
        st = EC_OK;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return st;
}

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(t->curl, (opt), (val));                                          \
    } while (0)

/* curl calls this about once a second even while nothing moves: a
 * liveness heartbeat for the owner's thread, and the end of a transfer
 * once its owner's abandon time has passed (otherwise curl's own timeouts
 * decide when a transfer is dead). */
static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    const ec_transport *t = user;
    if (t->heartbeat != NULL)
        t->heartbeat(t->heartbeat_user);
    if (t->abandon_at_ms == NULL)
        return 0;
    int64_t at = atomic_load(t->abandon_at_ms);
    if (at == 0)
        return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 >= at;
}

static CURLcode apply_policy(ec_transport *t)
{
    const ec_config *cfg = t->cfg;
    CURLcode rc = CURLE_OK;
    SET(CURLOPT_PROTOCOLS_STR, "https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_MAXREDIRS, 0L);
    /* "" disables proxies, including https_proxy/ALL_PROXY from the environment */
    SET(CURLOPT_PROXY, cfg->upload.proxy);
    SET(CURLOPT_SSLVERSION, (long)(CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_DEFAULT));
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_CAINFO, (char *)NULL);
    SET(CURLOPT_CAINFO_BLOB, &t->ca);
    SET(CURLOPT_CAPATH, (char *)NULL);
    SET(CURLOPT_PINNEDPUBLICKEY, t->pins);
    SET(CURLOPT_SSL_CTX_FUNCTION, restrict_tls);
    SET(CURLOPT_SSL_CTX_DATA, t);
    if (!t->token_key) {
        SET(CURLOPT_SSLCERT_BLOB, &t->cert);
        SET(CURLOPT_SSLCERTTYPE, "DER");
        SET(CURLOPT_SSLKEY_BLOB, &t->key);
        SET(CURLOPT_SSLKEYTYPE, "DER");
    }
    if (cfg->upload.proxy[0] != '\0') {
        /* a provisioned proxy sees a CONNECT tunnel; TLS stays end to end,
         * and an https proxy is held to the same CA */
        SET(CURLOPT_HTTPPROXYTUNNEL, 1L);
        SET(CURLOPT_PROXY_CAINFO, (char *)NULL);
        SET(CURLOPT_PROXY_CAINFO_BLOB, &t->ca);
        SET(CURLOPT_PROXY_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    }
    if (t->connect_to != NULL)
        SET(CURLOPT_CONNECT_TO, t->connect_to);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->upload.connect_timeout_ms);
    SET(CURLOPT_LOW_SPEED_LIMIT, (long)cfg->upload.low_speed_bytes_per_second);
    SET(CURLOPT_LOW_SPEED_TIME, (long)cfg->upload.low_speed_seconds);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    if (t->heartbeat != NULL || t->abandon_at_ms != NULL) {
        SET(CURLOPT_XFERINFOFUNCTION, on_progress);
        SET(CURLOPT_XFERINFODATA, t);
        SET(CURLOPT_NOPROGRESS, 0L);
    }
    return rc;
}

/* What went wrong, in words: this libcurl is built without its own message
 * strings (curl_easy_strerror says only "Error"). */
static const char *describe(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return "server public key does not match the pinned keys";
    case CURLE_PEER_FAILED_VERIFICATION:
        return "server certificate not trusted (CA, host name or validity)";
    case CURLE_SSL_CONNECT_ERROR:
        return "TLS handshake failed (version, cipher suite or client certificate)";
    case CURLE_SSL_CACERT_BADFILE:
        return "CA file unreadable";
    case CURLE_SSL_CERTPROBLEM:
        return "client certificate or key unusable";
    case CURLE_SSL_CIPHER:
        return "no acceptable cipher suite";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "could not resolve the host";
    case CURLE_COULDNT_CONNECT:
        return "could not connect";
    case CURLE_OPERATION_TIMEDOUT:
        return "timed out (connect timeout or low-speed limit)";
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        return "connection broken";
    case CURLE_GOT_NOTHING:
        return "the server closed the connection without answering";
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "protocol refused";
    case CURLE_OUT_OF_MEMORY:
        return "out of memory";
    case CURLE_ABORTED_BY_CALLBACK:
        return "abandoned: the uploader is stopping (reload or shutdown)";
    default:
        return NULL;
    }
}

static ec_status classify(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_ISSUER_ERROR:
        return EC_ERR_TLS;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return EC_ERR_POLICY;
    case CURLE_OUT_OF_MEMORY:
        return EC_ERR_NOMEM;
    default:
        return EC_ERR_NETWORK;
    }
}

/* A part's bytes are read from the caller's buffer while curl sends them:
 * nothing is copied into curl's heap. */
typedef struct {
    const ec_http_part *part;
    size_t off;
} part_reader;

static size_t part_read(char *buf, size_t size, size_t n, void *arg)
{
    part_reader *r = arg;
    size_t room = size * n, left = r->part->len - r->off;
    size_t k = left < room ? left : room;
    memcpy(buf, r->part->data + r->off, k);
    r->off += k;
    return k;
}

static int part_seek(void *arg, curl_off_t offset, int origin)
{
    part_reader *r = arg;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > r->part->len)
        return CURL_SEEKFUNC_FAIL;
    r->off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static curl_mime *build_mime(CURL *curl, const ec_http_part *parts, size_t n)
{
    curl_mime *mime = curl_mime_init(curl);
    for (size_t i = 0; mime != NULL && i < n; i++) {
        curl_mimepart *p = curl_mime_addpart(mime);
        part_reader *r = calloc(1, sizeof *r);
        if (p == NULL || r == NULL) {
            free(r);
            curl_mime_free(mime);
            return NULL;
        }
        r->part = &parts[i];
        if (curl_mime_name(p, parts[i].name) != CURLE_OK ||
            curl_mime_type(p, parts[i].content_type) != CURLE_OK ||
            (parts[i].filename != NULL && curl_mime_filename(p, parts[i].filename) != CURLE_OK) ||
            curl_mime_data_cb(p, (curl_off_t)parts[i].len, part_read, part_seek, free, r) !=
                CURLE_OK) {
            free(r);
            curl_mime_free(mime);
            return NULL;
        }
    }
    return mime;
}

/* The host of `url` (never its query: it may carry a SAS). */
static void url_host(const char *url, char *out, size_t len)
{
    CURLU *u = curl_url();
    char *host = NULL;
    if (u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        snprintf(out, len, "%s", host);
    else
        snprintf(out, len, "?");
    curl_free(host);
    curl_url_cleanup(u);
}

/* Counts a refused handshake by reason; a pin mismatch is also audited with
 * the pin the peer showed (a public-key hash: public, like our pins). */
static void note_tls_failure(ec_transport *t, const char *url, CURLcode rc)
{
    int r = ec_tls_classify((long)rc, t->verify_flags, t->alert, t->version_refused);
    if (r < 0)
        r = EC_TLS_HANDSHAKE;
    pthread_mutex_lock(&t->lock);
    t->tls_failures[r]++;
    pthread_mutex_unlock(&t->lock);
    char host[256];
    url_host(url, host, sizeof host);
    ec_log(EC_LOG_WARN, "tls_refused", EC_LOG_STR("host", host),
           EC_LOG_STR("reason", ec_tls_reason_name((ec_tls_reason)r)),
           EC_LOG_INT("alert", t->alert), EC_LOG_UINT("verify_flags", t->verify_flags));
    if (r == EC_TLS_PIN_MISMATCH)
        ec_audit(t->audit, "tls_pin_mismatch", EC_LOG_STR("host", host),
                 EC_LOG_STR("pin_seen", t->peer_pin[0] != '\0' ? t->peer_pin : "unknown"));
}

void ec_transport_get_tls_failures(ec_transport *t, uint64_t counts[EC_TLS_REASONS])
{
    pthread_mutex_lock(&t->lock);
    memcpy(counts, t->tls_failures, sizeof t->tls_failures);
    pthread_mutex_unlock(&t->lock);
}

ec_status ec_transport_request(ec_transport *t, const ec_http_request *req, ec_http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
    ec_status st = check_url(t->cfg, req->url, resp->reason, sizeof resp->reason);
    if (st != EC_OK)
        return st;

    exchange x = {.t = t, .resp = resp, .body = req->body, .body_len = req->body_len};
    x.body_max = req->body_max == 0 ? EC_HTTP_BODY_MAX : req->body_max;
    if (x.body_max > EC_HTTP_BODY_LIMIT)
        x.body_max = EC_HTTP_BODY_LIMIT;
    curl_mime *mime = NULL;
    struct curl_slist *headers = NULL;
    /* no "Expect: 100-continue" round trip */
    headers = curl_slist_append(headers, "Expect:");
    for (const char *const *h = req->headers; h != NULL && *h != NULL && headers != NULL; h++) {
        struct curl_slist *longer = curl_slist_append(headers, *h);
        if (longer == NULL) {
            curl_slist_free_all(headers); /* (wiped: they may hold a credential) */
            headers = NULL;
            break;
        }
        headers = longer;
    }
    if (headers == NULL)
        return EC_ERR_NOMEM;

    curl_easy_reset(t->curl); /* keeps connections and TLS sessions */
    t->errbuf[0] = '\0';
    CURLcode rc = apply_policy(t);
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, &x);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, &x);
    if (strcmp(req->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (strcmp(req->method, "PUT") == 0) {
        SET(CURLOPT_UPLOAD, 1L);
        SET(CURLOPT_READFUNCTION, on_read);
        SET(CURLOPT_READDATA, &x);
        SET(CURLOPT_SEEKFUNCTION, on_seek);
        SET(CURLOPT_SEEKDATA, &x);
        SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "POST") == 0 && req->n_parts > 0) {
        mime = build_mime(t->curl, req->parts, req->n_parts);
        if (mime == NULL)
            rc = CURLE_OUT_OF_MEMORY;
        SET(CURLOPT_MIMEPOST, mime);
    } else if (strcmp(req->method, "POST") == 0) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, (const char *)req->body);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, req->method);
    }
    if (rc != CURLE_OK) {
        curl_slist_free_all(headers);
        curl_mime_free(mime);
        snprintf(resp->reason, sizeof resp->reason, "setup: %s", curl_easy_strerror(rc));
        return EC_ERR_INTERNAL;
    }
    t->verify_flags = 0;
    t->alert = -1;
    t->version_refused = false;
    t->peer_pin[0] = '\0';
    rc = curl_easy_perform(t->curl);
    curl_slist_free_all(headers);
    curl_easy_setopt(t->curl, CURLOPT_MIMEPOST, NULL);
    curl_mime_free(mime);
    if (rc != CURLE_OK) {
        /* curl's messages name hosts and reasons, never the query string; a
         * build without verbose strings may leave only "Error" in errbuf */
        const char *detail = t->errbuf;
        bool useful = detail[0] != '\0' && strcmp(detail, "Error") != 0;
        const char *what = describe(rc);
        if (what != NULL)
            snprintf(resp->reason, sizeof resp->reason, "%s%s%.*s", what, useful ? ": " : "",
                     useful ? (int)strcspn(detail, "?\n") : 0, detail);
        else
            snprintf(resp->reason, sizeof resp->reason, "curl error %d%s%.*s", (int)rc,
                     useful ? ": " : "", useful ? (int)strcspn(detail, "?\n") : 0, detail);
        st = classify(rc);
        if (st == EC_ERR_TLS)
            note_tls_failure(t, req->url, rc);
        return st;
    }
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    error_code_from_body(resp);
    return EC_OK;
}

void ec_url_encode(const char *in, char *out, size_t out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p != '\0' && k + 4 < out_len; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            out[k++] = (char)*p;
        } else {
            out[k++] = '%';
            out[k++] = hex[*p >> 4];
            out[k++] = hex[*p & 15];
        }
    }
    out[k] = '\0';
}

void ec_http_response_free(ec_http_response *resp)
{
    if (resp == NULL)
        return;
    ec_secmem_free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}
