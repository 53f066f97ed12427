/*
 * Event logger (see include/edgecap/log.h): formats one event into a line
 * buffer and writes it with a single call, so concurrent threads never
 * interleave within a line. Text mode is logfmt (key=value, quoted when
 * needed); JSON mode is one object per line.
 */
#include "edgecap/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048
#define LOG_RESERVE 32

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ec_log_options opts = {.level = EC_LOG_INFO, .output = EC_LOG_TO_STDERR, .json = false};
static FILE *stream_override;
static bool syslog_open;

typedef struct {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool truncated;
} line_buf;

static void put_raw(line_buf *l, const char *s, size_t n)
{
    /* keep room for the truncation mark, closing brace, newline and NUL */
    size_t room = sizeof l->buf - LOG_RESERVE - l->len;
    if (n > room) {
        n = room;
        l->truncated = true;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(line_buf *l, const char *s)
{
    put_raw(l, s, strlen(s));
}

static void put_fmt(line_buf *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put_fmt(line_buf *l, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put_raw(l, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void put_json_string(line_buf *l, const char *s)
{
    put_raw(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        switch (*p) {
        case '"':
            put_raw(l, "\\\"", 2);
            break;
        case '\\':
            put_raw(l, "\\\\", 2);
            break;
        case '\n':
            put_raw(l, "\\n", 2);
            break;
        case '\r':
            put_raw(l, "\\r", 2);
            break;
        case '\t':
            put_raw(l, "\\t", 2);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                put_fmt(l, "\\u%04x", *p);
            else
                put_raw(l, (const char *)p, 1);
        }
    }
    put_raw(l, "\"", 1);
}

static bool needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= ' ' || *p == '=' || *p == '"' || *p == '\\' || *p == 0x7f)
            return true;
    }
    return false;
}

/* logfmt value: bare when safe, else quoted with the same escapes as JSON. */
static void put_text_string(line_buf *l, const char *s)
{
    if (needs_quotes(s))
        put_json_string(l, s);
    else
        put_str(l, s);
}

static void put_value(line_buf *l, const ec_log_field *f, bool json)
{
    switch (f->type) {
    case EC_LOG_F_STR:
        if (f->v.str == NULL)
            put_str(l, json ? "null" : "\"\"");
        else if (json)
            put_json_string(l, f->v.str);
        else
            put_text_string(l, f->v.str);
        break;
    case EC_LOG_F_INT:
        put_fmt(l, "%lld", f->v.i);
        break;
    case EC_LOG_F_UINT:
        put_fmt(l, "%llu", f->v.u);
        break;
    case EC_LOG_F_BOOL:
        put_str(l, f->v.b ? "true" : "false");
        break;
    case EC_LOG_F_SECRET:
        /* The only thing a secret ever formats to. */
        put_str(l, json ? "\"" EC_SECRET_REDACTED "\"" : EC_SECRET_REDACTED);
        break;
    case EC_LOG_F_NONE:
        break;
    }
}

static void put_field(line_buf *l, const char *key, const ec_log_field *f, bool json, bool first)
{
    if (json) {
        put_str(l, first ? "{" : ",");
        put_json_string(l, key);
        put_raw(l, ":", 1);
    } else {
        if (!first)
            put_raw(l, " ", 1);
        put_str(l, key);
        put_raw(l, "=", 1);
    }
    put_value(l, f, json);
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

void ec_log_emit(ec_log_level level, const char *event, const ec_log_field *fields,
                 size_t n_fields)
{
    pthread_mutex_lock(&lock);
    ec_log_options o = opts;
    FILE *out = stream_override != NULL ? stream_override : stderr;
    pthread_mutex_unlock(&lock);
    if (level < o.level)
        return;

    bool to_syslog = o.output == EC_LOG_TO_SYSLOG && stream_override == NULL;
    line_buf l = {.len = 0, .truncated = false};
    bool first = true;
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
    ec_log_field ev = EC_LOG_STR("event", event);
    put_field(&l, "event", &ev, o.json, false);
    for (size_t i = 0; i < n_fields && !l.truncated; i++) {
        if (fields[i].type == EC_LOG_F_NONE || fields[i].key == NULL)
            continue;
        size_t before = l.len;
        put_field(&l, fields[i].key, &fields[i], o.json, false);
        if (l.truncated)
            l.len = before; /* drop the partial field: the line stays parseable */
    }
    if (l.truncated) {
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
    pthread_mutex_lock(&lock);
    fwrite(l.buf, 1, l.len, out);
    fflush(out);
    pthread_mutex_unlock(&lock);
}

void ec_log_configure(const ec_log_options *options)
{
    pthread_mutex_lock(&lock);
    opts = *options;
    if (opts.output == EC_LOG_TO_SYSLOG && !syslog_open) {
        openlog(opts.ident != NULL ? opts.ident : "edgecap", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        syslog_open = true;
    }
    pthread_mutex_unlock(&lock);
}

void ec_log_set_stream(FILE *stream)
{
    pthread_mutex_lock(&lock);
    stream_override = stream;
    pthread_mutex_unlock(&lock);
}
