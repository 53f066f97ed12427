/*
 * Prometheus text rendering and the atomic textfile (see
 * include/edgecap/metrics.h).
 */
#include "edgecap/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "edgecap/config.h"

typedef struct {
    char *out;
    size_t cap;
    size_t len;
    bool overflow;
} writer;

static void put(writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(writer *w, const char *fmt, ...)
{
    if (w->overflow)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->out + w->len, w->cap - w->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= w->cap - w->len)
        w->overflow = true;
    else
        w->len += (size_t)n;
}

static void family(writer *w, const char *name, const char *type, const char *help)
{
    put(w, "# HELP edgecap_%s %s\n# TYPE edgecap_%s %s\n", name, help, name, type);
}

static void counter(writer *w, const char *name, const char *help, uint64_t v)
{
    family(w, name, "counter", help);
    put(w, "edgecap_%s %" PRIu64 "\n", name, v);
}

static void gauge(writer *w, const char *name, const char *help, double v)
{
    family(w, name, "gauge", help);
    put(w, "edgecap_%s %.17g\n", name, v);
}

static void latency_histogram(writer *w, const ec_upload_stats *u)
{
    static const double bounds[] = EC_UPLOAD_LATENCY_BOUNDS;
    family(w, "upload_latency_seconds", "histogram",
           "Seconds from the first request to the proven acknowledgment of a segment.");
    uint64_t cumulative = 0;
    for (size_t b = 0; b < EC_UPLOAD_LATENCY_BUCKETS; b++) {
        cumulative += u->latency_buckets[b];
        if (b < sizeof bounds / sizeof bounds[0])
            put(w, "edgecap_upload_latency_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", bounds[b],
                cumulative);
        else
            put(w, "edgecap_upload_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cumulative);
    }
    put(w, "edgecap_upload_latency_seconds_sum %.17g\n", u->latency_sum_s);
    put(w, "edgecap_upload_latency_seconds_count %" PRIu64 "\n", cumulative);
}

ec_status ec_metrics_format(const ec_metrics_snapshot *m, char *out, size_t cap, size_t *len)
{
    writer w = {.out = out, .cap = cap};
    if (cap == 0)
        return EC_ERR_INVALID;
    out[0] = '\0';
    if (m->have_capture) {
        counter(&w, "capture_frames_total", "PCM frames captured.", m->capture.frames_captured);
        counter(&w, "capture_frames_dropped_total",
                "PCM frames lost to a full queue (real-time source).", m->capture.frames_dropped);
        counter(&w, "capture_overruns_total", "Times the capture queue was full.",
                m->capture.overruns);
        counter(&w, "segments_sealed_total", "Segments sealed into the spool.",
                m->capture.segments_sealed);
    }
    counter(&w, "segments_quarantined_total", "Spool segments moved to quarantine.",
            m->spool.quarantined);
    counter(&w, "segments_recovered_total", "Segments closed by crash recovery.",
            m->spool.recovered);
    counter(&w, "segments_dropped_total", "Segments removed by the drop-oldest quota policy.",
            m->spool.dropped);
    counter(&w, "segments_purged_total",
            "Segments crypto-shredded past [spool] max_age_hours (or by a wipe).",
            m->spool.shredded);
    gauge(&w, "spool_bytes", "Bytes the spool's segments occupy.", (double)m->spool_bytes);
    gauge(&w, "spool_segments", "Closed segments waiting for delivery.", (double)m->spool_segments);
    gauge(&w, "spool_oldest_segment_age_seconds", "Age of the oldest waiting segment.",
          m->spool_oldest_age_s);
    gauge(&w, "delivering", "1 while the delivery stack (uploader, auth, jobs) is up.",
          m->delivering ? 1 : 0);
    if (m->have_upload) {
        const ec_upload_stats *u = &m->upload;
        counter(&w, "segments_acknowledged_total",
                "Segments whose delivery the service proved (then wiped).",
                u->segments_acknowledged);
        counter(&w, "bytes_acknowledged_total", "Bytes of acknowledged segments.",
                u->bytes_acknowledged);
        gauge(&w, "last_acknowledged_timestamp_seconds",
              "Unix time of the last acknowledged segment; 0 when none yet.",
              (double)(u->last_ack_utc_ms / 1000));
        counter(&w, "upload_attempts_failed_total", "Upload attempts that failed.",
                u->attempts_failed);
        family(&w, "tls_failures_total", "counter",
               "Requests refused in the TLS handshake, per endpoint and reason.");
        for (int e = 0; e < 2; e++)
            for (int r = 0; r < EC_TLS_REASONS; r++)
                put(&w, "edgecap_tls_failures_total{endpoint=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
                    e == 0 ? "primary" : "secondary", ec_tls_reason_name((ec_tls_reason)r),
                    u->tls_failures_by_reason[e][r]);
        counter(&w, "upload_failovers_total", "Segments delivered to the secondary endpoint.",
                u->failovers);
        family(&w, "breaker_state", "gauge",
               "Circuit breaker per endpoint: 0 closed, 1 open, 2 half-open.");
        put(&w, "edgecap_breaker_state{endpoint=\"primary\"} %d\n", u->breaker_state[0]);
        put(&w, "edgecap_breaker_state{endpoint=\"secondary\"} %d\n", u->breaker_state[1]);
        family(&w, "breaker_opens_total", "counter", "Times a circuit breaker opened.");
        put(&w, "edgecap_breaker_opens_total{endpoint=\"primary\"} %" PRIu64 "\n",
            u->breaker_opens[0]);
        put(&w, "edgecap_breaker_opens_total{endpoint=\"secondary\"} %" PRIu64 "\n",
            u->breaker_opens[1]);
        latency_histogram(&w, u);
    }
    if (m->have_auth) {
        counter(&w, "tokens_issued_total", "Entra ID tokens obtained.", m->auth.tokens_issued);
        counter(&w, "token_refreshes_total", "Tokens obtained to replace a cached one.",
                m->auth.token_refreshes);
        counter(&w, "token_failures_total", "Token requests that failed or were refused.",
                m->auth.token_failures);
        counter(&w, "unauthorized_total", "401 answers from a service.", m->auth.unauthorized);
        gauge(&w, "key_slot", "Subscription key in use: 0 primary, 1 secondary.", m->auth.key_slot);
    }
    if (m->have_batch) {
        family(&w, "batch_jobs", "gauge", "Batch transcription state.");
        put(&w, "edgecap_batch_jobs{state=\"pending_blobs\"} %zu\n", m->batch.pending);
        put(&w, "edgecap_batch_jobs{state=\"active\"} %zu\n", m->batch.submitted);
        put(&w, "edgecap_batch_jobs{state=\"succeeded\"} %zu\n", m->batch.succeeded);
        put(&w, "edgecap_batch_jobs{state=\"given_up\"} %zu\n", m->batch.failed);
        counter(&w, "batch_submissions_total", "Batch job submissions.", m->batch.submissions);
    }
    if (w.overflow)
        return EC_ERR_INVALID;
    *len = w.len;
    return EC_OK;
}

ec_status ec_metrics_write_textfile(const char *path, const char *text, size_t len)
{
    char tmp[EC_CFG_PATH_MAX + 8];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return EC_ERR_INVALID;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return EC_ERR_IO;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    int rc = off == len ? fsync(fd) : -1;
    close(fd);
    if (rc != 0 || rename(tmp, path) != 0) {
        (void)unlink(tmp);
        return EC_ERR_IO;
    }
    return EC_OK;
}
