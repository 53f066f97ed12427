/*
 * Retention (see include/edgecap/retention.h): picks the items past their
 * age and hands each to the spool's crypto-shredder, with one log and one
 * audit line per item.
 */
#include "edgecap/retention.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgecap/log.h"

#define HOUR_MS (3600LL * 1000)
/* A header start further ahead than this is not believed (a clock that was
 * wrong when the segment was sealed, or a damaged quarantined file). */
#define FUTURE_SLACK_MS (24 * HOUR_MS)

bool ec_retention_expired(int64_t start_utc_ms, int max_age_hours, int64_t now_utc_ms)
{
    return now_utc_ms - start_utc_ms > (int64_t)max_age_hours * HOUR_MS;
}

static const char *kind_name(int kind)
{
    return kind == EC_ITEM_SEALED ? "sealed" : kind == EC_ITEM_PART ? "part" : "quarantined";
}

/* The item's start: its header's, or its mtime when the header is missing
 * or not believable (*from_mtime then, and logged). */
static int64_t item_start(const ec_spool_item *it, int64_t now_utc_ms, bool *from_mtime)
{
    *from_mtime = !it->have_header || it->start_utc_ms <= 0 ||
                  it->start_utc_ms > now_utc_ms + FUTURE_SLACK_MS;
    return *from_mtime ? it->mtime_utc_ms : it->start_utc_ms;
}

/* max_age_hours < 0: everything. */
static ec_status shred_items(ec_spool *spool, ec_audit *audit, const char *event, int max_age_hours,
                             int64_t now_utc_ms, ec_retention_result *r)
{
    memset(r, 0, sizeof *r);
    ec_spool_item *items = NULL;
    size_t n = 0;
    ec_status st = ec_spool_items(spool, &items, &n);
    if (st != EC_OK) {
        ec_log(EC_LOG_ERROR, "retention_failed", EC_LOG_STATUS(st),
               EC_LOG_STR("reason", "cannot list the spool"));
        return st;
    }
    for (size_t i = 0; i < n; i++) {
        const ec_spool_item *it = &items[i];
        bool from_mtime = false;
        int64_t start = item_start(it, now_utc_ms, &from_mtime);
        if (max_age_hours >= 0 && !ec_retention_expired(start, max_age_hours, now_utc_ms))
            continue;
        int64_t age_s = now_utc_ms > start ? (now_utc_ms - start) / 1000 : 0;
        if (from_mtime && max_age_hours >= 0)
            ec_log(EC_LOG_WARN, "retention_age_from_mtime", EC_LOG_STR("segment", it->file),
                   EC_LOG_STR("kind", kind_name(it->kind)),
                   EC_LOG_STR("reason", it->have_header ? "the header's start is not believable"
                                                        : "no readable header"));
        ec_status rc = ec_spool_shred(spool, it);
        if (rc == EC_ERR_BUSY) {
            r->deferred++;
            ec_log(EC_LOG_INFO, "retention_deferred", EC_LOG_STR("segment", it->file),
                   EC_LOG_STR("reason", "being written or uploaded"));
            continue;
        }
        if (rc == EC_ERR_NOT_FOUND)
            continue; /* gone meanwhile (uploaded) */
        if (rc != EC_OK) {
            r->failed++;
            ec_log(EC_LOG_ERROR, "retention_shred_failed", EC_LOG_STR("segment", it->file),
                   EC_LOG_STR("kind", kind_name(it->kind)), EC_LOG_STATUS(rc));
            continue;
        }
        r->shredded++;
        r->bytes += it->size_bytes;
        r->age_from_mtime += from_mtime;
        r->by_kind[it->kind]++;
        ec_log(EC_LOG_INFO, event, EC_LOG_STR("segment", it->file),
               EC_LOG_STR("kind", kind_name(it->kind)), EC_LOG_UINT("sequence", it->sequence),
               EC_LOG_INT("age_s", age_s), EC_LOG_UINT("size_bytes", it->size_bytes),
               EC_LOG_STR("age_from", from_mtime ? "mtime" : "header"));
        ec_audit(audit, event, EC_LOG_STR("segment", it->file),
                 EC_LOG_STR("kind", kind_name(it->kind)), EC_LOG_UINT("sequence", it->sequence),
                 EC_LOG_INT("age_s", age_s), EC_LOG_UINT("size_bytes", it->size_bytes),
                 EC_LOG_STR("age_from", from_mtime ? "mtime" : "header"));
    }
    free(items);
    return EC_OK;
}

ec_status ec_retention_purge(ec_spool *spool, ec_audit *audit, int max_age_hours,
                             int64_t now_utc_ms, ec_retention_result *r)
{
    if (max_age_hours < 1)
        return EC_ERR_INVALID;
    return shred_items(spool, audit, "retention_purge", max_age_hours, now_utc_ms, r);
}

ec_status ec_retention_shred_all(ec_spool *spool, ec_audit *audit, ec_retention_result *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return shred_items(spool, audit, "wipe_shredded", -1, now, r);
}
