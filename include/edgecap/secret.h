/*
 * A secret value (SAS token, subscription key, HMAC key, bearer token): bytes
 * held in secure memory behind an opaque type. Nothing formats a secret: the
 * logger's typed fields accept it only as EC_LOG_SECRET, which prints "***",
 * and passing it where a string is expected does not compile. The one way to
 * the bytes is ec_secret_bytes(), used only where the secret is put on the
 * wire or into a MAC.
 */
#ifndef EDGECAP_SECRET_H
#define EDGECAP_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "edgecap/status.h"

#define EC_SECRET_REDACTED "***"

typedef struct ec_secret ec_secret;

/* Copies `len` bytes into a new secret (NUL-terminated after the bytes).
 * *out is NULL on failure. */
ec_status ec_secret_new(ec_secret **out, const void *bytes, size_t len);

/* Wipes, releases and sets *secret to NULL; NULL or *NULL is a no-op. */
void ec_secret_free(ec_secret **secret);

/* The secret's bytes, NUL-terminated; only for the wire or a MAC. */
const uint8_t *ec_secret_bytes(const ec_secret *secret);

size_t ec_secret_len(const ec_secret *secret);

/* Constant-time comparison of two secrets' contents. */
int ec_secret_equal(const ec_secret *a, const ec_secret *b);

#endif
