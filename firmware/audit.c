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
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "edgecap/config.h"
#include "edgecap/fault.h"
#include "edgecap/file.h"

#define AUDIT_LINE_MAX EC_AUDIT_LINE_MAX
#define HEX_LEN 64
#define PREV_MEMBER ",\"prev\":\""
#define HMAC_MEMBER ",\"hmac\":\""
#define ROTATED_EVENT "\"event\":\"rotated\","
#define NEW_SUFFIX ".new"
#define KEEP_MAX 99
#define SIBLING_MAX (EC_CFG_PATH_MAX + 16) /* FILE.new, FILE.99 */
/* RFC 3164/5424 header plus a whole line */
#define DATAGRAM_MAX (AUDIT_LINE_MAX + 256)

struct ec_audit {
    int fd; /* -1: records nothing */
    pthread_mutex_t lock;
    char path[EC_CFG_PATH_MAX];
    char dir[EC_CFG_PATH_MAX];
    char prev[HEX_LEN + 1]; /* SHA-256 of the last line in the file */
    off_t known_size;       /* the file's size when prev was taken */
    ec_secret *key;         /* may be NULL */
    long long max_bytes;
    int keep;
    /* syslog copy */
    bool syslog;
    int syslog_fd;
    bool syslog_connected;
    bool syslog_failing; /* logged once per outage, not per line */
    struct sockaddr_un syslog_addr;
    int syslog_pri;
    int syslog_format;
    char host[64];
    ec_audit_stats stats;
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

/* The chain continues from the last whole line of the file. A file whose
 * last line is torn (a crash mid-write on a file system that does not keep
 * O_APPEND writes whole) is ended with a newline first, so the torn
 * fragment stands as one bad line that verify reports. Called under the
 * file's flock. */
static ec_status pick_up_chain(ec_audit *a)
{
    memset(a->prev, '0', HEX_LEN);
    a->prev[HEX_LEN] = '\0';
    a->known_size = 0;
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
        sb.st_size++;
    } else {
        end--;
    }
    size_t start = end;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    sha256_hex(buf + start, end - start, a->prev);
    a->known_size = sb.st_size;
    return EC_OK;
}

static int open_log(const char *path)
{
    return open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
}

/* Takes the flock on the file that `path` names right now: another writer
 * may have rotated it (renamed a new file over it) while this one waited. */
static ec_status lock_current(ec_audit *a)
{
    for (int tries = 0; tries < 100; tries++) {
        if (EC_FAULT("audit.flock") || flock(a->fd, LOCK_EX) != 0)
            return EC_ERR_IO;
        struct stat mine, named;
        if (fstat(a->fd, &mine) != 0) {
            flock(a->fd, LOCK_UN);
            return EC_ERR_IO;
        }
        if (stat(a->path, &named) == 0 && named.st_dev == mine.st_dev &&
            named.st_ino == mine.st_ino)
            return EC_OK;
        /* rotated (or removed) under us: follow the name */
        flock(a->fd, LOCK_UN);
        int fd = open_log(a->path);
        if (fd < 0)
            return EC_ERR_IO;
        close(a->fd);
        a->fd = fd;
        a->known_size = -1;
    }
    return EC_ERR_IO;
}

static void unlock_current(ec_audit *a)
{
    flock(a->fd, LOCK_UN);
}

static void sibling(const ec_audit *a, char *out, size_t cap, const char *suffix, int n)
{
    if (n > 0)
        snprintf(out, cap, "%s.%d", a->path, n);
    else
        snprintf(out, cap, "%s%s", a->path, suffix);
}

/* A rotation that stopped part way (a crash) is rolled back, under the
 * flock: FILE.1 still naming FILE's own inode is an extra name (FILE was
 * linked, FILE.new not yet renamed over it), and FILE.new was never in use. */
static void recover_rotation(ec_audit *a)
{
    char one[SIBLING_MAX], next[SIBLING_MAX];
    sibling(a, one, sizeof one, "", 1);
    sibling(a, next, sizeof next, NEW_SUFFIX, 0);
    bool changed = false;
    struct stat cur, old;
    if (fstat(a->fd, &cur) == 0 && lstat(one, &old) == 0 && cur.st_dev == old.st_dev &&
        cur.st_ino == old.st_ino)
        changed = unlink(one) == 0;
    if (unlink(next) == 0)
        changed = true;
    if (changed) {
        (void)ec_file_fsync_dir(a->dir);
        ec_log(EC_LOG_WARN, "audit_rotation_rolled_back", EC_LOG_STR("path", a->path),
               EC_LOG_STR("reason", "a rotation was interrupted (crash)"));
    }
}

ec_status ec_audit_open_params(ec_audit **out, const ec_audit_params *p)
{
    *out = NULL;
    ec_audit *a = calloc(1, sizeof *a);
    if (a == NULL)
        return EC_ERR_NOMEM;
    a->fd = -1;
    a->syslog_fd = -1;
    pthread_mutex_init(&a->lock, NULL);
    ec_status st = EC_OK;
    const char *why = NULL;
    if (p->path == NULL || p->path[0] == '\0')
        goto out;
    a->max_bytes = p->max_bytes;
    a->keep = p->keep < 1 ? 1 : p->keep > KEEP_MAX ? KEEP_MAX : p->keep;
    if (snprintf(a->path, sizeof a->path, "%s", p->path) >= (int)sizeof a->path) {
        st = EC_ERR_INVALID;
        why = "path too long";
        goto out;
    }
    snprintf(a->dir, sizeof a->dir, "%s", p->path);
    char *slash = strrchr(a->dir, '/');
    if (slash == a->dir)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    else
        snprintf(a->dir, sizeof a->dir, ".");
    if (slash != NULL && slash != a->dir && mkdir(a->dir, 0700) != 0 && errno != EEXIST) {
        st = EC_ERR_IO;
        why = strerror(errno);
        goto out;
    }
    a->fd = open_log(a->path);
    if (a->fd < 0 || lock_current(a) != EC_OK) {
        st = EC_ERR_IO;
        why = strerror(errno);
        goto out;
    }
    recover_rotation(a);
    st = pick_up_chain(a);
    unlock_current(a);
    if (st != EC_OK) {
        why = strerror(errno);
        goto out;
    }
    if (p->hmac_key != NULL && (st = ec_secret_new(&a->key, ec_secret_bytes(p->hmac_key),
                                                   ec_secret_len(p->hmac_key))) != EC_OK) {
        why = "no memory for the key";
        goto out;
    }
    if (p->syslog) {
        const char *sock =
            p->syslog_socket != NULL && p->syslog_socket[0] != '\0' ? p->syslog_socket : "/dev/log";
        a->syslog_addr.sun_family = AF_UNIX;
        if (strlen(sock) >= sizeof a->syslog_addr.sun_path) {
            st = EC_ERR_INVALID;
            why = "syslog socket path too long";
            goto out;
        }
        memcpy(a->syslog_addr.sun_path, sock, strlen(sock) + 1);
        a->syslog_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (a->syslog_fd < 0) {
            st = EC_ERR_IO;
            why = strerror(errno);
            goto out;
        }
        a->syslog = true;
        a->syslog_pri = (p->syslog_facility & ~7) | LOG_NOTICE;
        a->syslog_format = p->syslog_format;
        if (gethostname(a->host, sizeof a->host) != 0 || a->host[0] == '\0')
            snprintf(a->host, sizeof a->host, "-");
        a->host[sizeof a->host - 1] = '\0';
        /* a receiver that is not there yet is tried again at every line */
        a->syslog_connected =
            connect(a->syslog_fd, (struct sockaddr *)&a->syslog_addr, sizeof a->syslog_addr) == 0;
    }
out:
    if (st != EC_OK) {
        ec_log(EC_LOG_ERROR, "audit_open_failed", EC_LOG_STR("path", p->path),
               EC_LOG_STR("reason", why != NULL ? why : ec_strerror(st)));
        ec_audit_close(&a);
        return st == EC_ERR_NOMEM || st == EC_ERR_INVALID ? st : EC_ERR_IO;
    }
    *out = a;
    return EC_OK;
}

ec_status ec_audit_open(ec_audit **out, const char *path, const ec_secret *hmac_key)
{
    ec_audit_params p = {.path = path, .hmac_key = hmac_key, .keep = 1};
    return ec_audit_open_params(out, &p);
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

/* Now, UTC, ISO 8601 with `digits` (3 or 6) of fractional seconds. */
static void utc_now(char *out, size_t cap, int digits)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t w = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    long frac = digits == 6 ? ts.tv_nsec / 1000L : ts.tv_nsec / 1000000L;
    snprintf(out + w, cap - w, ".%0*ldZ", digits, frac);
}

/* The line's opening, event and fields, without the closing brace:
 * {"ts":"...","event":"...",... EC_ERR_INVALID for a secret or a line too
 * long to be closed with prev and hmac. */
static ec_status format_body(char *line, size_t cap, const char *event, const ec_log_field *fields,
                             size_t n, size_t *len)
{
    char when[40];
    utc_now(when, sizeof when, 3);
    size_t k = (size_t)snprintf(line, cap, "{\"ts\":\"%s\",\"event\":", when);
    k = put_json_string(line, cap, k, event);
    for (size_t i = 0; i < n && k + 64 < cap; i++) {
        const ec_log_field *f = &fields[i];
        if (f->type == EC_LOG_F_NONE || f->key == NULL)
            continue;
        if (f->type == EC_LOG_F_SECRET)
            return EC_ERR_INVALID; /* a secret never enters the audit trail */
        line[k++] = ',';
        k = put_json_string(line, cap, k, f->key);
        line[k++] = ':';
        switch (f->type) {
        case EC_LOG_F_STR:
            k = put_json_string(line, cap, k, f->v.str != NULL ? f->v.str : "");
            break;
        case EC_LOG_F_INT:
            k += (size_t)snprintf(line + k, cap - k, "%lld", f->v.i);
            break;
        case EC_LOG_F_UINT:
            k += (size_t)snprintf(line + k, cap - k, "%llu", f->v.u);
            break;
        case EC_LOG_F_BOOL:
            k += (size_t)snprintf(line + k, cap - k, "%s", f->v.b ? "true" : "false");
            break;
        default:
            break;
        }
    }
    /* ,"prev":"<64>"} and ,"hmac":"<64>"} and the newline must fit */
    if (k + 2 * (sizeof HMAC_MEMBER + HEX_LEN + 2) + 2 > cap)
        return EC_ERR_INVALID;
    *len = k;
    return EC_OK;
}

/* Closes the body at line[0..k) with prev (and hmac) and a newline; the
 * line's hash (without its newline) goes to `hash`. */
static ec_status close_line(const ec_audit *a, char *line, size_t cap, size_t k, const char *prev,
                            size_t *len, char *hash)
{
    k += (size_t)snprintf(line + k, cap - k, PREV_MEMBER "%s\"", prev);
    if (a->key != NULL) {
        /* the MAC covers the line as it reads without its hmac member */
        char mac[HEX_LEN + 1];
        line[k] = '}';
        if (hmac_hex(a->key, line, k + 1, mac) != 0)
            return EC_ERR_CRYPTO;
        k += (size_t)snprintf(line + k, cap - k, HMAC_MEMBER "%s\"", mac);
    }
    line[k++] = '}';
    sha256_hex(line, k, hash);
    line[k++] = '\n';
    *len = k;
    return EC_OK;
}

static bool write_all(int fd, const char *p, size_t len)
{
    ssize_t wrote = EC_FAULT("audit.write") ? -1 : write(fd, p, len);
    return wrote == (ssize_t)len && !EC_FAULT("audit.fsync") && fsync(fd) == 0;
}

/* Lines in the current file (it is at most max_bytes long). */
static unsigned long long count_lines(int fd, off_t size)
{
    char buf[16384];
    unsigned long long lines = 0;
    for (off_t at = 0; at < size;) {
        ssize_t n = pread(fd, buf, sizeof buf, at);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
        at += n;
    }
    return lines;
}

/* FILE.i -> FILE.i+1 below the first free number (so a shift cut short by
 * a crash is not repeated over the files it already moved); with every
 * number taken, FILE.keep (the oldest) goes. */
static ec_status shift_old(const ec_audit *a)
{
    char from[SIBLING_MAX], to[SIBLING_MAX];
    struct stat sb;
    int gap = 1;
    while (gap <= a->keep) {
        sibling(a, to, sizeof to, "", gap);
        if (lstat(to, &sb) != 0)
            break;
        gap++;
    }
    if (gap > a->keep) {
        gap = a->keep;
        sibling(a, to, sizeof to, "", gap);
        if (unlink(to) != 0)
            return EC_ERR_IO;
    }
    for (int i = gap - 1; i >= 1; i--) {
        sibling(a, from, sizeof from, "", i);
        sibling(a, to, sizeof to, "", i + 1);
        if (rename(from, to) != 0)
            return EC_ERR_IO;
    }
    return ec_file_fsync_dir(a->dir);
}

/* One datagram, never waiting: a receiver that is gone or full costs the
 * line's copy (counted), never the audit writer's time. */
static void syslog_copy(ec_audit *a, const char *line, size_t len)
{
    char dgram[DATAGRAM_MAX];
    int h;
    if (a->syslog_format == EC_AUDIT_RFC5424) {
        char when[40];
        utc_now(when, sizeof when, 6);
        h = snprintf(dgram, sizeof dgram, "<%d>1 %s %s edgecap %ld audit - ", a->syslog_pri, when,
                     a->host, (long)getpid());
    } else {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char when[32];
        strftime(when, sizeof when, "%b %e %H:%M:%S", &tm);
        h = snprintf(dgram, sizeof dgram, "<%d>%s edgecap[%ld]: ", a->syslog_pri, when,
                     (long)getpid());
    }
    size_t body = len > 0 && line[len - 1] == '\n' ? len - 1 : len;
    if (h < 0 || (size_t)h + body > sizeof dgram)
        goto dropped;
    memcpy(dgram + h, line, body);
    if (!a->syslog_connected)
        a->syslog_connected =
            connect(a->syslog_fd, (struct sockaddr *)&a->syslog_addr, sizeof a->syslog_addr) == 0;
    if (a->syslog_connected && !EC_FAULT("audit.syslog") &&
        send(a->syslog_fd, dgram, (size_t)h + body, MSG_DONTWAIT | MSG_NOSIGNAL) ==
            (ssize_t)((size_t)h + body)) {
        a->stats.syslog_sent++;
        if (a->syslog_failing) {
            a->syslog_failing = false;
            ec_log(EC_LOG_INFO, "audit_syslog_resumed",
                   EC_LOG_STR("socket", a->syslog_addr.sun_path),
                   EC_LOG_UINT("dropped_total", a->stats.syslog_dropped));
        }
        return;
    }
    /* a receiver that went away is connected to again at the next line */
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)
        a->syslog_connected = false;
dropped:
    a->stats.syslog_dropped++;
    if (!a->syslog_failing) {
        a->syslog_failing = true;
        ec_log(EC_LOG_WARN, "audit_syslog_dropping", EC_LOG_STR("socket", a->syslog_addr.sun_path),
               EC_LOG_STR("reason", strerror(errno)),
               EC_LOG_STR("effect", "audit lines still go to the audit file"));
    }
}

/* Under the flock of the current file: FILE becomes FILE.1 and a new FILE
 * begins with the "rotated" record. FILE.new is written, fsynced and locked
 * first; FILE is then linked to FILE.1 and FILE.new renamed over FILE, each
 * step made durable before the next, so FILE never goes missing or starts
 * with anything but a whole rotated record. On success the handle writes
 * to (and holds the flock of) the new file. */
static ec_status rotate(ec_audit *a)
{
    char next_path[SIBLING_MAX], one[SIBLING_MAX];
    sibling(a, next_path, sizeof next_path, NEW_SUFFIX, 0);
    sibling(a, one, sizeof one, "", 1);
    recover_rotation(a);
    unsigned long long lines = count_lines(a->fd, a->known_size);
    unsigned long long old_bytes = (unsigned long long)a->known_size;
    char line[AUDIT_LINE_MAX], hash[HEX_LEN + 1];
    size_t k = 0, len = 0;
    const ec_log_field f[] = {EC_LOG_STR("previous_sha256", a->prev),
                              EC_LOG_UINT("previous_lines", lines),
                              EC_LOG_UINT("previous_bytes", old_bytes)};
    ec_status st = format_body(line, sizeof line, "rotated", f, 3, &k);
    if (st == EC_OK)
        st = close_line(a, line, sizeof line, k, a->prev, &len, hash);
    if (st != EC_OK)
        return st;
    int nfd = open(next_path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (nfd < 0)
        return EC_ERR_IO;
    st = EC_ERR_IO;
    const char *step = "writing the new file";
    /* writers that open FILE once it is renamed wait for this append */
    if (flock(nfd, LOCK_EX) != 0 || EC_FAULT("audit.rotate.write") || !write_all(nfd, line, len))
        goto out;
    step = "renaming older files";
    if (shift_old(a) != EC_OK)
        goto out;
    step = "linking the old file";
    if (EC_FAULT("audit.rotate.link") || link(a->path, one) != 0 ||
        ec_file_fsync_dir(a->dir) != EC_OK)
        goto out;
    step = "renaming the new file";
    if (EC_FAULT("audit.rotate.rename") || rename(next_path, a->path) != 0 ||
        ec_file_fsync_dir(a->dir) != EC_OK)
        goto out;
    unlock_current(a);
    close(a->fd);
    a->fd = nfd;
    nfd = -1;
    memcpy(a->prev, hash, sizeof hash);
    a->known_size = (off_t)len;
    a->stats.rotations++;
    st = EC_OK;
    if (a->syslog)
        syslog_copy(a, line, len); /* the copy carries the whole chain */
    ec_log(EC_LOG_INFO, "audit_rotated", EC_LOG_STR("path", a->path),
           EC_LOG_UINT("previous_lines", lines), EC_LOG_UINT("previous_bytes", old_bytes));
out:
    if (nfd >= 0) {
        /* left as a crash would leave it: the next rotation rolls it back */
        ec_log(EC_LOG_ERROR, "audit_rotation_failed", EC_LOG_STR("path", a->path),
               EC_LOG_STR("step", step), EC_LOG_STR("reason", strerror(errno)),
               EC_LOG_STR("effect", "appending to the current file"));
        close(nfd);
    }
    return st;
}

ec_status ec_audit_record(ec_audit *a, const char *event, const ec_log_field *fields, size_t n)
{
    if (a == NULL || a->fd < 0)
        return EC_OK;
    char line[AUDIT_LINE_MAX], next[HEX_LEN + 1];
    size_t k = 0, len = 0;
    ec_status st = format_body(line, sizeof line, event, fields, n, &k);
    if (st != EC_OK)
        return st;
    pthread_mutex_lock(&a->lock);
    if ((st = lock_current(a)) != EC_OK) {
        ec_log(EC_LOG_ERROR, "audit_lock_failed", EC_LOG_STR("path", a->path),
               EC_LOG_STR("reason", strerror(errno)));
        pthread_mutex_unlock(&a->lock);
        return st;
    }
    /* another writer appended (or rotated) since: the chain goes on from
     * what the file holds now, not from what this handle last wrote */
    struct stat sb;
    if (fstat(a->fd, &sb) != 0 || sb.st_size != a->known_size)
        st = pick_up_chain(a);
    /* the line's length once closed: prev (and hmac) are fixed-size */
    const size_t member = sizeof PREV_MEMBER - 1 + HEX_LEN + 1;
    size_t closed = k + member + (a->key != NULL ? member : 0) + 2;
    if (st == EC_OK && a->max_bytes > 0 && a->known_size > 0 &&
        (long long)a->known_size + (long long)closed > a->max_bytes)
        (void)rotate(a); /* a failure is logged; the line goes to the current file */
    if (st == EC_OK)
        st = close_line(a, line, sizeof line, k, a->prev, &len, next);
    if (st == EC_OK) {
        if (write_all(a->fd, line, len)) {
            memcpy(a->prev, next, sizeof next);
            a->known_size += (off_t)len;
            a->stats.lines++;
        } else {
            /* a short write leaves a torn tail: the next append re-reads it */
            a->known_size = -1;
            st = EC_ERR_IO;
        }
    }
    unlock_current(a);
    if (st == EC_OK && a->syslog)
        syslog_copy(a, line, len);
    pthread_mutex_unlock(&a->lock);
    return st;
}

void ec_audit_get_stats(ec_audit *a, ec_audit_stats *out)
{
    memset(out, 0, sizeof *out);
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->lock);
    *out = a->stats;
    pthread_mutex_unlock(&a->lock);
}

void ec_audit_close(ec_audit **ap)
{
    if (ap == NULL || *ap == NULL)
        return;
    ec_audit *a = *ap;
    if (a->fd >= 0)
        close(a->fd);
    if (a->syslog_fd >= 0)
        close(a->syslog_fd);
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

/* The 64-hex value of "name":"..." in line[0..len), or NULL. */
static const char *hex_member(const char *line, size_t len, const char *name)
{
    const char *p = line, *end = line + len;
    size_t n = strlen(name);
    while ((p = memchr(p, '"', (size_t)(end - p))) != NULL) {
        if ((size_t)(end - p) >= n + 4 + HEX_LEN && memcmp(p + 1, name, n) == 0 &&
            memcmp(p + 1 + n, "\":\"", 3) == 0 && is_hex64(p + n + 4) && p[n + 4 + HEX_LEN] == '"')
            return p + n + 4;
        p++;
    }
    return NULL;
}

/* The "previous_lines" count of a rotated record, or -1. */
static long long lines_member(const char *line, size_t len)
{
    static const char name[] = "\"previous_lines\":";
    for (const char *p = line; p + sizeof name - 1 < line + len; p++) {
        if (memcmp(p, name, sizeof name - 1) == 0) {
            char *stop = NULL;
            long long v = strtoll(p + sizeof name - 1, &stop, 10);
            return stop != p + sizeof name - 1 && v >= 0 ? v : -1;
        }
    }
    return -1;
}

static bool is_rotated(const char *line, size_t len)
{
    /* {"ts":"...","event":"rotated",...: values are escaped, so the member
     * cannot be forged inside another member's value */
    const char *e = memchr(line, ',', len);
    return e != NULL && (size_t)(line + len - e) > sizeof ROTATED_EVENT &&
           memcmp(e + 1, ROTATED_EVENT, sizeof ROTATED_EVENT - 1) == 0;
}

/* The first line of file `i`: where its chain starts. A rotated record
 * continues the file before (for the first file given: whatever it names);
 * any other first line starts a chain (64 zeros), which only the first file
 * may do. False with the reason when it does not link. */
static bool first_link(const char *line, size_t len, size_t i, size_t lines_before, char *prev,
                       ec_audit_report *r)
{
    if (!is_rotated(line, len)) {
        if (i == 0)
            return true;
        snprintf(r->reason, sizeof r->reason,
                 "does not begin with a rotated record continuing the file before it "
                 "(a file is missing, out of order, or its first line was removed)");
        return false;
    }
    const char *named = hex_member(line, len, "previous_sha256");
    long long named_lines = lines_member(line, len);
    if (named == NULL || named_lines < 0) {
        snprintf(r->reason, sizeof r->reason,
                 "a rotated record without previous_sha256 or previous_lines (edited)");
        return false;
    }
    if (i == 0) {
        memcpy(prev, named, HEX_LEN);
        r->continues = true;
        memcpy(r->continues_from, named, HEX_LEN);
        r->continues_from[HEX_LEN] = '\0';
        r->continues_after = (unsigned long long)named_lines;
        return true;
    }
    if (memcmp(named, prev, HEX_LEN) != 0) {
        snprintf(r->reason, sizeof r->reason,
                 "does not continue the file before it: it names previous_sha256 %.16s..., the "
                 "last line there hashes to %.16s... (lines removed or added there, or another "
                 "file)",
                 named, prev);
        return false;
    }
    if ((size_t)named_lines != lines_before) {
        snprintf(r->reason, sizeof r->reason,
                 "the rotated record names %lld lines for the file before it, which has %zu",
                 named_lines, lines_before);
        return false;
    }
    return true;
}

/* One file of the chain; `prev` goes in as the hash the file must continue
 * from and comes out as its last line's hash. */
static ec_status verify_one(const char *path, size_t i, const ec_secret *key, char *prev,
                            size_t lines_before, size_t *lines, bool *all_macs, ec_audit_report *r)
{
    *lines = 0;
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    char line[AUDIT_LINE_MAX + 2];
    ec_status st = EC_OK;
    while (fgets(line, sizeof line, f) != NULL) {
        ++*lines;
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
        if ((*lines == 1 && !first_link(line, len, i, lines_before, prev, r)) ||
            !check_line(line, len, prev, key, &had_mac, r->reason, sizeof r->reason)) {
            st = EC_ERR_CRYPTO;
            break;
        }
        *all_macs = *all_macs && had_mac;
        sha256_hex(line, len, prev);
    }
    if (st == EC_OK && ferror(f))
        st = EC_ERR_IO;
    if (st == EC_OK && *lines == 0 && i > 0) {
        *lines = 1;
        snprintf(r->reason, sizeof r->reason,
                 "empty: the rotated record continuing the file before it is missing");
        st = EC_ERR_CRYPTO;
    }
    fclose(f);
    return st;
}

ec_status ec_audit_verify_files(const char *const *paths, size_t n, const ec_secret *hmac_key,
                                ec_audit_report *r)
{
    memset(r, 0, sizeof *r);
    char prev[HEX_LEN + 1];
    memset(prev, '0', HEX_LEN);
    prev[HEX_LEN] = '\0';
    bool all_macs = true;
    size_t lines = 0;
    ec_status st = EC_OK;
    for (size_t i = 0; i < n && st == EC_OK; i++) {
        size_t before = lines;
        r->bad_file = i;
        st = verify_one(paths[i], i, hmac_key, prev, before, &lines, &all_macs, r);
        r->files++;
        r->lines += lines;
        if (st == EC_ERR_CRYPTO)
            r->first_bad_line = lines;
    }
    if (st == EC_OK)
        r->bad_file = 0;
    r->macs_checked = st == EC_OK && hmac_key != NULL && all_macs && r->lines > 0;
    return st;
}

ec_status ec_audit_verify(const char *path, const ec_secret *hmac_key, ec_audit_report *r)
{
    return ec_audit_verify_files(&path, 1, hmac_key, r);
}
