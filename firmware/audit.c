/*
 * Audit trail (see include/edgecap/audit.h): JSON lines, O_APPEND, one write
 * and one fsync per event, so a line is either whole on disk or absent, each
 * chained to the one before by its SHA-256 and, with a key, HMAC'd.
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

#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "edgecap/config.h"

#define AUDIT_LINE_MAX EC_AUDIT_LINE_MAX
#define HEX_LEN 64
#define PREV_MEMBER ",\"prev\":\""
#define HMAC_MEMBER ",\"hmac\":\""

struct ec_audit {
    int fd; /* -1: records nothing */
    pthread_mutex_t lock;
    char prev[HEX_LEN + 1]; /* SHA-256 of the last line written */
    ec_secret *key;         /* may be NULL */
};

static void sha256_hex(const char *text, size_t len, char *out)
{
    uint8_t digest[32];
    mbedtls_sha256_ret((const unsigned char *)text, len, digest, 0);
    ec_hex_encode(digest, sizeof digest, out);
}

static int hmac_hex(const ec_secret *key, const char *text, size_t len, char *out)
{
    uint8_t mac[32];
    int rc = mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), ec_secret_bytes(key),
                             ec_secret_len(key), (const unsigned char *)text, len, mac);
    if (rc == 0)
        ec_hex_encode(mac, sizeof mac, out);
    mbedtls_platform_zeroize(mac, sizeof mac);
    return rc;
}

/* The chain continues from the last whole line of an existing file. A file
 * whose last line is torn (a crash mid-write on a file system that does not
 * keep O_APPEND writes whole) is ended with a newline first, so the torn
 * fragment stands as one bad line that verify reports. */
static ec_status pick_up_chain(ec_audit *a)
{
    memset(a->prev, '0', HEX_LEN);
    a->prev[HEX_LEN] = '\0';
    struct stat sb;
    if (fstat(a->fd, &sb) != 0)
        return EC_ERR_IO;
    if (sb.st_size == 0)
        return EC_OK;
    char buf[AUDIT_LINE_MAX + 2];
    off_t from = sb.st_size > (off_t)sizeof buf ? sb.st_size - (off_t)sizeof buf : 0;
    ssize_t n = pread(a->fd, buf, (size_t)(sb.st_size - from), from);
    if (n <= 0)
        return EC_ERR_IO;
    size_t end = (size_t)n;
    if (buf[end - 1] != '\n') {
        if (write(a->fd, "\n", 1) != 1 || fsync(a->fd) != 0)
            return EC_ERR_IO;
    } else {
        end--;
    }
    size_t start = end;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    sha256_hex(buf + start, end - start, a->prev);
    return EC_OK;
}

ec_status ec_audit_open(ec_audit **out, const char *path, const ec_secret *hmac_key)
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
        a->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        ec_status st = a->fd >= 0 ? pick_up_chain(a) : EC_ERR_IO;
        if (st == EC_OK && hmac_key != NULL)
            st = ec_secret_new(&a->key, ec_secret_bytes(hmac_key), ec_secret_len(hmac_key));
        if (st != EC_OK) {
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
    /* ,"prev":"<64>"} and ,"hmac":"<64>"} and the newline must fit */
    if (k + 2 * (sizeof HMAC_MEMBER + HEX_LEN + 2) + 2 > sizeof line)
        return EC_ERR_INVALID;
    pthread_mutex_lock(&a->lock);
    k += (size_t)snprintf(line + k, sizeof line - k, PREV_MEMBER "%s\"", a->prev);
    if (a->key != NULL) {
        /* the MAC covers the line as it reads without its hmac member */
        char mac[HEX_LEN + 1];
        line[k] = '}';
        if (hmac_hex(a->key, line, k + 1, mac) != 0) {
            pthread_mutex_unlock(&a->lock);
            return EC_ERR_CRYPTO;
        }
        k += (size_t)snprintf(line + k, sizeof line - k, HMAC_MEMBER "%s\"", mac);
    }
    line[k++] = '}';
    char next[HEX_LEN + 1];
    sha256_hex(line, k, next);
    line[k++] = '\n';
    ssize_t wrote = write(a->fd, line, k);
    int rc = wrote == (ssize_t)k ? fsync(a->fd) : -1;
    if (rc == 0)
        memcpy(a->prev, next, sizeof next);
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
    ec_secret_free(&a->key);
    pthread_mutex_destroy(&a->lock);
    free(a);
    *ap = NULL;
}

/* ---- verification ------------------------------------------------------------ */

static int ct_memcmp(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(x[i] ^ y[i]);
    return d;
}

static bool is_hex64(const char *p)
{
    for (int i = 0; i < HEX_LEN; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

/* One line (without its newline): its shape, its link, its MAC. The line
 * ends ...,"prev":"<64 hex>"} or ...,"prev":"<64 hex>","hmac":"<64 hex>"}. */
static bool check_line(const char *line, size_t len, const char *prev, const ec_secret *key,
                       bool *had_mac, char *why, size_t why_len)
{
    const size_t member = sizeof PREV_MEMBER - 1 + HEX_LEN + 1; /* ,"prev":"<64>" */
    if (len < 2 || line[0] != '{' || line[len - 1] != '}' || memchr(line, '\0', len) != NULL) {
        snprintf(why, why_len, "not an audit line (torn or edited)");
        return false;
    }
    size_t end = len - 1; /* just after the prev member */
    *had_mac = false;
    if (len > 2 * member + 1 &&
        memcmp(line + len - 1 - member, HMAC_MEMBER, sizeof HMAC_MEMBER - 1) == 0 &&
        is_hex64(line + len - 1 - member + sizeof HMAC_MEMBER - 1) && line[len - 2] == '"') {
        *had_mac = true;
        end = len - 1 - member;
    }
    const char *p = end >= member + 1 ? line + end - member : NULL;
    if (p == NULL || memcmp(p, PREV_MEMBER, sizeof PREV_MEMBER - 1) != 0 ||
        !is_hex64(p + sizeof PREV_MEMBER - 1) || p[member - 1] != '"') {
        snprintf(why, why_len, "no prev hash (not written by edgecap's audit, or edited)");
        return false;
    }
    if (memcmp(p + sizeof PREV_MEMBER - 1, prev, HEX_LEN) != 0) {
        snprintf(why, why_len,
                 "prev does not match the line before (a line was removed, inserted or edited)");
        return false;
    }
    if (key != NULL) {
        if (!*had_mac) {
            snprintf(why, why_len, "no hmac, but a key was given");
            return false;
        }
        char text[AUDIT_LINE_MAX + 1], mac[HEX_LEN + 1];
        memcpy(text, line, end);
        text[end] = '}';
        if (hmac_hex(key, text, end + 1, mac) != 0 ||
            ct_memcmp(mac, line + end + sizeof HMAC_MEMBER - 1, HEX_LEN) != 0) {
            snprintf(why, why_len, "hmac does not match (edited, or another key)");
            return false;
        }
    }
    return true;
}

ec_status ec_audit_verify(const char *path, const ec_secret *hmac_key, ec_audit_report *r)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    char prev[HEX_LEN + 1];
    memset(prev, '0', HEX_LEN);
    prev[HEX_LEN] = '\0';
    char line[AUDIT_LINE_MAX + 2];
    bool all_macs = true;
    ec_status st = EC_OK;
    while (fgets(line, sizeof line, f) != NULL) {
        r->lines++;
        size_t len = strlen(line);
        bool whole = len > 0 && line[len - 1] == '\n';
        if (!whole) {
            snprintf(r->reason, sizeof r->reason,
                     feof(f) ? "the last line is not whole (a torn write)" : "line too long");
            st = EC_ERR_CRYPTO;
            break;
        }
        len--;
        bool had_mac = false;
        if (!check_line(line, len, prev, hmac_key, &had_mac, r->reason, sizeof r->reason)) {
            st = EC_ERR_CRYPTO;
            break;
        }
        all_macs = all_macs && had_mac;
        sha256_hex(line, len, prev);
    }
    if (st == EC_OK && ferror(f))
        st = EC_ERR_IO;
    fclose(f);
    if (st == EC_ERR_CRYPTO)
        r->first_bad_line = r->lines;
    r->macs_checked = st == EC_OK && hmac_key != NULL && all_macs && r->lines > 0;
    return st;
}
