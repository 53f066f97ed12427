/*
 * HAL audio source: where PCM comes from on this board. Every backend delivers
 * interleaved signed 16-bit little-endian (host order) frames at the
 * provisioned rate and channel count, into a buffer the caller owns (secure
 * memory: PCM is plaintext audio). Backends: ALSA (hal/audio_alsa.c) and a
 * WAV/raw file (hal/audio_file.c, for replay, tests and the demo).
 *
 * A source is not assumed to be paced in real time: a file or a file-backed
 * ALSA PCM delivers as fast as it is read. Owned by firmware/capture.
 */
#ifndef EDGECAP_AUDIO_H
#define EDGECAP_AUDIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/status.h"

typedef struct {
    unsigned long overruns; /* ALSA -EPIPE recovered */
    unsigned long suspends; /* ALSA -ESTRPIPE recovered */
    unsigned long long frames_read;
} ec_audio_stats;

typedef struct {
    const char *name;
    /*
     * Reads up to `frames` frames into `pcm` (frames * channels samples).
     * *got = 0 with EC_OK means the end of the stream (files only). Recoverable
     * device errors (overrun, suspend) are recovered and counted, not returned.
     */
    ec_status (*read)(void *ctx, int16_t *pcm, size_t frames, size_t *got);
    void (*get_stats)(void *ctx, ec_audio_stats *stats);
    /* Makes a read that is blocked (or the next one) return at once with
     * *got = 0; called from another thread to stop capture. NULL when reads
     * never block for long (files). */
    void (*interrupt)(void *ctx);
    void (*close)(void *ctx);
} ec_audio_ops;

typedef struct {
    const ec_audio_ops *ops;
    void *ctx;
    uint32_t rate_hz;
    uint8_t channels;
    /* Audio arrives in real time and is lost if not read in time (a sound
     * card). Files and virtual PCMs without a card are not: nothing is lost by
     * waiting for them, so the pipeline applies backpressure instead of
     * dropping. */
    bool realtime;
} ec_audio_source;

typedef struct {
    const char *device_or_path;
    uint32_t rate_hz; /* 8000, 16000 or 48000 */
    uint8_t channels; /* 1 or 2 */
    uint32_t period_frames;
    uint32_t buffer_frames;
    /* File source: deliver frames no faster than the sample rate, like a
     * card (the source then counts as real time). For replay and tests. */
    bool paced;
} ec_audio_params;

/*
 * Opens an ALSA capture PCM by name (S16_LE, exact rate and channels,
 * period/buffer sizes as near as the device allows). Errors are logged with
 * ALSA's reason; EC_ERR_UNSUPPORTED when the device cannot do the format.
 */
ec_status ec_audio_alsa_open(ec_audio_source *src, const ec_audio_params *params);

/*
 * Opens a file: a RIFF/WAVE file (PCM, 16-bit) whose rate and channels must
 * equal the params (else EC_ERR_UNSUPPORTED), or — for any other extension
 * than .wav — raw S16_LE at the params' rate and channels. With `paced`, a
 * read returns when its last frame would have arrived from a card.
 */
ec_status ec_audio_file_open(ec_audio_source *src, const ec_audio_params *params);

/* Closes any backend; safe on a zeroed or closed source. */
void ec_audio_close(ec_audio_source *src);

#endif
