/*
 * `edgecap status` (see include/edgecap/report.h).
 */
#include "edgecap/report.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "edgecap/json.h"
#include "edgecap/metrics_http.h"
#include "edgecap/tls_reason.h"

/* ---- the listener, as a client ------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        return n > 0;
    }
}

ec_status ec_report_scrape(const char *listen, char *out, size_t cap)
{
    static const char request[] =
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    ec_metrics_addr a;
    ec_status st = ec_metrics_listen_parse(listen, &a);
    if (st != EC_OK || cap < 2)
        return st != EC_OK ? st : EC_ERR_INVALID;
    int64_t deadline = mono_ms() + EC_METRICS_HTTP_TIMEOUT_MS;
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    size_t len = 0;
    st = EC_ERR_NETWORK;
    if (fd < 0)
        goto out;
    if (connect(fd, (const struct sockaddr *)&a.addr, a.addr_len) != 0 &&
        !(errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline)))
        goto out;
    if (send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof request - 1))
        goto out;
    for (;;) {
        if (len + 1 == cap) {
            st = EC_ERR_PROTOCOL; /* longer than any snapshot */
            goto out;
        }
        ssize_t n = recv(fd, out + len, cap - 1 - len, 0);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR ||
            ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLIN, deadline)))
            continue;
        goto out;
    }
    out[len] = '\0';
    const char *body = strstr(out, "\r\n\r\n");
    if (strncmp(out, "HTTP/1.1 200 ", 13) != 0 || body == NULL) {
        st = EC_ERR_PROTOCOL;
        goto out;
    }
    body += 4;
    memmove(out, body, strlen(body) + 1);
    st = EC_OK;
out:
    if (fd >= 0)
        close(fd);
    if (st != EC_OK)
        out[0] = '\0';
    return st;
}

/* ---- reading samples ----------------------------------------------------- */

bool ec_report_sample(const char *text, const char *sample, double *out)
{
    size_t n = strlen(sample);
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *next = strchr(line, '\n');
        if (line[0] != '#' && strncmp(line, sample, n) == 0 && line[n] == ' ') {
            char *end = NULL;
            double v = strtod(line + n + 1, &end);
            if (end != line + n + 1) {
                *out = v;
                return true;
            }
        }
        line = next != NULL ? next + 1 : NULL;
    }
    return false;
}

static double sample_or(const ec_report *r, const char *sample, double dflt)
{
    double v = dflt;
    if (r->metrics != NULL)
        (void)ec_report_sample(r->metrics, sample, &v);
    return v;
}

static bool has(const ec_report *r, const char *sample)
{
    double v;
    return r->metrics != NULL && ec_report_sample(r->metrics, sample, &v);
}

static const char *const endpoints[2] = {"primary", "secondary"};
static const char *const breaker_names[3] = {"closed", "open", "half-open"};
static const char *const job_states[4] = {"pending_blobs", "active", "succeeded", "given_up"};

static const char *breaker_state(const ec_report *r, int e)
{
    char name[96];
    snprintf(name, sizeof name, "edgecap_breaker_state{endpoint=\"%s\"}", endpoints[e]);
    double v = sample_or(r, name, -1);
    return v >= 0 && v <= 2 ? breaker_names[(int)v] : NULL;
}

static double tls_failures(const ec_report *r, int e, int reason)
{
    char name[128];
    snprintf(name, sizeof name, "edgecap_tls_failures_total{endpoint=\"%s\",reason=\"%s\"}",
             endpoints[e], ec_tls_reason_name((ec_tls_reason)reason));
    return sample_or(r, name, 0);
}

static double job_count(const ec_report *r, int s)
{
    char name[96];
    snprintf(name, sizeof name, "edgecap_batch_jobs{state=\"%s\"}", job_states[s]);
    return sample_or(r, name, 0);
}

/* Seconds since the last acknowledgment, or -1 when none is known. */
static double last_ack_age(const ec_report *r)
{
    double ts = sample_or(r, "edgecap_last_acknowledged_timestamp_seconds", 0);
    if (ts <= 0)
        return -1;
    double age = (double)time(NULL) - ts;
    return age < 0 ? 0 : age;
}

/* ---- human --------------------------------------------------------------- */

void ec_report_print_text(const ec_report *r, FILE *out)
{
    fprintf(out, "device:   %s\n", r->device_id);
    if (r->daemon_pid > 0)
        fprintf(out, "daemon:   running (pid %ld); counters from %s\n", r->daemon_pid,
                r->metrics_from);
    else
        fprintf(out, "daemon:   not running; spool facts read from the spool directly\n");
    fprintf(out,
            "spool:    %s: %llu segments waiting, %llu bytes, oldest %.0f s old, %llu in "
            "quarantine\n",
            r->spool_dir, (unsigned long long)r->spool_segments, (unsigned long long)r->spool_bytes,
            r->spool_oldest_age_s, (unsigned long long)r->quarantined);
    if (r->metrics == NULL)
        return;
    if (has(r, "edgecap_capture_frames_total"))
        fprintf(out,
                "capture:  %.0f frames, %.0f segments sealed, %.0f overruns, %.0f frames "
                "dropped\n",
                sample_or(r, "edgecap_capture_frames_total", 0),
                sample_or(r, "edgecap_segments_sealed_total", 0),
                sample_or(r, "edgecap_capture_overruns_total", 0),
                sample_or(r, "edgecap_capture_frames_dropped_total", 0));
    if (!has(r, "edgecap_segments_acknowledged_total")) {
        fprintf(out, "upload:   not delivering (see the daemon's log)\n");
        return;
    }
    double age = last_ack_age(r);
    fprintf(out, "upload:   %.0f segments acknowledged (%.0f bytes), %.0f failed attempts; ",
            sample_or(r, "edgecap_segments_acknowledged_total", 0),
            sample_or(r, "edgecap_bytes_acknowledged_total", 0),
            sample_or(r, "edgecap_upload_attempts_failed_total", 0));
    if (age < 0)
        fprintf(out, "no acknowledgment yet\n");
    else
        fprintf(out, "last acknowledged %.0f s ago\n", age);
    for (int e = 0; e < 2; e++) {
        const char *b = breaker_state(r, e);
        fprintf(out, "breaker:  %s %s", endpoints[e], b != NULL ? b : "?");
        for (int t = 0; t < EC_TLS_REASONS; t++) {
            double n = tls_failures(r, e, t);
            if (n > 0)
                fprintf(out, ", TLS %s %.0f", ec_tls_reason_name((ec_tls_reason)t), n);
        }
        fprintf(out, "\n");
    }
    if (has(r, "edgecap_tokens_issued_total"))
        fprintf(out,
                "tokens:   %.0f issued, %.0f refreshes, %.0f failures, %.0f 401s, key slot "
                "%s\n",
                sample_or(r, "edgecap_tokens_issued_total", 0),
                sample_or(r, "edgecap_token_refreshes_total", 0),
                sample_or(r, "edgecap_token_failures_total", 0),
                sample_or(r, "edgecap_unauthorized_total", 0),
                sample_or(r, "edgecap_key_slot", 0) > 0 ? "secondary" : "primary");
    if (has(r, "edgecap_batch_jobs{state=\"active\"}"))
        fprintf(out, "jobs:     %.0f blobs waiting, %.0f active, %.0f succeeded, %.0f given up\n",
                job_count(r, 0), job_count(r, 1), job_count(r, 2), job_count(r, 3));
}

/* ---- JSON ---------------------------------------------------------------- */

static void add_json(const ec_report *r, cJSON *root)
{
    cJSON_AddStringToObject(root, "device", r->device_id);
    cJSON *d = cJSON_AddObjectToObject(root, "daemon");
    cJSON_AddBoolToObject(d, "running", r->daemon_pid > 0);
    if (r->daemon_pid > 0)
        cJSON_AddNumberToObject(d, "pid", (double)r->daemon_pid);
    cJSON_AddStringToObject(d, "counters_from", r->daemon_pid > 0 ? r->metrics_from : "spool");
    cJSON *s = cJSON_AddObjectToObject(root, "spool");
    cJSON_AddStringToObject(s, "dir", r->spool_dir);
    cJSON_AddNumberToObject(s, "segments", (double)r->spool_segments);
    cJSON_AddNumberToObject(s, "bytes", (double)r->spool_bytes);
    cJSON_AddNumberToObject(s, "oldest_age_seconds", r->spool_oldest_age_s);
    cJSON_AddNumberToObject(s, "quarantined", (double)r->quarantined);
    if (r->metrics == NULL)
        return; /* no counters: the keys are absent, not zero */
    if (has(r, "edgecap_capture_frames_total")) {
        cJSON *c = cJSON_AddObjectToObject(root, "capture");
        cJSON_AddNumberToObject(c, "frames", sample_or(r, "edgecap_capture_frames_total", 0));
        cJSON_AddNumberToObject(c, "segments_sealed",
                                sample_or(r, "edgecap_segments_sealed_total", 0));
        cJSON_AddNumberToObject(c, "overruns", sample_or(r, "edgecap_capture_overruns_total", 0));
        cJSON_AddNumberToObject(c, "frames_dropped",
                                sample_or(r, "edgecap_capture_frames_dropped_total", 0));
    }
    cJSON *u = cJSON_AddObjectToObject(root, "upload");
    cJSON_AddBoolToObject(u, "delivering", sample_or(r, "edgecap_delivering", 0) > 0);
    if (has(r, "edgecap_segments_acknowledged_total")) {
        cJSON_AddNumberToObject(u, "segments_acknowledged",
                                sample_or(r, "edgecap_segments_acknowledged_total", 0));
        cJSON_AddNumberToObject(u, "bytes_acknowledged",
                                sample_or(r, "edgecap_bytes_acknowledged_total", 0));
        cJSON_AddNumberToObject(u, "attempts_failed",
                                sample_or(r, "edgecap_upload_attempts_failed_total", 0));
        double age = last_ack_age(r);
        if (age >= 0)
            cJSON_AddNumberToObject(u, "last_acknowledged_age_seconds", age);
        else
            cJSON_AddNullToObject(u, "last_acknowledged_age_seconds");
        cJSON *b = cJSON_AddObjectToObject(root, "breakers");
        cJSON *t = cJSON_AddObjectToObject(root, "tls_failures");
        for (int e = 0; e < 2; e++) {
            const char *state = breaker_state(r, e);
            if (state != NULL)
                cJSON_AddStringToObject(b, endpoints[e], state);
            cJSON *te = cJSON_AddObjectToObject(t, endpoints[e]);
            for (int k = 0; k < EC_TLS_REASONS; k++)
                cJSON_AddNumberToObject(te, ec_tls_reason_name((ec_tls_reason)k),
                                        tls_failures(r, e, k));
        }
    }
    if (has(r, "edgecap_tokens_issued_total")) {
        cJSON *k = cJSON_AddObjectToObject(root, "tokens");
        cJSON_AddNumberToObject(k, "issued", sample_or(r, "edgecap_tokens_issued_total", 0));
        cJSON_AddNumberToObject(k, "refreshes", sample_or(r, "edgecap_token_refreshes_total", 0));
        cJSON_AddNumberToObject(k, "failures", sample_or(r, "edgecap_token_failures_total", 0));
        cJSON_AddNumberToObject(k, "unauthorized", sample_or(r, "edgecap_unauthorized_total", 0));
        cJSON_AddStringToObject(k, "key_slot",
                                sample_or(r, "edgecap_key_slot", 0) > 0 ? "secondary" : "primary");
    }
    if (has(r, "edgecap_batch_jobs{state=\"active\"}")) {
        cJSON *j = cJSON_AddObjectToObject(root, "jobs");
        for (int i = 0; i < 4; i++)
            cJSON_AddNumberToObject(j, job_states[i], job_count(r, i));
    }
}

ec_status ec_report_print_json(const ec_report *r, FILE *out)
{
    ec_json_arena *arena = NULL;
    ec_status st = ec_json_arena_begin(&arena, 64 * 1024);
    if (st != EC_OK)
        return st;
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    if (root != NULL) {
        add_json(r, root);
        text = ec_json_print(root);
    }
    if (text != NULL)
        fprintf(out, "%s\n", text);
    else
        st = EC_ERR_NOMEM;
    ec_json_arena_end(&arena);
    return st;
}
