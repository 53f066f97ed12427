/*
 * Retention and secure deletion: [spool] max_age_hours and `edgecap wipe`.
 *
 * A segment that could not be delivered within max_age_hours is
 * crypto-shredded (ec_spool_shred: its wrapped data key zeroed in place and
 * fsynced, then the file unlinked and the directory fsynced) and audited as
 * `retention_purge` (name, sequence, age, size; never contents). This covers
 * closed segments, .part files and quarantined files alike. A segment's age
 * runs from the UTC start in its header, not from its mtime (a copy or a
 * restore changes that); a file without a readable header is aged by mtime,
 * and the log says so. A segment being written or uploaded is left for the
 * next pass.
 *
 * Owned by main: the daemon purges at start and once a minute, `upload-once`
 * before it uploads, `wipe` shreds everything. The uploader asks
 * ec_retention_expired so that it never sends a segment past its age.
 */
#ifndef EDGECAP_RETENTION_H
#define EDGECAP_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/audit.h"
#include "edgecap/spool.h"
#include "edgecap/status.h"

/* How often the daemon purges. */
#define EC_RETENTION_INTERVAL_S 60

typedef struct {
    size_t shredded;       /* items crypto-shredded */
    uint64_t bytes;        /* their sizes */
    size_t deferred;       /* in use (being written or uploaded): next pass */
    size_t failed;         /* could not be shredded (logged) */
    size_t age_from_mtime; /* shredded items aged by mtime (no readable header) */
    size_t by_kind[3];     /* shredded, per ec_spool_item_kind */
} ec_retention_result;

/* Whether a segment that started at start_utc_ms is older than
 * max_age_hours at now_utc_ms. */
bool ec_retention_expired(int64_t start_utc_ms, int max_age_hours, int64_t now_utc_ms);

/* Crypto-shreds and audits every item of `spool` older than max_age_hours.
 * EC_OK unless the spool cannot be listed; failures are counted in *r. */
ec_status ec_retention_purge(ec_spool *spool, ec_audit *audit, int max_age_hours,
                             int64_t now_utc_ms, ec_retention_result *r);

/* Crypto-shreds every item of `spool` whatever its age (decommissioning),
 * each audited as `wipe_shredded`. */
ec_status ec_retention_shred_all(ec_spool *spool, ec_audit *audit, ec_retention_result *r);

#endif
