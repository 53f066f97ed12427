/*
 * Capture pipeline with its two threads: every frame of a source that is not
 * real time reaches the spool (backpressure, no drops); a real-time source
 * whose worker stalls overruns the queue, which is counted and logged and
 * never crashes; stopping mid-segment closes the segment cleanly; a full
 * spool refuses frames and counts them; consent turned off closes the segment
 * and withholds the frames until it is on again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "edgecap/capture.h"
#include "edgecap/config.h"
#include "edgecap/fault.h"
#include "edgecap/keystore.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/spool.h"
#include "support.h"

#define RATE 16000

/* A generated source: a tone, `total` frames (0 = endless), real time or not. */
typedef struct {
    uint64_t total;
    uint64_t pos;
    ec_audio_stats stats;
    /* consent switch file flipped to "0" / "1" when a read starts at these
     * frames (0 = never) */
    const char *switch_path;
    uint64_t off_at, on_at;
} gen_source;

static void flip(const char *path, const char *content)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static ec_status gen_read(void *ctx, int16_t *pcm, size_t frames, size_t *got)
{
    gen_source *g = ctx;
    if (g->switch_path != NULL && g->off_at != 0 && g->pos == g->off_at)
        flip(g->switch_path, "0\n");
    if (g->switch_path != NULL && g->on_at != 0 && g->pos == g->on_at)
        flip(g->switch_path, "1\n");
    if (g->total != 0 && g->total - g->pos < frames)
        frames = (size_t)(g->total - g->pos);
    for (size_t i = 0; i < frames; i++)
        pcm[i] = (int16_t)(9000 * sin(2 * M_PI * 220.0 * (double)(g->pos + i) / RATE));
    g->pos += frames;
    g->stats.frames_read += frames;
    *got = frames;
    return EC_OK;
}

static void gen_stats(void *ctx, ec_audio_stats *s)
{
    *s = ((gen_source *)ctx)->stats;
}

static void gen_close(void *ctx)
{
    (void)ctx;
}

static const ec_audio_ops gen_ops = {
    .name = "generator", .read = gen_read, .get_stats = gen_stats, .close = gen_close};

/* A device that delivers one block and then nothing, ever: a read blocks
 * until interrupted. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool interrupted;
    int reads;
    ec_audio_stats stats;
} stuck_source;

static ec_status stuck_read(void *ctx, int16_t *pcm, size_t frames, size_t *got)
{
    stuck_source *s = ctx;
    pthread_mutex_lock(&s->lock);
    if (s->reads++ == 0) {
        memset(pcm, 0, frames * sizeof *pcm);
        *got = frames;
    } else {
        while (!s->interrupted)
            pthread_cond_wait(&s->cond, &s->lock);
        *got = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return EC_OK;
}

static void stuck_interrupt(void *ctx)
{
    stuck_source *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->interrupted = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void stuck_stats(void *ctx, ec_audio_stats *st)
{
    *st = ((stuck_source *)ctx)->stats;
}

static const ec_audio_ops stuck_ops = {.name = "stuck",
                                       .read = stuck_read,
                                       .get_stats = stuck_stats,
                                       .interrupt = stuck_interrupt,
                                       .close = gen_close};

typedef struct {
    char *dir;
    ec_keystore ks;
    ec_spool *spool;
    gen_source gen;
    ec_audio_source src;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = ts_mkdtemp();
    char *ksdir = ts_strf("%s/keys", f->dir);
    char *spdir = ts_strf("%s/spool", f->dir);
    assert_int_equal(ec_keystore_file_open(&f->ks, ksdir), EC_OK);
    ec_spool_params sp = {.dir = spdir,
                          .quota_bytes = 1 << 30,
                          .when_full = EC_WHEN_FULL_DROP_OLDEST,
                          .keystore = &f->ks};
    assert_int_equal(ec_spool_open(&f->spool, &sp), EC_OK);
    free(ksdir);
    free(spdir);
    f->src = (ec_audio_source){.ops = &gen_ops, .ctx = &f->gen, .rate_hz = RATE, .channels = 1};
    ec_fault_reset();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ec_spool_close(&f->spool);
    ec_keystore_close(&f->ks);
    ts_rmtree(f->dir);
    free(f->dir);
    free(f);
    ec_fault_reset();
    return 0;
}

static ec_capture_params params(fixture *f, uint64_t max_frames, uint32_t queue_blocks)
{
    ec_capture_params p = {
        .source = &f->src,
        .spool = f->spool,
        .device_id = "cap-1",
        .segment = {.segment_seconds = 1},
        .encode = {.bitrate_bps = 24000,
                   .complexity = 3,
                   .vbr = EC_VBR_ON,
                   .application = EC_APP_VOIP,
                   .frame_ms = 20,
                   .max_page_ms = 500},
        .block_frames = 320,
        .queue_blocks = queue_blocks,
        .max_frames = max_frames,
        .start_utc_ms = 1795000000000LL,
    };
    return p;
}

static uint64_t spooled_frames(fixture *f, size_t *segments)
{
    ec_spool_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(ec_spool_list(f->spool, &e, &n), EC_OK);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(e[i].state, EC_SEG_CLOSED);
        assert_int_equal(ec_spool_read(f->spool, e[i].name, NULL, NULL, NULL), EC_OK);
        total += e[i].pcm_frames;
        if (i > 0)
            assert_true(e[i].meta.sequence > e[i - 1].meta.sequence);
    }
    free(e);
    *segments = n;
    return total;
}

static void wait_finished(ec_capture *c)
{
    for (int i = 0; i < 3000 && !ec_capture_finished(c); i++)
        usleep(10 * 1000);
    assert_true(ec_capture_finished(c));
}

static void test_unpaced_source_loses_nothing(void **state)
{
    fixture *f = *state;
    f->gen.total = RATE * 5 / 2; /* ends by itself */
    ec_capture_params p = params(f, 0, 2);
    ec_capture *c = NULL;
    ts_log_begin();
    assert_int_equal(ec_capture_start(&c, &p), EC_OK);
    wait_finished(c);
    ec_capture_stats st;
    ec_capture_join(&c, &st);
    free(ts_log_end());
    assert_null(c);
    assert_true(st.frames_captured == f->gen.total);
    assert_true(st.frames_dropped == 0 && st.overruns == 0);
    assert_true(st.segments_sealed == 3 && st.segments_failed == 0);
    assert_true(st.source_ended);
    size_t n;
    assert_true(spooled_frames(f, &n) == f->gen.total);
    assert_int_equal(n, 3);
}

static void test_max_frames_is_exact(void **state)
{
    fixture *f = *state;
    ec_capture_params p = params(f, RATE + 123, 8); /* not a block multiple */
    ec_capture *c = NULL;
    ts_log_begin();
    assert_int_equal(ec_capture_start(&c, &p), EC_OK);
    wait_finished(c);
    ec_capture_stats st;
    ec_capture_join(&c, &st);
    free(ts_log_end());
    assert_true(st.frames_captured == RATE + 123);
    size_t n;
    assert_true(spooled_frames(f, &n) == RATE + 123);
    assert_int_equal(n, 2);
}

static void test_realtime_overrun_counted_not_fatal(void **state)
{
    fixture *f = *state;
    f->src.realtime = true;
    f->gen.total = RATE * 2;
    ec_fault_arm("capture.stall", 2, 6); /* the worker stalls 6 x 50 ms */
    ec_capture_params p = params(f, 0, 2);
    ec_capture *c = NULL;
    ts_log_begin();
    assert_int_equal(ec_capture_start(&c, &p), EC_OK);
    wait_finished(c);
    ec_capture_stats st;
    ec_capture_join(&c, &st);
    char *log = ts_log_end();
    assert_true(st.overruns > 0);
    assert_true(st.frames_dropped > 0);
    assert_true(st.frames_captured == RATE * 2);
    assert_non_null(strstr(log, "event=capture_overrun"));
    free(log);
    /* what was not dropped was sealed */
    size_t n;
    uint64_t sealed = spooled_frames(f, &n);
    assert_true(sealed == st.frames_captured - st.frames_dropped);
}

static void test_stop_closes_open_segment(void **state)
{
    fixture *f = *state;
    f->gen.total = 0; /* endless */
    ec_capture_params p = params(f, 0, 4);
    p.segment.segment_seconds = 3600;
    ec_capture *c = NULL;
    ts_log_begin();
    assert_int_equal(ec_capture_start(&c, &p), EC_OK);
    usleep(200 * 1000);
    ec_capture_stop(c);
    ec_capture_stats st;
    ec_capture_join(&c, &st);
    free(ts_log_end());
    assert_true(st.frames_captured > 0);
    assert_true(st.segments_sealed == 1);
    size_t n;
    assert_true(spooled_frames(f, &n) == st.frames_captured);
    assert_int_equal(n, 1);
}

static void test_stop_interrupts_a_silent_device(void **state)
{
    fixture *f = *state;
    stuck_source stuck = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    f->src = (ec_audio_source){
        .ops = &stuck_ops, .ctx = &stuck, .rate_hz = RATE, .channels = 1, .realtime = true};
    ec_capture_params p = params(f, 0, 4);
    ec_capture *c = NULL;
    ts_log_begin();
    assert_int_equal(ec_capture_start(&c, &p), EC_OK);
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&stuck.lock);
        int reads = stuck.reads;
        pthread_mutex_unlock(&stuck.lock);
        if (reads >= 2)
            break;
        usleep(2000);
    }
    /* the capture thread is blocked in a read that will never return by
     * itself; join must still come back, with the block sealed */
    ec_capture_stats st;
    ec_capture_join(&c, &st);
    free(ts_log_end());
    assert_true(stuck.interrupted);
    assert_true(st.frames_captured == 320);
    assert_true(st.segments_sealed == 1);
}

static void test_full_spool_refuses_and_counts(void **state)
{
    fixture *f = *state;
    ec_spool_close(&f->spool);
    char *spdir = ts_strf("%s/spool2", f->dir);
    ec_spool_params sp = {.dir = spdir,
                          .quota_bytes = 6000,
                          .when_full = EC_WHEN_FULL_REFUSE_NEW,
                          .keystore = &f->ks};
    assert_int_equal(ec_spool_open(&f->spool, &sp), EC_OK);
    free(spdir);
    f->gen.total = RATE * 4;
    ec_capture_params p = params(f, 0, 4);
    ec_capture *c = NULL;
    ts_log_begin();
    assert_int_equal(ec_capture_start(&c, &p), EC_OK);
    wait_finished(c);
    ec_capture_stats st;
    ec_capture_join(&c, &st);
    char *log = ts_log_end();
    assert_true(st.frames_refused > 0);
    assert_non_null(strstr(log, "event=spool_full"));
    free(log);
    assert_true(ec_spool_used_bytes(f->spool) <= 6000);
    size_t n;
    uint64_t sealed = spooled_frames(f, &n);
    assert_true(sealed < st.frames_captured);
}

static void test_consent_off_closes_segment_and_withholds(void **state)
{
    fixture *f = *state;
    char *sw_path = ts_strf("%s/switch", f->dir);
    flip(sw_path, "1\n");
    f->gen.total = RATE * 3;
    f->gen.switch_path = sw_path;
    f->gen.off_at = RATE; /* the second second is withheld */
    f->gen.on_at = RATE * 2;
    ec_switch sw;
    assert_int_equal(ec_switch_file_open(&sw, sw_path), EC_OK);
    ec_consent *gate = NULL;
    ec_consent_params cp = {.sw = &sw};
    assert_int_equal(ec_consent_new(&gate, &cp), EC_OK);
    ec_capture_params p = params(f, 0, 4);
    p.segment.segment_seconds = 10;
    p.consent = gate;
    ec_capture *c = NULL;
    ts_log_begin();
    assert_int_equal(ec_capture_start(&c, &p), EC_OK);
    wait_finished(c);
    ec_capture_stats st;
    ec_capture_join(&c, &st);
    char *log = ts_log_end();
    assert_true(st.frames_captured == RATE * 3);
    assert_true(st.frames_withheld == RATE);
    assert_true(st.segments_sealed == 2 && st.segments_failed == 0);
    assert_non_null(strstr(log, "event=consent_off reason=switch"));
    assert_non_null(strstr(log, "frames_withheld=16000"));
    free(log);

    /* one segment up to the off, a new one from the on, at its true time */
    ec_spool_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(ec_spool_list(f->spool, &e, &n), EC_OK);
    assert_int_equal(n, 2);
    assert_true(e[0].pcm_frames == RATE && e[1].pcm_frames == RATE);
    assert_true(e[0].meta.start_utc_ms == p.start_utc_ms);
    assert_true(e[1].meta.start_utc_ms == p.start_utc_ms + 2000);
    free(e);
    ec_consent_free(&gate);
    ec_switch_close(&sw);
    free(sw_path);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unpaced_source_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_frames_is_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_realtime_overrun_counted_not_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_closes_open_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_interrupts_a_silent_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_spool_refuses_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consent_off_closes_segment_and_withholds, setup,
                                        teardown),
    };
    int rc = cmocka_run_group_tests_name("capture", tests, NULL, NULL);
    ec_rng_free();
    return rc;
}
