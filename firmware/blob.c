/*
 * Blob client (see include/edgecap/blob.h). Requests are built from the Blob
 * Storage REST contract; the URL (which carries the SAS token) is assembled
 * in secure memory and never logged.
 */
#include "edgecap/blob.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/base64.h>
#include <mbedtls/md5.h>

#include "edgecap/auth.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"

#define MAX_HEADERS 32
#define HEADER_MAX 512

typedef struct {
    char lines[MAX_HEADERS][HEADER_MAX];
    const char *ptrs[MAX_HEADERS + 1];
    size_t n;
} header_set;

static void hdr(header_set *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hdr(header_set *h, const char *fmt, ...)
{
    if (h->n >= MAX_HEADERS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->lines[h->n], HEADER_MAX, fmt, ap);
    va_end(ap);
    h->ptrs[h->n] = h->lines[h->n];
    h->n++;
    h->ptrs[h->n] = NULL;
}

static void md5_b64(const uint8_t *data, size_t len, char *out, size_t out_len)
{
    uint8_t digest[16];
    size_t n = 0;
    mbedtls_md5_ret(data, len, digest);
    mbedtls_base64_encode((unsigned char *)out, out_len, &n, digest, sizeof digest);
    out[n] = '\0';
}

void ec_blob_name(const ec_config *cfg, const ec_segment_meta *meta, const char *segment_name,
                  char *out, size_t out_len)
{
    time_t secs = (time_t)(meta->start_utc_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, out_len, "%s%s%s/%04d/%02d/%02d/%s.ogg", cfg->upload.prefix,
             cfg->upload.prefix[0] != '\0' ? "/" : "", meta->device_id, tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, segment_name);
}

/* Where requests go and who authorises them (NULL: the SAS in the URL). */
typedef struct {
    ec_transport *transport;
    ec_auth *auth;
} blob_conn;

/* endpoint/container/blob?query&SAS, in secure memory (free with ec_secmem_free). */
static char *build_url(const ec_config *cfg, const char *endpoint, const char *blob,
                       const char *query)
{
    const ec_secret *sas = cfg->auth.mode == EC_AUTH_SAS ? cfg->auth.sas_token : NULL;
    const char *sas_text = sas != NULL ? (const char *)ec_secret_bytes(sas) : "";
    if (sas_text[0] == '?')
        sas_text++;
    size_t n = strlen(endpoint) + strlen(cfg->upload.container) + strlen(blob) +
               (query != NULL ? strlen(query) : 0) + strlen(sas_text) + 8;
    char *url = ec_secmem_alloc(n);
    if (url == NULL)
        return NULL;
    const char *sep = query != NULL ? "&" : "?";
    snprintf(url, n, "%s/%s/%s%s%s%s%s", endpoint, cfg->upload.container, blob,
             query != NULL ? "?" : "", query != NULL ? query : "", sas_text[0] != '\0' ? sep : "",
             sas_text);
    return url;
}

static void common_headers(header_set *h)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    hdr(h, "x-ms-version: %s", EC_BLOB_API_VERSION);
    hdr(h, "x-ms-date: %s", date);
}

/* Headers that describe the blob: type, metadata, tags, encryption scope. */
static void blob_headers(header_set *h, const ec_config *cfg, const ec_segment_meta *meta,
                         uint64_t pcm_frames)
{
    char start[40];
    time_t secs = (time_t)(meta->start_utc_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(start, sizeof start, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(start + n, sizeof start - n, ".%03dZ", (int)(meta->start_utc_ms % 1000));
    uint64_t duration_ms = meta->sample_rate_hz > 0 ? pcm_frames * 1000 / meta->sample_rate_hz : 0;
    hdr(h, "x-ms-blob-content-type: audio/ogg");
    /* Metadata names must be C# identifiers (no hyphens), and proxies such
     * as nginx drop header names with underscores by default: plain words. */
    hdr(h, "x-ms-meta-device: %s", meta->device_id);
    hdr(h, "x-ms-meta-seq: %" PRIu64, meta->sequence);
    hdr(h, "x-ms-meta-start: %s", start);
    hdr(h, "x-ms-meta-durationms: %" PRIu64, duration_ms);
    hdr(h, "x-ms-meta-codec: opus");
    hdr(h, "x-ms-meta-samplerate: %" PRIu32, meta->sample_rate_hz);
    hdr(h, "x-ms-meta-channels: %u", (unsigned)meta->channels);
    char tags[HEADER_MAX] = "";
    size_t tl = 0;
    for (size_t i = 0; i < cfg->device.n_tags; i++) {
        const char *kv = cfg->device.tags[i];
        const char *eq = strchr(kv, '=');
        hdr(h, "x-ms-meta-%.*s: %s", (int)(eq - kv), kv, eq + 1);
        char key[128], value[EC_CFG_TAG_MAX * 3 + 1], name[70];
        snprintf(name, sizeof name, "%.*s", (int)(eq - kv), kv);
        ec_url_encode(name, key, sizeof key);
        ec_url_encode(eq + 1, value, sizeof value);
        int w = snprintf(tags + tl, sizeof tags - tl, "%s%s=%s", tl > 0 ? "&" : "", key, value);
        if (w > 0 && (size_t)w < sizeof tags - tl)
            tl += (size_t)w;
    }
    if (cfg->upload.index_tags && tl > 0)
        hdr(h, "x-ms-tags: %s", tags);
}

static void scope_header(header_set *h, const ec_config *cfg)
{
    if (cfg->upload.encryption_scope[0] != '\0')
        hdr(h, "x-ms-encryption-scope: %s", cfg->upload.encryption_scope);
}

/* One request; fills res with what a caller needs to judge a failure. */
static ec_status send(const blob_conn *t, const char *method, const char *url, header_set *h,
                      const uint8_t *body, size_t len, ec_http_response *resp, ec_blob_result *res)
{
    ec_http_request req = {
        .method = method, .url = url, .headers = h->ptrs, .body = body, .body_len = len};
    ec_status st = t->auth != NULL
                       ? ec_auth_request(t->auth, EC_SCOPE_STORAGE, t->transport, &req, resp)
                       : ec_transport_request(t->transport, &req, resp);
    res->requests++;
    res->http_status = resp->status;
    res->retry_after_s = resp->retry_after_s;
    snprintf(res->error_code, sizeof res->error_code, "%s", resp->error_code);
    if (resp->tls_version[0] != '\0') {
        snprintf(res->tls_version, sizeof res->tls_version, "%s", resp->tls_version);
        snprintf(res->tls_cipher, sizeof res->tls_cipher, "%s", resp->tls_cipher);
    }
    if (st != EC_OK)
        snprintf(res->reason, sizeof res->reason, "%s", resp->reason);
    return st;
}

/* A 2xx, or the reason it is not. */
static ec_status want_2xx(const ec_http_response *resp, ec_blob_result *res, const char *what)
{
    if (resp->status >= 200 && resp->status < 300)
        return EC_OK;
    if (resp->status >= 300 && resp->status < 400)
        snprintf(res->reason, sizeof res->reason, "%s: HTTP %ld redirect, not followed", what,
                 resp->status);
    else
        snprintf(res->reason, sizeof res->reason, "%s: HTTP %ld %s", what, resp->status,
                 resp->error_code);
    return EC_ERR_PROTOCOL;
}

/* Where the service echoes an MD5, it must be ours. */
static ec_status echoed_md5(const ec_http_response *resp, const char *ours, ec_blob_result *res,
                            const char *what)
{
    if (resp->content_md5[0] == '\0' || strcmp(resp->content_md5, ours) == 0)
        return EC_OK;
    snprintf(res->reason, sizeof res->reason, "%s: echoed Content-MD5 differs from ours", what);
    return EC_ERR_PROTOCOL;
}

static bool already_exists(const ec_http_response *resp)
{
    return resp->status == 409 && strcmp(resp->error_code, "BlobAlreadyExists") == 0;
}

/* Get Blob Properties: the service holds exactly our bytes. */
static ec_status verify_properties(const blob_conn *t, const char *url, size_t len, const char *md5,
                                   ec_blob_result *res)
{
    header_set h = {0};
    common_headers(&h);
    ec_http_response resp = {0};
    ec_status st = send(t, "HEAD", url, &h, NULL, 0, &resp, res);
    if (st == EC_OK)
        st = want_2xx(&resp, res, "Get Blob Properties");
    if (st == EC_OK && (!resp.have_content_length || resp.content_length != len)) {
        snprintf(res->reason, sizeof res->reason, "stored blob is %" PRIu64 " bytes, we sent %zu",
                 resp.content_length, len);
        st = EC_ERR_PROTOCOL;
    }
    if (st == EC_OK && strcmp(resp.content_md5, md5) != 0) {
        snprintf(res->reason, sizeof res->reason,
                 res->already_existed ? "a different blob of that name exists (MD5 differs)"
                                      : "stored Content-MD5 differs from ours");
        st = EC_ERR_PROTOCOL;
    }
    ec_http_response_free(&resp);
    return st;
}

static ec_status put_blob(const blob_conn *t, const ec_config *cfg, const char *url,
                          const ec_segment_meta *meta, uint64_t pcm_frames, const uint8_t *data,
                          size_t len, const char *md5, ec_blob_result *res)
{
    header_set h = {0};
    common_headers(&h);
    hdr(&h, "x-ms-blob-type: BlockBlob");
    hdr(&h, "Content-MD5: %s", md5);
    hdr(&h, "If-None-Match: *");
    blob_headers(&h, cfg, meta, pcm_frames);
    scope_header(&h, cfg);
    ec_http_response resp = {0};
    ec_status st = send(t, "PUT", url, &h, data, len, &resp, res);
    if (st == EC_OK && already_exists(&resp)) {
        res->already_existed = true;
    } else if (st == EC_OK) {
        st = want_2xx(&resp, res, "Put Blob");
        if (st == EC_OK)
            st = echoed_md5(&resp, md5, res, "Put Blob");
    }
    ec_http_response_free(&resp);
    return st;
}

static ec_status put_blocks(const blob_conn *t, const ec_config *cfg, const char *endpoint,
                            const char *blob, const char *url, const ec_segment_meta *meta,
                            uint64_t pcm_frames, const uint8_t *data, size_t len, const char *md5,
                            ec_blob_result *res)
{
    size_t block = (size_t)cfg->upload.block_bytes;
    size_t n_blocks = (len + block - 1) / block;
    if (n_blocks > 50000)
        return EC_ERR_INVALID; /* the contract's limit on blocks per blob */
    /* every block id of a blob has the same length */
    size_t xml_cap = 128 + n_blocks * 48;
    char *xml = malloc(xml_cap);
    if (xml == NULL)
        return EC_ERR_NOMEM;
    size_t xl = (size_t)snprintf(xml, xml_cap,
                                 "<?xml version=\"1.0\" encoding=\"utf-8\"?>"
                                 "<BlockList>");
    ec_status st = EC_OK;
    for (size_t i = 0; st == EC_OK && i < n_blocks; i++) {
        char raw[32], id[48], id_q[96], query[160], bmd5[32];
        size_t idn = 0;
        snprintf(raw, sizeof raw, "blk-%06zu", i);
        mbedtls_base64_encode((unsigned char *)id, sizeof id, &idn, (const unsigned char *)raw,
                              strlen(raw));
        id[idn] = '\0';
        ec_url_encode(id, id_q, sizeof id_q);
        snprintf(query, sizeof query, "comp=block&blockid=%s", id_q);
        const uint8_t *part = data + i * block;
        size_t part_len = len - i * block < block ? len - i * block : block;
        md5_b64(part, part_len, bmd5, sizeof bmd5);
        char *burl = build_url(cfg, endpoint, blob, query);
        if (burl == NULL) {
            st = EC_ERR_NOMEM;
            break;
        }
        header_set h = {0};
        common_headers(&h);
        hdr(&h, "Content-MD5: %s", bmd5);
        scope_header(&h, cfg);
        ec_http_response resp = {0};
        st = send(t, "PUT", burl, &h, part, part_len, &resp, res);
        ec_secmem_free(burl);
        if (st == EC_OK)
            st = want_2xx(&resp, res, "Put Block");
        if (st == EC_OK)
            st = echoed_md5(&resp, bmd5, res, "Put Block");
        ec_http_response_free(&resp);
        xl += (size_t)snprintf(xml + xl, xml_cap - xl, "<Latest>%s</Latest>", id);
        res->blocks++;
    }
    if (st == EC_OK) {
        xl += (size_t)snprintf(xml + xl, xml_cap - xl, "</BlockList>");
        char xmd5[32];
        md5_b64((const uint8_t *)xml, xl, xmd5, sizeof xmd5);
        char *lurl = build_url(cfg, endpoint, blob, "comp=blocklist");
        if (lurl == NULL) {
            st = EC_ERR_NOMEM;
        } else {
            header_set h = {0};
            common_headers(&h);
            hdr(&h, "Content-MD5: %s", xmd5);
            hdr(&h, "x-ms-blob-content-md5: %s", md5);
            hdr(&h, "If-None-Match: *");
            blob_headers(&h, cfg, meta, pcm_frames);
            scope_header(&h, cfg);
            ec_http_response resp = {0};
            st = send(t, "PUT", lurl, &h, (const uint8_t *)xml, xl, &resp, res);
            ec_secmem_free(lurl);
            if (st == EC_OK && already_exists(&resp))
                res->already_existed = true;
            else if (st == EC_OK)
                st = want_2xx(&resp, res, "Put Block List");
            ec_http_response_free(&resp);
        }
    }
    (void)url;
    free(xml);
    return st;
}

ec_status ec_blob_upload(ec_transport *transport, ec_auth *auth, const ec_config *cfg,
                         const char *endpoint, const ec_segment_meta *meta,
                         const char *segment_name, uint64_t pcm_frames, const uint8_t *data,
                         size_t len, ec_blob_result *res)
{
    const blob_conn conn = {.transport = transport,
                            .auth = cfg->auth.mode == EC_AUTH_SAS ? NULL : auth};
    const blob_conn *t = &conn;
    memset(res, 0, sizeof *res);
    res->retry_after_s = -1;
    ec_blob_name(cfg, meta, segment_name, res->blob_name, sizeof res->blob_name);
    res->size_bytes = len;
    md5_b64(data, len, res->md5_b64, sizeof res->md5_b64);
    if (cfg->auth.mode != EC_AUTH_SAS && auth == NULL) {
        snprintf(res->reason, sizeof res->reason, "auth mode entra needs an authoriser");
        return EC_ERR_INVALID;
    }
    char *url = build_url(cfg, endpoint, res->blob_name, NULL);
    if (url == NULL)
        return EC_ERR_NOMEM;
    ec_status st;
    if (len <= (size_t)cfg->upload.block_bytes)
        st = put_blob(t, cfg, url, meta, pcm_frames, data, len, res->md5_b64, res);
    else
        st = put_blocks(t, cfg, endpoint, res->blob_name, url, meta, pcm_frames, data, len,
                        res->md5_b64, res);
    if (st == EC_OK)
        st = verify_properties(t, url, len, res->md5_b64, res);
    ec_secmem_free(url);
    return st;
}
