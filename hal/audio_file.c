/*
 * File audio source (see include/edgecap/audio.h): a RIFF/WAVE file with
 * 16-bit PCM, or raw S16_LE. Reads straight into the caller's (secure) buffer
 * with read(2), so no stdio buffer keeps a copy of the audio.
 */
#include "edgecap/audio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "edgecap/log.h"

typedef struct {
    int fd;
    uint8_t channels;
    uint64_t remaining_bytes; /* of the data chunk; UINT64_MAX for raw */
    ec_audio_stats stats;
    uint32_t rate_hz;
    bool paced;
    struct timespec t0; /* CLOCK_MONOTONIC at the first read (paced) */
} file_source;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static bool read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Walks the RIFF chunks to "data", checking "fmt " on the way. */
static ec_status parse_wav(file_source *fs, const ec_audio_params *p)
{
    uint8_t riff[12];
    if (!read_all(fs->fd, riff, sizeof riff) || memcmp(riff, "RIFF", 4) != 0 ||
        memcmp(riff + 8, "WAVE", 4) != 0) {
        ec_log(EC_LOG_ERROR, "audio_file_invalid", EC_LOG_STR("path", p->device_or_path),
               EC_LOG_STR("reason", "not a RIFF/WAVE file"));
        return EC_ERR_UNSUPPORTED;
    }
    bool have_fmt = false;
    for (int guard = 0; guard < 64; guard++) {
        uint8_t ch[8];
        if (!read_all(fs->fd, ch, sizeof ch))
            break;
        uint32_t size = le32(ch + 4);
        if (memcmp(ch, "fmt ", 4) == 0) {
            uint8_t fmt[16];
            if (size < 16 || !read_all(fs->fd, fmt, sizeof fmt))
                break;
            uint16_t format = le16(fmt), channels = le16(fmt + 2), bits = le16(fmt + 14);
            uint32_t rate = le32(fmt + 4);
            /* WAVE_FORMAT_PCM, or WAVE_FORMAT_EXTENSIBLE carrying PCM */
            if ((format != 1 && format != 0xfffe) || bits != 16 || channels != p->channels ||
                rate != p->rate_hz) {
                ec_log(EC_LOG_ERROR, "audio_file_format", EC_LOG_STR("path", p->device_or_path),
                       EC_LOG_UINT("format", format), EC_LOG_UINT("bits", bits),
                       EC_LOG_UINT("rate_hz", rate), EC_LOG_UINT("channels", channels),
                       EC_LOG_UINT("want_rate_hz", p->rate_hz),
                       EC_LOG_UINT("want_channels", p->channels));
                return EC_ERR_UNSUPPORTED;
            }
            have_fmt = true;
            size -= 16;
        } else if (memcmp(ch, "data", 4) == 0) {
            if (!have_fmt)
                break;
            fs->remaining_bytes = size;
            return EC_OK;
        }
        /* skip the rest of this chunk (chunks are padded to even sizes) */
        if (lseek(fs->fd, (off_t)size + (size & 1), SEEK_CUR) < 0)
            break;
    }
    ec_log(EC_LOG_ERROR, "audio_file_invalid", EC_LOG_STR("path", p->device_or_path),
           EC_LOG_STR("reason", "no fmt/data chunk"));
    return EC_ERR_UNSUPPORTED;
}

/* Sleeps until the last frame read would have arrived in real time; the
 * schedule is absolute from the first read, so it does not drift. */
static void pace(file_source *fs)
{
    if (fs->t0.tv_sec == 0 && fs->t0.tv_nsec == 0)
        clock_gettime(CLOCK_MONOTONIC, &fs->t0);
    /* split so that frames * 1e9 cannot overflow on a long replay */
    uint64_t frames = fs->stats.frames_read;
    uint64_t ns = frames % fs->rate_hz * 1000000000ULL / fs->rate_hz;
    struct timespec due = {.tv_sec = fs->t0.tv_sec + (time_t)(frames / fs->rate_hz),
                           .tv_nsec = fs->t0.tv_nsec + (long)ns};
    if (due.tv_nsec >= 1000000000L) {
        due.tv_sec++;
        due.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR)
        ;
}

static ec_status file_read(void *ctx, int16_t *pcm, size_t frames, size_t *got)
{
    file_source *fs = ctx;
    size_t frame_bytes = (size_t)fs->channels * 2;
    size_t want = frames * frame_bytes;
    if (want > fs->remaining_bytes)
        want = (size_t)(fs->remaining_bytes / frame_bytes * frame_bytes);
    size_t have = 0;
    uint8_t *p = (uint8_t *)pcm;
    while (have < want) {
        ssize_t n = read(fs->fd, p + have, want - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return EC_ERR_IO;
        if (n == 0)
            break;
        have += (size_t)n;
    }
    /* A trailing partial frame is dropped: frames are the unit everywhere. */
    *got = have / frame_bytes;
    fs->remaining_bytes -= have;
    fs->stats.frames_read += *got;
    if (fs->paced && *got > 0)
        pace(fs);
    return EC_OK;
}

static void file_stats(void *ctx, ec_audio_stats *stats)
{
    *stats = ((file_source *)ctx)->stats;
}

static void file_close(void *ctx)
{
    file_source *fs = ctx;
    close(fs->fd);
    free(fs);
}

static const ec_audio_ops file_ops = {
    .name = "file",
    .read = file_read,
    .get_stats = file_stats,
    .close = file_close,
};

ec_status ec_audio_file_open(ec_audio_source *src, const ec_audio_params *p)
{
    memset(src, 0, sizeof *src);
    file_source *fs = calloc(1, sizeof *fs);
    if (fs == NULL)
        return EC_ERR_NOMEM;
    fs->channels = p->channels;
    fs->remaining_bytes = UINT64_MAX;
    fs->rate_hz = p->rate_hz;
    fs->paced = p->paced;
    fs->fd = open(p->device_or_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fs->fd < 0) {
        ec_log(EC_LOG_ERROR, "audio_file_open", EC_LOG_STR("path", p->device_or_path),
               EC_LOG_STR("reason", strerror(errno)));
        free(fs);
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    }
    size_t n = strlen(p->device_or_path);
    bool wav = n >= 4 && strcasecmp(p->device_or_path + n - 4, ".wav") == 0;
    if (wav) {
        ec_status st = parse_wav(fs, p);
        if (st != EC_OK) {
            close(fs->fd);
            free(fs);
            return st;
        }
    }
    src->ops = &file_ops;
    src->ctx = fs;
    src->rate_hz = p->rate_hz;
    src->channels = p->channels;
    src->realtime = p->paced;
    return EC_OK;
}

void ec_audio_close(ec_audio_source *src)
{
    if (src == NULL || src->ops == NULL)
        return;
    src->ops->close(src->ctx);
    src->ops = NULL;
    src->ctx = NULL;
}
