/*
 * Segmenting: cuts the PCM stream into segments of exactly segment_seconds of
 * frames (sample-accurate: a boundary falls between two frames, never inside
 * a block's rounding), and, with voice-activity gating on, drops silence so it
 * is neither encoded nor uploaded (data minimisation): a segment opens at the
 * first voiced block and closes after `hangover_ms` of silence or at the
 * maximum length. Start times come from the sample clock: the capture's UTC
 * start plus frames/rate, so a source that is not paced in real time still
 * gets exact, monotonic times.
 *
 * Pure logic, no threads, no I/O: the pipeline feeds blocks and receives
 * begin/pcm/end calls in order. Owned by firmware/capture.
 */
#ifndef EDGECAP_SEGMENT_H
#define EDGECAP_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/status.h"

typedef struct {
    /* A segment starts; its first frame is at `start_utc_ms`. */
    ec_status (*begin)(void *user, int64_t start_utc_ms);
    /* Frames of the open segment. */
    ec_status (*pcm)(void *user, const int16_t *pcm, size_t frames);
    /* The open segment ends (length reached, silence, or finish). */
    ec_status (*end)(void *user);
} ec_segment_sink;

typedef struct {
    uint32_t rate_hz;
    uint8_t channels;
    uint32_t segment_seconds;
    bool vad;
    int vad_threshold_dbfs;
    uint32_t vad_hangover_ms;
} ec_segment_params;

typedef struct {
    uint64_t frames_in;
    uint64_t frames_gated; /* silence dropped by VAD */
    uint64_t segments;
} ec_segment_stats;

typedef struct {
    ec_segment_params p;
    ec_segment_sink sink;
    void *user;
    int64_t t0_utc_ms;
    uint64_t frames_total; /* frames seen since start */
    bool open;
    uint64_t open_frames;   /* frames in the open segment */
    uint64_t max_frames;    /* segment_seconds * rate */
    uint64_t silent_frames; /* trailing silence in the open segment */
    uint64_t hangover_frames;
    double threshold_ms; /* mean-square threshold for VAD */
    ec_segment_stats stats;
} ec_segmenter;

void ec_segmenter_init(ec_segmenter *s, const ec_segment_params *params, int64_t t0_utc_ms,
                       const ec_segment_sink *sink, void *user);

/* Feeds a block of frames (any size); sink errors are returned at once. */
ec_status ec_segmenter_push(ec_segmenter *s, const int16_t *pcm, size_t frames);

/* Ends the open segment, if any. */
ec_status ec_segmenter_finish(ec_segmenter *s);

/* A gap in the stream (capture withheld `frames` frames, e.g. consent off):
 * ends the open segment, if any, and moves the sample clock on by `frames`,
 * so the next segment starts at its true time. */
ec_status ec_segmenter_skip(ec_segmenter *s, uint64_t frames);

#endif
