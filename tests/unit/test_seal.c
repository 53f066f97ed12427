/*
 * Sealed segment format v1: round trip, and every tampering class the format
 * must detect (table-driven): bit flips in each header field and chunk part,
 * truncation, reordering, splicing, appending, a wrong KEK.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "edgecap/keystore.h"
#include "edgecap/rng.h"
#include "edgecap/seal.h"
#include "edgecap/secmem.h"
#include "support.h"

#define N_CHUNKS 4
#define CHUNK_PLAIN 1000

typedef struct {
    char *dir;
    ec_keystore ks;
} fixture;

/* A sealed segment in memory: header then chunks, with chunk offsets. */
typedef struct {
    uint8_t buf[EC_SEAL_HEADER_MAX + N_CHUNKS * (CHUNK_PLAIN + EC_SEAL_CHUNK_OVERHEAD) + 64];
    size_t len;
    size_t header_len;
    size_t chunk_off[N_CHUNKS + 1];
    size_t n_chunks;
} sealed;

static const ec_segment_meta meta = {
    .device_id = "edge-0001",
    .sequence = 42,
    .start_utc_ms = 1795000000123LL,
    .sample_rate_hz = 16000,
    .channels = 1,
    .codec = EC_SEAL_CODEC_OGG_OPUS,
};

static void plain_for(size_t chunk, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)(chunk * 31 + i);
}

/* Seals N_CHUNKS-1 data chunks and an empty last chunk. */
static void make_segment(const ec_keystore *ks, const ec_segment_meta *m, sealed *out)
{
    ec_seal *s = NULL;
    memset(out, 0, sizeof *out);
    assert_int_equal(ec_seal_create(&s, ks, m, out->buf, &out->header_len), EC_OK);
    out->len = out->header_len;
    uint8_t plain[CHUNK_PLAIN];
    for (size_t c = 0; c < N_CHUNKS; c++) {
        bool last = c == N_CHUNKS - 1;
        size_t n = last ? 0 : CHUNK_PLAIN;
        plain_for(c, plain, n);
        out->chunk_off[c] = out->len;
        assert_int_equal(
            ec_seal_chunk(s, plain, n, last ? EC_SEAL_FINAL : EC_SEAL_MORE, out->buf + out->len),
            EC_OK);
        out->len += EC_SEAL_CHUNK_OVERHEAD + n;
    }
    out->chunk_off[N_CHUNKS] = out->len;
    out->n_chunks = N_CHUNKS;
    /* Nothing can follow the last chunk. */
    assert_int_equal(ec_seal_chunk(s, plain, 1, EC_SEAL_MORE, out->buf + out->len), EC_ERR_INVALID);
    ec_seal_free(&s);
    assert_null(s);
}

/* Reads a sealed buffer the way the spool reader does: header, then chunks,
 * the chunk that ends the buffer expected to be last. Returns EC_OK only if
 * everything authenticates and the plaintext is what was sealed. */
static ec_status read_segment(const ec_keystore *ks, const uint8_t *buf, size_t len,
                              ec_segment_meta *m_out)
{
    size_t h;
    ec_status st = ec_seal_header_length(buf, len, &h);
    if (st != EC_OK)
        return st;
    if (h > len)
        return EC_ERR_CRYPTO;
    ec_seal *s = NULL;
    st = ec_seal_open(&s, ks, buf, h, m_out);
    if (st != EC_OK)
        return st;
    size_t off = h;
    bool saw_last = false;
    uint8_t plain[CHUNK_PLAIN + 16];
    size_t c = 0;
    while (st == EC_OK && off < len) {
        size_t n;
        if (len - off < EC_SEAL_CHUNK_OVERHEAD ||
            ec_seal_chunk_plain_length(buf + off, &n) != EC_OK || n > CHUNK_PLAIN ||
            len - off < EC_SEAL_CHUNK_OVERHEAD + n) {
            st = EC_ERR_CRYPTO;
            break;
        }
        size_t whole = EC_SEAL_CHUNK_OVERHEAD + n;
        bool last = off + whole == len;
        st = ec_seal_unseal_chunk(s, buf + off, whole, last ? EC_SEAL_FINAL : EC_SEAL_MORE, plain);
        if (st == EC_OK) {
            uint8_t want[CHUNK_PLAIN];
            plain_for(c, want, n);
            assert_memory_equal(plain, want, n);
            saw_last = last;
        }
        off += whole;
        c++;
    }
    if (st == EC_OK && !saw_last)
        st = EC_ERR_CRYPTO; /* truncated: no final chunk */
    ec_seal_free(&s);
    return st;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = ts_mkdtemp();
    char *ksdir = ts_strf("%s/keys", f->dir);
    assert_int_equal(ec_keystore_file_open(&f->ks, ksdir), EC_OK);
    free(ksdir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ec_keystore_close(&f->ks);
    ts_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void test_round_trip(void **state)
{
    fixture *f = *state;
    sealed *s = malloc(sizeof *s);
    make_segment(&f->ks, &meta, s);
    assert_int_equal(s->header_len, EC_SEAL_HEADER_FIXED_BYTES + strlen(meta.device_id));
    assert_memory_equal(s->buf, EC_SEAL_MAGIC, EC_SEAL_MAGIC_BYTES);
    ec_segment_meta got;
    assert_int_equal(read_segment(&f->ks, s->buf, s->len, &got), EC_OK);
    assert_string_equal(got.device_id, meta.device_id);
    assert_true(got.sequence == meta.sequence);
    assert_true(got.start_utc_ms == meta.start_utc_ms);
    assert_int_equal(got.sample_rate_hz, meta.sample_rate_hz);
    assert_int_equal(got.channels, meta.channels);
    assert_int_equal(got.codec, meta.codec);
    /* The plaintext pattern does not appear in the sealed bytes. */
    uint8_t pattern[32];
    plain_for(0, pattern, sizeof pattern);
    assert_null(memmem(s->buf, s->len, pattern, sizeof pattern));
    free(s);
}

static void test_fresh_key_and_prefix_per_segment(void **state)
{
    fixture *f = *state;
    sealed *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    make_segment(&f->ks, &meta, a);
    make_segment(&f->ks, &meta, b);
    /* Same metadata and plaintext, yet wrapped key, prefix and ciphertext differ. */
    assert_memory_not_equal(a->buf + 28, b->buf + 28, 60 + 7);
    assert_memory_not_equal(a->buf + a->chunk_off[0], b->buf + b->chunk_off[0], 64);
    free(a);
    free(b);
}

typedef enum { FLIP, TRUNCATE, SWAP, SPLICE, APPEND, DROP_LAST } tamper_kind;

typedef struct {
    const char *name;
    tamper_kind kind;
    long offset; /* FLIP: >= 0 from the start; < 0 from the first chunk (chunk-relative) */
    size_t chunk;
} tamper_case;

static const tamper_case tamper_cases[] = {
    {"magic", FLIP, 0, 0},
    {"format version byte", FLIP, 7, 0},
    {"header length", FLIP, 11, 0},
    {"kek id", FLIP, 12, 0},
    {"wrap nonce", FLIP, 28, 0},
    {"wrapped key", FLIP, 45, 0},
    {"wrap tag", FLIP, 80, 0},
    {"nonce prefix", FLIP, 90, 0},
    {"codec", FLIP, 95, 0},
    {"sequence", FLIP, 103, 0},
    {"start time", FLIP, 110, 0},
    {"sample rate", FLIP, 114, 0},
    {"channels", FLIP, 116, 0},
    {"device id length", FLIP, 117, 0},
    {"device id", FLIP, 119, 0},
    {"chunk length field", FLIP, -1, 1},
    {"chunk ciphertext", FLIP, -10, 1},
    {"chunk tag", FLIP, -(long)(CHUNK_PLAIN + 5), 1},
    {"last chunk tag", FLIP, -6, 3},
    {"truncated mid-chunk", TRUNCATE, 0, 2},
    {"truncated at a chunk boundary", TRUNCATE, 0, 3},
    {"header only", TRUNCATE, 0, 0},
    {"two chunks swapped", SWAP, 0, 0},
    {"chunk spliced from another segment", SPLICE, 0, 1},
    {"bytes appended after the last chunk", APPEND, 0, 0},
    {"last chunk dropped", DROP_LAST, 0, 0},
};

static void apply_tamper(const fixture *f, const tamper_case *t, sealed *s)
{
    switch (t->kind) {
    case FLIP: {
        size_t at;
        if (t->offset >= 0) {
            at = (size_t)t->offset;
        } else {
            /* chunk-relative: -1 = length field's last byte, -k = (k-1) bytes
             * before the chunk's end, counted from the end of the chunk */
            size_t start = s->chunk_off[t->chunk], end = s->chunk_off[t->chunk + 1];
            at = t->offset == -1 ? start + 3 : end - (size_t)(-t->offset);
        }
        s->buf[at] ^= 0x04;
        break;
    }
    case TRUNCATE:
        s->len = t->chunk == 0 ? s->header_len
                               : (t->chunk == 2 ? s->chunk_off[2] + 100 : s->chunk_off[3]);
        break;
    case SWAP: {
        /* chunks 0 and 1 have the same size: swap them in place */
        size_t a = s->chunk_off[0], b = s->chunk_off[1], n = b - a;
        uint8_t *tmp = malloc(n);
        memcpy(tmp, s->buf + a, n);
        memcpy(s->buf + a, s->buf + b, n);
        memcpy(s->buf + b, tmp, n);
        free(tmp);
        break;
    }
    case SPLICE: {
        sealed *other = malloc(sizeof *other);
        ec_segment_meta m2 = meta;
        m2.sequence = meta.sequence + 1;
        make_segment(&f->ks, &m2, other);
        size_t n = s->chunk_off[t->chunk + 1] - s->chunk_off[t->chunk];
        memcpy(s->buf + s->chunk_off[t->chunk], other->buf + other->chunk_off[t->chunk], n);
        free(other);
        break;
    }
    case APPEND:
        memcpy(s->buf + s->len, "OggS", 4);
        s->len += 4;
        break;
    case DROP_LAST:
        s->len = s->chunk_off[N_CHUNKS - 1];
        break;
    }
}

static void test_tampering_detected(void **state)
{
    fixture *f = *state;
    sealed *s = malloc(sizeof *s);
    for (size_t i = 0; i < sizeof tamper_cases / sizeof tamper_cases[0]; i++) {
        make_segment(&f->ks, &meta, s);
        assert_int_equal(read_segment(&f->ks, s->buf, s->len, NULL), EC_OK);
        apply_tamper(f, &tamper_cases[i], s);
        ec_status st = read_segment(&f->ks, s->buf, s->len, NULL);
        if (st == EC_OK)
            fail_msg("tampering not detected: %s", tamper_cases[i].name);
        assert_int_equal(st, EC_ERR_CRYPTO);
    }
    free(s);
}

static void test_other_kek_cannot_open(void **state)
{
    fixture *f = *state;
    sealed *s = malloc(sizeof *s);
    make_segment(&f->ks, &meta, s);
    char *other_dir = ts_strf("%s/other-keys", f->dir);
    ec_keystore other;
    assert_int_equal(ec_keystore_file_open(&other, other_dir), EC_OK);
    ec_seal *h = NULL;
    assert_int_equal(ec_seal_open(&h, &other, s->buf, s->header_len, NULL), EC_ERR_CRYPTO);
    assert_null(h);
    /* Even with the right KEK id copied in, the unwrap fails: the id is not the key. */
    uint8_t id[EC_KEK_ID_BYTES];
    other.ops->kek_id(other.ctx, id);
    memcpy(s->buf + 12, id, sizeof id);
    assert_int_equal(ec_seal_open(&h, &other, s->buf, s->header_len, NULL), EC_ERR_CRYPTO);
    ec_keystore_close(&other);
    free(other_dir);
    free(s);
}

static void test_invalid_arguments(void **state)
{
    fixture *f = *state;
    uint8_t header[EC_SEAL_HEADER_MAX];
    size_t hl;
    ec_seal *s = NULL;
    ec_segment_meta m = meta;
    m.device_id[0] = '\0';
    assert_int_equal(ec_seal_create(&s, &f->ks, &m, header, &hl), EC_ERR_INVALID);
    m = meta;
    m.channels = 0;
    assert_int_equal(ec_seal_create(&s, &f->ks, &m, header, &hl), EC_ERR_INVALID);
    assert_int_equal(ec_seal_create(&s, &f->ks, &meta, header, &hl), EC_OK);
    uint8_t *big = malloc(EC_SEAL_CHUNK_MAX + 1 + EC_SEAL_CHUNK_OVERHEAD);
    assert_int_equal(ec_seal_chunk(s, big, EC_SEAL_CHUNK_MAX + 1, EC_SEAL_MORE, big),
                     EC_ERR_INVALID);
    assert_int_equal(ec_seal_chunk(s, big, 1, (ec_seal_flag)3, big), EC_ERR_INVALID);
    free(big);
    ec_seal_free(&s);
    size_t n;
    const uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(ec_seal_chunk_plain_length(huge, &n), EC_ERR_CRYPTO);
    assert_int_equal(ec_seal_header_length((const uint8_t *)"ECSEG", 5, &n), EC_ERR_CRYPTO);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fresh_key_and_prefix_per_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampering_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_kek_cannot_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
    };
    int rc = cmocka_run_group_tests_name("seal", tests, NULL, NULL);
    ec_rng_free();
    return rc;
}
