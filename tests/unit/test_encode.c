/*
 * Encoder: PCM in, standard Ogg Opus out through the sink only. opusinfo
 * accepts the stream, opusdec decodes it to the source's length (within one
 * frame) and close to the source (correlation). Pages arrive at least every
 * max_page_ms. A failing sink stops the encoder with its error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "edgecap/config.h"
#include "edgecap/encode.h"
#include "edgecap/secmem.h"
#include "support.h"

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    size_t pages;
    int fail_after; /* fail the Nth call (0 = never) */
} sink_buf;

static ec_status collect(void *user, const uint8_t *page, size_t len)
{
    sink_buf *s = user;
    s->pages++;
    if (s->fail_after != 0 && (int)s->pages >= s->fail_after)
        return EC_ERR_IO;
    if (s->len + len > s->cap) {
        s->cap = (s->len + len) * 2;
        s->buf = realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, page, len);
    s->len += len;
    return EC_OK;
}

static const ec_encode_params params_16k = {
    .rate_hz = 16000,
    .channels = 1,
    .bitrate_bps = 32000,
    .complexity = 5,
    .vbr = EC_VBR_ON,
    .application = EC_APP_AUDIO,
    .frame_ms = 20,
    .max_page_ms = 200,
};

/* A voice-like test signal: harmonics with a slow vibrato and envelope. */
static void voice_like(int16_t *out, size_t n, uint32_t rate)
{
    double phase = 0;
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        double f0 = 140 + 25 * sin(2 * M_PI * 3 * t);
        phase += 2 * M_PI * f0 / rate;
        double v = 0;
        for (int h = 1; h <= 8; h++)
            v += sin(h * phase) / h;
        double env = 0.5 + 0.5 * sin(2 * M_PI * 0.7 * t);
        out[i] = (int16_t)(6000 * v * env);
    }
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_standard_ogg_opus(void **state)
{
    (void)state;
    char *dir = ts_mkdtemp();
    size_t frames = 16000 * 3;
    int16_t *pcm = ec_secmem_alloc(frames * sizeof *pcm);
    voice_like(pcm, frames, 16000);
    sink_buf s = {0};
    ec_encode *e = NULL;
    assert_int_equal(ec_encode_open(&e, &params_16k, collect, &s), EC_OK);
    assert_true(s.len > 0); /* headers are flushed at open */
    assert_memory_equal(s.buf, "OggS", 4);
    /* in uneven pieces, as capture delivers them */
    size_t off = 0, step = 317;
    while (off < frames) {
        size_t n = frames - off < step ? frames - off : step;
        assert_int_equal(ec_encode_write(e, pcm + off, n), EC_OK);
        off += n;
    }
    assert_int_equal(ec_encode_finish(e), EC_OK);
    assert_true(ec_encode_frames(e) == frames);
    assert_int_equal(ec_encode_write(e, pcm, 1), EC_ERR_INVALID);
    ec_encode_free(&e);
    assert_null(e);
    /* 3 s with pages at most every 200 ms: well over 10 pages */
    assert_true(s.pages >= 15);

    char *ogg = ts_strf("%s/out.opus", dir);
    char *wav = ts_strf("%s/out.wav", dir);
    FILE *f = fopen(ogg, "wb");
    fwrite(s.buf, 1, s.len, f);
    fclose(f);
    char *cmd = ts_strf("opusinfo %s >/dev/null 2>&1", ogg);
    assert_int_equal(run(cmd), 0);
    free(cmd);
    cmd = ts_strf("opusdec --quiet --rate 16000 %s %s", ogg, wav);
    assert_int_equal(run(cmd), 0);
    free(cmd);

    /* decoded length within one 20 ms frame of the source, and similar */
    f = fopen(wav, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f) - 44;
    fseek(f, 44, SEEK_SET);
    size_t got = (size_t)bytes / 2;
    assert_true(labs((long)got - (long)frames) <= 320);
    int16_t *dec = malloc(got * sizeof *dec);
    assert_int_equal(fread(dec, 2, got, f), got);
    fclose(f);
    double sxy = 0, sxx = 0, syy = 0;
    size_t n = got < frames ? got : frames;
    for (size_t i = 0; i < n; i++) {
        sxy += (double)pcm[i] * dec[i];
        sxx += (double)pcm[i] * pcm[i];
        syy += (double)dec[i] * dec[i];
    }
    double corr = sxy / sqrt(sxx * syy);
    print_message("correlation source/decoded: %.3f\n", corr);
    assert_true(corr > 0.9);

    free(dec);
    free(ogg);
    free(wav);
    free(s.buf);
    ec_secmem_free(pcm);
    ts_rmtree(dir);
    free(dir);
}

static void test_sink_failure_stops(void **state)
{
    (void)state;
    size_t frames = 16000 * 2;
    int16_t *pcm = ec_secmem_alloc(frames * sizeof *pcm);
    voice_like(pcm, frames, 16000);
    sink_buf s = {.fail_after = 4};
    ec_encode *e = NULL;
    assert_int_equal(ec_encode_open(&e, &params_16k, collect, &s), EC_OK);
    ec_status st = EC_OK;
    for (size_t off = 0; off < frames && st == EC_OK; off += 1600)
        st = ec_encode_write(e, pcm + off, 1600);
    if (st == EC_OK)
        st = ec_encode_finish(e);
    assert_int_equal(st, EC_ERR_IO);
    ec_encode_free(&e);
    free(s.buf);

    /* a sink that fails on the headers fails open */
    sink_buf s2 = {.fail_after = 1};
    assert_int_equal(ec_encode_open(&e, &params_16k, collect, &s2), EC_ERR_IO);
    assert_null(e);
    free(s2.buf);
    ec_secmem_free(pcm);
}

static void test_every_setting_encodes(void **state)
{
    (void)state;
    /* each rate/channel/vbr/application/frame combination produces a stream */
    static const uint32_t rates[] = {8000, 16000, 48000};
    static const int frame_ms[] = {10, 20, 40, 60};
    for (size_t r = 0; r < 3; r++) {
        for (int ch = 1; ch <= 2; ch++) {
            ec_encode_params p = params_16k;
            p.rate_hz = rates[r];
            p.channels = (uint8_t)ch;
            p.vbr = (int)((r + (size_t)ch) % 3);
            p.application = ch - 1;
            p.frame_ms = frame_ms[(r + (size_t)ch) % 4];
            size_t frames = rates[r] / 2;
            int16_t *pcm = ec_secmem_alloc(frames * (size_t)ch * sizeof *pcm);
            voice_like(pcm, frames * (size_t)ch, rates[r]);
            sink_buf s = {0};
            ec_encode *e = NULL;
            assert_int_equal(ec_encode_open(&e, &p, collect, &s), EC_OK);
            assert_int_equal(ec_encode_write(e, pcm, frames), EC_OK);
            assert_int_equal(ec_encode_finish(e), EC_OK);
            ec_encode_free(&e);
            assert_true(s.len > 100);
            assert_non_null(memmem(s.buf, s.len, "OpusHead", 8));
            free(s.buf);
            ec_secmem_free(pcm);
        }
    }
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_standard_ogg_opus),
        cmocka_unit_test(test_sink_failure_stops),
        cmocka_unit_test(test_every_setting_encodes),
    };
    return cmocka_run_group_tests_name("encode", tests, NULL, NULL);
}
