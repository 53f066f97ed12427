/*
 * The audit trail: one JSON object per line, appended and fsynced, for every
 * security-relevant event (segments acknowledged and wiped, jobs submitted
 * and finished, auth slot changes, reloads accepted or refused). Values are
 * names, sizes, digests and TLS parameters — never audio, a transcript, a
 * key or a token.
 *
 * Tamper-evident: every line ends with "prev", the SHA-256 (hex) of the
 * previous line's bytes (64 zeros for the first line of a file), and, when
 * [logging] audit_hmac_key is provisioned, "hmac", the HMAC-SHA256 (hex) of
 * the line as it reads without its hmac member. Removing, reordering or
 * editing a line breaks the chain at that point; with the key, a rewritten
 * chain fails its MACs too. ec_audit_verify finds the first broken line.
 *
 * Thread-safe. Owned by main; stages receive the handle.
 */
#ifndef EDGECAP_AUDIT_H
#define EDGECAP_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "edgecap/log.h"
#include "edgecap/secret.h"
#include "edgecap/status.h"

typedef struct ec_audit ec_audit;

#define EC_AUDIT_LINE_MAX 2048

/*
 * Opens (creating 0600, its directory 0700) `path` for appending and picks
 * up the chain from its last line; an empty path gives a handle that
 * records nothing. `hmac_key` (may be NULL) is copied.
 */
ec_status ec_audit_open(ec_audit **out, const char *path, const ec_secret *hmac_key);

/* Appends one event with typed fields (EC_LOG_SECRET is refused). */
ec_status ec_audit_record(ec_audit *a, const char *event, const ec_log_field *fields, size_t n);

#define ec_audit(a, event, ...)                                                                    \
    ec_audit_record((a), (event), (const ec_log_field[]){{.type = EC_LOG_F_NONE}, __VA_ARGS__},    \
                    sizeof((const ec_log_field[]){{.type = EC_LOG_F_NONE}, __VA_ARGS__}) /         \
                        sizeof(ec_log_field))

void ec_audit_close(ec_audit **a);

typedef struct {
    size_t lines;          /* lines read */
    size_t first_bad_line; /* 1-based; 0 when the whole file verifies */
    bool macs_checked;     /* a key was given and every line carried an hmac */
    char reason[160];      /* why first_bad_line is bad */
} ec_audit_report;

/*
 * Verifies `path`: every line whole and of the audit format, each "prev"
 * the SHA-256 of the line before, and with `hmac_key` each "hmac". EC_OK
 * when intact; EC_ERR_CRYPTO with the first broken line in `r`;
 * EC_ERR_NOT_FOUND / EC_ERR_IO when it cannot be read.
 */
ec_status ec_audit_verify(const char *path, const ec_secret *hmac_key, ec_audit_report *r);

#endif
