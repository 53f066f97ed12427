/*
 * Health in Prometheus text format (exposition format 0.0.4): a snapshot of
 * the stages' counters, rendered by ec_metrics_format and written atomically
 * (tmp, fsync, rename) to [metrics] textfile for node_exporter's textfile
 * collector every [metrics] interval_seconds. Names are prefixed edgecap_,
 * counters end in _total, every family has HELP and TYPE. No label or value
 * carries audio, a transcript, a key or a token.
 *
 * Owned by main.
 */
#ifndef EDGECAP_METRICS_H
#define EDGECAP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/auth.h"
#include "edgecap/capture.h"
#include "edgecap/speech.h"
#include "edgecap/spool.h"
#include "edgecap/status.h"
#include "edgecap/upload.h"

typedef struct {
    const char *device_id;
    ec_capture_stats capture;
    bool have_capture;
    ec_spool_stats spool;
    uint64_t spool_bytes;
    uint64_t spool_segments;   /* closed, waiting for upload */
    double spool_oldest_age_s; /* of the oldest closed segment; 0 when none */
    ec_upload_stats upload;
    bool have_upload;
    ec_auth_stats auth;
    bool have_auth;
    ec_batch_stats batch;
    bool have_batch;
    bool delivering; /* the delivery stack is up */
} ec_metrics_snapshot;

#define EC_METRICS_TEXT_MAX (16 * 1024)

/* Renders `m`; EC_ERR_INVALID if it does not fit `cap`. */
ec_status ec_metrics_format(const ec_metrics_snapshot *m, char *out, size_t cap, size_t *len);

/* Writes `text` to `path` atomically (PATH.tmp, fsync, rename), mode 0644:
 * a collector never reads a half-written file. */
ec_status ec_metrics_write_textfile(const char *path, const char *text, size_t len);

#endif
