/*
 * The audit trail: one JSON object per line, appended and fsynced, for every
 * security-relevant event of a segment's life (acknowledged and wiped, for
 * now). Values are names, sizes, digests and TLS parameters — never audio, a
 * transcript, a key or a token. (The hash chain and HMAC of the fleet issue
 * build on this file format.)
 *
 * Thread-safe. Owned by main; stages receive the handle.
 */
#ifndef EDGECAP_AUDIT_H
#define EDGECAP_AUDIT_H

#include "edgecap/log.h"
#include "edgecap/status.h"

typedef struct ec_audit ec_audit;

/* Opens (creating 0600, its directory 0700) `path` for appending; an empty
 * path gives a handle that records nothing. */
ec_status ec_audit_open(ec_audit **out, const char *path);

/* Appends one event with typed fields (EC_LOG_SECRET is refused). */
ec_status ec_audit_record(ec_audit *a, const char *event, const ec_log_field *fields, size_t n);

#define ec_audit(a, event, ...)                                                                    \
    ec_audit_record((a), (event), (const ec_log_field[]){{.type = EC_LOG_F_NONE}, __VA_ARGS__},    \
                    sizeof((const ec_log_field[]){{.type = EC_LOG_F_NONE}, __VA_ARGS__}) /         \
                        sizeof(ec_log_field))

void ec_audit_close(ec_audit **a);

#endif
