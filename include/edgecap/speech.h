/*
 * Azure Speech, to the Speech to text REST contract (api-version 2024-11-15),
 * always on the resource's custom domain (check-config refuses a public
 * regional host unless [speech] allow_public_endpoint = on):
 *
 * Fast transcription ([upload] target = speech): a sealed segment, decrypted
 * into secure memory, goes to POST {endpoint}/speechtotext/transcriptions:
 * transcribe as multipart/form-data (`audio`: audio/ogg, `definition`: JSON
 * with locales, profanityFilterMode, channels, diarization). The
 * acknowledgment that lets the spool wipe the segment is a 200 whose body has
 * the contract's shape (durationMilliseconds, combinedPhrases, phrases) and a
 * duration within one Opus frame of the segment's. The transcript is kept
 * (sealed, in [speech] transcript_dir) only with keep_transcripts = on.
 *
 * Batch transcription ([speech] batch = on, target = blob, BYOS): the
 * uploader hands every acknowledged blob to ec_batch_enqueue; once per
 * batch_window_seconds, or when batch_max_files blobs wait, one job is
 * submitted (POST {endpoint}/speechtotext/transcriptions:submit) for exactly
 * those blobs, then polled (GET self, Retry-After honoured) to Succeeded
 * (the result files' names go to the audit log, never their text) or Failed
 * (the service's error code is logged and the window is submitted again, at
 * most EC_BATCH_ATTEMPTS times). Pending blobs and jobs live in
 * SPOOL/speech-jobs.json, written atomically, so a restart neither loses
 * nor repeats a submission (a POST whose outcome is unknown is looked up by
 * its per-attempt displayName before anything is posted again); a blob is
 * submitted again only after its job failed. contentUrls carry no SAS
 * (Speech reads BYOS with its managed identity) unless [speech] content_sas
 * is provisioned; destinationContainerUrl is never sent.
 *
 * Owned by main and firmware/upload.
 */
#ifndef EDGECAP_SPEECH_H
#define EDGECAP_SPEECH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "edgecap/audit.h"
#include "edgecap/auth.h"
#include "edgecap/config.h"
#include "edgecap/seal.h"
#include "edgecap/spool.h"
#include "edgecap/status.h"
#include "edgecap/transport.h"

#define EC_SPEECH_API_VERSION "2024-11-15"
/* The contract's limit of contentUrls per job. */
#define EC_BATCH_CONTENT_URLS_MAX 1000
/* Submissions of one window before it is given up (and audited). */
#define EC_BATCH_ATTEMPTS 3
#define EC_BATCH_STATE_FILE "speech-jobs.json"
/* Sealed transcripts carry this codec byte (audio segments carry 1). */
#define EC_CODEC_TRANSCRIPT_JSON 2

/* ---- fast transcription ------------------------------------------------------ */

typedef struct {
    int64_t duration_ms; /* as the service reported it */
    int64_t expected_ms; /* the segment's, from its sample count */
    unsigned requests;
    size_t transcript_bytes;
    bool transcript_kept;
    char tls_version[16];
    char tls_cipher[64];
    /* on failure */
    long http_status;
    long retry_after_s;
    char error_code[64];
    char reason[160];
} ec_speech_result;

/*
 * Transcribes one segment (`ogg`, in secure memory) at `endpoint`. EC_OK only
 * on the acknowledgment described above (and, with keep_transcripts, after
 * the sealed transcript is committed to `transcripts`, which may be NULL
 * otherwise). Failures: the transport's status, EC_ERR_AUTH (401/403 after
 * the one retry), EC_ERR_PROTOCOL (a status or body outside the contract, a
 * duration that does not match), EC_ERR_NETWORK for 429/5xx (retryable).
 */
ec_status ec_speech_transcribe(ec_auth *auth, ec_transport *t, const ec_config *cfg,
                               const char *endpoint, const ec_segment_meta *meta,
                               uint64_t pcm_frames, const uint8_t *ogg, size_t len,
                               ec_spool *transcripts, ec_speech_result *res);

/* A Speech answer other than the expected success, judged: EC_ERR_AUTH
 * (401/403), EC_ERR_NETWORK (408/429/5xx: retry later), else
 * EC_ERR_PROTOCOL; the contract's error code and "WHAT: HTTP N CODE". */
ec_status ec_speech_failure(const ec_http_response *resp, const char *what, long *http_status,
                            long *retry_after_s, char *code, size_t code_len, char *reason,
                            size_t reason_len);

/* ---- batch transcription ----------------------------------------------------- */

typedef struct ec_batch ec_batch;

typedef struct {
    const ec_config *cfg;
    ec_auth *auth;
    ec_audit *audit;                   /* may be NULL */
    ec_spool *spool;                   /* holds the state file; owner, or observer with read_only */
    const uint8_t *cert_der, *key_der; /* device identity (kept by the caller) */
    size_t cert_len, key_len;
    const ec_keystore *key_store; /* the device key's token, or NULL (see ec_auth_params) */
    bool read_only;               /* `speech jobs`: only reads the state */
} ec_batch_params;

typedef struct {
    size_t pending;   /* acknowledged blobs not yet in a job */
    size_t submitted; /* jobs NotStarted or Running */
    size_t succeeded;
    size_t failed; /* jobs given up after EC_BATCH_ATTEMPTS */
    uint64_t submissions;
    uint64_t polls;
} ec_batch_stats;

/* Loads SPOOL/speech-jobs.json (a missing file is an empty state; a
 * malformed one is EC_ERR_PROTOCOL and left in place for a human). */
ec_status ec_batch_open(ec_batch **out, const ec_batch_params *params);

/*
 * Records an acknowledged blob (endpoint: the blob service it went to) for
 * the next job, durably (fsync + rename) before returning EC_OK: the caller
 * wipes the segment only after that. A blob already recorded is not added
 * again.
 */
ec_status ec_batch_enqueue(ec_batch *b, const char *endpoint, const char *blob_name,
                           const ec_segment_meta *meta);

/*
 * One round: submits the pending window when it is due (or now, with
 * `submit_now`), and polls each job whose next poll time has come.
 * *next_ms: when another round is useful (monotonic ms from now).
 */
ec_status ec_batch_step(ec_batch *b, bool submit_now, int64_t *next_ms);

/* Runs ec_batch_step on its own thread until ec_batch_stop. */
ec_status ec_batch_start(ec_batch *b);
void ec_batch_kick(ec_batch *b, bool submit_now);
void ec_batch_stop(ec_batch *b);

void ec_batch_get_stats(ec_batch *b, ec_batch_stats *stats);

/* `edgecap speech jobs`: pending blobs and each job with its window. */
void ec_batch_print(ec_batch *b, FILE *out);

void ec_batch_close(ec_batch **b);

#endif
