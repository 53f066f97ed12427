/*
 * AES-256-GCM STREAM sealing of one segment; the format is documented in
 * include/edgecap/seal.h. The data key, the GCM context and the header hash
 * live in secure memory for the segment's lifetime and are wiped on free.
 */
#include "edgecap/seal.h"

#include <string.h>

#include <mbedtls/gcm.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "edgecap/fault.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"

#define WRAP_AAD_BYTES 28

struct ec_seal {
    mbedtls_gcm_context gcm;
    uint8_t data_key[EC_DATA_KEY_BYTES];
    uint8_t header_hash[32];
    uint8_t nonce_prefix[EC_SEAL_NONCE_PREFIX_BYTES];
    uint32_t counter;
    bool finished; /* a last chunk was sealed or unsealed */
};

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static ec_seal *seal_new(void)
{
    ec_seal *s = ec_secmem_alloc(sizeof *s);
    if (s != NULL)
        mbedtls_gcm_init(&s->gcm);
    return s;
}

void ec_seal_free(ec_seal **s)
{
    if (s == NULL || *s == NULL)
        return;
    mbedtls_gcm_free(&(*s)->gcm);
    ec_secmem_free(*s); /* wipes key, hash and counter */
    *s = NULL;
}

/* Keys the cipher and hashes the header: the common tail of create and open. */
static ec_status seal_ready(ec_seal *s, const uint8_t *header, size_t header_len)
{
    if (mbedtls_gcm_setkey(&s->gcm, MBEDTLS_CIPHER_ID_AES, s->data_key, 256) != 0)
        return EC_ERR_CRYPTO;
    if (mbedtls_sha256_ret(header, header_len, s->header_hash, 0) != 0)
        return EC_ERR_CRYPTO;
    memcpy(s->nonce_prefix, header + 88, EC_SEAL_NONCE_PREFIX_BYTES);
    s->counter = 0;
    s->finished = false;
    return EC_OK;
}

ec_status ec_seal_create(ec_seal **out, const ec_keystore *ks, const ec_segment_meta *meta,
                         uint8_t *header, size_t *header_len)
{
    *out = NULL;
    size_t id_len = strnlen(meta->device_id, sizeof meta->device_id);
    if (ks == NULL || ks->ops == NULL || id_len == 0 || id_len > EC_SEAL_DEVICE_ID_MAX ||
        meta->channels == 0)
        return EC_ERR_INVALID;
    size_t h = EC_SEAL_HEADER_FIXED_BYTES + id_len;
    ec_seal *s = seal_new();
    if (s == NULL)
        return EC_ERR_NOMEM;

    memset(header, 0, h);
    memcpy(header, EC_SEAL_MAGIC, EC_SEAL_MAGIC_BYTES);
    put_u32(header + 8, (uint32_t)h);
    ks->ops->kek_id(ks->ctx, header + 12);
    ec_status st = ec_rng_bytes(s->data_key, sizeof s->data_key);
    if (st == EC_OK)
        st = ec_rng_bytes(header + 88, EC_SEAL_NONCE_PREFIX_BYTES);
    if (st == EC_OK)
        st = ks->ops->wrap(ks->ctx, s->data_key, header, WRAP_AAD_BYTES, header + 28);
    if (st != EC_OK)
        goto fail;
    header[95] = meta->codec;
    put_u64(header + 96, meta->sequence);
    put_u64(header + 104, (uint64_t)meta->start_utc_ms);
    put_u32(header + 112, meta->sample_rate_hz);
    header[116] = meta->channels;
    header[117] = (uint8_t)id_len;
    memcpy(header + 118, meta->device_id, id_len);
    st = seal_ready(s, header, h);
    if (st != EC_OK)
        goto fail;
    *header_len = h;
    *out = s;
    return EC_OK;
fail:
    ec_seal_free(&s);
    return st;
}

ec_status ec_seal_header_length(const uint8_t *first, size_t first_len, size_t *header_len)
{
    if (first_len < 12 || memcmp(first, EC_SEAL_MAGIC, EC_SEAL_MAGIC_BYTES) != 0)
        return EC_ERR_CRYPTO;
    uint32_t h = get_u32(first + 8);
    if (h < EC_SEAL_HEADER_FIXED_BYTES + 1 || h > EC_SEAL_HEADER_MAX)
        return EC_ERR_CRYPTO;
    *header_len = h;
    return EC_OK;
}

ec_status ec_seal_open(ec_seal **out, const ec_keystore *ks, const uint8_t *header,
                       size_t header_len, ec_segment_meta *meta)
{
    *out = NULL;
    size_t h;
    if (ks == NULL || ks->ops == NULL)
        return EC_ERR_INVALID;
    if (ec_seal_header_length(header, header_len, &h) != EC_OK || h != header_len)
        return EC_ERR_CRYPTO;
    size_t id_len = header[117];
    if (id_len == 0 || id_len > EC_SEAL_DEVICE_ID_MAX || EC_SEAL_HEADER_FIXED_BYTES + id_len > h)
        return EC_ERR_CRYPTO;
    for (size_t i = EC_SEAL_HEADER_FIXED_BYTES + id_len; i < h; i++) {
        if (header[i] != 0)
            return EC_ERR_CRYPTO;
    }
    uint8_t kek_id[EC_KEK_ID_BYTES];
    ks->ops->kek_id(ks->ctx, kek_id);
    if (memcmp(kek_id, header + 12, EC_KEK_ID_BYTES) != 0)
        return EC_ERR_CRYPTO;

    ec_seal *s = seal_new();
    if (s == NULL)
        return EC_ERR_NOMEM;
    ec_status st = ks->ops->unwrap(ks->ctx, header + 28, header, WRAP_AAD_BYTES, s->data_key);
    if (st == EC_OK)
        st = seal_ready(s, header, h);
    if (st != EC_OK) {
        ec_seal_free(&s);
        return st == EC_ERR_NOMEM ? st : EC_ERR_CRYPTO;
    }
    if (meta != NULL) {
        memset(meta, 0, sizeof *meta);
        memcpy(meta->device_id, header + 118, id_len);
        meta->codec = header[95];
        meta->sequence = get_u64(header + 96);
        meta->start_utc_ms = (int64_t)get_u64(header + 104);
        meta->sample_rate_hz = get_u32(header + 112);
        meta->channels = header[116];
    }
    *out = s;
    return EC_OK;
}

static void chunk_nonce(const ec_seal *s, ec_seal_flag flag, uint8_t nonce[12])
{
    memcpy(nonce, s->nonce_prefix, EC_SEAL_NONCE_PREFIX_BYTES);
    put_u32(nonce + 7, s->counter);
    nonce[11] = (uint8_t)flag;
}

static bool flag_valid(ec_seal_flag flag)
{
    return flag == EC_SEAL_MORE || flag == EC_SEAL_FINAL || flag == EC_SEAL_FINAL_RECOVERED;
}

ec_status ec_seal_chunk(ec_seal *s, const uint8_t *plain, size_t len, ec_seal_flag flag,
                        uint8_t *out)
{
    if (s == NULL || s->finished || len > EC_SEAL_CHUNK_MAX || (plain == NULL && len > 0) ||
        !flag_valid(flag))
        return EC_ERR_INVALID;
    if (s->counter == UINT32_MAX)
        return EC_ERR_INVALID; /* the nonce counter would wrap */
    uint8_t nonce[12];
    chunk_nonce(s, flag, nonce);
    put_u32(out, (uint32_t)len);
    if (EC_FAULT("seal.chunk") ||
        mbedtls_gcm_crypt_and_tag(&s->gcm, MBEDTLS_GCM_ENCRYPT, len, nonce, sizeof nonce,
                                  s->header_hash, sizeof s->header_hash, plain,
                                  out + EC_SEAL_LENGTH_BYTES, EC_SEAL_TAG_BYTES,
                                  out + EC_SEAL_LENGTH_BYTES + len) != 0)
        return EC_ERR_CRYPTO;
    s->counter++;
    s->finished = flag != EC_SEAL_MORE;
    return EC_OK;
}

ec_status ec_seal_chunk_plain_length(const uint8_t *length_field, size_t *plain_len)
{
    uint32_t l = get_u32(length_field);
    if (l > EC_SEAL_CHUNK_MAX)
        return EC_ERR_CRYPTO;
    *plain_len = l;
    return EC_OK;
}

ec_status ec_seal_unseal_chunk(ec_seal *s, const uint8_t *in, size_t in_len, ec_seal_flag flag,
                               uint8_t *plain)
{
    size_t len;
    if (s == NULL || s->finished || s->counter == UINT32_MAX || !flag_valid(flag))
        return EC_ERR_INVALID;
    if (in_len < EC_SEAL_CHUNK_OVERHEAD || ec_seal_chunk_plain_length(in, &len) != EC_OK ||
        in_len != EC_SEAL_CHUNK_OVERHEAD + len)
        return EC_ERR_CRYPTO;
    uint8_t nonce[12];
    chunk_nonce(s, flag, nonce);
    if (mbedtls_gcm_auth_decrypt(&s->gcm, len, nonce, sizeof nonce, s->header_hash,
                                 sizeof s->header_hash, in + EC_SEAL_LENGTH_BYTES + len,
                                 EC_SEAL_TAG_BYTES, in + EC_SEAL_LENGTH_BYTES, plain) != 0) {
        /* mbedTLS already zeroed `plain`; nothing unauthenticated escapes. */
        return EC_ERR_CRYPTO;
    }
    s->counter++;
    s->finished = flag != EC_SEAL_MORE;
    return EC_OK;
}

uint32_t ec_seal_chunks_done(const ec_seal *s)
{
    return s != NULL ? s->counter : 0;
}

ec_status ec_seal_seek(ec_seal *s, uint32_t index)
{
    if (s == NULL || s->finished || index == UINT32_MAX)
        return EC_ERR_INVALID;
    s->counter = index;
    return EC_OK;
}
