/*
 * Request authorisation (see include/edgecap/auth.h). Tokens, keys, the
 * signed assertion and the form body that carries it live in secure memory;
 * only the slot name, the scope and Entra's error code reach the log.
 */
#include "edgecap/auth.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "edgecap/json.h"
#include "edgecap/jwt.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"
#include "edgecap/secret.h"

#define MAX_HEADERS 40
#define AUTH_HEADER_MAX 8192
#define TOKEN_MAX (AUTH_HEADER_MAX - 64) /* the header line carries a prefix */
#define FORM_MAX 16384
/* A token is replaced before it expires, so that no request leaves with one
 * about to lapse: a quarter of its lifetime early, but at least a minute
 * (half the lifetime of a token shorter than two minutes: a slow link or a
 * loaded board can hold a request for seconds before it arrives), and at
 * most five minutes. */
#define REFRESH_MARGIN_MIN_S 60
#define REFRESH_MARGIN_MAX_S 300

static const char *const scope_uri[EC_AUTH_SCOPES] = {EC_SCOPE_SPEECH_URI, EC_SCOPE_STORAGE_URI};
static const char *const scope_name[EC_AUTH_SCOPES] = {"speech", "storage"};
static const char *const slot_name[2] = {"primary", "secondary"};

typedef struct {
    ec_secret *token;
    bool rejected;         /* dropped after a 401: the next fetch is a refresh */
    int64_t refresh_at_ms; /* monotonic */
    int64_t expires_at_ms;
} cached_token;

struct ec_auth {
    const ec_config *cfg;
    ec_audit *audit;
    int mode;                       /* [auth] mode */
    int scope_mode[EC_AUTH_SCOPES]; /* what each scope uses: SAS cannot
                                     * authorise Speech, so with mode = sas
                                     * batch jobs use Entra ID */
    const uint8_t *cert_der;
    size_t cert_len;
    ec_jwt_signer_der signer;
    bool have_signer;
    ec_jwt_signer token_signer; /* the device key is in a token: signs there */
    bool token_key;
    ec_transport *token_transport;
    char token_url[EC_CFG_URL_MAX + 128];

    pthread_mutex_t lock;
    cached_token tokens[EC_AUTH_SCOPES];
    int key_slot;
    ec_auth_stats stats;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *ec_auth_mode_name(const ec_auth *a)
{
    switch (a->mode) {
    case EC_AUTH_ENTRA:
        return "entra";
    case EC_AUTH_KEY:
        return "key";
    default:
        return "sas";
    }
}

ec_status ec_auth_open(ec_auth **out, const ec_auth_params *p, char *why, size_t why_len)
{
    *out = NULL;
    why[0] = '\0';
    ec_auth *a = calloc(1, sizeof *a);
    if (a == NULL)
        return EC_ERR_NOMEM;
    a->cfg = p->cfg;
    a->audit = p->audit;
    a->mode = p->cfg->auth.mode;
    a->scope_mode[EC_SCOPE_STORAGE] = a->mode;
    a->scope_mode[EC_SCOPE_SPEECH] =
        a->mode == EC_AUTH_SAS && p->cfg->speech.batch ? EC_AUTH_ENTRA : a->mode;
    a->cert_der = p->cert_der;
    a->cert_len = p->cert_len;
    pthread_mutex_init(&a->lock, NULL);
    ec_status st = EC_OK;
    if (a->scope_mode[EC_SCOPE_STORAGE] == EC_AUTH_ENTRA ||
        a->scope_mode[EC_SCOPE_SPEECH] == EC_AUTH_ENTRA) {
        ec_jwt_alg alg =
            p->cfg->auth.assertion_alg == EC_ASSERTION_ES256 ? EC_JWT_ES256 : EC_JWT_PS256;
        if (p->key_store != NULL) {
            st = ec_jwt_signer_keystore(&a->token_signer, alg, p->key_store, why, why_len);
            a->token_key = st == EC_OK;
        } else {
            st = ec_jwt_signer_from_der(&a->signer, alg, p->key_der, p->key_len, p->cert_der,
                                        p->cert_len, why, why_len);
            a->have_signer = st == EC_OK;
        }
        if (st == EC_OK) {
            snprintf(a->token_url, sizeof a->token_url, "%s/%s/oauth2/v2.0/token",
                     p->cfg->auth.authority_host, p->cfg->auth.tenant_id);
            ec_transport_params tp = {.cfg = p->cfg,
                                      .client_cert_der = p->cert_der,
                                      .client_cert_len = p->cert_len,
                                      .client_key_der = p->key_der,
                                      .client_key_len = p->key_len,
                                      .audit = p->audit,
                                      .client_key_store = p->key_store};
            st = ec_transport_open(&a->token_transport, &tp);
            if (st != EC_OK)
                snprintf(why, why_len, "token endpoint transport: %s", ec_strerror(st));
        }
    }
    if (st != EC_OK) {
        ec_auth_close(&a);
        return st;
    }
    *out = a;
    return EC_OK;
}

void ec_auth_close(ec_auth **ap)
{
    if (ap == NULL || *ap == NULL)
        return;
    ec_auth *a = *ap;
    for (int i = 0; i < EC_AUTH_SCOPES; i++)
        ec_secret_free(&a->tokens[i].token);
    if (a->have_signer)
        ec_jwt_signer_der_free(&a->signer);
    ec_transport_close(&a->token_transport);
    pthread_mutex_destroy(&a->lock);
    free(a);
    *ap = NULL;
}

void ec_auth_get_stats(ec_auth *a, ec_auth_stats *stats)
{
    pthread_mutex_lock(&a->lock);
    *stats = a->stats;
    stats->key_slot = a->key_slot;
    pthread_mutex_unlock(&a->lock);
}

/* ---- the token endpoint ------------------------------------------------------ */

/* Entra's error answer: {"error": "invalid_client", "error_codes": [700027],
 * ...}. The description may quote client input, so only the codes are kept. */
static void token_error(const ec_http_response *resp, char *out, size_t out_len)
{
    out[0] = '\0';
    ec_json_arena *arena = NULL;
    if (resp->body == NULL || ec_json_arena_begin(&arena, 0) != EC_OK)
        return;
    cJSON *doc = ec_json_parse(resp->body, resp->body_len);
    const char *err = ec_json_string(doc, "error");
    const cJSON *codes = cJSON_GetObjectItemCaseSensitive(doc, "error_codes");
    const cJSON *first = cJSON_IsArray(codes) ? cJSON_GetArrayItem(codes, 0) : NULL;
    if (err != NULL) {
        size_t n = strspn(err, "abcdefghijklmnopqrstuvwxyz_");
        if (cJSON_IsNumber(first))
            snprintf(out, out_len, "%.*s AADSTS%.0f", (int)(n < 48 ? n : 48), err,
                     first->valuedouble);
        else
            snprintf(out, out_len, "%.*s", (int)(n < 48 ? n : 48), err);
    }
    ec_json_arena_end(&arena);
}

/* Parses a 200 from the token endpoint into a new secret and its lifetime. */
static ec_status parse_token(const ec_http_response *resp, ec_secret **token, int64_t *lifetime_s,
                             char *reason, size_t reason_len)
{
    ec_json_arena *arena = NULL;
    ec_status st = ec_json_arena_begin(&arena, 0);
    if (st != EC_OK)
        return st;
    st = EC_ERR_PROTOCOL;
    cJSON *doc = resp->body_truncated ? NULL : ec_json_parse(resp->body, resp->body_len);
    const char *type = ec_json_string(doc, "token_type");
    const char *value = ec_json_string(doc, "access_token");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(doc, "expires_in");
    double secs = -1;
    if (cJSON_IsNumber(exp))
        secs = exp->valuedouble;
    else if (cJSON_IsString(exp) && exp->valuestring[0] != '\0' &&
             strspn(exp->valuestring, "0123456789") == strlen(exp->valuestring) &&
             strlen(exp->valuestring) < 9)
        secs = strtod(exp->valuestring, NULL); /* the v1 endpoint sends a string */
    if (doc == NULL)
        snprintf(reason, reason_len, "token answer is not JSON");
    else if (type == NULL || strcasecmp(type, "Bearer") != 0)
        snprintf(reason, reason_len, "token answer: token_type is not Bearer");
    else if (value == NULL || value[0] == '\0' || strlen(value) >= TOKEN_MAX ||
             strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                           "-._~+/=") != strlen(value))
        snprintf(reason, reason_len, "token answer: access_token missing or malformed");
    else if (!(secs >= 1 && secs <= 86400 * 2))
        snprintf(reason, reason_len, "token answer: expires_in missing or out of range");
    else {
        st = ec_secret_new(token, value, strlen(value));
        *lifetime_s = (int64_t)secs;
    }
    ec_json_arena_end(&arena);
    return st;
}

/* Signs an assertion and asks the token endpoint for the scope's token.
 * Called with the lock held (one token request at a time). */
static ec_status fetch_token(ec_auth *a, ec_auth_scope scope, char *reason, size_t reason_len)
{
    snprintf(reason, reason_len, "token request: out of secure memory");
    char *assertion = NULL, *form = NULL;
    size_t assertion_len = 0;
    char jti[37];
    ec_http_response resp = {0};
    ec_status st;
    ec_jwt_signer signer = a->token_key ? a->token_signer : ec_jwt_signer_der_get(&a->signer);
    ec_jwt_assertion_params jp = {
        .alg = a->cfg->auth.assertion_alg == EC_ASSERTION_ES256 ? EC_JWT_ES256 : EC_JWT_PS256,
        .cert_der = a->cert_der,
        .cert_len = a->cert_len,
        .client_id = a->cfg->auth.client_id,
        .audience = a->token_url,
        .now_s = (int64_t)time(NULL),
        .lifetime_s = EC_AUTH_ASSERTION_LIFETIME_S};
    st = ec_jwt_client_assertion(&jp, &signer, &assertion, &assertion_len, jti);
    if (st != EC_OK) {
        snprintf(reason, reason_len, "signing the client assertion: %s", ec_strerror(st));
        goto out;
    }
    form = ec_secmem_alloc(FORM_MAX);
    if (form == NULL) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    char scope_q[160], type_q[160];
    ec_url_encode(scope_uri[scope], scope_q, sizeof scope_q);
    ec_url_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer", type_q, sizeof type_q);
    int n = snprintf(form, FORM_MAX,
                     "grant_type=client_credentials&client_id=%s&scope=%s"
                     "&client_assertion_type=%s&client_assertion=",
                     a->cfg->auth.client_id, scope_q, type_q);
    if (n < 0 || (size_t)n + assertion_len * 3 + 1 > FORM_MAX) {
        snprintf(reason, reason_len, "token request: the form does not fit %d bytes", FORM_MAX);
        st = EC_ERR_INTERNAL;
        goto out;
    }
    ec_url_encode(assertion, form + n, FORM_MAX - (size_t)n);

    static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                          "Accept: application/json", NULL};
    ec_http_request req = {.method = "POST",
                           .url = a->token_url,
                           .headers = headers,
                           .body = (const uint8_t *)form,
                           .body_len = strlen(form)};
    st = ec_transport_request(a->token_transport, &req, &resp);
    if (st != EC_OK) {
        snprintf(reason, reason_len, "token endpoint: %.140s", resp.reason);
        goto out;
    }
    if (resp.status == 200) {
        ec_secret *token = NULL;
        int64_t lifetime_s = 0;
        st = parse_token(&resp, &token, &lifetime_s, reason, reason_len);
        if (st != EC_OK)
            goto out;
        cached_token *c = &a->tokens[scope];
        bool refresh = c->token != NULL || c->rejected;
        c->rejected = false;
        ec_secret_free(&c->token);
        c->token = token;
        int64_t margin_s = lifetime_s / 4;
        if (margin_s < REFRESH_MARGIN_MIN_S)
            margin_s =
                lifetime_s / 2 < REFRESH_MARGIN_MIN_S ? lifetime_s / 2 : REFRESH_MARGIN_MIN_S;
        if (margin_s > REFRESH_MARGIN_MAX_S)
            margin_s = REFRESH_MARGIN_MAX_S;
        int64_t now = now_ms();
        c->expires_at_ms = now + lifetime_s * 1000;
        c->refresh_at_ms = now + (lifetime_s - margin_s) * 1000;
        a->stats.tokens_issued++;
        if (refresh)
            a->stats.token_refreshes++;
        ec_log(EC_LOG_INFO, "token_issued", EC_LOG_STR("scope", scope_name[scope]),
               EC_LOG_INT("expires_in_s", lifetime_s), EC_LOG_BOOL("refresh", refresh),
               EC_LOG_STR("assertion_jti", jti), EC_LOG_STR("tls_version", resp.tls_version));
        goto out;
    }
    char code[96];
    token_error(&resp, code, sizeof code);
    if (resp.status == 400 || resp.status == 401 || resp.status == 403) {
        st = EC_ERR_AUTH;
        snprintf(reason, reason_len, "token endpoint refused the device: HTTP %ld%s%s", resp.status,
                 code[0] != '\0' ? " " : "", code);
    } else {
        st = resp.status == 429 || resp.status >= 500 ? EC_ERR_NETWORK : EC_ERR_PROTOCOL;
        snprintf(reason, reason_len, "token endpoint answered HTTP %ld%s%s", resp.status,
                 code[0] != '\0' ? " " : "", code);
    }
out:
    if (st != EC_OK) {
        a->stats.token_failures++;
        ec_log(EC_LOG_WARN, "token_failed", EC_LOG_STR("scope", scope_name[scope]),
               EC_LOG_STATUS(st), EC_LOG_STR("reason", reason));
        ec_audit(a->audit, "token_failed", EC_LOG_STR("scope", scope_name[scope]),
                 EC_LOG_STR("reason", reason));
    }
    ec_http_response_free(&resp);
    ec_secmem_free(form);
    ec_secmem_free(assertion);
    return st;
}

/* The header line for one request, in secure memory. Lock held. */
static ec_status header_for(ec_auth *a, ec_auth_scope scope, char *out, char *reason,
                            size_t reason_len)
{
    if (a->scope_mode[scope] == EC_AUTH_KEY) {
        ec_secret *key = a->key_slot == 1 ? a->cfg->auth.key_secondary : a->cfg->auth.key_primary;
        if (key == NULL)
            key = a->cfg->auth.key_primary;
        snprintf(out, AUTH_HEADER_MAX, "Ocp-Apim-Subscription-Key: %s",
                 (const char *)ec_secret_bytes(key));
        return EC_OK;
    }
    cached_token *c = &a->tokens[scope];
    if (c->token == NULL || now_ms() >= c->refresh_at_ms) {
        ec_status st = fetch_token(a, scope, reason, reason_len);
        if (st != EC_OK && (c->token == NULL || now_ms() >= c->expires_at_ms))
            return st;
        /* a failed early refresh keeps using the still-valid token */
    }
    snprintf(out, AUTH_HEADER_MAX, "Authorization: Bearer %s",
             (const char *)ec_secret_bytes(c->token));
    return EC_OK;
}

/* After a 401: forget the token (entra) or change slots (key). Whether a
 * retry can help. Lock held. */
static bool on_unauthorized(ec_auth *a, ec_auth_scope scope)
{
    a->stats.unauthorized++;
    if (a->scope_mode[scope] == EC_AUTH_ENTRA) {
        ec_secret_free(&a->tokens[scope].token);
        a->tokens[scope].rejected = true;
        ec_log(EC_LOG_WARN, "auth_unauthorized", EC_LOG_STR("scope", scope_name[scope]),
               EC_LOG_STR("effect", "fetching a new token, retrying once"));
        return true;
    }
    if (a->scope_mode[scope] == EC_AUTH_KEY && a->cfg->auth.key_secondary != NULL) {
        int from = a->key_slot;
        a->key_slot = 1 - from;
        a->stats.key_switches++;
        ec_log(EC_LOG_WARN, "auth_key_slot", EC_LOG_STR("from", slot_name[from]),
               EC_LOG_STR("slot", slot_name[a->key_slot]), EC_LOG_STR("reason", "HTTP 401"));
        ec_audit(a->audit, "auth_key_slot", EC_LOG_STR("from", slot_name[from]),
                 EC_LOG_STR("slot", slot_name[a->key_slot]), EC_LOG_STR("reason", "HTTP 401"));
        return true;
    }
    return false;
}

ec_status ec_auth_request(ec_auth *a, ec_auth_scope scope, ec_transport *t,
                          const ec_http_request *req, ec_http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
    if (a->scope_mode[scope] == EC_AUTH_SAS)
        return ec_transport_request(t, req, resp);

    const char *headers[MAX_HEADERS + 2];
    size_t n = 0;
    for (const char *const *h = req->headers; h != NULL && *h != NULL && n < MAX_HEADERS; h++)
        headers[n++] = *h;
    char *line = ec_secmem_alloc(AUTH_HEADER_MAX);
    if (line == NULL)
        return EC_ERR_NOMEM;
    headers[n] = line;
    headers[n + 1] = NULL;
    ec_http_request r = *req;
    r.headers = headers;

    ec_status st = EC_OK;
    for (int attempt = 0;; attempt++) {
        char reason[sizeof resp->reason] = "";
        pthread_mutex_lock(&a->lock);
        st = header_for(a, scope, line, reason, sizeof reason);
        pthread_mutex_unlock(&a->lock);
        if (st != EC_OK) {
            snprintf(resp->reason, sizeof resp->reason, "%s", reason);
            break;
        }
        st = ec_transport_request(t, &r, resp);
        if (st != EC_OK || resp->status != 401)
            break;
        if (attempt > 0) {
            pthread_mutex_lock(&a->lock);
            a->stats.unauthorized++;
            pthread_mutex_unlock(&a->lock);
            break;
        }
        pthread_mutex_lock(&a->lock);
        bool retry = on_unauthorized(a, scope);
        if (retry)
            a->stats.retries++;
        pthread_mutex_unlock(&a->lock);
        if (!retry)
            break;
        ec_http_response_free(resp);
        memset(resp, 0, sizeof *resp);
        resp->retry_after_s = -1;
    }
    ec_secmem_free(line);
    return st;
}
