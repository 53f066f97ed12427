/*
 * ALSA capture source (see include/edgecap/audio.h): interleaved S16_LE at the
 * exact provisioned rate and channel count, blocking reads, overruns (-EPIPE)
 * and suspends (-ESTRPIPE) recovered with snd_pcm_recover and counted.
 */
#include "edgecap/audio.h"

#include <alsa/asoundlib.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "edgecap/log.h"

typedef struct {
    snd_pcm_t *pcm;
    ec_audio_stats stats;
    atomic_bool interrupted;
} alsa_source;

static void log_alsa(const char *event, const char *device, const char *step, int err)
{
    ec_log(EC_LOG_ERROR, event, EC_LOG_STR("device", device), EC_LOG_STR("step", step),
           EC_LOG_STR("reason", snd_strerror(err)));
}

static ec_status alsa_read(void *ctx, int16_t *pcm, size_t frames, size_t *got)
{
    alsa_source *as = ctx;
    *got = 0;
    for (int attempts = 0; attempts < 8; attempts++) {
        if (atomic_load(&as->interrupted))
            return EC_OK; /* *got = 0: stop */
        snd_pcm_sframes_t n = snd_pcm_readi(as->pcm, pcm, (snd_pcm_uframes_t)frames);
        if (n == 0)
            continue; /* a blocking PCM should not; never report it as end of stream */
        if (n > 0) {
            *got = (size_t)n;
            as->stats.frames_read += (unsigned long long)n;
            return EC_OK;
        }
        if (n == -EAGAIN || n == -EINTR)
            continue;
        if (n == -EPIPE)
            as->stats.overruns++;
        else if (n == -ESTRPIPE)
            as->stats.suspends++;
        int rc = snd_pcm_recover(as->pcm, (int)n, 1);
        ec_log(n == -EPIPE ? EC_LOG_WARN : EC_LOG_ERROR, "alsa_recover",
               EC_LOG_STR("reason", snd_strerror((int)n)), EC_LOG_BOOL("recovered", rc == 0),
               EC_LOG_UINT("overruns", as->stats.overruns),
               EC_LOG_UINT("suspends", as->stats.suspends));
        if (rc < 0)
            return EC_ERR_IO;
    }
    return EC_ERR_IO;
}

static void alsa_stats(void *ctx, ec_audio_stats *stats)
{
    *stats = ((alsa_source *)ctx)->stats;
}

static void alsa_interrupt(void *ctx)
{
    alsa_source *as = ctx;
    atomic_store(&as->interrupted, true);
    /* switches the PCM to abort mode: a blocked snd_pcm_readi returns */
    snd_pcm_abort(as->pcm);
}

static void alsa_close(void *ctx)
{
    alsa_source *as = ctx;
    snd_pcm_drop(as->pcm);
    snd_pcm_close(as->pcm);
    free(as);
}

static const ec_audio_ops alsa_ops = {
    .name = "alsa",
    .read = alsa_read,
    .get_stats = alsa_stats,
    .interrupt = alsa_interrupt,
    .close = alsa_close,
};

ec_status ec_audio_alsa_open(ec_audio_source *src, const ec_audio_params *p)
{
    memset(src, 0, sizeof *src);
    alsa_source *as = calloc(1, sizeof *as);
    if (as == NULL)
        return EC_ERR_NOMEM;
    const char *dev = p->device_or_path;
    snd_pcm_hw_params_t *hw = NULL;
    ec_status st = EC_ERR_UNSUPPORTED;
    const char *step = "open";
    int err = snd_pcm_open(&as->pcm, dev, SND_PCM_STREAM_CAPTURE, 0);
    if (err < 0) {
        st = err == -ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
        goto fail;
    }
    if ((err = snd_pcm_hw_params_malloc(&hw)) < 0)
        goto fail;
    unsigned rate = p->rate_hz;
    snd_pcm_uframes_t period = p->period_frames, buffer = p->buffer_frames;
    if ((err = snd_pcm_hw_params_any(as->pcm, hw)) < 0)
        goto fail;
    step = "access";
    if ((err = snd_pcm_hw_params_set_access(as->pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED)) < 0)
        goto fail;
    step = "format S16_LE";
    if ((err = snd_pcm_hw_params_set_format(as->pcm, hw, SND_PCM_FORMAT_S16_LE)) < 0)
        goto fail;
    step = "channels";
    if ((err = snd_pcm_hw_params_set_channels(as->pcm, hw, p->channels)) < 0)
        goto fail;
    step = "rate";
    /* Exact rate: no silent resampling by the device; use a plug PCM for that. */
    if ((err = snd_pcm_hw_params_set_rate_resample(as->pcm, hw, 0)) < 0 ||
        (err = snd_pcm_hw_params_set_rate(as->pcm, hw, rate, 0)) < 0)
        goto fail;
    step = "period size";
    if ((err = snd_pcm_hw_params_set_period_size_near(as->pcm, hw, &period, NULL)) < 0)
        goto fail;
    step = "buffer size";
    if ((err = snd_pcm_hw_params_set_buffer_size_near(as->pcm, hw, &buffer)) < 0)
        goto fail;
    step = "hw params";
    if ((err = snd_pcm_hw_params(as->pcm, hw)) < 0)
        goto fail;
    snd_pcm_hw_params_free(hw);
    hw = NULL;
    step = "prepare";
    if ((err = snd_pcm_prepare(as->pcm)) < 0)
        goto fail;
    snd_pcm_info_t *info = NULL;
    bool realtime = true;
    if (snd_pcm_info_malloc(&info) == 0) {
        /* a PCM with no card behind it (file, null) is not paced by hardware */
        if (snd_pcm_info(as->pcm, info) == 0 && snd_pcm_info_get_card(info) < 0)
            realtime = false;
        snd_pcm_info_free(info);
    }
    src->realtime = realtime;
    ec_log(EC_LOG_INFO, "alsa_open", EC_LOG_STR("device", dev), EC_LOG_UINT("rate_hz", rate),
           EC_LOG_UINT("channels", p->channels), EC_LOG_UINT("period_frames", period),
           EC_LOG_UINT("buffer_frames", buffer), EC_LOG_BOOL("realtime", realtime));
    src->ops = &alsa_ops;
    src->ctx = as;
    src->rate_hz = p->rate_hz;
    src->channels = p->channels;
    return EC_OK;
fail:
    log_alsa("alsa_open_failed", dev, step, err);
    if (hw != NULL)
        snd_pcm_hw_params_free(hw);
    if (as->pcm != NULL)
        snd_pcm_close(as->pcm);
    free(as);
    return st;
}
