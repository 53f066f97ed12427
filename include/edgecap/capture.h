/*
 * The capture pipeline: audio source -> bounded queue -> segment -> encode ->
 * seal -> spool, on two threads. The capture thread only reads the source
 * into queue slots (secure memory); it never waits for disk: with a real-time
 * source a full queue drops the block and counts an overrun (logged), with a
 * source that is not real time (file, virtual PCM) it waits, since nothing is
 * lost by waiting. The worker thread does everything else, and closes the
 * open segment cleanly when capture stops.
 *
 * Owned by main (run, capture).
 */
#ifndef EDGECAP_CAPTURE_H
#define EDGECAP_CAPTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "edgecap/audio.h"
#include "edgecap/consent.h"
#include "edgecap/encode.h"
#include "edgecap/segment.h"
#include "edgecap/spool.h"
#include "edgecap/status.h"

typedef struct {
    ec_audio_source *source; /* opened by the caller, read only by the capture thread */
    ec_spool *spool;
    const char *device_id;
    ec_segment_params segment;
    ec_encode_params encode;
    uint32_t block_frames; /* frames per read (the ALSA period) */
    uint32_t queue_blocks; /* queue capacity */
    uint64_t max_frames;   /* stop after this many frames; 0 = until stopped or end */
    int64_t start_utc_ms;  /* UTC time of the first frame */
    /* Polled by the capture thread after every read; while it says no, each
     * block is wiped at once and never queued, and the open segment is
     * closed (sealed). NULL = always allowed. Owned by the caller. */
    ec_consent *consent;
} ec_capture_params;

typedef struct {
    uint64_t frames_captured;
    uint64_t frames_dropped;  /* lost to a full queue (real-time source) */
    uint64_t overruns;        /* times the queue was full */
    uint64_t frames_refused;  /* the spool refused them (quota, refuse-new) */
    uint64_t frames_withheld; /* read while consent was off, wiped unqueued */
    uint64_t segments_sealed;
    uint64_t segments_failed; /* encode or spool errors; .part left for recovery */
    ec_segment_stats segmenter;
    ec_audio_stats source;
    bool source_ended;
    ec_status source_error;
} ec_capture_stats;

typedef struct ec_capture ec_capture;

ec_status ec_capture_start(ec_capture **out, const ec_capture_params *params);

/* Asks both threads to stop; the worker drains the queue and closes the
 * open segment. Safe from any thread, any number of times. */
void ec_capture_stop(ec_capture *c);

/* Whether capture has ended by itself (max_frames, end of source, error). */
bool ec_capture_finished(ec_capture *c);

/* Stops (if not yet), joins both threads, frees; *c becomes NULL. */
void ec_capture_join(ec_capture **c, ec_capture_stats *final_stats);

void ec_capture_get_stats(ec_capture *c, ec_capture_stats *stats);

#endif
