/*
 * Retention and secure deletion: crypto-shredding zeroes the wrapped data key
 * in place before the file goes (a hard link, like flash keeping old blocks,
 * then holds a header nothing can open; a fault between the fsync and the
 * unlink shows the same on the file itself); max_age_hours purges closed
 * segments, .part files and quarantined files by the header's start (mtime
 * only without a readable header), audits each, never touches a segment
 * being written or claimed by the uploader; the file key store's KEK is
 * destroyed (zeros, unlink) and never re-created by a wipe; the device key
 * file and the Speech job state (and its .tmp) are shredded whole.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgecap/audit.h"
#include "edgecap/config.h"
#include "edgecap/fault.h"
#include "edgecap/file.h"
#include "edgecap/keystore.h"
#include "edgecap/retention.h"
#include "edgecap/seal.h"
#include "edgecap/secmem.h"
#include "edgecap/spool.h"
#include "support.h"

#define HOUR_MS (3600LL * 1000)
#define NOW_MS 1795000000000LL /* 2026-11-18T11:06:40Z */
#define WRAPPED_KEY_OFFSET 28

typedef struct {
    char *dir;
    char *ksdir;
    char *spool_dir;
    ec_keystore ks;
    ec_spool *spool;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = ts_mkdtemp();
    f->ksdir = ts_strf("%s/keys", f->dir);
    f->spool_dir = ts_strf("%s/spool", f->dir);
    assert_int_equal(ec_keystore_file_open(&f->ks, f->ksdir), EC_OK);
    ec_spool_params p = {.dir = f->spool_dir, .quota_bytes = 1 << 30, .keystore = &f->ks};
    assert_int_equal(ec_spool_open(&f->spool, &p), EC_OK);
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
    free(f->ksdir);
    free(f->spool_dir);
    free(f);
    ec_fault_reset();
    return 0;
}

static ec_spool_writer *begin_segment(fixture *f, int64_t start_ms, char *name, size_t name_len)
{
    ec_segment_meta m = {.device_id = "edge-9",
                         .start_utc_ms = start_ms,
                         .sample_rate_hz = 16000,
                         .channels = 1,
                         .codec = EC_SEAL_CODEC_OGG_OPUS};
    assert_int_equal(ec_spool_next_sequence(f->spool, &m.sequence), EC_OK);
    ec_spool_writer *w = NULL;
    assert_int_equal(ec_spool_begin(f->spool, &m, &w), EC_OK);
    uint8_t unit[3000];
    memset(unit, 0x5a, sizeof unit);
    assert_int_equal(ec_spool_append(w, unit, sizeof unit), EC_OK);
    assert_int_equal(ec_spool_flush(w), EC_OK);
    ec_spool_segment_name(&m, name, name_len);
    return w;
}

/* A closed segment that started at start_ms; its NAME in `name`. */
static void write_segment(fixture *f, int64_t start_ms, char *name, size_t name_len)
{
    ec_spool_writer *w = begin_segment(f, start_ms, name, name_len);
    assert_int_equal(ec_spool_commit(&w, 16000), EC_OK);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0)
            return false;
    }
    return true;
}

/* Whether the header in `path` still opens under the fixture's KEK. */
static ec_status open_header(fixture *f, const char *path)
{
    size_t len = 0;
    uint8_t *buf = read_all(path, &len);
    size_t hl = 0;
    ec_status st = ec_seal_header_length(buf, len, &hl);
    ec_seal *seal = NULL;
    ec_segment_meta meta;
    if (st == EC_OK)
        st = ec_seal_open(&seal, &f->ks, buf, hl, &meta);
    ec_seal_free(&seal);
    free(buf);
    return st;
}

static ec_spool_item item_named(fixture *f, const char *file)
{
    ec_spool_item *items = NULL, found = {0};
    size_t n = 0;
    assert_int_equal(ec_spool_items(f->spool, &items, &n), EC_OK);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(items[i].file, file) == 0)
            found = items[i];
    }
    free(items);
    assert_string_equal(found.file, file);
    return found;
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static void test_shred_zeroes_key_before_unlink(void **state)
{
    fixture *f = *state;
    char name[EC_SPOOL_NAME_MAX];
    write_segment(f, NOW_MS, name, sizeof name);
    char *file = ts_strf("%s.seg", name);
    char *path = ts_strf("%s/%s", f->spool_dir, file);
    /* flash that keeps the old blocks: a second name for the same blocks */
    char *kept = ts_strf("%s/kept-blocks", f->dir);
    assert_int_equal(link(path, kept), 0);
    size_t before_len = 0, after_len = 0;
    uint8_t *before = read_all(kept, &before_len);
    assert_int_equal(open_header(f, kept), EC_OK);
    assert_false(all_zero(before + WRAPPED_KEY_OFFSET, EC_WRAPPED_KEY_BYTES));

    ec_spool_item it = item_named(f, file);
    assert_int_equal(it.kind, EC_ITEM_SEALED);
    assert_true(it.have_header);
    assert_int_equal(it.start_utc_ms, NOW_MS);
    assert_int_equal(ec_spool_shred(f->spool, &it), EC_OK);
    assert_false(exists(path));

    uint8_t *after = read_all(kept, &after_len);
    assert_int_equal(after_len, before_len);
    assert_true(all_zero(after + WRAPPED_KEY_OFFSET, EC_WRAPPED_KEY_BYTES));
    /* only the wrapped key changed; the rest cannot be opened without it */
    assert_memory_equal(after, before, WRAPPED_KEY_OFFSET);
    size_t rest = WRAPPED_KEY_OFFSET + EC_WRAPPED_KEY_BYTES;
    assert_memory_equal(after + rest, before + rest, before_len - rest);
    assert_int_equal(open_header(f, kept), EC_ERR_CRYPTO);
    ec_spool_stats st;
    ec_spool_get_stats(f->spool, &st);
    assert_int_equal(st.shredded, 1);
    assert_int_equal(ec_spool_used_bytes(f->spool), 0);
    free(before);
    free(after);
    free(file);
    free(path);
    free(kept);
}

static void test_fault_after_zeroing_leaves_unopenable_file(void **state)
{
    fixture *f = *state;
    char name[EC_SPOOL_NAME_MAX];
    write_segment(f, NOW_MS, name, sizeof name);
    char *file = ts_strf("%s.seg", name);
    char *path = ts_strf("%s/%s", f->spool_dir, file);
    ec_spool_item it = item_named(f, file);
    ec_fault_arm("spool.shred_unlink", 0, 1);
    assert_int_equal(ec_spool_shred(f->spool, &it), EC_ERR_IO);
    /* stopped between the fsync and the unlink: what is on disk is keyless */
    assert_true(exists(path));
    size_t len = 0;
    uint8_t *bytes = read_all(path, &len);
    assert_true(all_zero(bytes + WRAPPED_KEY_OFFSET, EC_WRAPPED_KEY_BYTES));
    assert_int_equal(ec_spool_read(f->spool, name, NULL, NULL, NULL), EC_ERR_CRYPTO);
    /* the next pass finishes the job */
    assert_int_equal(ec_spool_shred(f->spool, &it), EC_OK);
    assert_false(exists(path));
    free(bytes);
    free(file);
    free(path);
}

static char *audit_text(const char *path)
{
    size_t len = 0;
    uint8_t *buf = read_all(path, &len);
    buf[len] = '\0';
    return (char *)buf;
}

static void test_purge_by_header_age_and_audit(void **state)
{
    fixture *f = *state;
    char old1[EC_SPOOL_NAME_MAX], old2[EC_SPOOL_NAME_MAX], young[EC_SPOOL_NAME_MAX];
    write_segment(f, NOW_MS - 170 * HOUR_MS, old1, sizeof old1);
    write_segment(f, NOW_MS - 169 * HOUR_MS, old2, sizeof old2);
    write_segment(f, NOW_MS - 167 * HOUR_MS, young, sizeof young);
    /* a file's mtime does not count when its header is readable: the young
     * one looks ancient by mtime, the old ones brand new */
    char *ypath = ts_strf("%s/%s.seg", f->spool_dir, young);
    struct timespec ancient[2] = {{1000, 0}, {1000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, ypath, ancient, 0), 0);
    char *apath = ts_strf("%s/audit.log", f->dir);
    ec_audit *audit = NULL;
    assert_int_equal(ec_audit_open(&audit, apath, NULL), EC_OK);
    ec_retention_result r;
    ts_log_begin();
    assert_int_equal(ec_retention_purge(f->spool, audit, 168, NOW_MS, &r), EC_OK);
    char *log = ts_log_end();
    ec_audit_close(&audit);
    assert_int_equal(r.shredded, 2);
    assert_int_equal(r.by_kind[EC_ITEM_SEALED], 2);
    assert_int_equal(r.age_from_mtime, 0);
    assert_int_equal(ec_spool_read(f->spool, old1, NULL, NULL, NULL), EC_ERR_NOT_FOUND);
    assert_int_equal(ec_spool_read(f->spool, old2, NULL, NULL, NULL), EC_ERR_NOT_FOUND);
    assert_int_equal(ec_spool_read(f->spool, young, NULL, NULL, NULL), EC_OK);
    char *text = audit_text(apath);
    char *want = ts_strf("\"event\":\"retention_purge\",\"segment\":\"%s.seg\",\"kind\":\"sealed\","
                         "\"sequence\":0,\"age_s\":612000,",
                         old1);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "\"age_from\":\"header\""));
    assert_null(strstr(text, young));
    assert_non_null(strstr(log, "event=retention_purge"));
    assert_null(strstr(log, "retention_age_from_mtime"));
    free(want);
    free(text);
    free(log);
    free(ypath);
    free(apath);
}

static void test_writing_and_claimed_are_deferred(void **state)
{
    fixture *f = *state;
    char writing[EC_SPOOL_NAME_MAX], claimed[EC_SPOOL_NAME_MAX];
    write_segment(f, NOW_MS - 200 * HOUR_MS, claimed, sizeof claimed);
    ec_spool_writer *w = begin_segment(f, NOW_MS - 200 * HOUR_MS, writing, sizeof writing);
    assert_int_equal(ec_spool_claim(f->spool, claimed), EC_OK);
    /* a second claim (retention's own) waits */
    assert_int_equal(ec_spool_claim(f->spool, claimed), EC_ERR_BUSY);
    ec_retention_result r;
    assert_int_equal(ec_retention_purge(f->spool, NULL, 1, NOW_MS, &r), EC_OK);
    assert_int_equal(r.shredded, 0);
    assert_int_equal(r.deferred, 2);
    assert_int_equal(ec_spool_read(f->spool, claimed, NULL, NULL, NULL), EC_OK);

    ec_spool_release(f->spool, claimed);
    assert_int_equal(ec_spool_commit(&w, 16000), EC_OK);
    assert_int_equal(ec_retention_purge(f->spool, NULL, 1, NOW_MS, &r), EC_OK);
    assert_int_equal(r.shredded, 2);
    assert_int_equal(r.deferred, 0);
    /* the uploader finds it gone */
    assert_int_equal(ec_spool_claim(f->spool, claimed), EC_ERR_NOT_FOUND);
}

static void test_part_and_quarantine_purged_mtime_fallback(void **state)
{
    fixture *f = *state;
    char part[EC_SPOOL_NAME_MAX], bad[EC_SPOOL_NAME_MAX];
    ec_spool_writer *w = begin_segment(f, NOW_MS - 300 * HOUR_MS, part, sizeof part);
    ec_spool_abort(&w); /* a .part, as a crash leaves it (recovered at the next open) */
    write_segment(f, NOW_MS - 300 * HOUR_MS, bad, sizeof bad);
    assert_int_equal(ec_spool_quarantine(f->spool, bad, "test"), EC_OK);
    /* junk without a header in quarantine/: one old by mtime, one new */
    char *qdir = ts_strf("%s/quarantine", f->spool_dir);
    char *old_junk = ts_write_file(qdir, "old-junk", 0600, "not a segment");
    char *new_junk = ts_write_file(qdir, "new-junk", 0600, "not a segment either");
    struct timespec t[2] = {{(NOW_MS - 200 * HOUR_MS) / 1000, 0},
                            {(NOW_MS - 200 * HOUR_MS) / 1000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, old_junk, t, 0), 0);
    t[0].tv_sec = t[1].tv_sec = NOW_MS / 1000;
    assert_int_equal(utimensat(AT_FDCWD, new_junk, t, 0), 0);

    char *part_file = ts_strf("%s.seg.part", part);
    ec_spool_item part_item = item_named(f, part_file);
    assert_int_equal(part_item.kind, EC_ITEM_PART);
    free(part_file);
    ec_retention_result r;
    ts_log_begin();
    assert_int_equal(ec_retention_purge(f->spool, NULL, 168, NOW_MS, &r), EC_OK);
    char *log = ts_log_end();
    assert_int_equal(r.shredded, 3);
    assert_int_equal(r.by_kind[EC_ITEM_PART], 1);
    assert_int_equal(r.by_kind[EC_ITEM_QUARANTINED], 2);
    assert_int_equal(r.age_from_mtime, 1);
    assert_non_null(strstr(log, "event=retention_age_from_mtime segment=old-junk kind=quarantined "
                                "reason=\"no readable header\""));
    assert_false(exists(old_junk));
    assert_true(exists(new_junk));
    char *qbad = ts_strf("%s/%s.seg", qdir, bad);
    assert_false(exists(qbad));
    char *ppath = ts_strf("%s/%s.seg.part", f->spool_dir, part);
    assert_false(exists(ppath));
    free(log);
    free(qdir);
    free(old_junk);
    free(new_junk);
    free(qbad);
    free(ppath);
}

static void test_shred_all_and_aux_file(void **state)
{
    fixture *f = *state;
    char a[EC_SPOOL_NAME_MAX], b[EC_SPOOL_NAME_MAX];
    write_segment(f, NOW_MS, a, sizeof a);
    write_segment(f, NOW_MS + 1000, b, sizeof b);
    ec_retention_result r;
    assert_int_equal(ec_retention_shred_all(f->spool, NULL, &r), EC_OK);
    assert_int_equal(r.shredded, 2);
    assert_true(r.bytes > 0);
    ec_spool_entry *e = NULL;
    size_t n = 9;
    assert_int_equal(ec_spool_list(f->spool, &e, &n), EC_OK);
    assert_int_equal(n, 0);
    free(e);

    const char jobs[] = "{\"blobs\":[\"edgecap/x.ogg\"]}";
    assert_int_equal(
        ec_spool_put_file(f->spool, "speech-jobs.json", (const uint8_t *)jobs, sizeof jobs - 1),
        EC_OK);
    char *path = ts_strf("%s/speech-jobs.json", f->spool_dir);
    char *kept = ts_strf("%s/kept-jobs", f->dir);
    assert_int_equal(link(path, kept), 0);
    uint64_t bytes = 0;
    assert_int_equal(ec_spool_shred_file(f->spool, "speech-jobs.json", &bytes), EC_OK);
    assert_int_equal(bytes, sizeof jobs - 1);
    assert_false(exists(path));
    size_t len = 0;
    uint8_t *left = read_all(kept, &len);
    assert_int_equal(len, sizeof jobs - 1);
    assert_true(all_zero(left, len));
    assert_int_equal(ec_spool_shred_file(f->spool, "speech-jobs.json", &bytes), EC_ERR_NOT_FOUND);
    assert_int_equal(ec_spool_shred_file(f->spool, "../kek", &bytes), EC_ERR_INVALID);
    /* the NAME.tmp of a put that stopped before its rename goes the same way;
     * a .tmp of a name put_file never writes is refused */
    char *tmp = ts_write_file(f->spool_dir, "speech-jobs.json.tmp", 0600, jobs);
    assert_int_equal(ec_spool_shred_file(f->spool, "speech-jobs.json.tmp", &bytes), EC_OK);
    assert_int_equal(bytes, sizeof jobs - 1);
    assert_false(exists(tmp));
    assert_int_equal(ec_spool_shred_file(f->spool, "x.seg.tmp", &bytes), EC_ERR_INVALID);
    assert_int_equal(ec_spool_shred_file(f->spool, "state.tmp", &bytes), EC_ERR_INVALID);
    assert_int_equal(ec_spool_shred_file(f->spool, ".tmp", &bytes), EC_ERR_INVALID);
    free(tmp);
    free(left);
    free(path);
    free(kept);
}

/* The device key file a wipe destroys: every byte zeroed (a hard link keeps
 * only zeros), then unlinked; a fault before the unlink leaves zeros and
 * reports EC_ERR_IO; absent: EC_ERR_NOT_FOUND. */
static void test_file_shred_device_key(void **state)
{
    fixture *f = *state;
    char pem[5000];
    memset(pem, 'K', sizeof pem - 1);
    pem[sizeof pem - 1] = '\0';
    char *key = ts_write_file(f->dir, "client.key", 0600, pem);
    char *kept = ts_strf("%s/kept-key", f->dir);
    assert_int_equal(link(key, kept), 0);
    uint64_t bytes = 0;
    ec_fault_arm("file.shred", 0, 1);
    assert_int_equal(ec_file_shred(key, &bytes), EC_ERR_IO);
    assert_true(exists(key));
    size_t len = 0;
    uint8_t *left = read_all(key, &len);
    assert_int_equal(len, sizeof pem - 1);
    assert_true(all_zero(left, len));
    free(left);
    assert_int_equal(ec_file_shred(key, &bytes), EC_OK);
    assert_int_equal(bytes, sizeof pem - 1);
    assert_false(exists(key));
    left = read_all(kept, &len);
    assert_int_equal(len, sizeof pem - 1);
    assert_true(all_zero(left, len));
    assert_int_equal(ec_file_shred(key, &bytes), EC_ERR_NOT_FOUND);
    char *nodir = ts_strf("%s/no-such-dir/client.key", f->dir);
    assert_int_equal(ec_file_shred(nodir, &bytes), EC_ERR_NOT_FOUND);
    free(nodir);
    free(left);
    free(kept);
    free(key);
}

static void test_kek_destroyed_and_not_recreated(void **state)
{
    fixture *f = *state;
    char name[EC_SPOOL_NAME_MAX];
    write_segment(f, NOW_MS, name, sizeof name);
    char *seg = ts_strf("%s/%s.seg", f->spool_dir, name);
    char *kek = ts_strf("%s/kek", f->ksdir);
    char *kept = ts_strf("%s/kept-kek", f->dir);
    assert_int_equal(link(kek, kept), 0);
    /* a crash inside KEK creation leaves its temporary copy of the KEK */
    char *stale =
        ts_write_file(f->ksdir, ".kek.4242.tmp", 0600, "0123456789abcdef0123456789abcdef");
    ec_spool_close(&f->spool);

    ec_keystore ks;
    assert_int_equal(ec_keystore_file_open_existing(&ks, f->ksdir), EC_OK);
    assert_non_null(ks.ops->destroy);
    assert_int_equal(ks.ops->destroy(ks.ctx), EC_OK);
    assert_false(exists(kek));
    assert_false(exists(stale));
    size_t len = 0;
    uint8_t *left = read_all(kept, &len);
    assert_int_equal(len, EC_DATA_KEY_BYTES);
    assert_true(all_zero(left, len));
    uint8_t key[EC_DATA_KEY_BYTES] = {1}, wrapped[EC_WRAPPED_KEY_BYTES];
    assert_int_equal(ks.ops->wrap(ks.ctx, key, key, 4, wrapped), EC_ERR_CRYPTO);
    ec_keystore_close(&ks);
    /* the fixture's open store still holds the old KEK in memory: the
     * segment opened before, and a wipe never re-creates the file */
    assert_int_equal(open_header(f, seg), EC_OK);
    assert_int_equal(ec_keystore_file_open_existing(&ks, f->ksdir), EC_ERR_NOT_FOUND);
    assert_false(exists(kek));
    char *nowhere = ts_strf("%s/no-such-dir", f->dir);
    assert_int_equal(ec_keystore_file_open_existing(&ks, nowhere), EC_ERR_NOT_FOUND);
    assert_false(exists(nowhere));
    /* a new store has a new KEK that opens nothing of the old */
    ec_keystore_close(&f->ks);
    assert_int_equal(ec_keystore_file_open(&f->ks, f->ksdir), EC_OK);
    assert_int_equal(open_header(f, seg), EC_ERR_CRYPTO);
    free(left);
    free(seg);
    free(kek);
    free(kept);
    free(stale);
    free(nowhere);
}

static void test_kek_destroy_fault_leaves_only_zeros(void **state)
{
    fixture *f = *state;
    char *kek = ts_strf("%s/kek", f->ksdir);
    ec_keystore ks;
    assert_int_equal(ec_keystore_file_open_existing(&ks, f->ksdir), EC_OK);
    ec_fault_arm("keystore.destroy", 0, 1);
    assert_int_equal(ks.ops->destroy(ks.ctx), EC_ERR_IO);
    /* stopped before the unlink: the file is there, the key is not */
    size_t len = 0;
    uint8_t *left = read_all(kek, &len);
    assert_int_equal(len, EC_DATA_KEY_BYTES);
    assert_true(all_zero(left, len));
    uint8_t key[EC_DATA_KEY_BYTES] = {0}, wrapped[EC_WRAPPED_KEY_BYTES] = {0};
    assert_int_equal(ks.ops->unwrap(ks.ctx, wrapped, key, 4, key), EC_ERR_CRYPTO);
    assert_int_equal(ks.ops->destroy(ks.ctx), EC_OK);
    assert_false(exists(kek));
    ec_keystore_close(&ks);
    free(left);
    free(kek);
}

static void test_expired_boundary(void **state)
{
    (void)state;
    assert_false(ec_retention_expired(NOW_MS - 168 * HOUR_MS, 168, NOW_MS));
    assert_true(ec_retention_expired(NOW_MS - 168 * HOUR_MS - 1, 168, NOW_MS));
    assert_false(ec_retention_expired(NOW_MS + HOUR_MS, 1, NOW_MS));
    fixture *f = *state;
    ec_retention_result r;
    assert_int_equal(ec_retention_purge(f->spool, NULL, 0, NOW_MS, &r), EC_ERR_INVALID);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shred_zeroes_key_before_unlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_zeroing_leaves_unopenable_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_purge_by_header_age_and_audit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writing_and_claimed_are_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_part_and_quarantine_purged_mtime_fallback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shred_all_and_aux_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_shred_device_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kek_destroyed_and_not_recreated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kek_destroy_fault_leaves_only_zeros, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_boundary, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
