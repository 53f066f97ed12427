/*
 * The uploader: drains the spool oldest first to the blob endpoint (or, with
 * target speech, to fast transcription), and deletes a segment only after
 * ec_blob_upload (ec_speech_transcribe) proved the acknowledgment
 * (then: crypto-shred, unlink, directory fsync, audit line). Failures back
 * off exponentially with full jitter (Retry-After honoured), each endpoint
 * has a circuit breaker (open after [upload] breaker_failures consecutive
 * failures, one half-open probe after breaker_cooldown_seconds), and while
 * the primary's breaker is open the secondary endpoint takes over, until a
 * probe finds the primary back. Capture never waits for any of this: the
 * spool absorbs the backlog.
 *
 * Owned by main: `run` runs it on its own thread; `upload-once` drains once.
 */
#ifndef EDGECAP_UPLOAD_H
#define EDGECAP_UPLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "edgecap/audit.h"
#include "edgecap/auth.h"
#include "edgecap/config.h"
#include "edgecap/speech.h"
#include "edgecap/spool.h"
#include "edgecap/status.h"
#include "edgecap/tls_reason.h"

typedef enum { EC_BREAKER_CLOSED = 0, EC_BREAKER_OPEN = 1, EC_BREAKER_HALF_OPEN = 2 } ec_breaker;

#define EC_UPLOAD_LATENCY_BUCKETS 10
#define EC_UPLOAD_LATENCY_BOUNDS                                                                   \
    {                                                                                              \
        0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60                                                      \
    }

typedef struct {
    uint64_t segments_acknowledged;
    uint64_t bytes_acknowledged;
    uint64_t acknowledged_existing; /* found already uploaded (a retry after a crash) */
    uint64_t attempts_failed;
    uint64_t conflicts;        /* a different blob of that name exists: kept, not sent */
    uint64_t failovers;        /* uploads that went to the secondary */
    uint64_t breaker_opens[2]; /* primary, secondary */
    int breaker_state[2];      /* ec_breaker */
    uint64_t tls_failures;     /* attempts refused in the TLS handshake */
    uint64_t tls_failures_by_reason[2][EC_TLS_REASONS]; /* per endpoint and ec_tls_reason */
    /* seconds from the first request to the proven acknowledgment, per
     * acknowledged segment: counts per upper bound of EC_UPLOAD_LATENCY_BOUNDS
     * (the last bucket is +Inf), and their sum */
    uint64_t latency_buckets[EC_UPLOAD_LATENCY_BUCKETS];
    double latency_sum_s;
    int64_t last_ack_utc_ms; /* wall clock of the last acknowledgment; 0: none yet */
    ec_status last_error;
    char last_reason[160];
    /* Liveness of the uploader thread (the watchdog): moves on every pass,
     * every second of a backoff wait and every libcurl progress call. */
    uint64_t heartbeats;
} ec_upload_stats;

typedef struct ec_uploader ec_uploader;

typedef struct {
    const ec_config *cfg;
    ec_spool *spool;
    ec_audit *audit;       /* may be NULL */
    ec_auth *auth;         /* required unless [auth] mode = sas */
    ec_batch *batch;       /* [speech] batch = on: blobs are recorded here before the wipe */
    ec_spool *transcripts; /* target speech with keep_transcripts = on */
    const uint8_t *cert_der, *key_der; /* the device identity, kept by the caller */
    size_t cert_len, key_len;
    const ec_keystore *key_store; /* the device key's token, or NULL (see ec_auth_params) */
} ec_uploader_params;

/* Prepares a transport per endpoint. */
ec_status ec_uploader_open(ec_uploader **out, const ec_uploader_params *params);

/*
 * Drains until the spool holds no closed segment (EC_OK), or until every
 * endpoint's breaker is open or `max_failures` consecutive attempts failed:
 * then the last failure's status, with the reason in the stats.
 */
ec_status ec_uploader_drain(ec_uploader *u, unsigned max_failures);

/* Runs the uploader on its own thread until ec_uploader_stop. */
ec_status ec_uploader_start(ec_uploader *u);

/* Wakes the thread to look at the spool now (a segment was sealed). */
void ec_uploader_kick(ec_uploader *u);

/* Stops the thread and joins: an upload in flight gets 2 s (a fast
 * transcription 15 s) to be acknowledged, then it is abandoned and its
 * segment stays in the spool. */
void ec_uploader_stop(ec_uploader *u);

void ec_uploader_get_stats(ec_uploader *u, ec_upload_stats *stats);

/* Adds `from`'s counters (not its breaker states or last error) to `into`:
 * a reload keeps the totals of the uploader it replaces. */
void ec_upload_stats_add(ec_upload_stats *into, const ec_upload_stats *from);

void ec_uploader_close(ec_uploader **u);

#endif
