/*
 * Uploader (see include/edgecap/upload.h). One thread; the spool is the only
 * queue. A segment is read (authenticated, decrypted) into secure memory,
 * sent, proven, and only then removed.
 */
#include "edgecap/upload.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgecap/blob.h"
#include "edgecap/log.h"
#include "edgecap/retention.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/speech.h"
#include "edgecap/transport.h"

/* Segments are read whole into locked memory; larger ones wait for the
 * streaming Put Block path. */
#define SEGMENT_MAX_BYTES (64u * 1024 * 1024)
#define IDLE_POLL_MS 1000
/* How long a stopping uploader lets a transfer in progress go on: a blob
 * PUT is acknowledged as soon as its bytes are stored; a fast transcription
 * answers only after the service transcribed the segment (abandoning it
 * costs a second transcription). */
#define STOP_GRACE_MS 2000
#define STOP_GRACE_SPEECH_MS 15000

typedef struct {
    const char *name; /* "primary", "secondary" */
    const char *endpoint;
    ec_transport *transport;
    int state; /* ec_breaker */
    unsigned consecutive_failures;
    int64_t opened_at_ms;
} endpoint;

struct ec_uploader {
    const ec_config *cfg;
    ec_spool *spool;
    ec_audit *audit;
    ec_auth *auth;
    ec_batch *batch;
    ec_spool *transcripts;
    endpoint ep[2];
    int n_ep;
    unsigned backoff_attempt;

    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    bool kicked;
    _Atomic int64_t abandon_at_ms; /* set by stop: a stalled transfer ends then */
    ec_upload_stats stats;
};

static int64_t utc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void heartbeat(void *user)
{
    ec_uploader *u = user;
    pthread_mutex_lock(&u->lock);
    u->stats.heartbeats++;
    pthread_mutex_unlock(&u->lock);
}

ec_status ec_uploader_open(ec_uploader **out, const ec_uploader_params *p)
{
    *out = NULL;
    const ec_config *cfg = p->cfg;
    if (cfg->auth.mode != EC_AUTH_SAS && p->auth == NULL)
        return EC_ERR_INVALID;
    if (cfg->upload.target == EC_TARGET_SPEECH && cfg->speech.keep_transcripts &&
        p->transcripts == NULL)
        return EC_ERR_INVALID;
    ec_uploader *u = calloc(1, sizeof *u);
    if (u == NULL)
        return EC_ERR_NOMEM;
    u->cfg = cfg;
    u->spool = p->spool;
    u->audit = p->audit;
    u->auth = p->auth;
    u->batch = p->batch;
    u->transcripts = p->transcripts;
    pthread_mutex_init(&u->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* waits ignore wall-clock jumps */
    pthread_cond_init(&u->wake, &ca);
    pthread_condattr_destroy(&ca);
    ec_status st = EC_OK;
    const char *urls[2] = {cfg->upload.endpoint, cfg->upload.secondary_endpoint};
    for (int i = 0; st == EC_OK && i < 2; i++) {
        if (urls[i][0] == '\0')
            continue;
        endpoint *e = &u->ep[u->n_ep];
        e->name = i == 0 ? "primary" : "secondary";
        e->endpoint = urls[i];
        ec_transport_params tp = {.cfg = cfg,
                                  .client_cert_der = p->cert_der,
                                  .client_cert_len = p->cert_len,
                                  .client_key_der = p->key_der,
                                  .client_key_len = p->key_len,
                                  .heartbeat = heartbeat,
                                  .heartbeat_user = u,
                                  .audit = p->audit,
                                  .abandon_at_ms = &u->abandon_at_ms,
                                  .client_key_store = p->key_store};
        st = ec_transport_open(&e->transport, &tp);
        if (st == EC_OK)
            u->n_ep++;
    }
    if (st != EC_OK) {
        ec_uploader_close(&u);
        return st;
    }
    *out = u;
    return EC_OK;
}

void ec_uploader_close(ec_uploader **up)
{
    if (up == NULL || *up == NULL)
        return;
    ec_uploader *u = *up;
    ec_uploader_stop(u);
    for (int i = 0; i < 2; i++)
        ec_transport_close(&u->ep[i].transport);
    pthread_cond_destroy(&u->wake);
    pthread_mutex_destroy(&u->lock);
    free(u);
    *up = NULL;
}

/* ---- circuit breakers ----------------------------------------------------- */

static void set_breaker(ec_uploader *u, int i, int state)
{
    endpoint *e = &u->ep[i];
    if (e->state == state)
        return;
    e->state = state;
    pthread_mutex_lock(&u->lock);
    u->stats.breaker_state[i] = state;
    if (state == EC_BREAKER_OPEN)
        u->stats.breaker_opens[i]++;
    pthread_mutex_unlock(&u->lock);
    static const char *const names[] = {"closed", "open", "half-open"};
    ec_log(state == EC_BREAKER_OPEN ? EC_LOG_WARN : EC_LOG_INFO, "breaker",
           EC_LOG_STR("endpoint", e->name), EC_LOG_STR("state", names[state]),
           EC_LOG_UINT("consecutive_failures", e->consecutive_failures));
}

/* The endpoint to use now (primary first), or -1 with *wait_ms until one may
 * be probed. */
static int choose_endpoint(ec_uploader *u, int64_t *wait_ms)
{
    int64_t now = now_ms();
    int64_t cooldown = (int64_t)u->cfg->upload.breaker_cooldown_seconds * 1000;
    int64_t soonest = INT64_MAX;
    for (int i = 0; i < u->n_ep; i++) {
        endpoint *e = &u->ep[i];
        if (e->state == EC_BREAKER_OPEN) {
            if (now - e->opened_at_ms >= cooldown) {
                set_breaker(u, i, EC_BREAKER_HALF_OPEN); /* one probe */
                return i;
            }
            if (e->opened_at_ms + cooldown - now < soonest)
                soonest = e->opened_at_ms + cooldown - now;
            continue;
        }
        return i;
    }
    *wait_ms = soonest;
    return -1;
}

static void endpoint_succeeded(ec_uploader *u, int i)
{
    u->ep[i].consecutive_failures = 0;
    set_breaker(u, i, EC_BREAKER_CLOSED);
    u->backoff_attempt = 0;
}

static void endpoint_failed(ec_uploader *u, int i)
{
    endpoint *e = &u->ep[i];
    e->consecutive_failures++;
    if (e->state == EC_BREAKER_HALF_OPEN ||
        e->consecutive_failures >= (unsigned)u->cfg->upload.breaker_failures) {
        e->opened_at_ms = now_ms();
        set_breaker(u, i, EC_BREAKER_OPEN);
    }
}

/* Capped exponential backoff with full jitter; Retry-After is a floor. */
static int64_t backoff_ms(ec_uploader *u, long retry_after_s)
{
    uint64_t cap = (uint64_t)u->cfg->upload.retry_max_ms;
    uint64_t ceiling = (uint64_t)u->cfg->upload.retry_base_ms;
    for (unsigned i = 0; i < u->backoff_attempt && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap)
        ceiling = cap;
    u->backoff_attempt++;
    uint32_t r = 0;
    (void)ec_rng_bytes(&r, sizeof r);
    int64_t delay = (int64_t)(ceiling * (uint64_t)r / UINT32_MAX);
    /* the server's word wins over our cap (within reason: an hour) */
    if (retry_after_s > 3600)
        retry_after_s = 3600;
    if (retry_after_s >= 0 && retry_after_s * 1000 > delay)
        delay = retry_after_s * 1000;
    return delay;
}

/* Sleeps up to `ms`, or until stopped/kicked; false when stopping. */
static bool wait_for(ec_uploader *u, int64_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&u->lock);
    /* in slices of at most a second, each a heartbeat: a long backoff is
     * waiting, not being stuck */
    while (!u->stop && !u->kicked) {
        u->stats.heartbeats++;
        struct timespec slice;
        clock_gettime(CLOCK_MONOTONIC, &slice);
        slice.tv_sec++;
        bool last = slice.tv_sec > until.tv_sec ||
                    (slice.tv_sec == until.tv_sec && slice.tv_nsec >= until.tv_nsec);
        if (pthread_cond_timedwait(&u->wake, &u->lock, last ? &until : &slice) != 0 && last)
            break;
    }
    u->kicked = false;
    bool go_on = !u->stop;
    pthread_mutex_unlock(&u->lock);
    return go_on;
}

static bool stopping(ec_uploader *u)
{
    pthread_mutex_lock(&u->lock);
    bool s = u->stop;
    pthread_mutex_unlock(&u->lock);
    return s;
}

/* ---- one segment ------------------------------------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t len;
    size_t cap;
} collector;

static ec_status collect(void *user, const uint8_t *plain, size_t len)
{
    collector *c = user;
    if (c->len + len > c->cap) {
        size_t cap = c->cap == 0 ? 256 * 1024 : c->cap;
        while (cap < c->len + len)
            cap *= 2;
        if (cap > SEGMENT_MAX_BYTES)
            return EC_ERR_UNSUPPORTED;
        uint8_t *grown = ec_secmem_alloc(cap);
        if (grown == NULL)
            return EC_ERR_NOMEM;
        if (c->len > 0)
            memcpy(grown, c->buf, c->len);
        ec_secmem_free(c->buf);
        c->buf = grown;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, plain, len);
    c->len += len;
    return EC_OK;
}

typedef enum { SEG_DONE, SEG_SKIP, SEG_RETRY } segment_outcome;

static void note_failure(ec_uploader *u, ec_status st, const char *reason)
{
    pthread_mutex_lock(&u->lock);
    u->stats.attempts_failed++;
    if (st == EC_ERR_TLS)
        u->stats.tls_failures++;
    u->stats.last_error = st;
    snprintf(u->stats.last_reason, sizeof u->stats.last_reason, "%s", reason);
    pthread_mutex_unlock(&u->lock);
}

static void count_success(ec_uploader *u, int i, uint64_t bytes, bool existed, int64_t took_ms)
{
    static const double bounds[] = EC_UPLOAD_LATENCY_BOUNDS;
    double s = (double)took_ms / 1000.0;
    size_t b = 0;
    while (b < sizeof bounds / sizeof bounds[0] && s > bounds[b])
        b++;
    pthread_mutex_lock(&u->lock);
    u->stats.latency_buckets[b]++;
    u->stats.latency_sum_s += s;
    u->stats.segments_acknowledged++;
    u->stats.bytes_acknowledged += bytes;
    u->stats.last_ack_utc_ms = (int64_t)time(NULL) * 1000;
    if (existed)
        u->stats.acknowledged_existing++;
    if (i == 1)
        u->stats.failovers++;
    pthread_mutex_unlock(&u->lock);
}

static segment_outcome deliver_blob(ec_uploader *u, int i, const ec_spool_entry *e,
                                    const uint8_t *data, size_t len, int64_t *retry_in_ms)
{
    endpoint *ep = &u->ep[i];
    ec_blob_result res;
    int64_t t0 = now_ms();
    ec_status st = ec_blob_upload(ep->transport, u->auth, u->cfg, ep->endpoint, &e->meta, e->name,
                                  e->pcm_frames, data, len, &res);
    int64_t took = now_ms() - t0;

    if (st == EC_OK && u->batch != NULL) {
        /* the transcription job must know the blob before its last local
         * trace goes; if that cannot be recorded, the segment stays (a later
         * attempt finds the blob and records it then) */
        st = ec_batch_enqueue(u->batch, ep->endpoint, res.blob_name, &e->meta);
        if (st != EC_OK) {
            snprintf(res.reason, sizeof res.reason, "recording the blob for transcription: %s",
                     ec_strerror(st));
            ec_log(EC_LOG_ERROR, "batch_enqueue_failed", EC_LOG_STR("segment", e->name),
                   EC_LOG_STATUS(st), EC_LOG_STR("effect", "kept in the spool"));
            note_failure(u, st, res.reason);
            *retry_in_ms = backoff_ms(u, -1);
            return SEG_RETRY;
        }
    }
    if (st == EC_OK) {
        endpoint_succeeded(u, i);
        /* acknowledged: now, and only now, the local copy goes */
        ec_status rm = ec_spool_remove(u->spool, e->name);
        ec_audit(u->audit, "segment_acknowledged", EC_LOG_STR("segment", e->name),
                 EC_LOG_STR("blob", res.blob_name), EC_LOG_STR("endpoint", ep->name),
                 EC_LOG_STR("content_md5", res.md5_b64), EC_LOG_UINT("bytes", res.size_bytes),
                 EC_LOG_UINT("blocks", res.blocks),
                 EC_LOG_BOOL("already_existed", res.already_existed),
                 EC_LOG_STR("tls_version", res.tls_version),
                 EC_LOG_STR("tls_cipher", res.tls_cipher), EC_LOG_BOOL("wiped", rm == EC_OK));
        ec_log(EC_LOG_INFO, "segment_uploaded", EC_LOG_STR("segment", e->name),
               EC_LOG_STR("blob", res.blob_name), EC_LOG_STR("endpoint", ep->name),
               EC_LOG_UINT("bytes", res.size_bytes), EC_LOG_STR("content_md5", res.md5_b64),
               EC_LOG_BOOL("already_existed", res.already_existed),
               EC_LOG_UINT("requests", res.requests), EC_LOG_INT("ms", took),
               EC_LOG_STR("tls_version", res.tls_version), EC_LOG_STR("tls_cipher", res.tls_cipher),
               EC_LOG_BOOL("wiped", rm == EC_OK));
        count_success(u, i, res.size_bytes, res.already_existed, took);
        return SEG_DONE;
    }

    ec_log(EC_LOG_WARN, "upload_failed", EC_LOG_STR("segment", e->name),
           EC_LOG_STR("endpoint", ep->name), EC_LOG_STATUS(st),
           EC_LOG_INT("http_status", res.http_status), EC_LOG_STR("code", res.error_code),
           EC_LOG_STR("reason", res.reason), EC_LOG_STR("effect", "kept in the spool"));
    note_failure(u, st, res.reason);
    if (res.already_existed && st == EC_ERR_PROTOCOL) {
        /* someone else's blob under our name: never overwritten, never
         * deleted here; the segment waits for a human */
        pthread_mutex_lock(&u->lock);
        u->stats.conflicts++;
        pthread_mutex_unlock(&u->lock);
        ec_audit(u->audit, "upload_conflict", EC_LOG_STR("segment", e->name),
                 EC_LOG_STR("blob", res.blob_name), EC_LOG_STR("reason", res.reason));
        return SEG_SKIP;
    }
    endpoint_failed(u, i);
    *retry_in_ms = backoff_ms(u, res.retry_after_s);
    return SEG_RETRY;
}

static segment_outcome deliver_speech(ec_uploader *u, int i, const ec_spool_entry *e,
                                      const uint8_t *data, size_t len, int64_t *retry_in_ms)
{
    endpoint *ep = &u->ep[i];
    ec_speech_result res;
    int64_t t0 = now_ms();
    ec_status st = ec_speech_transcribe(u->auth, ep->transport, u->cfg, ep->endpoint, &e->meta,
                                        e->pcm_frames, data, len, u->transcripts, &res);
    int64_t took = now_ms() - t0;
    if (st == EC_OK) {
        endpoint_succeeded(u, i);
        ec_status rm = ec_spool_remove(u->spool, e->name);
        ec_audit(u->audit, "segment_transcribed", EC_LOG_STR("segment", e->name),
                 EC_LOG_STR("endpoint", ep->name), EC_LOG_UINT("bytes", len),
                 EC_LOG_INT("duration_ms", res.duration_ms),
                 EC_LOG_INT("segment_ms", res.expected_ms),
                 EC_LOG_BOOL("transcript_kept", res.transcript_kept),
                 EC_LOG_STR("tls_version", res.tls_version),
                 EC_LOG_STR("tls_cipher", res.tls_cipher), EC_LOG_BOOL("wiped", rm == EC_OK));
        ec_log(EC_LOG_INFO, "segment_transcribed", EC_LOG_STR("segment", e->name),
               EC_LOG_STR("endpoint", ep->name), EC_LOG_UINT("bytes", len),
               EC_LOG_INT("duration_ms", res.duration_ms),
               EC_LOG_INT("segment_ms", res.expected_ms),
               EC_LOG_UINT("transcript_bytes", res.transcript_bytes),
               EC_LOG_BOOL("transcript_kept", res.transcript_kept), EC_LOG_INT("ms", took),
               EC_LOG_STR("tls_version", res.tls_version), EC_LOG_BOOL("wiped", rm == EC_OK));
        count_success(u, i, len, false, took);
        return SEG_DONE;
    }
    ec_log(EC_LOG_WARN, "transcribe_failed", EC_LOG_STR("segment", e->name),
           EC_LOG_STR("endpoint", ep->name), EC_LOG_STATUS(st),
           EC_LOG_INT("http_status", res.http_status), EC_LOG_STR("code", res.error_code),
           EC_LOG_STR("reason", res.reason), EC_LOG_STR("effect", "kept in the spool"));
    note_failure(u, st, res.reason);
    endpoint_failed(u, i);
    *retry_in_ms = backoff_ms(u, res.retry_after_s);
    return SEG_RETRY;
}

static segment_outcome upload_claimed(ec_uploader *u, const ec_spool_entry *entry,
                                      int64_t *retry_in_ms)
{
    collector c = {0};
    ec_spool_entry e;
    ec_status st = ec_spool_read(u->spool, entry->name, collect, &c, &e);
    if (st != EC_OK) {
        ec_secmem_free(c.buf);
        if (st == EC_ERR_CRYPTO)
            (void)ec_spool_quarantine(u->spool, entry->name, "does not authenticate at upload");
        else
            ec_log(EC_LOG_ERROR, "upload_read_failed", EC_LOG_STR("segment", entry->name),
                   EC_LOG_STATUS(st));
        return SEG_SKIP;
    }
    int64_t wait = 0;
    int i = choose_endpoint(u, &wait);
    if (i < 0) {
        ec_secmem_free(c.buf);
        *retry_in_ms = wait;
        note_failure(u, EC_ERR_NETWORK, "every endpoint's circuit breaker is open");
        return SEG_RETRY;
    }
    endpoint *ep = &u->ep[i];
    segment_outcome out = u->cfg->upload.target == EC_TARGET_SPEECH
                              ? deliver_speech(u, i, &e, c.buf, c.len, retry_in_ms)
                              : deliver_blob(u, i, &e, c.buf, c.len, retry_in_ms);
    (void)ep;
    ec_secmem_free(c.buf);
    return out;
}

/* Claimed for the upload, so that retention leaves it alone meanwhile. A
 * segment gone or being shredded is nothing more to do. */
static segment_outcome upload_segment(ec_uploader *u, const ec_spool_entry *entry,
                                      int64_t *retry_in_ms)
{
    if (ec_spool_claim(u->spool, entry->name) != EC_OK)
        return SEG_DONE;
    segment_outcome out = upload_claimed(u, entry, retry_in_ms);
    ec_spool_release(u->spool, entry->name);
    return out;
}

/* One pass over the spool, oldest first. EC_OK when it is empty; otherwise
 * the retry delay in *retry_in_ms. */
static ec_status drain_pass(ec_uploader *u, int64_t *retry_in_ms, size_t *skipped)
{
    ec_spool_entry *entries = NULL;
    size_t n = 0;
    *skipped = 0;
    ec_status st = ec_spool_list(u->spool, &entries, &n);
    if (st != EC_OK)
        return st;
    for (size_t k = 0; k < n && st == EC_OK; k++) {
        if (entries[k].state != EC_SEG_CLOSED)
            continue;
        /* past [spool] max_age_hours: never sent, retention shreds it */
        if (ec_retention_expired(entries[k].meta.start_utc_ms, u->cfg->spool.max_age_hours,
                                 utc_now_ms()))
            continue;
        if (stopping(u)) {
            st = EC_ERR_BUSY;
            break;
        }
        switch (upload_segment(u, &entries[k], retry_in_ms)) {
        case SEG_DONE:
            break;
        case SEG_SKIP:
            (*skipped)++;
            break;
        case SEG_RETRY:
            st = EC_ERR_NETWORK;
            break;
        }
    }
    free(entries);
    return st;
}

ec_status ec_uploader_drain(ec_uploader *u, unsigned max_failures)
{
    unsigned failures = 0;
    for (;;) {
        int64_t retry_in = 0;
        size_t skipped = 0;
        ec_status st = drain_pass(u, &retry_in, &skipped);
        if (st == EC_OK) {
            if (skipped > 0) {
                pthread_mutex_lock(&u->lock);
                ec_status last = u->stats.last_error;
                pthread_mutex_unlock(&u->lock);
                return last != EC_OK ? last : EC_ERR_PROTOCOL;
            }
            return EC_OK;
        }
        if (st != EC_ERR_NETWORK)
            return st;
        bool all_open = true;
        for (int i = 0; i < u->n_ep; i++)
            all_open = all_open && u->ep[i].state == EC_BREAKER_OPEN;
        if (all_open || ++failures >= max_failures) {
            pthread_mutex_lock(&u->lock);
            ec_status last = u->stats.last_error;
            pthread_mutex_unlock(&u->lock);
            return last != EC_OK ? last : st;
        }
        if (!wait_for(u, retry_in))
            return EC_ERR_BUSY;
    }
}

static void *uploader_main(void *arg)
{
    ec_uploader *u = arg;
    while (!stopping(u)) {
        int64_t retry_in = 0;
        size_t skipped = 0;
        heartbeat(u);
        ec_status st = drain_pass(u, &retry_in, &skipped);
        int64_t wait = st == EC_ERR_NETWORK ? retry_in : IDLE_POLL_MS;
        if (!wait_for(u, wait))
            break;
    }
    return NULL;
}

ec_status ec_uploader_start(ec_uploader *u)
{
    if (u->started)
        return EC_ERR_INVALID;
    u->stop = false;
    atomic_store(&u->abandon_at_ms, 0);
    if (pthread_create(&u->thread, NULL, uploader_main, u) != 0)
        return EC_ERR_NOMEM;
    u->started = true;
    return EC_OK;
}

void ec_uploader_kick(ec_uploader *u)
{
    pthread_mutex_lock(&u->lock);
    u->kicked = true;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->lock);
}

void ec_uploader_stop(ec_uploader *u)
{
    /* A segment in flight gets its grace to be acknowledged; then its
     * transfer is abandoned and it stays in the spool, unacknowledged, for
     * whoever uploads next (a reload's new uploader, or the next start). */
    int64_t grace =
        u->cfg->upload.target == EC_TARGET_SPEECH ? STOP_GRACE_SPEECH_MS : STOP_GRACE_MS;
    atomic_store(&u->abandon_at_ms, now_ms() + grace);
    pthread_mutex_lock(&u->lock);
    u->stop = true;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->lock);
    if (u->started) {
        pthread_join(u->thread, NULL);
        u->started = false;
    }
}

void ec_uploader_get_stats(ec_uploader *u, ec_upload_stats *stats)
{
    pthread_mutex_lock(&u->lock);
    *stats = u->stats;
    pthread_mutex_unlock(&u->lock);
    for (int i = 0; i < u->n_ep && i < 2; i++)
        ec_transport_get_tls_failures(u->ep[i].transport, stats->tls_failures_by_reason[i]);
}

void ec_upload_stats_add(ec_upload_stats *into, const ec_upload_stats *from)
{
    into->segments_acknowledged += from->segments_acknowledged;
    into->bytes_acknowledged += from->bytes_acknowledged;
    into->acknowledged_existing += from->acknowledged_existing;
    into->attempts_failed += from->attempts_failed;
    into->conflicts += from->conflicts;
    into->failovers += from->failovers;
    into->tls_failures += from->tls_failures;
    for (size_t i = 0; i < 2; i++) {
        into->breaker_opens[i] += from->breaker_opens[i];
        for (size_t r = 0; r < EC_TLS_REASONS; r++)
            into->tls_failures_by_reason[i][r] += from->tls_failures_by_reason[i][r];
    }
    for (size_t i = 0; i < EC_UPLOAD_LATENCY_BUCKETS; i++)
        into->latency_buckets[i] += from->latency_buckets[i];
    into->latency_sum_s += from->latency_sum_s;
    if (from->last_ack_utc_ms > into->last_ack_utc_ms)
        into->last_ack_utc_ms = from->last_ack_utc_ms;
}
