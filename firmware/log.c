/*
 * Event logger (see include/edgecap/log.h): formats one event into a line
 * buffer and writes it with a single call, so concurrent threads never
 * interleave within a line. Text mode is logfmt (key=value, quoted when
 * needed); JSON mode is one object per line. A line that would not fit is cut
 * at a field or character boundary and marked truncated=true, so it always
 * stays parseable; bytes that are not UTF-8 are written as U+FFFD.
 */
#include "edgecap/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048
/* Kept back for the truncation mark, closing brace, newline and NUL. */
#define LOG_RESERVE 32
#define LOG_IDENT_MAX 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ec_log_options opts = {.level = EC_LOG_INFO, .output = EC_LOG_TO_STDERR, .json = false};
static FILE *stream_override;
static bool syslog_open;
/* openlog(3) keeps the pointer it is given, so the ident must outlive the
 * caller's options (often a config that is freed on reload). */
static char syslog_ident[LOG_IDENT_MAX];

typedef struct {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool truncated;
} line_buf;

static size_t room(const line_buf *l)
{
    return sizeof l->buf - LOG_RESERVE - l->len;
}

/* All or nothing: a piece that does not fit is not written and marks the
 * line truncated (after which nothing more is written). */
static bool put_raw(line_buf *l, const char *s, size_t n)
{
    if (l->truncated || n > room(l)) {
        l->truncated = true;
        return false;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

static bool put_str(line_buf *l, const char *s)
{
    return put_raw(l, s, strlen(s));
}

static bool put_fmt(line_buf *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool put_fmt(line_buf *l, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return put_raw(l, "?", 1);
    return put_raw(l, tmp, (size_t)n);
}

/* Length (2..4) of the well-formed UTF-8 sequence at `p`, or 0. Stops at the
 * first byte that is not a continuation, so it never reads past a NUL. */
static size_t utf8_len(const unsigned char *p)
{
    size_t n;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    }
    if ((p[0] == 0xe0 && p[1] < 0xa0) ||  /* overlong */
        (p[0] == 0xed && p[1] >= 0xa0) || /* UTF-16 surrogate */
        (p[0] == 0xf0 && p[1] < 0x90) ||  /* overlong */
        (p[0] == 0xf4 && p[1] >= 0x90))   /* above U+10FFFF */
        return 0;
    return n;
}

/*
 * A string value, quoted with JSON's escapes (valid JSON, and logfmt's quoted
 * form) or bare. Cut at a character boundary when the line is full, always
 * closed, so the result parses. False only when not even the quotes fit.
 */
static bool put_string(line_buf *l, const char *s, bool quoted)
{
    const size_t closing = quoted ? 1 : 0;
    if (l->truncated || room(l) < 2 * closing) {
        l->truncated = true;
        return false;
    }
    if (quoted)
        l->buf[l->len++] = '"';
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        char esc[8];
        const char *unit = esc;
        size_t unit_len = 2, consumed = 1;
        esc[0] = '\\';
        switch (*p) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                unit_len = (size_t)snprintf(esc, sizeof esc, "\\u%04x", *p);
            } else if (*p < 0x80) {
                unit = (const char *)p;
                unit_len = 1;
            } else if ((consumed = utf8_len(p)) != 0) {
                unit = (const char *)p;
                unit_len = consumed;
            } else {
                consumed = 1;
                unit = "\\ufffd";
                unit_len = 6;
            }
        }
        if (unit_len + closing > room(l)) {
            l->truncated = true;
            break;
        }
        memcpy(l->buf + l->len, unit, unit_len);
        l->len += unit_len;
        p += consumed;
    }
    if (quoted)
        l->buf[l->len++] = '"';
    return true;
}

/* Bare logfmt values are printable ASCII without space, '=', '"' or '\'. */
static bool needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= ' ' || *p >= 0x7f || *p == '=' || *p == '"' || *p == '\\')
            return true;
    }
    return false;
}

/* logfmt keys are bare words; a key from code that is not one is mended
 * rather than allowed to break the line's structure. */
static bool put_text_key(line_buf *l, const char *key)
{
    if (*key == '\0')
        return put_raw(l, "_", 1);
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        bool word = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-';
        if (!put_raw(l, word ? (const char *)p : "_", 1))
            return false;
    }
    return true;
}

static bool put_value(line_buf *l, const ec_log_field *f, bool json)
{
    switch (f->type) {
    case EC_LOG_F_STR:
        if (f->v.str == NULL)
            return put_str(l, json ? "null" : "\"\"");
        return put_string(l, f->v.str, json || needs_quotes(f->v.str));
    case EC_LOG_F_INT:
        return put_fmt(l, "%lld", f->v.i);
    case EC_LOG_F_UINT:
        return put_fmt(l, "%llu", f->v.u);
    case EC_LOG_F_BOOL:
        return put_str(l, f->v.b ? "true" : "false");
    case EC_LOG_F_SECRET:
        /* The only thing a secret ever formats to. */
        return put_str(l, json ? "\"" EC_SECRET_REDACTED "\"" : EC_SECRET_REDACTED);
    case EC_LOG_F_NONE:
        break;
    }
    return true;
}

/* One field, or nothing: a field whose key or value did not fit is removed
 * whole (a string value is cut instead, and stays). */
static void put_field(line_buf *l, const char *key, const ec_log_field *f, bool json, bool first)
{
    size_t before = l->len;
    bool ok = first || put_raw(l, json ? "," : " ", 1);
    if (json)
        ok = ok && put_string(l, key, true) && put_raw(l, ":", 1);
    else
        ok = ok && put_text_key(l, key) && put_raw(l, "=", 1);
    if (!ok || !put_value(l, f, json))
        l->len = before;
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *ec_log_level_name(ec_log_level level)
{
    if ((unsigned)level < sizeof level_names / sizeof level_names[0])
        return level_names[level];
    return "unknown";
}

bool ec_log_level_parse(const char *name, ec_log_level *level)
{
    if (name == NULL || level == NULL)
        return false;
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (ec_log_level)i;
            return true;
        }
    }
    return false;
}

static int syslog_priority(ec_log_level level)
{
    switch (level) {
    case EC_LOG_DEBUG:
        return LOG_DEBUG;
    case EC_LOG_INFO:
        return LOG_INFO;
    case EC_LOG_WARN:
        return LOG_WARNING;
    case EC_LOG_ERROR:
        return LOG_ERR;
    }
    return LOG_NOTICE;
}

void ec_log_emit(ec_log_level level, const char *event, const ec_log_field *fields, size_t n_fields)
{
    pthread_mutex_lock(&lock);
    ec_log_options o = opts;
    bool to_syslog = o.output == EC_LOG_TO_SYSLOG && stream_override == NULL;
    pthread_mutex_unlock(&lock);
    if (level < o.level)
        return;

    line_buf l = {.len = 0, .truncated = false};
    bool first = true;
    if (o.json)
        put_raw(&l, "{", 1);
    if (!to_syslog) { /* syslog stamps its own time */
        struct timespec ts;
        struct tm tm;
        char when[40];
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000L);
        ec_log_field f = EC_LOG_STR("ts", when);
        put_field(&l, "ts", &f, o.json, first);
        first = false;
    }
    ec_log_field lv = EC_LOG_STR("level", ec_log_level_name(level));
    put_field(&l, "level", &lv, o.json, first);
    ec_log_field ev = EC_LOG_STR("event", event != NULL ? event : "");
    put_field(&l, "event", &ev, o.json, false);
    for (size_t i = 0; i < n_fields && !l.truncated; i++) {
        if (fields[i].type == EC_LOG_F_NONE || fields[i].key == NULL)
            continue;
        put_field(&l, fields[i].key, &fields[i], o.json, false);
    }
    if (l.truncated) { /* fits: LOG_RESERVE was kept back for it */
        const char *mark = o.json ? ",\"truncated\":true" : " truncated=true";
        memcpy(l.buf + l.len, mark, strlen(mark));
        l.len += strlen(mark);
    }
    if (o.json)
        l.buf[l.len++] = '}';
    l.buf[l.len] = '\0';

    if (to_syslog) {
        syslog(syslog_priority(level), "%s", l.buf);
        return;
    }
    l.buf[l.len++] = '\n';
    /* The stream is looked up again under the lock: it may have been swapped
     * (and the old one closed) while this line was being formatted. */
    pthread_mutex_lock(&lock);
    FILE *out = stream_override != NULL ? stream_override : stderr;
    fwrite(l.buf, 1, l.len, out);
    fflush(out);
    pthread_mutex_unlock(&lock);
}

void ec_log_configure(const ec_log_options *options)
{
    static const ec_log_options defaults = {
        .level = EC_LOG_INFO, .output = EC_LOG_TO_STDERR, .json = false};
    pthread_mutex_lock(&lock);
    opts = options != NULL ? *options : defaults;
    if (opts.output == EC_LOG_TO_SYSLOG) {
        const char *ident = opts.ident != NULL ? opts.ident : "edgecap";
        if (!syslog_open || strncmp(ident, syslog_ident, sizeof syslog_ident - 1) != 0) {
            if (syslog_open)
                closelog();
            snprintf(syslog_ident, sizeof syslog_ident, "%s", ident);
            openlog(syslog_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
            syslog_open = true;
        }
    }
    opts.ident = NULL; /* the caller's pointer is not kept */
    pthread_mutex_unlock(&lock);
}

void ec_log_set_stream(FILE *stream)
{
    pthread_mutex_lock(&lock);
    stream_override = stream;
    pthread_mutex_unlock(&lock);
}

void ec_hex_encode(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}
