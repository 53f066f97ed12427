/*
 * libopusenc in memory (see include/edgecap/encode.h). The callbacks pass each
 * Ogg page straight to the sink; libopusenc's own buffers live on its heap
 * (it has no allocator hooks), which is why the process is non-dumpable and
 * the pages themselves go to secure memory at once.
 */
#include "edgecap/encode.h"

#include <opus.h>
#include <opusenc.h>
#include <stdbool.h>
#include <stdlib.h>

#include "edgecap/config.h"
#include "edgecap/fault.h"
#include "edgecap/log.h"
#include "edgecap/rng.h"

struct ec_encode {
    OggOpusEnc *enc;
    OggOpusComments *comments;
    ec_encode_sink sink;
    void *user;
    ec_status sink_status;
    uint64_t frames;
    bool finished;
};

static int on_write(void *user_data, const unsigned char *ptr, opus_int32 len)
{
    ec_encode *e = user_data;
    if (e->sink_status != EC_OK)
        return 1;
    e->sink_status = e->sink(e->user, ptr, (size_t)len);
    return e->sink_status == EC_OK ? 0 : 1;
}

static int on_close(void *user_data)
{
    (void)user_data;
    return 0;
}

static int frame_duration(int frame_ms)
{
    switch (frame_ms) {
    case 10:
        return OPUS_FRAMESIZE_10_MS;
    case 40:
        return OPUS_FRAMESIZE_40_MS;
    case 60:
        return OPUS_FRAMESIZE_60_MS;
    default:
        return OPUS_FRAMESIZE_20_MS;
    }
}

static ec_status status_of(ec_encode *e, int ope_rc)
{
    if (e->sink_status != EC_OK)
        return e->sink_status;
    if (ope_rc != OPE_OK) {
        ec_log(EC_LOG_ERROR, "encode_failed", EC_LOG_STR("reason", ope_strerror(ope_rc)));
        return EC_ERR_INTERNAL;
    }
    return EC_OK;
}

ec_status ec_encode_open(ec_encode **out, const ec_encode_params *p, ec_encode_sink sink,
                         void *user)
{
    *out = NULL;
    ec_encode *e = calloc(1, sizeof *e);
    if (e == NULL)
        return EC_ERR_NOMEM;
    e->sink = sink;
    e->user = user;
    e->sink_status = EC_OK;
    static const OpusEncCallbacks callbacks = {on_write, on_close};
    int err = OPE_OK;
    int32_t serial = 0;
    ec_status st = ec_rng_bytes(&serial, sizeof serial);
    if (st != EC_OK)
        goto fail;
    /* No tags beyond the vendor string: nothing about the speaker or place. */
    e->comments = ope_comments_create();
    if (e->comments == NULL || EC_FAULT("encode.create")) {
        st = EC_ERR_NOMEM;
        goto fail;
    }
    e->enc = ope_encoder_create_callbacks(&callbacks, e, e->comments, (opus_int32)p->rate_hz,
                                          p->channels, 0, &err);
    if (e->enc == NULL) {
        ec_log(EC_LOG_ERROR, "encode_create_failed", EC_LOG_STR("reason", ope_strerror(err)));
        st = EC_ERR_INTERNAL;
        goto fail;
    }
    int page_samples_48k = p->max_page_ms * 48;
    int rc = ope_encoder_ctl(e->enc, OPE_SET_SERIALNO(serial & 0x7fffffff));
    if (rc == OPE_OK)
        rc = ope_encoder_ctl(e->enc, OPE_SET_MUXING_DELAY(page_samples_48k));
    if (rc == OPE_OK)
        rc = ope_encoder_ctl(
            e->enc, OPE_SET_DECISION_DELAY(page_samples_48k < 96000 ? page_samples_48k : 96000));
    if (rc == OPE_OK)
        rc = ope_encoder_ctl(e->enc, OPUS_SET_APPLICATION(p->application == EC_APP_AUDIO
                                                              ? OPUS_APPLICATION_AUDIO
                                                              : OPUS_APPLICATION_VOIP));
    if (rc == OPE_OK)
        rc = ope_encoder_ctl(e->enc, OPUS_SET_BITRATE(p->bitrate_bps));
    if (rc == OPE_OK)
        rc = ope_encoder_ctl(e->enc, OPUS_SET_COMPLEXITY(p->complexity));
    if (rc == OPE_OK)
        rc = ope_encoder_ctl(e->enc, OPUS_SET_VBR(p->vbr == EC_VBR_OFF ? 0 : 1));
    if (rc == OPE_OK)
        rc = ope_encoder_ctl(e->enc, OPUS_SET_VBR_CONSTRAINT(p->vbr == EC_VBR_CONSTRAINED));
    if (rc == OPE_OK)
        rc = ope_encoder_ctl(e->enc, OPUS_SET_EXPERT_FRAME_DURATION(frame_duration(p->frame_ms)));
    if (rc != OPE_OK) {
        ec_log(EC_LOG_ERROR, "encode_setup_failed", EC_LOG_STR("reason", ope_strerror(rc)));
        st = EC_ERR_INTERNAL;
        goto fail;
    }
    /* The headers go out now, so even a segment cut short is a valid stream. */
    st = status_of(e, ope_encoder_flush_header(e->enc));
    if (st != EC_OK)
        goto fail;
    *out = e;
    return EC_OK;
fail:
    ec_encode_free(&e);
    return st;
}

ec_status ec_encode_write(ec_encode *e, const int16_t *pcm, size_t frames)
{
    if (e == NULL || e->finished || frames > INT32_MAX)
        return EC_ERR_INVALID;
    if (frames == 0)
        return EC_OK;
    ec_status st = status_of(e, ope_encoder_write(e->enc, pcm, (int)frames));
    if (st == EC_OK)
        e->frames += frames;
    return st;
}

ec_status ec_encode_finish(ec_encode *e)
{
    if (e == NULL || e->finished)
        return EC_ERR_INVALID;
    e->finished = true;
    return status_of(e, ope_encoder_drain(e->enc));
}

uint64_t ec_encode_frames(const ec_encode *e)
{
    return e != NULL ? e->frames : 0;
}

void ec_encode_free(ec_encode **e)
{
    if (e == NULL || *e == NULL)
        return;
    if ((*e)->enc != NULL)
        ope_encoder_destroy((*e)->enc);
    if ((*e)->comments != NULL)
        ope_comments_destroy((*e)->comments);
    free(*e);
    *e = NULL;
}
