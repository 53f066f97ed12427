/*
 * Audit trail (see include/edgecap/audit.h): JSON lines, O_APPEND, one write
 * and one fsync per event, so a line is either whole on disk or absent.
 */
#include "edgecap/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "edgecap/config.h"

#define AUDIT_LINE_MAX 2048

struct ec_audit {
    int fd; /* -1: records nothing */
    pthread_mutex_t lock;
};

ec_status ec_audit_open(ec_audit **out, const char *path)
{
    *out = NULL;
    ec_audit *a = calloc(1, sizeof *a);
    if (a == NULL)
        return EC_ERR_NOMEM;
    a->fd = -1;
    pthread_mutex_init(&a->lock, NULL);
    if (path != NULL && path[0] != '\0') {
        char dir[EC_CFG_PATH_MAX];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash != NULL && slash != dir) {
            *slash = '\0';
            if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
                ec_log(EC_LOG_ERROR, "audit_open_failed", EC_LOG_STR("path", path),
                       EC_LOG_STR("reason", strerror(errno)));
                ec_audit_close(&a);
                return EC_ERR_IO;
            }
        }
        a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (a->fd < 0) {
            ec_log(EC_LOG_ERROR, "audit_open_failed", EC_LOG_STR("path", path),
                   EC_LOG_STR("reason", strerror(errno)));
            ec_audit_close(&a);
            return EC_ERR_IO;
        }
    }
    *out = a;
    return EC_OK;
}

/* Appends `s` as a JSON string; audit values are names and digests, but
 * anything outside printable ASCII is escaped all the same. */
static size_t put_json_string(char *out, size_t cap, size_t k, const char *s)
{
    if (k < cap)
        out[k++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0' && k + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[k++] = '\\';
            out[k++] = (char)*p;
        } else if (*p < 0x20 || *p >= 0x7f) {
            k += (size_t)snprintf(out + k, cap - k, "\\u%04x", *p);
        } else {
            out[k++] = (char)*p;
        }
    }
    if (k < cap)
        out[k++] = '"';
    return k;
}

ec_status ec_audit_record(ec_audit *a, const char *event, const ec_log_field *fields, size_t n)
{
    if (a == NULL || a->fd < 0)
        return EC_OK;
    char line[AUDIT_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000L);
    size_t k = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"event\":", when);
    k = put_json_string(line, sizeof line, k, event);
    for (size_t i = 0; i < n && k + 64 < sizeof line; i++) {
        const ec_log_field *f = &fields[i];
        if (f->type == EC_LOG_F_NONE || f->key == NULL)
            continue;
        if (f->type == EC_LOG_F_SECRET)
            return EC_ERR_INVALID; /* a secret never enters the audit trail */
        line[k++] = ',';
        k = put_json_string(line, sizeof line, k, f->key);
        line[k++] = ':';
        switch (f->type) {
        case EC_LOG_F_STR:
            k = put_json_string(line, sizeof line, k, f->v.str != NULL ? f->v.str : "");
            break;
        case EC_LOG_F_INT:
            k += (size_t)snprintf(line + k, sizeof line - k, "%lld", f->v.i);
            break;
        case EC_LOG_F_UINT:
            k += (size_t)snprintf(line + k, sizeof line - k, "%llu", f->v.u);
            break;
        case EC_LOG_F_BOOL:
            k += (size_t)snprintf(line + k, sizeof line - k, "%s", f->v.b ? "true" : "false");
            break;
        default:
            break;
        }
    }
    if (k + 2 > sizeof line)
        return EC_ERR_INVALID;
    line[k++] = '}';
    line[k++] = '\n';
    pthread_mutex_lock(&a->lock);
    ssize_t wrote = write(a->fd, line, k);
    int rc = wrote == (ssize_t)k ? fsync(a->fd) : -1;
    pthread_mutex_unlock(&a->lock);
    return rc == 0 ? EC_OK : EC_ERR_IO;
}

void ec_audit_close(ec_audit **ap)
{
    if (ap == NULL || *ap == NULL)
        return;
    ec_audit *a = *ap;
    if (a->fd >= 0)
        close(a->fd);
    pthread_mutex_destroy(&a->lock);
    free(a);
    *ap = NULL;
}
