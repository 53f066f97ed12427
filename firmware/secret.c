/* Opaque secrets in secure memory; see include/edgecap/secret.h. */
#include "edgecap/secret.h"

#include <string.h>

#include "edgecap/secmem.h"

struct ec_secret {
    size_t len;
    uint8_t bytes[]; /* len bytes, then a NUL */
};

ec_status ec_secret_new(ec_secret **out, const void *bytes, size_t len)
{
    if (out == NULL)
        return EC_ERR_INVALID;
    *out = NULL;
    if (bytes == NULL && len > 0)
        return EC_ERR_INVALID;
    /* The header and NUL must not wrap the size into a small allocation. */
    if (len > EC_SECMEM_MAX_BYTES - sizeof(ec_secret) - 1)
        return EC_ERR_NOMEM;
    ec_secret *s = ec_secmem_alloc(sizeof *s + len + 1);
    if (s == NULL)
        return EC_ERR_NOMEM;
    s->len = len;
    if (len > 0)
        memcpy(s->bytes, bytes, len);
    s->bytes[len] = '\0';
    *out = s;
    return EC_OK;
}

void ec_secret_free(ec_secret **secret)
{
    if (secret == NULL || *secret == NULL)
        return;
    ec_secmem_free(*secret); /* wipes */
    *secret = NULL;
}

const uint8_t *ec_secret_bytes(const ec_secret *secret)
{
    return secret != NULL ? secret->bytes : NULL;
}

size_t ec_secret_len(const ec_secret *secret)
{
    return secret != NULL ? secret->len : 0;
}

int ec_secret_equal(const ec_secret *a, const ec_secret *b)
{
    if (a == NULL || b == NULL || a->len != b->len)
        return 0;
    unsigned char diff = 0;
    for (size_t i = 0; i < a->len; i++)
        diff |= (unsigned char)(a->bytes[i] ^ b->bytes[i]);
    return diff == 0;
}
