/*
 * Segmenter (see include/edgecap/segment.h). VAD decisions are made on 20 ms
 * windows aligned to the stream (a block that ends mid-window is judged on
 * its part of the window; capture blocks are whole periods, so in practice
 * windows are whole); boundaries are cut at exact frame counts.
 */
#include "edgecap/segment.h"

#include <math.h>
#include <string.h>

#define VAD_WINDOW_MS 20

void ec_segmenter_init(ec_segmenter *s, const ec_segment_params *params, int64_t t0_utc_ms,
                       const ec_segment_sink *sink, void *user)
{
    memset(s, 0, sizeof *s);
    s->p = *params;
    s->sink = *sink;
    s->user = user;
    s->t0_utc_ms = t0_utc_ms;
    s->max_frames = (uint64_t)params->segment_seconds * params->rate_hz;
    s->hangover_frames = (uint64_t)params->vad_hangover_ms * params->rate_hz / 1000;
    s->threshold_ms = pow(10.0, params->vad_threshold_dbfs / 10.0) * 32768.0 * 32768.0;
}

static int64_t utc_of(const ec_segmenter *s, uint64_t frame)
{
    /* integer ms from the sample clock, no drift from repeated rounding */
    return s->t0_utc_ms + (int64_t)(frame * 1000 / s->p.rate_hz);
}

static ec_status close_open(ec_segmenter *s)
{
    if (!s->open)
        return EC_OK;
    s->open = false;
    s->open_frames = 0;
    s->silent_frames = 0;
    return s->sink.end(s->user);
}

static ec_status open_at(ec_segmenter *s, uint64_t frame)
{
    s->open = true;
    s->open_frames = 0;
    s->silent_frames = 0;
    s->stats.segments++;
    return s->sink.begin(s->user, utc_of(s, frame));
}

/* Feeds frames that belong in segments (no VAD decision here): opens, cuts
 * at the maximum length, passes PCM on. */
static ec_status feed(ec_segmenter *s, const int16_t *pcm, size_t frames, uint64_t first_frame)
{
    ec_status st = EC_OK;
    size_t done = 0;
    while (st == EC_OK && done < frames) {
        if (!s->open && (st = open_at(s, first_frame + done)) != EC_OK)
            break;
        uint64_t room = s->max_frames - s->open_frames;
        size_t n = frames - done < room ? frames - done : (size_t)room;
        st = s->sink.pcm(s->user, pcm + done * s->p.channels, n);
        s->open_frames += n;
        done += n;
        if (st == EC_OK && s->open_frames == s->max_frames)
            st = close_open(s);
    }
    return st;
}

static bool voiced(const ec_segmenter *s, const int16_t *pcm, size_t frames)
{
    size_t samples = frames * s->p.channels;
    if (samples == 0)
        return false;
    double sum = 0;
    for (size_t i = 0; i < samples; i++)
        sum += (double)pcm[i] * pcm[i];
    return sum / (double)samples >= s->threshold_ms;
}

ec_status ec_segmenter_push(ec_segmenter *s, const int16_t *pcm, size_t frames)
{
    ec_status st = EC_OK;
    if (!s->p.vad) {
        st = feed(s, pcm, frames, s->frames_total);
        s->frames_total += frames;
        s->stats.frames_in += frames;
        return st;
    }
    size_t window = s->p.rate_hz * VAD_WINDOW_MS / 1000;
    size_t done = 0;
    while (st == EC_OK && done < frames) {
        /* windows are aligned to the stream, not to the caller's blocks */
        size_t into = (size_t)(s->frames_total % window);
        size_t n = window - into;
        if (n > frames - done)
            n = frames - done;
        const int16_t *p = pcm + done * s->p.channels;
        bool v = voiced(s, p, n);
        if (v) {
            s->silent_frames = 0;
            st = feed(s, p, n, s->frames_total);
        } else if (s->open && s->silent_frames + n <= s->hangover_frames) {
            s->silent_frames += n;
            st = feed(s, p, n, s->frames_total);
        } else {
            if (s->open)
                st = close_open(s);
            s->stats.frames_gated += n;
        }
        s->frames_total += n;
        s->stats.frames_in += n;
        done += n;
    }
    return st;
}

ec_status ec_segmenter_finish(ec_segmenter *s)
{
    return close_open(s);
}

ec_status ec_segmenter_skip(ec_segmenter *s, uint64_t frames)
{
    ec_status st = close_open(s);
    s->frames_total += frames;
    return st;
}
