/*
 * Segmenter: exact frame counts per segment whatever the block size, start
 * times from the sample clock, VAD gating (silence neither opens nor fills a
 * segment, hangover keeps short pauses, long speech is still cut at the
 * maximum length), sink errors stop at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgecap/segment.h"

#define RATE 16000
#define MAX_SEGS 16

typedef struct {
    int64_t start[MAX_SEGS];
    uint64_t frames[MAX_SEGS];
    int16_t first_sample[MAX_SEGS];
    size_t n;
    bool open;
    int16_t *out; /* everything passed on, in order */
    size_t out_len;
    int fail_begin_at; /* 1-based segment number whose begin fails */
} recorder;

static ec_status rec_begin(void *user, int64_t start_utc_ms)
{
    recorder *r = user;
    assert_false(r->open);
    if (r->fail_begin_at != 0 && (int)r->n + 1 == r->fail_begin_at)
        return EC_ERR_FULL;
    assert_true(r->n < MAX_SEGS);
    r->start[r->n] = start_utc_ms;
    r->frames[r->n] = 0;
    r->open = true;
    return EC_OK;
}

static ec_status rec_pcm(void *user, const int16_t *pcm, size_t frames)
{
    recorder *r = user;
    assert_true(r->open);
    if (r->frames[r->n] == 0)
        r->first_sample[r->n] = pcm[0];
    r->frames[r->n] += frames;
    memcpy(r->out + r->out_len, pcm, frames * sizeof *pcm);
    r->out_len += frames;
    return EC_OK;
}

static ec_status rec_end(void *user)
{
    recorder *r = user;
    assert_true(r->open);
    r->open = false;
    r->n++;
    return EC_OK;
}

static const ec_segment_sink sink = {rec_begin, rec_pcm, rec_end};

static void push_in_blocks(ec_segmenter *s, const int16_t *pcm, size_t frames, size_t block)
{
    for (size_t off = 0; off < frames; off += block) {
        size_t n = frames - off < block ? frames - off : block;
        assert_int_equal(ec_segmenter_push(s, pcm + off, n), EC_OK);
    }
}

static void test_exact_lengths_any_block_size(void **state)
{
    (void)state;
    size_t frames = RATE * 5 / 2;
    int16_t *pcm = malloc(frames * sizeof *pcm);
    for (size_t i = 0; i < frames; i++)
        pcm[i] = (int16_t)(i % 30000);
    static const size_t blocks[] = {1, 320, 777, 16000, 40000};
    for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
        recorder r = {.out = malloc(frames * sizeof(int16_t))};
        ec_segmenter s;
        ec_segment_params p = {.rate_hz = RATE, .channels = 1, .segment_seconds = 1};
        ec_segmenter_init(&s, &p, 1795000000000LL, &sink, &r);
        push_in_blocks(&s, pcm, frames, blocks[b]);
        assert_int_equal(ec_segmenter_finish(&s), EC_OK);
        assert_int_equal(r.n, 3);
        assert_true(r.frames[0] == RATE && r.frames[1] == RATE && r.frames[2] == RATE / 2);
        assert_true(r.start[0] == 1795000000000LL);
        assert_true(r.start[1] == 1795000001000LL);
        assert_true(r.start[2] == 1795000002000LL);
        /* nothing lost, nothing duplicated, in order */
        assert_int_equal(r.out_len, frames);
        assert_memory_equal(r.out, pcm, frames * sizeof *pcm);
        assert_true(s.stats.segments == 3 && s.stats.frames_gated == 0);
        free(r.out);
    }
    free(pcm);
}

/* A gap (consent withheld frames) ends the open segment at once and moves
 * the sample clock on, so the next segment starts at its true time. */
static void test_skip_cuts_and_moves_the_clock(void **state)
{
    (void)state;
    int16_t pcm[RATE / 2];
    for (size_t i = 0; i < RATE / 2; i++)
        pcm[i] = (int16_t)(i + 1);
    recorder r = {.out = malloc(2 * sizeof pcm)};
    ec_segmenter s;
    ec_segment_params p = {.rate_hz = RATE, .channels = 1, .segment_seconds = 10};
    ec_segmenter_init(&s, &p, 1795000000000LL, &sink, &r);
    push_in_blocks(&s, pcm, RATE / 4, 320);
    assert_true(r.open);
    assert_int_equal(ec_segmenter_skip(&s, RATE * 3 / 4), EC_OK); /* 750 ms withheld */
    assert_false(r.open);
    assert_int_equal(r.n, 1);
    assert_int_equal(ec_segmenter_skip(&s, 0), EC_OK); /* nothing open: nothing to end */
    assert_int_equal(r.n, 1);
    push_in_blocks(&s, pcm, RATE / 2, 320);
    assert_int_equal(ec_segmenter_finish(&s), EC_OK);
    assert_int_equal(r.n, 2);
    assert_true(r.frames[0] == RATE / 4 && r.frames[1] == RATE / 2);
    assert_true(r.start[0] == 1795000000000LL);
    assert_true(r.start[1] == 1795000001000LL); /* 250 ms + 750 ms later */
    assert_int_equal(r.first_sample[1], 1);
    free(r.out);
}

static void tone(int16_t *out, size_t frames, double amp)
{
    for (size_t i = 0; i < frames; i++)
        out[i] = (int16_t)(amp * sin(2 * M_PI * 300.0 * (double)i / RATE));
}

static void test_vad_gates_silence(void **state)
{
    (void)state;
    /* 1 s silence, 0.5 s speech, 2 s silence, 0.3 s speech, 1 s silence */
    size_t lens[] = {RATE, RATE / 2, 2 * RATE, RATE * 3 / 10, RATE};
    size_t total = 0;
    for (int i = 0; i < 5; i++)
        total += lens[i];
    int16_t *pcm = calloc(total, sizeof *pcm);
    tone(pcm + RATE, RATE / 2, 8000);
    tone(pcm + RATE + RATE / 2 + 2 * RATE, RATE * 3 / 10, 8000);
    /* low-level noise in the "silence" stays below the threshold */
    for (size_t i = 0; i < total; i++)
        pcm[i] = (int16_t)(pcm[i] + (int16_t)((i * 7919) % 21) - 10);

    recorder r = {.out = malloc(total * sizeof(int16_t))};
    ec_segmenter s;
    ec_segment_params p = {.rate_hz = RATE,
                           .channels = 1,
                           .segment_seconds = 60,
                           .vad = true,
                           .vad_threshold_dbfs = -40,
                           .vad_hangover_ms = 300};
    ec_segmenter_init(&s, &p, 0, &sink, &r);
    push_in_blocks(&s, pcm, total, 320);
    assert_int_equal(ec_segmenter_finish(&s), EC_OK);
    assert_int_equal(r.n, 2);
    assert_true(r.start[0] == 1000);
    assert_true(r.start[1] == 3500);
    /* speech plus the hangover */
    assert_true(r.frames[0] == RATE / 2 + RATE * 3 / 10);
    assert_true(r.frames[1] == RATE * 3 / 10 + RATE * 3 / 10);
    assert_true(s.stats.frames_gated == total - r.frames[0] - r.frames[1]);
    free(r.out);
    free(pcm);
}

static void test_vad_long_speech_still_cut(void **state)
{
    (void)state;
    size_t frames = RATE * 5 / 2;
    int16_t *pcm = malloc(frames * sizeof *pcm);
    tone(pcm, frames, 10000);
    recorder r = {.out = malloc(frames * sizeof(int16_t))};
    ec_segmenter s;
    ec_segment_params p = {.rate_hz = RATE,
                           .channels = 1,
                           .segment_seconds = 1,
                           .vad = true,
                           .vad_threshold_dbfs = -40,
                           .vad_hangover_ms = 500};
    ec_segmenter_init(&s, &p, 0, &sink, &r);
    push_in_blocks(&s, pcm, frames, 320);
    assert_int_equal(ec_segmenter_finish(&s), EC_OK);
    assert_int_equal(r.n, 3);
    assert_true(r.frames[0] == RATE && r.frames[1] == RATE && r.frames[2] == RATE / 2);
    assert_memory_equal(r.out, pcm, frames * sizeof *pcm);
    free(r.out);
    free(pcm);
}

static void test_stereo_and_sink_error(void **state)
{
    (void)state;
    size_t frames = RATE * 2;
    int16_t *pcm = malloc(frames * 2 * sizeof *pcm);
    for (size_t i = 0; i < frames * 2; i++)
        pcm[i] = (int16_t)i;
    recorder r = {.out = malloc(frames * 2 * sizeof(int16_t)), .fail_begin_at = 2};
    ec_segmenter s;
    ec_segment_params p = {.rate_hz = RATE, .channels = 2, .segment_seconds = 1};
    ec_segmenter_init(&s, &p, 0, &sink, &r);
    ec_status st = EC_OK;
    for (size_t off = 0; off < frames && st == EC_OK; off += 500)
        st = ec_segmenter_push(&s, pcm + off * 2, frames - off < 500 ? frames - off : 500);
    assert_int_equal(st, EC_ERR_FULL);
    assert_int_equal(r.n, 1);
    assert_true(r.frames[0] == RATE);
    assert_int_equal(r.first_sample[0], 0);
    free(r.out);
    free(pcm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_lengths_any_block_size),
        cmocka_unit_test(test_skip_cuts_and_moves_the_clock),
        cmocka_unit_test(test_vad_gates_silence),
        cmocka_unit_test(test_vad_long_speech_still_cut),
        cmocka_unit_test(test_stereo_and_sink_error),
    };
    return cmocka_run_group_tests_name("segment", tests, NULL, NULL);
}
