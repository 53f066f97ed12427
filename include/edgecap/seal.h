/*
 * Sealing: AES-256-GCM in the STREAM construction over one segment, and the
 * reference for the sealed segment format, version 1 (DESIGN.md "Sealed spool
 * format"). The spool writes what this module produces; the reader and the
 * uploader authenticate through it. All integers are big-endian.
 *
 * Header (H bytes, H = 118 + n for a device id of n bytes; a reader accepts
 * any H >= 118 + n whose extra bytes are zero, for later versions):
 *
 *   off  len  field
 *     0    8  magic           "ECSEG\0\0\1" (last byte: format version 1)
 *     8    4  header_bytes    H
 *    12   16  kek_id          which KEK wrapped the data key (keystore.h)
 *    28   60  wrapped_key     AES-256-GCM under the KEK: nonce(12) || key(32) || tag(16),
 *                             AAD = header bytes 0..27
 *    88    7  nonce_prefix    random per segment
 *    95    1  codec           1 = Ogg Opus
 *    96    8  sequence        u64, monotonic per device
 *   104    8  start_utc_ms    i64, milliseconds since 1970-01-01 UTC
 *   112    4  sample_rate_hz  u32 (8000, 16000 or 48000)
 *   116    1  channels        1 or 2
 *   117    1  device_id_len   n, 1..64
 *   118    n  device_id
 *
 * Chunks follow the header back to back. Chunk i (i = 0, 1, ...):
 *
 *   u32 L || ciphertext (L bytes, L <= EC_SEAL_CHUNK_MAX) || tag (16)
 *
 *   key   = the segment's data key (random, CTR_DRBG)
 *   nonce = nonce_prefix(7) || u32 i || u8 flag
 *           flag = 0 on every chunk but the final one, 1 on the final chunk
 *           written when the segment closes, 2 on a final chunk written by
 *           crash recovery (so a recovery never reuses the nonce of a final
 *           chunk that a crash tore)
 *   AAD   = SHA-256 of the header's H bytes
 *
 * A segment is complete when a chunk sealed with flag 1 or 2 authenticates and
 * nothing follows it. Reordering (the counter), truncation (no last chunk),
 * appending (data after the last chunk), splicing from another segment (a
 * different key and header) and header edits (the AAD) all fail
 * authentication. Deleting the data key — the segment file's header is its
 * only copy — destroys the segment even where flash keeps old blocks.
 */
#ifndef EDGECAP_SEAL_H
#define EDGECAP_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/keystore.h"
#include "edgecap/status.h"

#define EC_SEAL_MAGIC "ECSEG\0\0\1"
#define EC_SEAL_MAGIC_BYTES 8
#define EC_SEAL_HEADER_FIXED_BYTES 118
#define EC_SEAL_DEVICE_ID_MAX 64
#define EC_SEAL_HEADER_MAX 4096
#define EC_SEAL_NONCE_PREFIX_BYTES 7
#define EC_SEAL_TAG_BYTES 16
#define EC_SEAL_LENGTH_BYTES 4
#define EC_SEAL_CHUNK_OVERHEAD (EC_SEAL_LENGTH_BYTES + EC_SEAL_TAG_BYTES)
#define EC_SEAL_CHUNK_MAX (1u << 20)
#define EC_SEAL_CODEC_OGG_OPUS 1

/* The nonce's last byte: which kind of chunk this is. */
typedef enum {
    EC_SEAL_MORE = 0,            /* more chunks follow */
    EC_SEAL_FINAL = 1,           /* the final chunk, written at close */
    EC_SEAL_FINAL_RECOVERED = 2, /* the final chunk, written by crash recovery */
} ec_seal_flag;

typedef struct {
    char device_id[EC_SEAL_DEVICE_ID_MAX + 1];
    uint64_t sequence;
    int64_t start_utc_ms;
    uint32_t sample_rate_hz;
    uint8_t channels;
    uint8_t codec;
} ec_segment_meta;

/* One segment's sealing state (data key, cipher, counter), in secure memory. */
typedef struct ec_seal ec_seal;

/*
 * Starts a new segment: draws a data key and nonce prefix, wraps the key with
 * `ks`, and writes the header to `header` (capacity EC_SEAL_HEADER_MAX) with
 * its length in *header_len.
 */
ec_status ec_seal_create(ec_seal **out, const ec_keystore *ks, const ec_segment_meta *meta,
                         uint8_t *header, size_t *header_len);

/*
 * Reads the header length from the first 12 bytes of a file; EC_ERR_CRYPTO
 * for a wrong magic or an impossible length.
 */
ec_status ec_seal_header_length(const uint8_t *first, size_t first_len, size_t *header_len);

/*
 * Opens an existing segment from its header: checks the format, unwraps the
 * data key with `ks` (EC_ERR_CRYPTO if it does not authenticate or the KEK id
 * differs) and fills `meta`.
 */
ec_status ec_seal_open(ec_seal **out, const ec_keystore *ks, const uint8_t *header,
                       size_t header_len, ec_segment_meta *meta);

/*
 * Seals the next chunk: writes EC_SEAL_CHUNK_OVERHEAD + len bytes to `out`.
 * After a final chunk no further chunk can be sealed.
 */
ec_status ec_seal_chunk(ec_seal *s, const uint8_t *plain, size_t len, ec_seal_flag flag,
                        uint8_t *out);

/*
 * Authenticates and decrypts the next chunk. `in` holds the whole chunk
 * (length field, ciphertext, tag); `plain` receives L bytes (L is
 * ec_seal_chunk_plain_length of the chunk). `flag` is the kind of chunk the
 * caller expects (a chunk that ends the file must be final). EC_ERR_CRYPTO
 * when it does not authenticate; the counter advances only on success, so a
 * caller may try another flag.
 */
ec_status ec_seal_unseal_chunk(ec_seal *s, const uint8_t *in, size_t in_len, ec_seal_flag flag,
                               uint8_t *plain);

/* L of a chunk from its 4-byte length field; EC_ERR_CRYPTO above the maximum. */
ec_status ec_seal_chunk_plain_length(const uint8_t *length_field, size_t *plain_len);

/* Chunks sealed or unsealed so far. */
uint32_t ec_seal_chunks_done(const ec_seal *s);

/*
 * Opening only: moves the counter to chunk `index` without decrypting the
 * chunks before it, to authenticate the final chunk alone (a listing reads
 * the trailer; everything else is authenticated when the segment is read).
 */
ec_status ec_seal_seek(ec_seal *s, uint32_t index);

/* Wipes the data key and state; *s becomes NULL. */
void ec_seal_free(ec_seal **s);

#endif
