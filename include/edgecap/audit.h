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
 * Several processes may append to one file (the daemon, upload-once, the
 * CLI): each append takes an exclusive flock on the file, re-reads the
 * chain's tail if another process wrote (or rotated) since, and only then
 * writes, so the chain never forks.
 *
 * Rotation ([logging] audit_max_bytes, audit_keep): before an append would
 * take the file past max_bytes, FILE becomes FILE.1 (FILE.1 FILE.2, ...; the
 * oldest beyond `keep` goes) and the new FILE starts with a "rotated" record
 * whose prev is the last hash of the old file and which names that hash
 * (previous_sha256) and the old file's line count (previous_lines). The new
 * file is written and fsynced as FILE.new first, FILE is hard-linked to
 * FILE.1, and FILE.new is renamed over FILE: FILE always exists and always
 * begins with a whole line, so a crash at any step leaves files that verify
 * (a half-done rotation is rolled back by the next writer).
 *
 * Syslog copy ([logging] audit_syslog): each line also goes, as one RFC 3164
 * or RFC 5424 datagram, to an AF_UNIX datagram socket (/dev/log by default),
 * never blocking: a datagram the receiver cannot take is dropped and counted.
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

typedef enum { EC_AUDIT_RFC3164 = 0, EC_AUDIT_RFC5424 = 1 } ec_audit_syslog_format;

typedef struct {
    const char *path;          /* "" or NULL: a handle that records nothing */
    const ec_secret *hmac_key; /* may be NULL; copied */
    long long max_bytes;       /* rotate before the file would exceed it; 0 = never */
    int keep;                  /* rotated files kept (FILE.1 .. FILE.keep); >= 1 */
    bool syslog;               /* copy every line to syslog_socket */
    const char *syslog_socket; /* AF_UNIX datagram socket; NULL = /dev/log */
    int syslog_facility;       /* syslog facility code (LOG_AUTHPRIV, LOG_LOCAL0..7) */
    int syslog_format;         /* ec_audit_syslog_format */
} ec_audit_params;

/*
 * Opens (creating 0600, its directory 0700) `path` for appending and picks
 * up the chain from its last line; an empty path gives a handle that
 * records nothing. `hmac_key` (may be NULL) is copied.
 */
ec_status ec_audit_open(ec_audit **out, const char *path, const ec_secret *hmac_key);
/* The same with rotation and the syslog copy. */
ec_status ec_audit_open_params(ec_audit **out, const ec_audit_params *params);

typedef struct {
    unsigned long long lines;          /* appended by this handle */
    unsigned long long rotations;      /* rotations this handle did */
    unsigned long long syslog_sent;    /* datagrams the syslog socket took */
    unsigned long long syslog_dropped; /* lines not copied (socket dead or full) */
} ec_audit_stats;

void ec_audit_get_stats(ec_audit *a, ec_audit_stats *out);

/* Appends one event with typed fields (EC_LOG_SECRET is refused). */
ec_status ec_audit_record(ec_audit *a, const char *event, const ec_log_field *fields, size_t n);

#define ec_audit(a, event, ...)                                                                    \
    ec_audit_record((a), (event), (const ec_log_field[]){{.type = EC_LOG_F_NONE}, __VA_ARGS__},    \
                    sizeof((const ec_log_field[]){{.type = EC_LOG_F_NONE}, __VA_ARGS__}) /         \
                        sizeof(ec_log_field))

void ec_audit_close(ec_audit **a);

typedef struct {
    size_t files;            /* files read */
    size_t lines;            /* lines read, over all files */
    size_t bad_file;         /* index (in the list) of the file with the first broken line,
                                or of the file that could not be read */
    size_t first_bad_line;   /* 1-based within that file; 0 when everything verifies */
    bool macs_checked;       /* a key was given and every line carried an hmac */
    bool continues;          /* the first file begins with a "rotated" record: it */
    char continues_from[65]; /* continues from this hash */
    unsigned long long continues_after; /* after this many lines of an earlier file */
    char reason[200];                   /* why first_bad_line is bad */
} ec_audit_report;

/*
 * Verifies `path`: every line whole and of the audit format, each "prev"
 * the SHA-256 of the line before, and with `hmac_key` each "hmac". A file
 * whose first line is a "rotated" record continues from the hash it names
 * (reported in r->continues*). EC_OK when intact; EC_ERR_CRYPTO with the
 * first broken line in `r`; EC_ERR_NOT_FOUND / EC_ERR_IO when it cannot be
 * read.
 */
ec_status ec_audit_verify(const char *path, const ec_secret *hmac_key, ec_audit_report *r);
/*
 * The same over `n` files, oldest first (FILE.2 FILE.1 FILE): every file
 * after the first must begin with the "rotated" record that links it to the
 * last line (and line count) of the one before.
 */
ec_status ec_audit_verify_files(const char *const *paths, size_t n, const ec_secret *hmac_key,
                                ec_audit_report *r);

#endif
