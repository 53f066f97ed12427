/*
 * Encoding: PCM frames to a standard Ogg Opus stream with libopusenc, entirely
 * in memory through its callbacks (no FILE*, no temporary file). Every Ogg
 * page is handed to the sink as soon as libopusenc emits it, and pages are
 * flushed at least every max_page_ms, so a crash loses at most that much.
 * One encoder per segment. Owned by firmware/pipeline; the sink is the
 * segment's sealer/spool writer.
 */
#ifndef EDGECAP_ENCODE_H
#define EDGECAP_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "edgecap/status.h"

typedef struct {
    uint32_t rate_hz;
    uint8_t channels;
    int bitrate_bps;
    int complexity;  /* 0..10 */
    int vbr;         /* ec_encoder_vbr (config.h) */
    int application; /* ec_encoder_application (config.h) */
    int frame_ms;    /* 10, 20, 40, 60 */
    int max_page_ms;
} ec_encode_params;

/* Receives each Ogg page (plaintext Opus: the sink must keep it in secure
 * memory). A non-OK return stops the encoder with that error. */
typedef ec_status (*ec_encode_sink)(void *user, const uint8_t *page, size_t len);

typedef struct ec_encode ec_encode;

ec_status ec_encode_open(ec_encode **out, const ec_encode_params *params, ec_encode_sink sink,
                         void *user);

/* Encodes `frames` interleaved S16 frames. */
ec_status ec_encode_write(ec_encode *e, const int16_t *pcm, size_t frames);

/* Flushes everything and writes the end-of-stream page. */
ec_status ec_encode_finish(ec_encode *e);

/* Frames given to ec_encode_write so far. */
uint64_t ec_encode_frames(const ec_encode *e);

/* Releases the encoder (without finishing); *e becomes NULL. */
void ec_encode_free(ec_encode **e);

#endif
