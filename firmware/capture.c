/*
 * Capture pipeline (see include/edgecap/capture.h). The queue is a ring of
 * fixed-size PCM slots in one secure allocation; the capture thread fills a
 * slot in place and publishes it, the worker consumes slots in order. One
 * mutex, two condition variables; no slot is ever copied to ordinary memory.
 */
#include "edgecap/capture.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/platform_util.h>

#include "edgecap/fault.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"

typedef struct {
    size_t frames;
    /* Before this slot's frames: end the open segment and move the sample
     * clock on by `skip` frames (capture was withheld). */
    bool cut;
    uint64_t skip;
} slot_info;

struct ec_capture {
    ec_capture_params p;
    pthread_t capture_thread, worker_thread;
    bool capture_started, worker_started;

    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    int16_t *ring;    /* queue_blocks * block_frames * channels samples */
    int16_t *scratch; /* where a dropped block is read (and wiped) */
    slot_info *slots;
    size_t head, count; /* head = oldest filled slot */
    bool stop;          /* asked to stop */
    bool capture_done;  /* the capture thread has ended */
    bool worker_done;
    bool producer_waiting; /* the capture thread waits for room */
    ec_capture_stats stats;

    /* worker state */
    ec_segmenter segmenter;
    ec_encode *encoder;
    ec_spool_writer *writer;
    bool refusing; /* the spool refused the open segment */
};

static size_t slot_samples(const ec_capture *c)
{
    return (size_t)c->p.block_frames * c->p.source->channels;
}

/* ---- capture thread ----------------------------------------------------- */

/* Whether consent allows the block just read; NULL gate = always. */
static bool allowed(ec_capture *c)
{
    return c->p.consent == NULL || ec_consent_poll(c->p.consent, time(NULL));
}

static void *capture_main(void *arg)
{
    ec_capture *c = arg;
    ec_audio_source *src = c->p.source;
    uint64_t captured = 0;
    /* consent: a cut not yet queued, and frames withheld since the last slot */
    bool pending_cut = false, withholding = false;
    uint64_t pending_skip = 0;
    ec_status st = EC_OK;
    for (;;) {
        size_t want = c->p.block_frames;
        if (c->p.max_frames != 0 && c->p.max_frames - captured < want)
            want = (size_t)(c->p.max_frames - captured);
        if (want == 0)
            break;

        pthread_mutex_lock(&c->lock);
        while (!src->realtime && !c->stop && c->count == c->p.queue_blocks) {
            c->producer_waiting = true;
            pthread_cond_wait(&c->not_full, &c->lock);
        }
        c->producer_waiting = false;
        bool stop = c->stop;
        bool full = c->count == c->p.queue_blocks;
        size_t slot = (c->head + c->count) % c->p.queue_blocks;
        pthread_mutex_unlock(&c->lock);
        if (stop)
            break;

        /* Only this thread adds slots, so `slot` stays free until published. */
        int16_t *dst = full ? c->scratch : c->ring + slot * slot_samples(c);
        size_t got = 0;
        st = src->ops->read(src->ctx, dst, want, &got);
        if (st != EC_OK || got == 0)
            break;
        captured += got;
        /* Judged after the read: a block during which consent went off is
         * not kept, so nothing from the off period reaches the queue. */
        bool ok = allowed(c);
        if (!ok) {
            mbedtls_platform_zeroize(dst, got * src->channels * sizeof(int16_t));
            pending_cut = pending_cut || !withholding; /* the first block withheld */
            pending_skip += got;
        }
        withholding = !ok;

        pthread_mutex_lock(&c->lock);
        c->stats.frames_captured += got;
        if (!ok) {
            c->stats.frames_withheld += got;
            /* queue the cut (no frames) so the open segment is sealed now,
             * not when consent returns */
            if (pending_cut && !full) {
                c->slots[slot] = (slot_info){.frames = 0, .cut = true, .skip = pending_skip};
                pending_cut = false;
                pending_skip = 0;
                c->count++;
                pthread_cond_signal(&c->not_empty);
            }
        } else if (full) {
            c->stats.frames_dropped += got;
            c->stats.overruns++;
        } else {
            c->slots[slot] = (slot_info){
                .frames = got, .cut = pending_cut || pending_skip > 0, .skip = pending_skip};
            pending_cut = false;
            pending_skip = 0;
            c->count++;
            pthread_cond_signal(&c->not_empty);
        }
        uint64_t overruns = c->stats.overruns;
        pthread_mutex_unlock(&c->lock);
        if (ok && full) {
            mbedtls_platform_zeroize(c->scratch, got * src->channels * sizeof(int16_t));
            /* every overrun is counted; the log is rate-limited to powers of two */
            if ((overruns & (overruns - 1)) == 0)
                ec_log(EC_LOG_WARN, "capture_overrun", EC_LOG_UINT("overruns", overruns),
                       EC_LOG_UINT("dropped_frames", got),
                       EC_LOG_STR("reason", "encode/seal queue full"));
        }
    }
    pthread_mutex_lock(&c->lock);
    c->capture_done = true;
    c->stats.source_error = st;
    c->stats.source_ended = st == EC_OK;
    pthread_cond_signal(&c->not_empty);
    pthread_mutex_unlock(&c->lock);
    if (st != EC_OK)
        ec_log(EC_LOG_ERROR, "capture_failed", EC_LOG_STATUS(st));
    return NULL;
}

/* ---- worker: segment -> encode -> spool ----------------------------------- */

static ec_status on_page(void *user, const uint8_t *page, size_t len)
{
    ec_capture *c = user;
    ec_status st = ec_spool_append(c->writer, page, len);
    /* Each page is a max_page_ms boundary: make it durable now. */
    if (st == EC_OK)
        st = ec_spool_flush(c->writer);
    return st;
}

static void count(ec_capture *c, uint64_t *field, uint64_t n)
{
    pthread_mutex_lock(&c->lock);
    *field += n;
    pthread_mutex_unlock(&c->lock);
}

static ec_status seg_begin(void *user, int64_t start_utc_ms)
{
    ec_capture *c = user;
    ec_segment_meta meta = {.start_utc_ms = start_utc_ms,
                            .sample_rate_hz = c->p.source->rate_hz,
                            .channels = c->p.source->channels,
                            .codec = EC_SEAL_CODEC_OGG_OPUS};
    snprintf(meta.device_id, sizeof meta.device_id, "%s", c->p.device_id);
    c->refusing = false;
    ec_status st = ec_spool_next_sequence(c->p.spool, &meta.sequence);
    if (st == EC_OK)
        st = ec_spool_begin(c->p.spool, &meta, &c->writer);
    if (st == EC_OK) {
        st = ec_encode_open(&c->encoder, &c->p.encode, on_page, c);
        if (st != EC_OK)
            ec_spool_abort(&c->writer);
    }
    if (st == EC_ERR_FULL) {
        c->refusing = true; /* counted per frame in seg_pcm */
        return EC_OK;
    }
    if (st != EC_OK) {
        count(c, &c->stats.segments_failed, 1);
        ec_log(EC_LOG_ERROR, "segment_begin_failed", EC_LOG_STATUS(st));
        c->refusing = true;
    }
    return EC_OK;
}

/* Ends the open segment: finished and committed when all went well, else
 * abandoned as .part for recovery. */
static void seg_close(ec_capture *c, ec_status st)
{
    uint64_t frames = ec_encode_frames(c->encoder);
    if (st == EC_OK)
        st = ec_encode_finish(c->encoder);
    ec_encode_free(&c->encoder);
    if (st == EC_OK || st == EC_ERR_FULL) {
        /* refuse-new mid-segment: keep what is already sealed */
        if (ec_spool_commit(&c->writer, frames) == EC_OK) {
            count(c, &c->stats.segments_sealed, 1);
            return;
        }
        /* the commit logged why; the .part is recovered at the next start */
    } else {
        ec_spool_abort(&c->writer);
        ec_log(EC_LOG_ERROR, "segment_failed", EC_LOG_STATUS(st),
               EC_LOG_STR("effect", "left as .part; recovered at the next start"));
    }
    count(c, &c->stats.segments_failed, 1);
}

static ec_status seg_pcm(void *user, const int16_t *pcm, size_t frames)
{
    ec_capture *c = user;
    if (c->refusing || c->writer == NULL) {
        count(c, &c->stats.frames_refused, frames);
        return EC_OK;
    }
    ec_status st = ec_encode_write(c->encoder, pcm, frames);
    if (st != EC_OK) {
        seg_close(c, st);
        c->refusing = true;
        count(c, &c->stats.frames_refused, frames);
    }
    return EC_OK;
}

static ec_status seg_end(void *user)
{
    ec_capture *c = user;
    if (c->writer != NULL)
        seg_close(c, EC_OK);
    c->refusing = false;
    return EC_OK;
}

static const ec_segment_sink segment_sink = {seg_begin, seg_pcm, seg_end};

static void *worker_main(void *arg)
{
    ec_capture *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        while (c->count == 0 && !c->capture_done)
            pthread_cond_wait(&c->not_empty, &c->lock);
        if (c->count == 0 && c->capture_done) {
            pthread_mutex_unlock(&c->lock);
            break;
        }
        size_t slot = c->head;
        slot_info info = c->slots[slot];
        pthread_mutex_unlock(&c->lock);

        int16_t *pcm = c->ring + slot * slot_samples(c);
        if (EC_FAULT("capture.stall")) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (info.cut)
            (void)ec_segmenter_skip(&c->segmenter, info.skip);
        if (info.frames > 0) {
            (void)ec_segmenter_push(&c->segmenter, pcm, info.frames);
            mbedtls_platform_zeroize(pcm, info.frames * c->p.source->channels * sizeof(int16_t));
        }

        pthread_mutex_lock(&c->lock);
        c->head = (c->head + 1) % c->p.queue_blocks;
        c->count--;
        /* Hysteresis: a waiting producer (a source that is not real time) is
         * woken when half the queue is free, not per block, so it refills in
         * bursts instead of two context switches per period. */
        if (c->producer_waiting && c->count <= c->p.queue_blocks / 2)
            pthread_cond_signal(&c->not_full);
        pthread_mutex_unlock(&c->lock);
    }
    (void)ec_segmenter_finish(&c->segmenter);
    pthread_mutex_lock(&c->lock);
    c->worker_done = true;
    c->stats.segmenter = c->segmenter.stats;
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void capture_free(ec_capture *c)
{
    ec_encode_free(&c->encoder);
    ec_spool_abort(&c->writer);
    ec_secmem_free(c->ring);
    ec_secmem_free(c->scratch);
    free(c->slots);
    pthread_cond_destroy(&c->not_empty);
    pthread_cond_destroy(&c->not_full);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

ec_status ec_capture_start(ec_capture **out, const ec_capture_params *p)
{
    *out = NULL;
    if (p->source == NULL || p->source->ops == NULL || p->spool == NULL || p->block_frames == 0 ||
        p->queue_blocks == 0)
        return EC_ERR_INVALID;
    ec_capture *c = calloc(1, sizeof *c);
    if (c == NULL)
        return EC_ERR_NOMEM;
    c->p = *p;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->not_empty, NULL);
    pthread_cond_init(&c->not_full, NULL);
    size_t bytes = slot_samples(c) * sizeof(int16_t);
    c->ring = ec_secmem_alloc(bytes * p->queue_blocks);
    c->scratch = ec_secmem_alloc(bytes);
    c->slots = calloc(p->queue_blocks, sizeof *c->slots);
    if (c->ring == NULL || c->scratch == NULL || c->slots == NULL) {
        capture_free(c);
        return EC_ERR_NOMEM;
    }
    ec_segment_params sp = p->segment;
    sp.rate_hz = p->source->rate_hz;
    sp.channels = p->source->channels;
    ec_segmenter_init(&c->segmenter, &sp, p->start_utc_ms, &segment_sink, c);
    c->p.encode.rate_hz = p->source->rate_hz;
    c->p.encode.channels = p->source->channels;

    if (pthread_create(&c->worker_thread, NULL, worker_main, c) != 0) {
        capture_free(c);
        return EC_ERR_NOMEM;
    }
    c->worker_started = true;
    if (pthread_create(&c->capture_thread, NULL, capture_main, c) != 0) {
        pthread_mutex_lock(&c->lock);
        c->capture_done = true;
        pthread_cond_signal(&c->not_empty);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->worker_thread, NULL);
        capture_free(c);
        return EC_ERR_NOMEM;
    }
    c->capture_started = true;
    ec_log(EC_LOG_INFO, "capture_started", EC_LOG_STR("source", p->source->ops->name),
           EC_LOG_UINT("rate_hz", p->source->rate_hz), EC_LOG_UINT("channels", p->source->channels),
           EC_LOG_BOOL("realtime", p->source->realtime),
           EC_LOG_UINT("queue_blocks", p->queue_blocks),
           EC_LOG_UINT("segment_seconds", p->segment.segment_seconds),
           EC_LOG_BOOL("vad", p->segment.vad), EC_LOG_BOOL("consent_gate", p->consent != NULL));
    *out = c;
    return EC_OK;
}

void ec_capture_stop(ec_capture *c)
{
    pthread_mutex_lock(&c->lock);
    bool first = !c->stop;
    c->stop = true;
    pthread_cond_broadcast(&c->not_full);
    pthread_mutex_unlock(&c->lock);
    /* a device that delivers nothing must not hold the stop up */
    if (first && c->p.source->ops->interrupt != NULL)
        c->p.source->ops->interrupt(c->p.source->ctx);
}

bool ec_capture_finished(ec_capture *c)
{
    pthread_mutex_lock(&c->lock);
    bool done = c->capture_done && c->worker_done;
    pthread_mutex_unlock(&c->lock);
    return done;
}

void ec_capture_get_stats(ec_capture *c, ec_capture_stats *stats)
{
    pthread_mutex_lock(&c->lock);
    *stats = c->stats;
    pthread_mutex_unlock(&c->lock);
}

void ec_capture_join(ec_capture **cp, ec_capture_stats *final_stats)
{
    if (cp == NULL || *cp == NULL)
        return;
    ec_capture *c = *cp;
    ec_capture_stop(c);
    if (c->capture_started)
        pthread_join(c->capture_thread, NULL);
    if (c->worker_started)
        pthread_join(c->worker_thread, NULL);
    c->p.source->ops->get_stats(c->p.source->ctx, &c->stats.source);
    if (final_stats != NULL)
        *final_stats = c->stats;
    ec_log(EC_LOG_INFO, "capture_stopped", EC_LOG_UINT("frames", c->stats.frames_captured),
           EC_LOG_UINT("segments_sealed", c->stats.segments_sealed),
           EC_LOG_UINT("segments_failed", c->stats.segments_failed),
           EC_LOG_UINT("overruns", c->stats.overruns),
           EC_LOG_UINT("frames_dropped", c->stats.frames_dropped),
           EC_LOG_UINT("frames_refused", c->stats.frames_refused),
           EC_LOG_UINT("frames_gated", c->stats.segmenter.frames_gated),
           EC_LOG_UINT("frames_withheld", c->stats.frames_withheld));
    capture_free(c);
    *cp = NULL;
}
