/*
 * Test tool (runs inside the emulated board): plays raw S16_LE PCM into an
 * ALSA playback device, paced by the device itself (snd-aloop's playback
 * side runs in real time), then drains it. busybox has no aplay.
 *
 *   alsa_play DEVICE FILE.raw RATE_HZ CHANNELS
 *
 * Prints "played N frames, U underruns" and exits 0, or says why it failed
 * (exit 1; 64 for usage, 66 when FILE cannot be read).
 *
 * A tool, not a test: tests/system/image.sh asserts its output (all frames
 * played, 0 underruns) on the guest's console.
 */
#include <alsa/asoundlib.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define CHUNK_FRAMES 320

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: alsa_play DEVICE FILE.raw RATE_HZ CHANNELS\n");
        return 64;
    }
    const char *device = argv[1];
    unsigned rate = (unsigned)strtoul(argv[3], NULL, 10);
    unsigned channels = (unsigned)strtoul(argv[4], NULL, 10);
    if (rate == 0 || channels == 0 || channels > 8) {
        fprintf(stderr, "alsa_play: bad rate or channels\n");
        return 64;
    }
    FILE *in = fopen(argv[2], "rb");
    if (in == NULL) {
        fprintf(stderr, "alsa_play: cannot read %s\n", argv[2]);
        return 66;
    }
    int rc = 1;
    snd_pcm_t *pcm = NULL;
    short buf[CHUNK_FRAMES * 8];
    unsigned long played = 0, underruns = 0;
    int err = snd_pcm_open(&pcm, device, SND_PCM_STREAM_PLAYBACK, 0);
    if (err < 0) {
        fprintf(stderr, "alsa_play: open %s: %s\n", device, snd_strerror(err));
        goto out;
    }
    /* A 1 s buffer: an emulated board on a loaded host can stall this
     * process for hundreds of ms, and an underrun would put silence into
     * the loopback that the test then finds in the blobs. */
    err = snd_pcm_set_params(pcm, SND_PCM_FORMAT_S16_LE, SND_PCM_ACCESS_RW_INTERLEAVED, channels,
                             rate, 0, 1000000);
    if (err < 0) {
        fprintf(stderr, "alsa_play: set params on %s: %s\n", device, snd_strerror(err));
        goto out;
    }
    size_t n;
    while ((n = fread(buf, 2 * channels, CHUNK_FRAMES, in)) > 0) {
        size_t done = 0;
        while (done < n) {
            snd_pcm_sframes_t w = snd_pcm_writei(pcm, buf + done * channels, n - done);
            if (w < 0) {
                if (w == -EPIPE)
                    underruns++;
                w = snd_pcm_recover(pcm, (int)w, 0);
                if (w < 0) {
                    fprintf(stderr, "alsa_play: write: %s\n", snd_strerror((int)w));
                    goto out;
                }
                continue;
            }
            done += (size_t)w;
        }
        played += n;
    }
    snd_pcm_drain(pcm);
    printf("played %lu frames, %lu underruns\n", played, underruns);
    rc = 0;
out:
    if (pcm != NULL)
        snd_pcm_close(pcm);
    fclose(in);
    return rc;
}
