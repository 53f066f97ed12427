/*
 * `edgecap status`: the facts of the metrics as a short human summary or one
 * JSON object. The spool's own facts are read from the spool directory; the
 * daemon's counters (upload, breakers, TLS failures, tokens, jobs) from its
 * [metrics] listen endpoint or textfile while it runs. Everything here is
 * already public in the metrics: no secret passes through.
 *
 * Owned by main.
 */
#ifndef EDGECAP_REPORT_H
#define EDGECAP_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "edgecap/status.h"

typedef struct {
    const char *device_id;
    const char *spool_dir;
    long daemon_pid;         /* 0: no daemon owns the spool */
    uint64_t spool_segments; /* closed, waiting for delivery */
    uint64_t spool_bytes;
    double spool_oldest_age_s;
    uint64_t quarantined;   /* files in the spool's quarantine/ */
    const char *metrics;    /* the running daemon's Prometheus text, or NULL */
    char metrics_from[400]; /* "listener ..." / "textfile ...", or why there are none */
} ec_report;

/* GETs /metrics from a [metrics] listen address (loopback or unix socket)
 * into `out` (NUL-terminated), within EC_METRICS_HTTP_TIMEOUT_MS. */
ec_status ec_report_scrape(const char *listen, char *out, size_t cap);

/* The value of one sample ("edgecap_spool_bytes" or
 * "edgecap_breaker_state{endpoint=\"primary\"}") in Prometheus text. */
bool ec_report_sample(const char *text, const char *sample, double *out);

void ec_report_print_text(const ec_report *r, FILE *out);

/* One JSON object (cJSON in a secure-memory arena); EC_ERR_NOMEM. */
ec_status ec_report_print_json(const ec_report *r, FILE *out);

#endif
