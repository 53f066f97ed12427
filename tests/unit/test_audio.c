/*
 * HAL audio sources, for real: the ALSA source captures through alsa-lib's
 * `file` PCM (infile over a null slave, defined in this test's own ALSA
 * config), byte for byte; through a `plug` PCM for other rates/channels; and
 * the file source reads WAV and raw, refusing a WAV whose format differs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <alsa/asoundlib.h>
#include <stdlib.h>
#include <string.h>

#include "edgecap/audio.h"
#include "edgecap/secmem.h"
#include "support.h"

#define RATE 16000
#define SECONDS 2

typedef struct {
    char *dir;
    char *raw_path;
    int16_t *pcm; /* RATE * SECONDS samples, mono */
    size_t n;
} fixture;

static void make_pcm(int16_t *out, size_t n, unsigned seed)
{
    /* deterministic, non-periodic: a small LCG with a sine-ish envelope */
    uint32_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        out[i] = (int16_t)((int32_t)(x >> 16) - 32768) / 4;
    }
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* An ALSA configuration that defines everything inline (ALSA_CONFIG_PATH
 * replaces alsa.conf). The infile is padded with silence: reads past its end
 * return stale bytes, so tests stop at a known length. */
static void use_alsa_config(const fixture *f)
{
    char *conf = ts_strf("pcm.ectest {\n type file\n slave.pcm { type null }\n"
                         " file \"/dev/null\"\n infile \"%s\"\n format \"raw\"\n}\n"
                         "pcm.ecplug {\n type plug\n slave { pcm \"ectest\" channels 1 rate %d"
                         " format S16_LE }\n}\n",
                         f->raw_path, RATE);
    char *path = ts_write_file(f->dir, "asound.conf", 0644, conf);
    setenv("ALSA_CONFIG_PATH", path, 1);
    snd_config_update_free_global(); /* re-read on the next open */
    free(conf);
    free(path);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = ts_mkdtemp();
    f->n = RATE * SECONDS;
    f->pcm = calloc(f->n + RATE, sizeof(int16_t)); /* + 1 s of silence padding */
    make_pcm(f->pcm, f->n, 7);
    f->raw_path = ts_strf("%s/in.raw", f->dir);
    write_bytes(f->raw_path, f->pcm, (f->n + RATE) * sizeof(int16_t));
    use_alsa_config(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ts_rmtree(f->dir);
    free(f->dir);
    free(f->raw_path);
    free(f->pcm);
    free(f);
    return 0;
}

static size_t read_n(ec_audio_source *src, int16_t *buf, size_t frames, size_t chunk)
{
    size_t total = 0;
    while (total < frames) {
        size_t want = frames - total < chunk ? frames - total : chunk;
        size_t got = 0;
        assert_int_equal(src->ops->read(src->ctx, buf + total * src->channels, want, &got), EC_OK);
        if (got == 0)
            break;
        total += got;
    }
    return total;
}

static void test_alsa_captures_byte_for_byte(void **state)
{
    fixture *f = *state;
    ec_audio_source src;
    ec_audio_params p = {.device_or_path = "ectest",
                         .rate_hz = RATE,
                         .channels = 1,
                         .period_frames = 320,
                         .buffer_frames = 3200};
    assert_int_equal(ec_audio_alsa_open(&src, &p), EC_OK);
    assert_string_equal(src.ops->name, "alsa");
    int16_t *buf = ec_secmem_alloc(f->n * sizeof(int16_t));
    assert_int_equal(read_n(&src, buf, f->n, 320), f->n);
    assert_memory_equal(buf, f->pcm, f->n * sizeof(int16_t));
    ec_audio_stats st;
    src.ops->get_stats(src.ctx, &st);
    assert_true(st.frames_read == f->n);
    assert_int_equal(st.overruns, 0);
    ec_audio_close(&src);
    ec_audio_close(&src); /* twice is safe */
    ec_secmem_free(buf);
}

static void test_alsa_plug_converts_channels(void **state)
{
    (void)state;
    ec_audio_source src;
    /* The file PCM is mono; plug duplicates it into two channels. */
    ec_audio_params p = {.device_or_path = "ecplug",
                         .rate_hz = RATE,
                         .channels = 2,
                         .period_frames = 320,
                         .buffer_frames = 3200};
    assert_int_equal(ec_audio_alsa_open(&src, &p), EC_OK);
    size_t frames = RATE / 2;
    int16_t *buf = ec_secmem_alloc(frames * 2 * sizeof(int16_t));
    assert_int_equal(read_n(&src, buf, frames, 160), frames);
    size_t same = 0;
    for (size_t i = 0; i < frames; i++)
        same += buf[2 * i] == buf[2 * i + 1];
    assert_int_equal(same, frames);
    ec_audio_close(&src);
    ec_secmem_free(buf);
}

static void test_alsa_interrupt_ends_reads(void **state)
{
    (void)state;
    ec_audio_source src;
    ec_audio_params p = {.device_or_path = "ectest",
                         .rate_hz = RATE,
                         .channels = 1,
                         .period_frames = 320,
                         .buffer_frames = 3200};
    assert_int_equal(ec_audio_alsa_open(&src, &p), EC_OK);
    assert_false(src.realtime); /* a PCM without a card is not paced */
    assert_non_null(src.ops->interrupt);
    int16_t *buf = ec_secmem_alloc(320 * sizeof(int16_t));
    size_t got = 0;
    assert_int_equal(src.ops->read(src.ctx, buf, 320, &got), EC_OK);
    assert_int_equal(got, 320);
    src.ops->interrupt(src.ctx);
    got = 99;
    assert_int_equal(src.ops->read(src.ctx, buf, 320, &got), EC_OK);
    assert_int_equal(got, 0);
    ec_audio_close(&src);
    ec_secmem_free(buf);
}

static void test_alsa_errors(void **state)
{
    (void)state;
    ec_audio_source src;
    ec_audio_params p = {.device_or_path = "no_such_pcm",
                         .rate_hz = RATE,
                         .channels = 1,
                         .period_frames = 320,
                         .buffer_frames = 3200};
    ts_log_begin();
    assert_int_not_equal(ec_audio_alsa_open(&src, &p), EC_OK);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=alsa_open_failed"));
    assert_non_null(strstr(log, "device=no_such_pcm"));
    assert_null(src.ops);
    free(log);
}

static void wav_header(uint8_t *h, uint32_t rate, uint16_t channels, uint16_t bits,
                       uint32_t data_bytes)
{
    memcpy(h, "RIFF", 4);
    uint32_t v = 36 + data_bytes;
    memcpy(h + 4, &v, 4);
    memcpy(h + 8, "WAVEfmt ", 8);
    v = 16;
    memcpy(h + 16, &v, 4);
    uint16_t s = 1;
    memcpy(h + 20, &s, 2);
    memcpy(h + 22, &channels, 2);
    memcpy(h + 24, &rate, 4);
    v = rate * channels * bits / 8;
    memcpy(h + 28, &v, 4);
    s = (uint16_t)(channels * bits / 8);
    memcpy(h + 32, &s, 2);
    memcpy(h + 34, &bits, 2);
    memcpy(h + 36, "data", 4);
    memcpy(h + 40, &data_bytes, 4);
}

static void test_file_wav_and_raw(void **state)
{
    fixture *f = *state;
    size_t bytes = f->n * sizeof(int16_t);
    uint8_t *wav = malloc(44 + bytes + 10);
    wav_header(wav, RATE, 1, 16, (uint32_t)bytes);
    memcpy(wav + 44, f->pcm, bytes);
    memcpy(wav + 44 + bytes, "LIST\0\0\0\0", 8); /* trailing chunk is not audio */
    char *path = ts_strf("%s/in.wav", f->dir);
    write_bytes(path, wav, 44 + bytes + 8);

    ec_audio_source src;
    ec_audio_params p = {.device_or_path = path, .rate_hz = RATE, .channels = 1};
    assert_int_equal(ec_audio_file_open(&src, &p), EC_OK);
    int16_t *buf = ec_secmem_alloc(bytes + 64);
    assert_int_equal(read_n(&src, buf, f->n + 16, 1000), f->n); /* stops at the data end */
    assert_memory_equal(buf, f->pcm, bytes);
    size_t got = 1;
    assert_int_equal(src.ops->read(src.ctx, buf, 10, &got), EC_OK);
    assert_int_equal(got, 0);
    ec_audio_close(&src);

    /* raw: everything in the file is audio */
    p.device_or_path = f->raw_path;
    assert_int_equal(ec_audio_file_open(&src, &p), EC_OK);
    assert_int_equal(read_n(&src, buf, f->n, 999), f->n);
    assert_memory_equal(buf, f->pcm, bytes);
    ec_audio_close(&src);

    /* a WAV at another rate, or 8-bit, or not a WAV at all, is refused */
    wav_header(wav, 48000, 1, 16, (uint32_t)bytes);
    write_bytes(path, wav, 44 + bytes);
    p.device_or_path = path;
    ts_log_begin();
    assert_int_equal(ec_audio_file_open(&src, &p), EC_ERR_UNSUPPORTED);
    wav_header(wav, RATE, 1, 8, (uint32_t)bytes);
    write_bytes(path, wav, 44 + bytes);
    assert_int_equal(ec_audio_file_open(&src, &p), EC_ERR_UNSUPPORTED);
    write_bytes(path, "not a wav file at all, definitely", 33);
    assert_int_equal(ec_audio_file_open(&src, &p), EC_ERR_UNSUPPORTED);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=audio_file_format"));
    assert_non_null(strstr(log, "want_rate_hz=16000"));
    assert_non_null(strstr(log, "reason=\"not a RIFF/WAVE file\""));
    free(log);
    p.device_or_path = "/nonexistent/x.wav";
    ts_log_begin();
    assert_int_equal(ec_audio_file_open(&src, &p), EC_ERR_NOT_FOUND);
    free(ts_log_end());

    ec_secmem_free(buf);
    free(wav);
    free(path);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alsa_captures_byte_for_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alsa_plug_converts_channels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alsa_interrupt_ends_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alsa_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_wav_and_raw, setup, teardown),
    };
    return cmocka_run_group_tests_name("audio", tests, NULL, NULL);
}
