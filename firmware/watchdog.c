/*
 * Readiness, status and a watchdog that is fed only by pipeline progress
 * (see include/edgecap/watchdog.h). The backend only carries messages; what
 * they say and when a ping is deserved is decided here, the same for every
 * board.
 */
#include "edgecap/watchdog.h"

#include <stdio.h>
#include <time.h>

#include "edgecap/log.h"

ec_status ec_watchdog_notify(ec_watchdog *wd, const char *state)
{
    if (wd == NULL || wd->ops == NULL)
        return EC_OK;
    return wd->ops->notify(wd->ctx, state);
}

static void notify_with_status(ec_watchdog *wd, const char *what, const char *status)
{
    if (wd == NULL || wd->ops == NULL)
        return;
    char msg[256];
    snprintf(msg, sizeof msg, "%s%sSTATUS=%s", what, what[0] != '\0' ? "\n" : "", status);
    if (ec_watchdog_notify(wd, msg) != EC_OK)
        ec_log(EC_LOG_WARN, "notify_failed", EC_LOG_STR("backend", wd->ops->name));
}

void ec_watchdog_ready(ec_watchdog *wd, const char *status)
{
    notify_with_status(wd, "READY=1", status);
}

void ec_watchdog_reloading(ec_watchdog *wd)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char what[64];
    snprintf(what, sizeof what, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    notify_with_status(wd, what, "reloading the provisioning file");
}

void ec_watchdog_stopping(ec_watchdog *wd)
{
    notify_with_status(wd, "STOPPING=1", "stopping: closing the open segment");
}

void ec_watchdog_status(ec_watchdog *wd, const char *status)
{
    notify_with_status(wd, "", status);
}

void ec_watchdog_close(ec_watchdog *wd)
{
    if (wd == NULL || wd->ops == NULL)
        return;
    wd->ops->close(wd->ctx);
    wd->ops = NULL;
    wd->ctx = NULL;
}

/* ---- liveness -------------------------------------------------------------- */

void ec_liveness_init(ec_liveness *l, int64_t capture_stall_ms, int64_t upload_stall_ms)
{
    *l = (ec_liveness){.capture_stall_ms = capture_stall_ms, .upload_stall_ms = upload_stall_ms};
}

const char *ec_liveness_check(ec_liveness *l, const ec_liveness_sample *s, int64_t now_ms)
{
    if (!l->started) {
        l->started = true;
        l->capture_moved_ms = l->upload_moved_ms = now_ms;
        l->last = *s;
        return NULL;
    }
    /* A source that ended has nothing left to read: capture is not stuck. */
    if (s->capture_frames != l->last.capture_frames || s->capture_finished)
        l->capture_moved_ms = now_ms;
    /* An uploader that just (re)started (a reload) starts its clock now. */
    if (!s->have_upload || !l->last.have_upload ||
        s->upload_heartbeats != l->last.upload_heartbeats)
        l->upload_moved_ms = now_ms;
    l->last = *s;
    if (now_ms - l->capture_moved_ms > l->capture_stall_ms)
        return "capture";
    if (s->have_upload && now_ms - l->upload_moved_ms > l->upload_stall_ms)
        return "upload";
    return NULL;
}

/* ---- feeding ---------------------------------------------------------------- */

void ec_watchdog_feeder_init(ec_watchdog_feeder *f, const ec_watchdog *wd,
                             int64_t upload_stall_floor_ms)
{
    /* A stage is stuck when it has not moved for a whole supervisor timeout;
     * the uploader may legitimately sit in one libcurl call without progress
     * calls (a token request) up to its connect and low-speed timeouts. */
    int64_t upload_stall =
        wd->timeout_ms > upload_stall_floor_ms ? wd->timeout_ms : upload_stall_floor_ms;
    *f = (ec_watchdog_feeder){0};
    ec_liveness_init(&f->liveness, wd->timeout_ms, upload_stall);
}

void ec_watchdog_feed(ec_watchdog_feeder *f, ec_watchdog *wd, const ec_liveness_sample *s,
                      int64_t now_ms)
{
    if (wd == NULL || wd->ops == NULL || wd->ping_interval_ms <= 0)
        return;
    const char *stuck = ec_liveness_check(&f->liveness, s, now_ms);
    if (stuck != NULL) {
        if (f->withheld == NULL) {
            ec_log(EC_LOG_ERROR, "watchdog_withheld", EC_LOG_STR("stage", stuck),
                   EC_LOG_STR("reason", "no progress within the watchdog timeout"),
                   EC_LOG_STR("effect", wd->ops->on_timeout));
            char status[96];
            snprintf(status, sizeof status, "stalled: %s makes no progress", stuck);
            ec_watchdog_status(wd, status);
        }
        f->withheld = stuck;
        return;
    }
    if (f->withheld != NULL) {
        ec_log(EC_LOG_INFO, "watchdog_resumed", EC_LOG_STR("stage", f->withheld));
        ec_watchdog_status(wd, "running");
        f->withheld = NULL;
    }
    if (f->pings_sent == 0 || now_ms - f->last_ping_ms >= wd->ping_interval_ms) {
        if (ec_watchdog_notify(wd, "WATCHDOG=1") == EC_OK)
            f->pings_sent++;
        f->last_ping_ms = now_ms;
    }
}
