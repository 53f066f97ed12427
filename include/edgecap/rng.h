/*
 * The daemon's random bytes: one mbedTLS CTR_DRBG (AES-256) seeded from the
 * kernel (getrandom via mbedtls_entropy), its state in secure memory, reseeded
 * by mbedTLS on its interval. Used for data keys, nonces and prefixes.
 * Thread-safe. Any module may call it after ec_rng_init().
 */
#ifndef EDGECAP_RNG_H
#define EDGECAP_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "edgecap/status.h"

/* Seeds the generator; idempotent. Personalisation binds it to this use. */
ec_status ec_rng_init(void);

/* Fills `out` with `len` random bytes (EC_ERR_CRYPTO if the DRBG fails). */
ec_status ec_rng_bytes(void *out, size_t len);

/* The mbedTLS-style callback (ctx ignored) for APIs that take f_rng/p_rng. */
int ec_rng_mbedtls(void *ctx, unsigned char *out, size_t len);

/* Wipes and releases the generator's state (at exit). */
void ec_rng_free(void);

#endif
