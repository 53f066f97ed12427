/*
 * Blob client for the bring-your-own-storage container, built to the Blob
 * Storage REST contract (x-ms-version 2025-11-05): Put Blob for a segment up
 * to [upload] block_bytes, else Put Block per block and Put Block List;
 * Content-MD5 on every request, If-None-Match: * so a blob is never
 * overwritten, x-ms-blob-content-type audio/ogg, metadata (device, seq,
 * start, durationms, codec, samplerate, channels and the provisioned [device]
 * tags: names without hyphens or underscores, which proxies drop), and when
 * provisioned x-ms-tags and x-ms-encryption-scope. Auth: the SAS token in
 * the URL ([auth] mode = sas), or an Entra bearer token for
 * https://storage.azure.com/.default through `auth` (mode = entra).
 *
 * Acknowledgment (DESIGN invariant 3): a 2xx, the echoed Content-MD5 where
 * the service echoes one, and always a final Get Blob Properties whose
 * Content-Length and Content-MD5 equal ours. A 409 BlobAlreadyExists whose
 * stored length and MD5 equal ours is an acknowledgment too (a retry after a
 * crash); with other content it is a conflict, never an overwrite.
 *
 * Blob name: <prefix>/<device>/<yyyy>/<mm>/<dd>/<segment name>.ogg (UTC date
 * of the segment's start). Owned by firmware/upload.
 */
#ifndef EDGECAP_BLOB_H
#define EDGECAP_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/auth.h"
#include "edgecap/config.h"
#include "edgecap/seal.h"
#include "edgecap/status.h"
#include "edgecap/transport.h"

#define EC_BLOB_API_VERSION "2025-11-05"
#define EC_BLOB_NAME_MAX 512

typedef struct {
    char blob_name[EC_BLOB_NAME_MAX];
    uint64_t size_bytes;
    char md5_b64[32];
    bool already_existed; /* acknowledged by 409 + matching properties */
    unsigned blocks;      /* 0 for Put Blob */
    unsigned requests;
    char tls_version[16];
    char tls_cipher[64];
    /* on failure */
    long http_status;   /* last status, 0 if none */
    long retry_after_s; /* -1 if none */
    char error_code[64];
    char reason[160];
} ec_blob_result;

/* The blob's path inside the container for a segment. */
void ec_blob_name(const ec_config *cfg, const ec_segment_meta *meta, const char *segment_name,
                  char *out, size_t out_len);

/*
 * Uploads `data` (the segment's Ogg Opus stream, in secure memory) as the
 * blob for `meta`/`segment_name` to `endpoint` (https://account.host) and
 * proves the acknowledgment. EC_OK only when acknowledged. Failures:
 * EC_ERR_NETWORK / EC_ERR_TLS / EC_ERR_POLICY from the transport, or
 * EC_ERR_PROTOCOL (an unexpected status, a redirect, an MD5 or length that
 * does not match, a conflicting existing blob); `res` says more.
 */
ec_status ec_blob_upload(ec_transport *t, ec_auth *auth, const ec_config *cfg, const char *endpoint,
                         const ec_segment_meta *meta, const char *segment_name, uint64_t pcm_frames,
                         const uint8_t *data, size_t len, ec_blob_result *res);

#endif
