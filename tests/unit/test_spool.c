/*
 * The encrypted spool: commit and read back; names and sequence numbers that
 * survive restarts; crash recovery of .part files (cut mid-chunk, or after the
 * trailer but before the rename); tampering and misnaming quarantined; both
 * quota policies; crypto-shredding removal; injected I/O failures lose nothing
 * that was flushed; no plaintext in any file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgecap/config.h"
#include "edgecap/fault.h"
#include "edgecap/keystore.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/spool.h"
#include "support.h"

typedef struct {
    char *dir;
    char *spool_dir;
    ec_keystore ks;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = ts_mkdtemp();
    char *ksdir = ts_strf("%s/keys", f->dir);
    assert_int_equal(ec_keystore_file_open(&f->ks, ksdir), EC_OK);
    free(ksdir);
    f->spool_dir = ts_strf("%s/spool", f->dir);
    ec_fault_reset();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ec_keystore_close(&f->ks);
    ts_rmtree(f->dir);
    free(f->dir);
    free(f->spool_dir);
    free(f);
    ec_fault_reset();
    return 0;
}

static ec_spool *open_spool(fixture *f, int64_t quota, int when_full)
{
    ec_spool_params p = {
        .dir = f->spool_dir, .quota_bytes = quota, .when_full = when_full, .keystore = &f->ks};
    ec_spool *s = NULL;
    assert_int_equal(ec_spool_open(&s, &p), EC_OK);
    return s;
}

/* A fake but well-formed Ogg page with a granule position and a body. */
static size_t ogg_page(uint8_t *out, uint64_t granule, const char *body_tag, size_t body_len)
{
    memset(out, 0, 27);
    memcpy(out, "OggS", 4);
    for (int i = 0; i < 8; i++)
        out[6 + i] = (uint8_t)(granule >> (8 * i));
    size_t nseg = (body_len + 254) / 255;
    out[26] = (uint8_t)nseg;
    size_t left = body_len;
    for (size_t i = 0; i < nseg; i++) {
        out[27 + i] = (uint8_t)(left >= 255 ? 255 : left);
        left -= out[27 + i];
    }
    uint8_t *body = out + 27 + nseg;
    for (size_t i = 0; i < body_len; i++)
        body[i] = (uint8_t)(0xA5 ^ i);
    memcpy(body, body_tag, strlen(body_tag));
    return 27 + nseg + body_len;
}

/* The OpusHead page (pre-skip 312) that starts every Opus stream. */
static size_t head_page(uint8_t *out)
{
    static const uint8_t head[19] = "OpusHead\1\1\x38\x01\x80\x3e\0\0\0\0\0";
    size_t n = ogg_page(out, 0, "", sizeof head);
    memcpy(out + n - sizeof head, head, sizeof head);
    return n;
}

static ec_segment_meta meta_for(ec_spool *s, int64_t start_ms)
{
    ec_segment_meta m = {.device_id = "edge-7",
                         .start_utc_ms = start_ms,
                         .sample_rate_hz = 16000,
                         .channels = 1,
                         .codec = EC_SEAL_CODEC_OGG_OPUS};
    assert_int_equal(ec_spool_next_sequence(s, &m.sequence), EC_OK);
    return m;
}

/* Writes one segment of `pages` pages (first: OpusHead with pre-skip 312),
 * flushing after each; returns its name. */
static char *write_segment(ec_spool *s, int64_t start_ms, int pages, bool commit)
{
    ec_segment_meta m = meta_for(s, start_ms);
    ec_spool_writer *w = NULL;
    assert_int_equal(ec_spool_begin(s, &m, &w), EC_OK);
    uint8_t page[4096];
    size_t n = head_page(page);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    assert_int_equal(ec_spool_flush(w), EC_OK);
    for (int i = 1; i < pages; i++) {
        n = ogg_page(page, 312 + (uint64_t)i * 48000, "PLAINTEXT-AUDIO", 1500);
        assert_int_equal(ec_spool_append(w, page, n), EC_OK);
        assert_int_equal(ec_spool_flush(w), EC_OK);
    }
    char name[EC_SPOOL_NAME_MAX];
    ec_spool_segment_name(&m, name, sizeof name);
    if (commit)
        assert_int_equal(ec_spool_commit(&w, (uint64_t)(pages - 1) * 16000), EC_OK);
    else
        ec_spool_abort(&w); /* as if the process died here */
    return strdup(name);
}

typedef struct {
    size_t bytes;
    size_t chunks;
} read_count;

static ec_status count_chunk(void *user, const uint8_t *plain, size_t len)
{
    read_count *c = user;
    (void)plain;
    c->bytes += len;
    c->chunks++;
    return EC_OK;
}

static bool exists(const char *dir, const char *name)
{
    char *p = ts_strf("%s/%s", dir, name);
    struct stat sb;
    bool ok = stat(p, &sb) == 0;
    free(p);
    return ok;
}

static void test_commit_list_read(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *a = write_segment(s, 1795000000000LL, 4, true);
    char *b = write_segment(s, 1795000060000LL, 3, true);
    assert_string_equal(a, "edge-7-20261118T110640Z-0000000000");

    struct stat sb;
    assert_int_equal(stat(f->spool_dir, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);
    char *path = ts_strf("%s/%s.seg", f->spool_dir, a);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    free(path);
    char *q = ts_strf("%s/quarantine", f->spool_dir);
    assert_int_equal(stat(q, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);
    free(q);

    ec_spool_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(ec_spool_list(s, &e, &n), EC_OK);
    assert_int_equal(n, 2);
    assert_string_equal(e[0].name, a);
    assert_string_equal(e[1].name, b);
    assert_true(e[0].meta.sequence == 0 && e[1].meta.sequence == 1);
    assert_true(e[0].pcm_frames == 3 * 16000);
    assert_int_equal(e[0].state, EC_SEG_CLOSED);
    free(e);

    read_count c = {0};
    ec_spool_entry entry;
    assert_int_equal(ec_spool_read(s, a, count_chunk, &c, &entry), EC_OK);
    assert_int_equal(c.chunks, 4); /* one chunk per flushed page */
    assert_true(entry.pcm_frames == 3 * 16000);
    assert_int_equal(ec_spool_read(s, "edge-7-20261118T110640Z-0000000099", NULL, NULL, NULL),
                     EC_ERR_NOT_FOUND);
    assert_int_equal(ec_spool_read(s, "../escape", NULL, NULL, NULL), EC_ERR_INVALID);

    ec_spool_stats st;
    ec_spool_get_stats(s, &st);
    assert_int_equal(st.closed, 2);
    free(a);
    free(b);
    ec_spool_close(&s);
}

static void test_sequence_survives_restart_and_removal(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *a = write_segment(s, 1795000000000LL, 2, true);
    char *b = write_segment(s, 1795000001000LL, 2, true);
    assert_int_equal(ec_spool_remove(s, a), EC_OK);
    assert_int_equal(ec_spool_remove(s, b), EC_OK);
    assert_false(exists(f->spool_dir, "edge-7-20261118T110640Z-0000000000.seg"));
    ec_spool_close(&s);
    s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    uint64_t seq;
    assert_int_equal(ec_spool_next_sequence(s, &seq), EC_OK);
    assert_true(seq == 2); /* never reused, though both segments are gone */
    ec_spool_stats st;
    ec_spool_get_stats(s, &st);
    ec_spool_close(&s);
    free(a);
    free(b);
}

static void test_crash_mid_chunk_recovered(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *a = write_segment(s, 1795000000000LL, 5, false);
    ec_spool_close(&s);
    /* half a chunk more, as a crash in the middle of a write leaves it */
    char *part = ts_strf("%s/%s.seg.part", f->spool_dir, a);
    FILE *fp = fopen(part, "ab");
    assert_non_null(fp);
    uint8_t junk[700];
    junk[0] = 0;
    junk[1] = 0;
    junk[2] = 0x10;
    junk[3] = 0;
    memset(junk + 4, 0x5a, sizeof junk - 4);
    fwrite(junk, 1, sizeof junk, fp);
    fclose(fp);

    ts_log_begin();
    s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=segment_recovered"));
    free(log);
    assert_false(exists(f->spool_dir, strrchr(part, '/') + 1));
    read_count c = {0};
    ec_spool_entry e;
    assert_int_equal(ec_spool_read(s, a, count_chunk, &c, &e), EC_OK);
    assert_int_equal(c.chunks, 5);
    /* frames from the last page's granule minus the OpusHead pre-skip */
    assert_true(e.pcm_frames == 4 * 16000);
    ec_spool_stats st;
    ec_spool_get_stats(s, &st);
    assert_int_equal(st.recovered, 1);
    ec_spool_close(&s);
    free(part);
    free(a);
}

static void test_crash_after_trailer_renames_only(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    ec_fault_arm("spool.rename", 0, 1);
    ec_segment_meta m = meta_for(s, 1795000000000LL);
    ec_spool_writer *w = NULL;
    assert_int_equal(ec_spool_begin(s, &m, &w), EC_OK);
    uint8_t page[2048];
    size_t n = ogg_page(page, 1000, "x", 500);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    ts_log_begin();
    assert_int_equal(ec_spool_commit(&w, 12345), EC_ERR_IO);
    free(ts_log_end());
    assert_null(w);
    char name[EC_SPOOL_NAME_MAX];
    ec_spool_segment_name(&m, name, sizeof name);
    char *part = ts_strf("%s/%s.seg.part", f->spool_dir, name);
    struct stat before, after;
    assert_int_equal(stat(part, &before), 0);
    ec_spool_close(&s);

    ts_log_begin();
    s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    free(ts_log_end());
    char *closed = ts_strf("%s/%s.seg", f->spool_dir, name);
    assert_int_equal(stat(closed, &after), 0);
    /* complete already: renamed, not re-sealed (that would reuse a nonce) */
    assert_int_equal(before.st_size, after.st_size);
    ec_spool_entry e;
    assert_int_equal(ec_spool_read(s, name, NULL, NULL, &e), EC_OK);
    assert_true(e.pcm_frames == 12345);
    ec_spool_close(&s);
    free(part);
    free(closed);
}

static void test_failed_fsync_loses_only_unflushed(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    ec_segment_meta m = meta_for(s, 1795000000000LL);
    ec_spool_writer *w = NULL;
    assert_int_equal(ec_spool_begin(s, &m, &w), EC_OK);
    uint8_t page[2048];
    size_t n = head_page(page);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    n = ogg_page(page, 5000, "a", 800);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    assert_int_equal(ec_spool_flush(w), EC_OK);
    ec_fault_arm("spool.fsync", 0, 0);
    n = ogg_page(page, 9000, "b", 800);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    assert_int_equal(ec_spool_flush(w), EC_ERR_IO);
    assert_int_equal(ec_spool_append(w, page, n), EC_ERR_INVALID); /* broken: no more */
    ts_log_begin();
    assert_int_not_equal(ec_spool_commit(&w, 1), EC_OK);
    free(ts_log_end());
    ec_fault_reset();
    ec_spool_close(&s);
    ts_log_begin();
    s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    free(ts_log_end());
    char name[EC_SPOOL_NAME_MAX];
    ec_spool_segment_name(&m, name, sizeof name);
    read_count c = {0};
    assert_int_equal(ec_spool_read(s, name, count_chunk, &c, NULL), EC_OK);
    assert_true(c.chunks >= 1); /* the flushed page is there */
    ec_spool_close(&s);
}

static void test_part_without_audio_removed(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *a = write_segment(s, 1795000000000LL, 1, false); /* Ogg headers only */
    ec_spool_close(&s);
    ts_log_begin();
    s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=segment_empty_removed"));
    free(log);
    char *part = ts_strf("%s.seg.part", a), *closed = ts_strf("%s.seg", a);
    assert_false(exists(f->spool_dir, part));
    assert_false(exists(f->spool_dir, closed));
    ec_spool_close(&s);
    free(part);
    free(closed);
    free(a);
}

static void flip_byte(const char *path, long off);
#define flip_byte_at(path, off) flip_byte((path), (long)(off))

static void test_one_owner_observers_beside(void **state)
{
    fixture *f = *state;
    ec_spool *owner = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *a = write_segment(owner, 1795000000000LL, 3, true);
    /* the owner has a segment open */
    ec_segment_meta m = meta_for(owner, 1795000005000LL);
    ec_spool_writer *w = NULL;
    assert_int_equal(ec_spool_begin(owner, &m, &w), EC_OK);
    uint8_t page[4096];
    size_t n = head_page(page);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    assert_int_equal(ec_spool_flush(w), EC_OK);

    /* a second writer is refused */
    ec_spool_params p = {.dir = f->spool_dir, .quota_bytes = 1 << 30, .keystore = &f->ks};
    ec_spool *second = NULL;
    ts_log_begin();
    assert_int_equal(ec_spool_open(&second, &p), EC_ERR_BUSY);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=spool_busy"));
    free(log);
    assert_null(second);

    /* an observer opens beside it, and leaves the open segment alone */
    p.read_only = true;
    ec_spool *observer = NULL;
    assert_int_equal(ec_spool_open(&observer, &p), EC_OK);
    ec_spool_entry *e = NULL;
    size_t count = 0;
    assert_int_equal(ec_spool_list(observer, &e, &count), EC_OK);
    assert_int_equal(count, 2);
    assert_int_equal(e[0].state, EC_SEG_CLOSED);
    assert_int_equal(e[1].state, EC_SEG_WRITING);
    free(e);
    assert_int_equal(ec_spool_read(observer, a, NULL, NULL, NULL), EC_OK);
    uint64_t seq;
    assert_int_equal(ec_spool_next_sequence(observer, &seq), EC_ERR_BUSY);
    assert_int_equal(ec_spool_remove(observer, a), EC_ERR_BUSY);
    assert_int_equal(ec_spool_quarantine(observer, a, "x"), EC_ERR_BUSY);
    ec_spool_writer *w2 = NULL;
    assert_int_equal(ec_spool_begin(observer, &m, &w2), EC_ERR_BUSY);
    ec_spool_close(&observer);

    /* the owner's segment is intact and commits */
    n = ogg_page(page, 312 + 48000, "PLAINTEXT-AUDIO", 900);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    assert_int_equal(ec_spool_commit(&w, 16000), EC_OK);
    ec_spool_close(&owner);
    /* and once it is gone, the next owner may open */
    owner = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    ec_spool_close(&owner);
    free(a);
}

/* Writes a .part of `pages` flushed pages and returns its path. */
static char *write_part(fixture *f, int pages, char **name)
{
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    *name = write_segment(s, 1795000000000LL, pages, false);
    ec_spool_close(&s);
    return ts_strf("%s/%s.seg.part", f->spool_dir, *name);
}

static void test_damaged_part_quarantined_not_cut(void **state)
{
    fixture *f = *state;
    /* chunk 0 (the Opus headers) flipped: everything after it is whole */
    char *name = NULL;
    char *part = write_part(f, 6, &name);
    flip_byte_at(part, EC_SEAL_HEADER_FIXED_BYTES + 6 + 30);
    struct stat before;
    assert_int_equal(stat(part, &before), 0);
    ts_log_begin();
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "reason=\"a whole chunk does not authenticate\""));
    free(log);
    char *q = ts_strf("%s/quarantine/%s.seg.part", f->spool_dir, name);
    struct stat after;
    assert_int_equal(stat(q, &after), 0);
    assert_int_equal(before.st_size, after.st_size); /* kept whole, as evidence */
    ec_spool_stats st;
    ec_spool_get_stats(s, &st);
    assert_int_equal(st.quarantined, 1);
    assert_int_equal(st.recovered, 0);
    ec_spool_close(&s);
    free(q);
    free(part);
    free(name);
}

static void test_zero_filled_tail_is_a_crash(void **state)
{
    fixture *f = *state;
    char *name = NULL;
    char *part = write_part(f, 4, &name);
    /* blocks the crash allocated but never wrote read back as zeros */
    FILE *fp = fopen(part, "ab");
    uint8_t zeros[3000] = {0};
    fwrite(zeros, 1, sizeof zeros, fp);
    fclose(fp);
    ts_log_begin();
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=segment_recovered"));
    free(log);
    read_count c = {0};
    assert_int_equal(ec_spool_read(s, name, count_chunk, &c, NULL), EC_OK);
    assert_int_equal(c.chunks, 4);
    ec_spool_close(&s);
    free(part);
    free(name);
}

static void test_torn_trailer_recovered_with_own_nonce(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *name = write_segment(s, 1795000000000LL, 4, true);
    ec_spool_close(&s);
    char *seg = ts_strf("%s/%s.seg", f->spool_dir, name);
    char *part = ts_strf("%s/%s.seg.part", f->spool_dir, name);
    struct stat sb;
    assert_int_equal(stat(seg, &sb), 0);
    size_t trailer = EC_SPOOL_TRAILER_BYTES + EC_SEAL_CHUNK_OVERHEAD;
    uint8_t original[64];
    FILE *fp = fopen(seg, "rb");
    fseek(fp, (long)(sb.st_size - (off_t)trailer), SEEK_SET);
    assert_int_equal(fread(original, 1, trailer, fp), trailer);
    fclose(fp);
    /* the crash tore the final chunk before the rename */
    assert_int_equal(truncate(seg, sb.st_size - 5), 0);
    assert_int_equal(rename(seg, part), 0);
    ts_log_begin();
    s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    free(ts_log_end());
    ec_spool_entry e;
    assert_int_equal(ec_spool_read(s, name, NULL, NULL, &e), EC_OK);
    assert_true(e.pcm_frames == 3 * 16000);
    /* same plaintext trailer, same counter, yet different bytes: the
     * recovery's nonce is its own */
    assert_int_equal(stat(seg, &sb), 0);
    uint8_t recovered[64];
    fp = fopen(seg, "rb");
    fseek(fp, (long)(sb.st_size - (off_t)trailer), SEEK_SET);
    assert_int_equal(fread(recovered, 1, trailer, fp), trailer);
    fclose(fp);
    assert_memory_equal(original, recovered, 4); /* same length field */
    assert_memory_not_equal(original + 4, recovered + 4, trailer - 4);
    ec_spool_close(&s);
    free(seg);
    free(part);
    free(name);
}

static void test_full_mid_segment_still_commits(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 12 * 1024, EC_WHEN_FULL_REFUSE_NEW);
    ec_segment_meta m = meta_for(s, 1795000000000LL);
    ec_spool_writer *w = NULL;
    assert_int_equal(ec_spool_begin(s, &m, &w), EC_OK);
    uint8_t page[4096];
    size_t n = head_page(page);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    ec_status st = ec_spool_flush(w);
    for (int i = 1; i < 20 && st == EC_OK; i++) {
        n = ogg_page(page, 312 + (uint64_t)i * 960, "PLAINTEXT-AUDIO", 3000);
        st = ec_spool_append(w, page, n);
        if (st == EC_OK)
            st = ec_spool_flush(w);
    }
    ts_log_begin();
    assert_int_equal(st, EC_ERR_FULL);
    /* what was sealed before the quota hit is kept */
    assert_int_equal(ec_spool_commit(&w, 1234), EC_OK);
    free(ts_log_end());
    char name[EC_SPOOL_NAME_MAX];
    ec_spool_segment_name(&m, name, sizeof name);
    ec_spool_entry e;
    assert_int_equal(ec_spool_read(s, name, NULL, NULL, &e), EC_OK);
    assert_true(e.pcm_frames == 1234);
    ec_spool_close(&s);
}

static void test_unit_larger_than_a_chunk(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    ec_segment_meta m = meta_for(s, 1795000000000LL);
    ec_spool_writer *w = NULL;
    assert_int_equal(ec_spool_begin(s, &m, &w), EC_OK);
    size_t big = 200 * 1024; /* one unit, sealed as one chunk of its own */
    uint8_t *unit = malloc(big);
    for (size_t i = 0; i < big; i++)
        unit[i] = (uint8_t)(i * 7);
    uint8_t page[4096];
    size_t n = head_page(page);
    assert_int_equal(ec_spool_append(w, page, n), EC_OK);
    assert_int_equal(ec_spool_append(w, unit, big), EC_OK);
    assert_int_equal(ec_spool_commit(&w, 99), EC_OK);
    char name[EC_SPOOL_NAME_MAX];
    ec_spool_segment_name(&m, name, sizeof name);
    read_count c = {0};
    assert_int_equal(ec_spool_read(s, name, count_chunk, &c, NULL), EC_OK);
    assert_int_equal(c.bytes, n + big);
    assert_int_equal(c.chunks, 2);
    free(unit);
    ec_spool_close(&s);
}

static void test_list_reads_only_header_and_trailer(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *a = write_segment(s, 1795000000000LL, 4, true);
    char *b = write_segment(s, 1795000001000LL, 4, true);
    char *pa = ts_strf("%s/%s.seg", f->spool_dir, a);
    char *pb = ts_strf("%s/%s.seg", f->spool_dir, b);
    flip_byte(pa, 400); /* inside a data chunk: the listing cannot tell */
    flip_byte(pb, -10); /* inside the trailer: listed, but without frames */
    ec_spool_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(ec_spool_list(s, &e, &n), EC_OK);
    assert_int_equal(n, 2);
    assert_true(e[0].pcm_frames == 3 * 16000);
    assert_true(e[1].pcm_frames == 0);
    free(e);
    /* reading authenticates everything and catches both */
    assert_int_equal(ec_spool_read(s, a, NULL, NULL, NULL), EC_ERR_CRYPTO);
    assert_int_equal(ec_spool_read(s, b, NULL, NULL, NULL), EC_ERR_CRYPTO);
    ec_spool_close(&s);
    free(pa);
    free(pb);
    free(a);
    free(b);
}

static void test_names_checked(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    static const char *const bad[] = {"", "../x", "a/b", ".hidden", "quarantine/x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ec_spool_read(s, bad[i], NULL, NULL, NULL), EC_ERR_INVALID);
        assert_int_equal(ec_spool_remove(s, bad[i]), EC_ERR_INVALID);
        assert_int_equal(ec_spool_quarantine(s, bad[i], "x"), EC_ERR_INVALID);
    }
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(ec_spool_remove(s, longname), EC_ERR_INVALID);
    ec_spool_close(&s);
}

static void test_fifo_named_like_a_segment(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    ec_spool_close(&s);
    char *fifo = ts_strf("%s/edge-7-20261118T110640Z-0000000005.seg", f->spool_dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    ts_log_begin();
    s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST); /* does not hang */
    char *log = ts_log_end();
    assert_non_null(strstr(log, "reason=\"not a regular file\""));
    free(log);
    ec_spool_close(&s);
    free(fifo);
}

static void flip_byte(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    if (off < 0)
        off += lseek(fd, 0, SEEK_END);
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void test_tampered_quarantined_daemon_goes_on(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *a = write_segment(s, 1795000000000LL, 3, true);
    char *b = write_segment(s, 1795000001000LL, 3, true);
    char *c = write_segment(s, 1795000002000LL, 3, true);
    char *pa = ts_strf("%s/%s.seg", f->spool_dir, a);
    flip_byte(pa, -30); /* inside a chunk */
    size_t checked, failed;
    ts_log_begin();
    assert_int_equal(ec_spool_verify_all(s, &checked, &failed), EC_OK);
    char *log = ts_log_end();
    assert_int_equal(checked, 3);
    assert_int_equal(failed, 1);
    assert_non_null(strstr(log, "event=segment_quarantined"));
    free(log);
    char *qa = ts_strf("quarantine/%s.seg", a);
    assert_true(exists(f->spool_dir, qa));
    assert_int_equal(ec_spool_read(s, b, NULL, NULL, NULL), EC_OK);

    /* a header edit is caught when the spool opens */
    char *pb = ts_strf("%s/%s.seg", f->spool_dir, b);
    flip_byte(pb, 40); /* the wrapped data key */
    /* a segment renamed to another sequence number is caught too */
    char *pc = ts_strf("%s/%s.seg", f->spool_dir, c);
    char *renamed = ts_strf("%s/edge-7-20261118T110642Z-0000000042.seg", f->spool_dir);
    assert_int_equal(rename(pc, renamed), 0);
    ec_spool_close(&s);
    ts_log_begin();
    s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    log = ts_log_end();
    assert_non_null(strstr(log, "file name does not match the sealed header"));
    assert_non_null(strstr(log, "header does not authenticate"));
    free(log);
    ec_spool_stats st;
    ec_spool_get_stats(s, &st);
    assert_int_equal(st.quarantined, 2);
    ec_spool_entry *e = NULL;
    size_t n = 99;
    assert_int_equal(ec_spool_list(s, &e, &n), EC_OK);
    assert_int_equal(n, 0);
    free(e);
    /* still writes new segments */
    char *d = write_segment(s, 1795000003000LL, 2, true);
    assert_int_equal(ec_spool_read(s, d, NULL, NULL, NULL), EC_OK);
    ec_spool_close(&s);
    free(a);
    free(b);
    free(c);
    free(d);
    free(pa);
    free(pb);
    free(pc);
    free(qa);
    free(renamed);
}

static void test_quota_drop_oldest(void **state)
{
    fixture *f = *state;
    /* each segment: ~118 header + 4 x ~1.5 KiB chunks + trailer ~ 6.3 KiB */
    ec_spool *s = open_spool(f, 22 * 1024, EC_WHEN_FULL_DROP_OLDEST);
    char *names[6];
    ts_log_begin();
    for (int i = 0; i < 6; i++)
        names[i] = write_segment(s, 1795000000000LL + i * 1000, 5, true);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=segment_dropped"));
    free(log);
    assert_true(ec_spool_used_bytes(s) <= 22 * 1024);
    ec_spool_stats st;
    ec_spool_get_stats(s, &st);
    assert_true(st.dropped >= 2);
    /* the newest are kept, the oldest went */
    assert_int_equal(ec_spool_read(s, names[5], NULL, NULL, NULL), EC_OK);
    assert_int_equal(ec_spool_read(s, names[0], NULL, NULL, NULL), EC_ERR_NOT_FOUND);
    for (int i = 0; i < 6; i++)
        free(names[i]);
    ec_spool_close(&s);
}

static void test_quota_refuse_new(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 16 * 1024, EC_WHEN_FULL_REFUSE_NEW);
    char *a = write_segment(s, 1795000000000LL, 5, true);
    char *b = write_segment(s, 1795000001000LL, 5, true);
    ec_segment_meta m = meta_for(s, 1795000002000LL);
    ec_spool_writer *w = NULL;
    ts_log_begin();
    ec_status st = ec_spool_begin(s, &m, &w);
    if (st == EC_OK) {
        /* room for a header but not for the audio */
        uint8_t page[4096];
        size_t n = ogg_page(page, 1, "x", 3000);
        for (int i = 0; i < 4 && st == EC_OK; i++) {
            st = ec_spool_append(w, page, n);
            if (st == EC_OK)
                st = ec_spool_flush(w);
        }
        ec_spool_abort(&w);
    }
    char *log = ts_log_end();
    assert_int_equal(st, EC_ERR_FULL);
    assert_non_null(strstr(log, "policy=refuse-new"));
    free(log);
    /* nothing old was touched */
    assert_int_equal(ec_spool_read(s, a, NULL, NULL, NULL), EC_OK);
    assert_int_equal(ec_spool_read(s, b, NULL, NULL, NULL), EC_OK);
    ec_spool_stats stats;
    ec_spool_get_stats(s, &stats);
    assert_true(stats.refused >= 1);
    assert_int_equal(stats.dropped, 0);
    free(a);
    free(b);
    ec_spool_close(&s);
}

static void test_no_plaintext_in_files(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *a = write_segment(s, 1795000000000LL, 6, true);
    char *b = write_segment(s, 1795000001000LL, 4, false); /* a .part too */
    DIR *d = opendir(f->spool_dir);
    struct dirent *de;
    size_t scanned = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *p = ts_strf("%s/%s", f->spool_dir, de->d_name);
        FILE *fp = fopen(p, "rb");
        struct stat sb;
        stat(p, &sb);
        if (S_ISREG(sb.st_mode)) {
            uint8_t *buf = malloc((size_t)sb.st_size + 1);
            size_t n = fread(buf, 1, (size_t)sb.st_size, fp);
            assert_null(memmem(buf, n, "OggS", 4));
            assert_null(memmem(buf, n, "OpusHead", 8));
            assert_null(memmem(buf, n, "PLAINTEXT-AUDIO", 15));
            free(buf);
            scanned++;
        }
        fclose(fp);
        free(p);
    }
    closedir(d);
    assert_true(scanned >= 2);
    free(a);
    free(b);
    ec_spool_close(&s);
}

/* Small files beside the segments: atomic, 0600, names checked, owner only,
 * never taken for segments, and a failed rename leaves the old content. */
static void test_aux_files(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(ec_spool_get_file(s, "jobs.json", 64, &data, &len), EC_ERR_NOT_FOUND);
    assert_int_equal(ec_spool_put_file(s, "jobs.json", (const uint8_t *)"{\"a\":1}", 7), EC_OK);
    char *path = ts_strf("%s/jobs.json", f->spool_dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(ec_spool_get_file(s, "jobs.json", 64, &data, &len), EC_OK);
    assert_int_equal(len, 7);
    assert_memory_equal(data, "{\"a\":1}", 7);
    free(data);
    assert_int_equal(ec_spool_get_file(s, "jobs.json", 6, &data, &len), EC_ERR_PROTOCOL);
    /* a rename that fails keeps the old content and leaves no .tmp */
    ec_fault_arm("spool.put_file", 0, 1);
    assert_int_equal(ec_spool_put_file(s, "jobs.json", (const uint8_t *)"new", 3), EC_ERR_IO);
    assert_int_equal(ec_spool_get_file(s, "jobs.json", 64, &data, &len), EC_OK);
    assert_int_equal(len, 7);
    free(data);
    char *tmp = ts_strf("%s/jobs.json.tmp", f->spool_dir);
    assert_int_not_equal(access(tmp, F_OK), 0);
    static const char *const bad[] = {"",      "../x",  "a/b",        ".hidden",
                                      "state", "x.seg", "x.seg.part", "jobs.tmp"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ec_spool_put_file(s, bad[i], (const uint8_t *)"x", 1), EC_ERR_INVALID);
        assert_int_equal(ec_spool_get_file(s, bad[i], 8, &data, &len), EC_ERR_INVALID);
    }
    ec_spool_entry *entries = NULL;
    size_t n = 9;
    assert_int_equal(ec_spool_list(s, &entries, &n), EC_OK);
    assert_int_equal(n, 0);
    free(entries);
    /* an observer reads but never writes */
    ec_spool_params p = {.dir = f->spool_dir, .keystore = &f->ks, .read_only = true};
    ec_spool *o = NULL;
    assert_int_equal(ec_spool_open(&o, &p), EC_OK);
    assert_int_equal(ec_spool_get_file(o, "jobs.json", 64, &data, &len), EC_OK);
    free(data);
    assert_int_equal(ec_spool_put_file(o, "jobs.json", (const uint8_t *)"x", 1), EC_ERR_BUSY);
    ec_spool_close(&o);
    ec_spool_close(&s);
    free(path);
    free(tmp);
}

/* The disk as the limit: a data partition smaller than the quota. The
 * "spool.disk_full" point reports no free space (a real small file system is
 * tests/system/pipeline.sh's). */
static void test_disk_full_drop_oldest(void **state)
{
    fixture *f = *state;
    ts_log_begin();
    ec_fault_arm("spool.disk_full", 0, 1); /* at open: the quota is out of reach */
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=spool_quota_above_disk quota_bytes=1073741824"));
    assert_non_null(strstr(log, "the oldest segments are dropped when it is full"));
    free(log);
    char *names[3];
    for (int i = 0; i < 3; i++)
        names[i] = write_segment(s, 1795000000000LL + i * 1000, 2, true);
    ts_log_begin();
    ec_fault_arm("spool.disk_full", 0, 1); /* the next write finds the disk full once */
    char *newest = write_segment(s, 1795000003000LL, 2, true);
    log = ts_log_end();
    char want[160];
    snprintf(want, sizeof want,
             "event=segment_dropped segment=%s.seg reason=\"disk full (drop-oldest)\"", names[0]);
    if (strstr(log, want) == NULL)
        fail_msg("no \"%s\" in: %s", want, log);
    free(log);
    ec_spool_stats st;
    ec_spool_get_stats(s, &st);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(st.refused, 0);
    assert_int_equal(ec_spool_read(s, names[0], NULL, NULL, NULL), EC_ERR_NOT_FOUND);
    assert_int_equal(ec_spool_read(s, names[1], NULL, NULL, NULL), EC_OK);
    assert_int_equal(ec_spool_read(s, newest, NULL, NULL, NULL), EC_OK);
    for (int i = 0; i < 3; i++)
        free(names[i]);
    free(newest);
    ec_spool_close(&s);
}

static void test_disk_full_refuse_new(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_REFUSE_NEW);
    char *a = write_segment(s, 1795000000000LL, 2, true);
    ec_fault_arm("spool.disk_full", 0, 0); /* full from now on */
    ec_segment_meta m = meta_for(s, 1795000001000LL);
    ec_spool_writer *w = NULL;
    ts_log_begin();
    ec_status st = ec_spool_begin(s, &m, &w);
    char *log = ts_log_end();
    assert_int_equal(st, EC_ERR_FULL);
    assert_null(w);
    assert_non_null(strstr(log,
                           "event=spool_full limit=disk quota_bytes=1073741824 disk_free_bytes=0 "
                           "policy=refuse-new"));
    free(log);
    ec_fault_reset();
    assert_int_equal(ec_spool_read(s, a, NULL, NULL, NULL), EC_OK);
    free(a);
    ec_spool_close(&s);
}

/* Drops that free nothing (the disk stays full) stop after two: the spool is
 * not emptied for space it cannot win. */
static void test_disk_full_no_gain(void **state)
{
    fixture *f = *state;
    ec_spool *s = open_spool(f, 1 << 30, EC_WHEN_FULL_DROP_OLDEST);
    char *names[4];
    for (int i = 0; i < 4; i++)
        names[i] = write_segment(s, 1795000000000LL + i * 1000, 2, true);
    ec_fault_arm("spool.disk_full", 0, 0); /* full, whatever is dropped */
    ec_segment_meta m = meta_for(s, 1795000004000LL);
    ec_spool_writer *w = NULL;
    ts_log_begin();
    ec_status st = ec_spool_begin(s, &m, &w);
    char *log = ts_log_end();
    ec_fault_reset();
    assert_int_equal(st, EC_ERR_FULL);
    assert_non_null(strstr(log, "event=spool_full limit=disk"));
    free(log);
    ec_spool_stats stats;
    ec_spool_get_stats(s, &stats);
    assert_int_equal(stats.dropped, 2);
    assert_int_equal(ec_spool_read(s, names[1], NULL, NULL, NULL), EC_ERR_NOT_FOUND);
    assert_int_equal(ec_spool_read(s, names[2], NULL, NULL, NULL), EC_OK);
    assert_int_equal(ec_spool_read(s, names[3], NULL, NULL, NULL), EC_OK);
    for (int i = 0; i < 4; i++)
        free(names[i]);
    ec_spool_close(&s);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_list_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequence_survives_restart_and_removal, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_crash_mid_chunk_recovered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_after_trailer_renames_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_fsync_loses_only_unflushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_part_without_audio_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_owner_observers_beside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_part_quarantined_not_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_filled_tail_is_a_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_trailer_recovered_with_own_nonce, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_full_mid_segment_still_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unit_larger_than_a_chunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_reads_only_header_and_trailer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_named_like_a_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_quarantined_daemon_goes_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota_drop_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota_refuse_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_drop_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_refuse_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_no_gain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_plaintext_in_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aux_files, setup, teardown),
    };
    int rc = cmocka_run_group_tests_name("spool", tests, NULL, NULL);
    ec_rng_free();
    return rc;
}
