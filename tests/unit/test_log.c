/*
 * Logger: the exact text and JSON line formats, escaping, the level
 * threshold, secrets printed only as "***", truncation that keeps a line
 * parseable, and whole lines under concurrency. Every line is checked by
 * parsing it back (a strict JSON parser and a logfmt parser below), not only
 * by searching for substrings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "edgecap/log.h"
#include "edgecap/secmem.h"
#include "edgecap/secret.h"
#include "support.h"

#define LINE_MAX_BYTES 2048 /* the logger's line limit, newline included */

/* ---- a parsed line ------------------------------------------------------- */

typedef enum { V_STRING, V_NUMBER, V_TRUE, V_FALSE, V_NULL, V_BARE } value_kind;

typedef struct {
    char *key;
    char *value; /* decoded string, or the literal token */
    value_kind kind;
} pair;

typedef struct {
    pair *pairs;
    size_t n;
} record;

static void record_free(record *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->pairs[i].key);
        free(r->pairs[i].value);
    }
    free(r->pairs);
    r->pairs = NULL;
    r->n = 0;
}

static void record_add(record *r, char *key, char *value, value_kind kind)
{
    r->pairs = realloc(r->pairs, (r->n + 1) * sizeof *r->pairs);
    assert_non_null(r->pairs);
    r->pairs[r->n++] = (pair){.key = key, .value = value, .kind = kind};
}

static const pair *record_get(const record *r, const char *key)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->pairs[i].key, key) == 0)
            return &r->pairs[i];
    }
    return NULL;
}

static const char *record_str(const record *r, const char *key)
{
    const pair *p = record_get(r, key);
    return p != NULL ? p->value : NULL;
}

/* ---- growable byte string ------------------------------------------------ */

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_put_utf8(sbuf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    sb_put(b, u, n);
}

/* ---- strict parsing (RFC 8259 for the flat objects the logger writes) ---- */

/* Well-formed UTF-8 sequence length at p (1..4), 0 if malformed. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    if (p[0] < 0x80)
        return 1;
    size_t n = p[0] >= 0xc2 && p[0] <= 0xdf   ? 2
               : p[0] >= 0xe0 && p[0] <= 0xef ? 3
               : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4
                                              : 0;
    if (n == 0 || (size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    }
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
        return 0;
    return n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool hex4(const char *p, const char *end, uint32_t *out)
{
    if (end - p < 4)
        return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return false;
        v = v << 4 | (uint32_t)h;
    }
    *out = v;
    return true;
}

/* A JSON string starting at *pp (on the opening quote); decoded into *out. */
static bool parse_json_string(const char **pp, const char *end, char **out)
{
    const char *p = *pp;
    if (p >= end || *p != '"')
        return false;
    p++;
    sbuf b = {0};
    sb_put(&b, "", 0);
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20)
            goto bad; /* raw control characters are not allowed */
        if (c != '\\') {
            size_t n = utf8_seq((const unsigned char *)p, (const unsigned char *)end);
            if (n == 0)
                goto bad;
            sb_put(&b, p, n);
            p += n;
            continue;
        }
        if (++p >= end)
            goto bad;
        char e = *p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e != '\0' && simple != NULL) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            sb_put(&b, &map[simple - "\"\\/bfnrt"], 1);
        } else if (e == 'u') {
            uint32_t cp;
            if (!hex4(p, end, &cp))
                goto bad;
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t lo;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &lo) ||
                    lo < 0xdc00 || lo > 0xdfff)
                    goto bad;
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                goto bad;
            }
            sb_put_utf8(&b, cp);
        } else {
            goto bad;
        }
    }
    if (p >= end)
        goto bad;
    *pp = p + 1;
    *out = b.s;
    return true;
bad:
    free(b.s);
    return false;
}

static bool parse_json_number(const char **pp, const char *end)
{
    const char *p = *pp;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return false;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return false;
    }
    if (p < end && *p == '.') {
        const char *digits = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == digits)
            return false;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const char *digits = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == digits)
            return false;
    }
    *pp = p;
    return true;
}

static void skip_ws(const char **pp, const char *end)
{
    while (*pp < end && (**pp == ' ' || **pp == '\t' || **pp == '\n' || **pp == '\r'))
        (*pp)++;
}

/* One flat JSON object (scalar values only) spanning [s, end) exactly. */
static bool parse_json_object(const char *s, const char *end, record *r)
{
    const char *p = s;
    skip_ws(&p, end);
    if (p >= end || *p++ != '{')
        return false;
    skip_ws(&p, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            char *key = NULL, *value = NULL;
            value_kind kind;
            skip_ws(&p, end);
            if (!parse_json_string(&p, end, &key))
                return false;
            skip_ws(&p, end);
            if (p >= end || *p++ != ':') {
                free(key);
                return false;
            }
            skip_ws(&p, end);
            const char *v = p;
            if (p < end && *p == '"') {
                if (!parse_json_string(&p, end, &value)) {
                    free(key);
                    return false;
                }
                kind = V_STRING;
            } else {
                static const struct {
                    const char *word;
                    value_kind kind;
                } words[] = {{"true", V_TRUE}, {"false", V_FALSE}, {"null", V_NULL}};
                kind = V_NUMBER;
                for (size_t i = 0; i < 3; i++) {
                    size_t n = strlen(words[i].word);
                    if ((size_t)(end - p) >= n && memcmp(p, words[i].word, n) == 0) {
                        p += n;
                        kind = words[i].kind;
                    }
                }
                if (kind == V_NUMBER && !parse_json_number(&p, end)) {
                    free(key);
                    return false;
                }
                value = strndup(v, (size_t)(p - v));
            }
            record_add(r, key, value, kind);
            skip_ws(&p, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return false;
        }
    }
    skip_ws(&p, end);
    return p == end;
}

/* One logfmt line: key=value pairs separated by single spaces; a value is a
 * bare word or a quoted string with JSON's escapes. */
static bool parse_logfmt(const char *s, const char *end, record *r)
{
    const char *p = s;
    while (p < end) {
        const char *k = p;
        while (p < end && *p != '=' && *p != ' ' && *p != '"')
            p++;
        if (p == k || p >= end || *p != '=')
            return false;
        char *key = strndup(k, (size_t)(p - k));
        p++;
        char *value = NULL;
        value_kind kind = V_BARE;
        if (p < end && *p == '"') {
            if (!parse_json_string(&p, end, &value)) {
                free(key);
                return false;
            }
            kind = V_STRING;
        } else {
            const char *v = p;
            while (p < end && *p != ' ') {
                unsigned char c = (unsigned char)*p;
                if (c < 0x21 || c >= 0x7f || c == '"' || c == '=' || c == '\\') {
                    free(key);
                    return false;
                }
                p++;
            }
            if (p == v) {
                free(key);
                return false;
            }
            value = strndup(v, (size_t)(p - v));
        }
        record_add(r, key, value, kind);
        if (p < end) {
            if (*p != ' ' || p + 1 >= end) /* one space, then another pair */
                return false;
            p++;
        }
    }
    return r->n > 0;
}

/* ---- captured output ----------------------------------------------------- */

typedef struct {
    char *text;
    size_t n_lines;
    record *records;
} capture;

static void capture_free(capture *c)
{
    for (size_t i = 0; i < c->n_lines; i++)
        record_free(&c->records[i]);
    free(c->records);
    free(c->text);
}

/* Splits captured text into lines (each newline-terminated, none longer than
 * the line limit) and parses every one; any failure fails the test. */
static capture parse_lines(char *text, bool json)
{
    capture c = {.text = text};
    size_t len = strlen(text);
    if (len > 0 && text[len - 1] != '\n')
        fail_msg("output does not end with a newline: %s", text);
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        if ((size_t)(nl - p) + 1 > LINE_MAX_BYTES)
            fail_msg("line of %zu bytes exceeds the limit", (size_t)(nl - p) + 1);
        c.records = realloc(c.records, (c.n_lines + 1) * sizeof *c.records);
        assert_non_null(c.records);
        record *r = &c.records[c.n_lines++];
        *r = (record){0};
        bool ok = json ? parse_json_object(p, nl, r) : parse_logfmt(p, nl, r);
        if (!ok)
            fail_msg("line %zu does not parse as %s: %.*s", c.n_lines, json ? "JSON" : "logfmt",
                     (int)(nl - p), p);
        p = nl + 1;
    }
    return c;
}

static void set_mode(ec_log_level level, bool json)
{
    ec_log_options o = {.level = level, .output = EC_LOG_TO_STDERR, .json = json};
    ec_log_configure(&o);
}

static int setup(void **state)
{
    (void)state;
    ec_log_configure(NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ec_log_set_stream(NULL);
    ec_log_configure(NULL);
    return 0;
}

/* ---- the parsers themselves ---------------------------------------------- */

/* The checks below are only as good as the parsers: they must refuse what
 * is not JSON or logfmt. */
static void test_parsers_refuse_malformed_lines(void **state)
{
    (void)state;
    static const char *const bad_json[] = {
        "",
        "{",
        "{\"a\":1",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":\"x}",
        "{\"a\":\"x\ty\"}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\xff\"}",
        "{\"a\":01}",
        "{\"a\":tru}",
        "{\"a\":1}x",
        "{\"a\":1}{\"b\":2}",
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        record r = {0};
        const char *s = bad_json[i];
        if (parse_json_object(s, s + strlen(s), &r))
            fail_msg("accepted malformed JSON: %s", s);
        record_free(&r);
    }
    static const char *const bad_logfmt[] = {
        "", "a", "a=", "=b", "a=b  c=d", "a=b c", "a=\"x", "a=x\"y", "a=b ", "a=\x01",
    };
    for (size_t i = 0; i < sizeof bad_logfmt / sizeof bad_logfmt[0]; i++) {
        record r = {0};
        const char *s = bad_logfmt[i];
        if (parse_logfmt(s, s + strlen(s), &r))
            fail_msg("accepted malformed logfmt: %s", s);
        record_free(&r);
    }
    record r = {0};
    const char *good = "{\"a\":\"\\u00e9\\ud83d\\ude00\\n\",\"b\":-1.5e3,\"c\":null}";
    assert_true(parse_json_object(good, good + strlen(good), &r));
    assert_string_equal(record_str(&r, "a"), "\xc3\xa9\xf0\x9f\x98\x80\n");
    assert_string_equal(record_str(&r, "b"), "-1.5e3");
    record_free(&r);
}

/* ---- text format --------------------------------------------------------- */

static bool is_timestamp(const char *s)
{
    /* 2025-01-05T12:34:56.789Z */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(s) != sizeof shape - 1)
        return false;
    for (size_t i = 0; shape[i] != '\0'; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return false;
    }
    return true;
}

static void test_text_line_format(void **state)
{
    (void)state;
    ts_log_begin();
    ec_log(EC_LOG_INFO, "ready", EC_LOG_STR("config", "/etc/edgecap.conf"), EC_LOG_INT("pid", -42),
           EC_LOG_UINT("bytes", ULLONG_MAX), EC_LOG_BOOL("mlock", true),
           EC_LOG_BOOL("degraded", false));
    char *out = ts_log_end();
    /* ts=<time> first, then level, event and the fields in call order */
    const char *rest = strchr(out, ' ');
    assert_non_null(rest);
    assert_string_equal(rest, " level=info event=ready config=/etc/edgecap.conf pid=-42 "
                              "bytes=18446744073709551615 mlock=true degraded=false\n");
    assert_memory_equal(out, "ts=", 3);
    char *ts = strndup(out + 3, (size_t)(rest - out - 3));
    if (!is_timestamp(ts))
        fail_msg("not a UTC millisecond timestamp: %s", ts);
    /* UTC although main() set a local zone five hours off */
    struct tm tm = {0};
    assert_non_null(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm));
    long skew = (long)(timegm(&tm) - time(NULL));
    if (skew < -60 || skew > 60)
        fail_msg("timestamp %s is %ld s away from UTC now", ts, skew);
    free(ts);
    capture c = parse_lines(out, false);
    assert_int_equal(c.n_lines, 1);
    assert_int_equal(c.records[0].n, 8);
    assert_string_equal(c.records[0].pairs[0].key, "ts");
    capture_free(&c);
}

/* Values that need it are quoted with JSON's escapes; the exact bytes. */
static void test_text_quoting_and_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *value, *written;
    } cases[] = {
        {"plain", "plain"},
        {"two words", "\"two words\""},
        {"say \"hi\"", "\"say \\\"hi\\\"\""},
        {"line1\nline2", "\"line1\\nline2\""},
        {"cr\rtab\t", "\"cr\\rtab\\t\""},
        {"bell\x07"
         "esc\x1b"
         "del\x7f",
         "\"bell\\u0007esc\\u001bdel\\u007f\""},
        {"back\\slash", "\"back\\\\slash\""},
        {"a=b", "\"a=b\""},
        {"", "\"\""},
        {"caf\xc3\xa9", "\"caf\xc3\xa9\""},
        {"bad\xff"
         "byte",
         "\"bad\\ufffdbyte\""},
        {"fake key=value", "\"fake key=value\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ts_log_begin();
        ec_log(EC_LOG_INFO, "e", EC_LOG_STR("k", cases[i].value));
        char *out = ts_log_end();
        char *want = ts_strf(" level=info event=e k=%s\n", cases[i].written);
        const char *got = strchr(out, ' ');
        if (got == NULL || strcmp(got, want) != 0)
            fail_msg("value %zu written as [%s], want [%s]", i, got != NULL ? got : out, want);
        free(want);
        capture c = parse_lines(out, false);
        assert_int_equal(c.n_lines, 1);
        assert_int_equal(c.records[0].n, 4); /* a value never splits into more pairs */
        if (i != 10)                         /* the invalid byte reads back as U+FFFD */
            assert_string_equal(record_str(&c.records[0], "k"), cases[i].value);
        else
            assert_string_equal(record_str(&c.records[0], "k"), "bad\xef\xbf\xbd"
                                                                "byte");
        capture_free(&c);
    }
}

static void test_text_null_and_odd_keys(void **state)
{
    (void)state;
    ts_log_begin();
    ec_log(EC_LOG_INFO, "needs quoting", EC_LOG_STR("nothing", (const char *)NULL),
           EC_LOG_STR("bad key=", "v"));
    char *out = ts_log_end();
    assert_non_null(strstr(out, " event=\"needs quoting\" nothing=\"\" bad_key_=v\n"));
    capture c = parse_lines(out, false);
    assert_int_equal(c.records[0].n, 5);
    capture_free(&c);
}

/* ---- JSON format --------------------------------------------------------- */

static void test_json_line_format(void **state)
{
    (void)state;
    set_mode(EC_LOG_INFO, true);
    ts_log_begin();
    ec_log(EC_LOG_WARN, "spool_full", EC_LOG_STR("dir", "/var/lib/edgecap"), EC_LOG_INT("free", -1),
           EC_LOG_UINT("quota", ULLONG_MAX), EC_LOG_BOOL("refuse", true),
           EC_LOG_STR("none", (const char *)NULL));
    ec_log(EC_LOG_ERROR, "second");
    char *out = ts_log_end();
    capture c = parse_lines(out, true);
    assert_int_equal(c.n_lines, 2);
    const record *r = &c.records[0];
    assert_int_equal(r->n, 8);
    static const char *const keys[] = {"ts",   "level", "event",  "dir",
                                       "free", "quota", "refuse", "none"};
    for (size_t i = 0; i < r->n; i++)
        assert_string_equal(r->pairs[i].key, keys[i]);
    assert_true(is_timestamp(record_str(r, "ts")));
    assert_string_equal(record_str(r, "level"), "warn");
    assert_string_equal(record_str(r, "event"), "spool_full");
    assert_string_equal(record_str(r, "dir"), "/var/lib/edgecap");
    assert_int_equal(record_get(r, "free")->kind, V_NUMBER);
    assert_string_equal(record_str(r, "free"), "-1");
    assert_string_equal(record_str(r, "quota"), "18446744073709551615");
    assert_int_equal(record_get(r, "refuse")->kind, V_TRUE);
    assert_int_equal(record_get(r, "none")->kind, V_NULL);
    assert_string_equal(record_str(&c.records[1], "event"), "second");
    assert_string_equal(record_str(&c.records[1], "level"), "error");
    capture_free(&c);
}

static void test_json_escaping_round_trips(void **state)
{
    (void)state;
    static const char *const values[] = {
        "plain",
        "two words",
        "say \"hi\"",
        "line1\nline2\r\n",
        "tab\there",
        "ctl\x01\x02\x1f\x7f",
        "back\\slash",
        "",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\xa4",
        "{\"injected\":true}",
        "</script>",
    };
    set_mode(EC_LOG_INFO, true);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        ts_log_begin();
        ec_log(EC_LOG_INFO, values[i], EC_LOG_STR(values[i], values[i]));
        char *out = ts_log_end();
        capture c = parse_lines(out, true);
        assert_int_equal(c.n_lines, 1);
        const record *r = &c.records[0];
        assert_int_equal(r->n, 4);
        assert_string_equal(record_str(r, "event"), values[i]);
        assert_string_equal(r->pairs[3].key, values[i]);
        assert_string_equal(r->pairs[3].value, values[i]);
        capture_free(&c);
    }
}

/* Bytes that are not UTF-8 (a path from a board's filesystem, a broken
 * server answer) must not make the line invalid JSON. */
static void test_json_invalid_utf8_replaced(void **state)
{
    (void)state;
    static const char *const values[] = {
        "\xff",
        "\xc3",
        "x\xc3(",
        "\xe2\x82",
        "\xed\xa0\x80" /* surrogate */,
        "\xc0\xaf" /* overlong */,
        "\xf4\x90\x80\x80" /* > U+10FFFF */,
        "\x80"
        "abc",
    };
    set_mode(EC_LOG_INFO, true);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        ts_log_begin();
        ec_log(EC_LOG_INFO, "e", EC_LOG_STR("path", values[i]));
        char *out = ts_log_end();
        capture c = parse_lines(out, true);
        const char *got = record_str(&c.records[0], "path");
        assert_non_null(got);
        assert_non_null(strstr(got, "\xef\xbf\xbd")); /* U+FFFD */
        capture_free(&c);
    }
}

/* ---- level threshold ----------------------------------------------------- */

static void test_level_threshold(void **state)
{
    (void)state;
    for (int threshold = EC_LOG_DEBUG; threshold <= EC_LOG_ERROR; threshold++) {
        set_mode((ec_log_level)threshold, false);
        ts_log_begin();
        ec_log(EC_LOG_DEBUG, "at_debug");
        ec_log(EC_LOG_INFO, "at_info");
        ec_log(EC_LOG_WARN, "at_warn");
        ec_log(EC_LOG_ERROR, "at_error");
        char *out = ts_log_end();
        capture c = parse_lines(out, false);
        assert_int_equal(c.n_lines, (size_t)(EC_LOG_ERROR - threshold + 1));
        for (size_t i = 0; i < c.n_lines; i++) {
            const char *level = ec_log_level_name((ec_log_level)(threshold + (int)i));
            char *event = ts_strf("at_%s", level);
            assert_string_equal(record_str(&c.records[i], "level"), level);
            assert_string_equal(record_str(&c.records[i], "event"), event);
            free(event);
        }
        capture_free(&c);
    }
}

static void test_default_is_info_text(void **state)
{
    (void)state;
    ec_log_configure(NULL);
    ts_log_begin();
    ec_log(EC_LOG_DEBUG, "hidden");
    ec_log(EC_LOG_INFO, "shown");
    char *out = ts_log_end();
    capture c = parse_lines(out, false);
    assert_int_equal(c.n_lines, 1);
    assert_string_equal(record_str(&c.records[0], "event"), "shown");
    capture_free(&c);
}

static void test_level_names_round_trip(void **state)
{
    (void)state;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int l = EC_LOG_DEBUG; l <= EC_LOG_ERROR; l++) {
        assert_string_equal(ec_log_level_name((ec_log_level)l), names[l]);
        ec_log_level parsed = (ec_log_level)-1;
        assert_true(ec_log_level_parse(ec_log_level_name((ec_log_level)l), &parsed));
        assert_int_equal(parsed, l);
    }
    static const char *const unknown[] = {"", "INFO", "warning", "info ", "err", "verbose"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        ec_log_level parsed = EC_LOG_WARN;
        assert_false(ec_log_level_parse(unknown[i], &parsed));
        assert_int_equal(parsed, EC_LOG_WARN); /* untouched */
    }
    ec_log_level parsed = EC_LOG_WARN;
    assert_false(ec_log_level_parse(NULL, &parsed));
    assert_false(ec_log_level_parse("info", NULL));
    assert_string_equal(ec_log_level_name((ec_log_level)99), "unknown");
}

/* ---- secrets ------------------------------------------------------------- */

static const char token[] = "sv=2025-01-05&sig=U2VjcmV0U2lnbmF0dXJl";

static void test_secret_prints_redacted(void **state)
{
    (void)state;
    ec_secret *s = NULL;
    assert_int_equal(ec_secret_new(&s, token, strlen(token)), EC_OK);
    for (int json = 0; json <= 1; json++) {
        set_mode(EC_LOG_DEBUG, json);
        ts_log_begin();
        ec_log(EC_LOG_INFO, "auth", EC_LOG_SECRET("sas", s), EC_LOG_STR("mode", "sas"));
        ec_log(EC_LOG_DEBUG, "auth_debug", EC_LOG_SECRET("sas", s));
        ec_log(EC_LOG_ERROR, "auth_failed", EC_LOG_SECRET("sas", s),
               EC_LOG_UINT("sas_len", ec_secret_len(s)));
        char *out = ts_log_end();
        /* not the whole token, and not its distinctive signature part */
        assert_null(strstr(out, token));
        assert_null(strstr(out, "U2VjcmV0U2lnbmF0dXJl"));
        capture c = parse_lines(out, json);
        assert_int_equal(c.n_lines, 3);
        for (size_t i = 0; i < c.n_lines; i++) {
            const pair *p = record_get(&c.records[i], "sas");
            assert_non_null(p);
            assert_string_equal(p->value, EC_SECRET_REDACTED);
        }
        assert_non_null(strstr(out, json ? "\"sas\":\"***\"" : " sas=*** "));
        capture_free(&c);
    }
    ec_secret_free(&s);
}

/* A NULL secret (not configured) prints the same: nothing is revealed,
 * not even whether it is set. */
static void test_null_secret_prints_redacted(void **state)
{
    (void)state;
    ts_log_begin();
    ec_log(EC_LOG_INFO, "auth", EC_LOG_SECRET("key", NULL));
    char *out = ts_log_end();
    assert_non_null(strstr(out, " key=***\n"));
    free(out);
}

/* ---- truncation ---------------------------------------------------------- */

static char *repeat(const char *unit, size_t times)
{
    size_t n = strlen(unit);
    char *s = malloc(n * times + 1);
    assert_non_null(s);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * n, unit, n);
    s[n * times] = '\0';
    return s;
}

static bool is_prefix(const char *prefix, const char *s)
{
    return strncmp(prefix, s, strlen(prefix)) == 0;
}

/* One over-long event in each mode; the line parses, says truncated=true,
 * and what it kept of `value` is a prefix of it. */
static void check_truncated(const char *event, const char *value, size_t n_extra)
{
    for (int json = 0; json <= 1; json++) {
        set_mode(EC_LOG_INFO, json);
        ts_log_begin();
        ec_log(EC_LOG_INFO, event, EC_LOG_STR("before", "kept"), EC_LOG_STR("big", value),
               EC_LOG_STR("after", "dropped"));
        for (size_t i = 0; i < n_extra; i++) {
            char key[32];
            snprintf(key, sizeof key, "field_%04zu", i);
            ec_log_emit(EC_LOG_INFO, "many", (const ec_log_field[]){EC_LOG_STR(key, value)}, 1);
        }
        char *out = ts_log_end();
        capture c = parse_lines(out, json);
        assert_int_equal(c.n_lines, 1 + n_extra);
        const record *r = &c.records[0];
        const pair *t = record_get(r, "truncated");
        if (t == NULL)
            fail_msg("no truncated marker in %s line", json ? "JSON" : "text");
        assert_string_equal(t->value, "true");
        assert_true(json ? t->kind == V_TRUE : t->kind == V_BARE);
        assert_string_equal(r->pairs[r->n - 1].key, "truncated"); /* it comes last */
        assert_true(is_prefix(record_str(r, "event"), event));
        const char *big = record_str(r, "big");
        if (big != NULL) {
            assert_true(is_prefix(big, value));
            assert_true(strlen(big) < strlen(value));
        }
        assert_null(record_get(r, "after"));
        capture_free(&c);
    }
}

static void test_long_value_truncated_parseable(void **state)
{
    (void)state;
    static const char *const units[] = {
        "a",
        "two words ",
        "\"",
        "\\",
        "\n",
        "\x01",
        "\xe2\x82\xac" /* 3-byte UTF-8 */,
        "\xf0\x9f\x8e\xa4" /* 4-byte UTF-8 */,
        "\xff" /* invalid, escaped to 6 bytes */,
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        char *value = repeat(units[i], 3000);
        if (units[i][0] == '\xff') {
            /* the read-back is U+FFFD, not the byte: only parseability counts */
            for (int json = 0; json <= 1; json++) {
                set_mode(EC_LOG_INFO, json);
                ts_log_begin();
                ec_log(EC_LOG_INFO, "e", EC_LOG_STR("big", value));
                char *out = ts_log_end();
                capture c = parse_lines(out, json);
                assert_non_null(record_get(&c.records[0], "truncated"));
                capture_free(&c);
            }
        } else {
            check_truncated("e", value, 0);
        }
        free(value);
    }
}

static void test_long_event_truncated_parseable(void **state)
{
    (void)state;
    char *event = repeat("ev\"\n", 1500);
    check_truncated(event, "v", 0);
    free(event);
}

/* Many fields: they are kept in order up to the limit, only the last one
 * kept may be cut short (a string value is cut rather than dropped), the
 * rest are dropped, never half a key or an unclosed quote. */
static void test_many_fields_truncated_parseable(void **state)
{
    (void)state;
    enum { N = 300 };
    ec_log_field fields[N];
    char keys[N][16];
    for (size_t i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%03zu", i);
        fields[i] = EC_LOG_STR(keys[i], "value with spaces");
    }
    for (int json = 0; json <= 1; json++) {
        set_mode(EC_LOG_INFO, json);
        ts_log_begin();
        ec_log_emit(EC_LOG_INFO, "wide", fields, N);
        char *out = ts_log_end();
        capture c = parse_lines(out, json);
        const record *r = &c.records[0];
        assert_true(r->n > 10 && r->n < N);
        for (size_t i = 3; i + 1 < r->n; i++) {
            assert_string_equal(r->pairs[i].key, keys[i - 3]);
            if (i + 2 < r->n)
                assert_string_equal(r->pairs[i].value, "value with spaces");
            else
                assert_true(is_prefix(r->pairs[i].value, "value with spaces"));
        }
        assert_string_equal(r->pairs[r->n - 1].key, "truncated");
        capture_free(&c);
    }
}

/* Wherever the limit falls (between fields, after a key, inside a number),
 * the line stays parseable: a field that does not fit whole is dropped. */
static void test_truncation_at_every_offset(void **state)
{
    (void)state;
    enum { N = 200 };
    ec_log_field fields[N + 1];
    char keys[N][16];
    char *pad = repeat("p", 40);
    for (size_t i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%03zu", i);
        fields[i + 1] = i % 3 == 0   ? EC_LOG_UINT(keys[i], 1234567890123ULL)
                        : i % 3 == 1 ? EC_LOG_BOOL(keys[i], false)
                                     : EC_LOG_INT(keys[i], -98765);
    }
    for (int json = 0; json <= 1; json++) {
        set_mode(EC_LOG_INFO, json);
        for (size_t shift = 0; shift <= 40; shift++) {
            pad[shift] = '\0';
            fields[0] = EC_LOG_STR("pad", pad);
            ts_log_begin();
            ec_log_emit(EC_LOG_INFO, "offsets", fields, N + 1);
            char *out = ts_log_end();
            pad[shift] = 'p';
            capture c = parse_lines(out, json);
            const record *r = &c.records[0];
            assert_string_equal(r->pairs[r->n - 1].key, "truncated");
            for (size_t i = 4; i + 1 < r->n; i++) {
                const char *want = (i - 4) % 3 == 0   ? "1234567890123"
                                   : (i - 4) % 3 == 1 ? "false"
                                                      : "-98765";
                assert_string_equal(r->pairs[i].key, keys[i - 4]);
                assert_string_equal(r->pairs[i].value, want);
            }
            capture_free(&c);
        }
    }
    free(pad);
}

/* A line that just fits is not marked. */
static void test_fitting_line_not_truncated(void **state)
{
    (void)state;
    char *value = repeat("x", 1500);
    for (int json = 0; json <= 1; json++) {
        set_mode(EC_LOG_INFO, json);
        ts_log_begin();
        ec_log(EC_LOG_INFO, "e", EC_LOG_STR("v", value));
        char *out = ts_log_end();
        capture c = parse_lines(out, json);
        assert_null(record_get(&c.records[0], "truncated"));
        assert_string_equal(record_str(&c.records[0], "v"), value);
        capture_free(&c);
    }
    free(value);
}

/* ---- concurrency --------------------------------------------------------- */

#define THREADS 4
#define LINES_PER_THREAD 500

static void *log_lines(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    char pad[301];
    for (unsigned i = 0; i < LINES_PER_THREAD; i++) {
        memset(pad, (int)('a' + t), sizeof pad - 1);
        pad[sizeof pad - 1] = '\0';
        snprintf(pad, 12, "%05u-%05u", t, i); /* leaves a NUL; restore */
        pad[11] = 'x';
        ec_log(EC_LOG_INFO, "tick", EC_LOG_UINT("thread", t), EC_LOG_UINT("seq", i),
               EC_LOG_STR("pad", pad));
    }
    return NULL;
}

/* Through the real stderr (fd 2 pointed at a file), as the daemon writes. */
static void check_concurrent(bool json)
{
    char *dir = ts_mkdtemp();
    assert_non_null(dir);
    char *path = ts_strf("%s/stderr", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);

    set_mode(EC_LOG_INFO, json);
    ec_log_set_stream(NULL);
    pthread_t t[THREADS];
    int created = 0;
    for (uintptr_t i = 0; i < THREADS; i++)
        created += pthread_create(&t[i], NULL, log_lines, (void *)i) == 0;
    for (int i = 0; i < created; i++)
        pthread_join(t[i], NULL);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_int_equal(created, THREADS);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    struct stat sb;
    assert_int_equal(fstat(fileno(f), &sb), 0);
    char *text = calloc(1, (size_t)sb.st_size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)sb.st_size, f), (size_t)sb.st_size);
    fclose(f);
    unlink(path);
    ts_rmtree(dir);
    free(path);
    free(dir);

    capture c = parse_lines(text, json);
    assert_int_equal(c.n_lines, THREADS * LINES_PER_THREAD);
    static bool seen[THREADS][LINES_PER_THREAD];
    memset(seen, 0, sizeof seen);
    for (size_t l = 0; l < c.n_lines; l++) {
        const record *r = &c.records[l];
        assert_int_equal(r->n, 6);
        unsigned th = (unsigned)strtoul(record_str(r, "thread"), NULL, 10);
        unsigned seq = (unsigned)strtoul(record_str(r, "seq"), NULL, 10);
        assert_true(th < THREADS && seq < LINES_PER_THREAD);
        assert_false(seen[th][seq]);
        seen[th][seq] = true;
        const char *pad = record_str(r, "pad");
        char head[12];
        snprintf(head, sizeof head, "%05u-%05u", th, seq);
        assert_int_equal(strlen(pad), 300);
        assert_memory_equal(pad, head, 11);
        for (size_t k = 12; k < 300; k++)
            assert_int_equal(pad[k], 'a' + (int)th);
    }
    capture_free(&c);
}

static void test_concurrent_lines_never_interleave_text(void **state)
{
    (void)state;
    check_concurrent(false);
}

static void test_concurrent_lines_never_interleave_json(void **state)
{
    (void)state;
    check_concurrent(true);
}

/* The stream can be swapped while other threads log (tests do it; so would
 * a reopen on SIGHUP): no line goes to a closed stream, none is lost. */
typedef struct {
    atomic_bool stop;
    atomic_ulong logged;
} swap_state;

static void *log_until_stopped(void *arg)
{
    swap_state *st = arg;
    while (!atomic_load(&st->stop)) {
        ec_log(EC_LOG_INFO, "swap");
        atomic_fetch_add(&st->logged, 1);
    }
    return NULL;
}

static size_t count_newlines_in(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

static void test_stream_swap_while_logging(void **state)
{
    (void)state;
    char *dir = ts_mkdtemp();
    assert_non_null(dir);
    char *base_path = ts_strf("%s/base", dir);
    char *stderr_path = ts_strf("%s/stderr", dir);
    FILE *base = fopen(base_path, "w");
    assert_non_null(base);
    /* between ts_log_end and the next swap, lines go to stderr: count those too */
    int fd = open(stderr_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);

    ec_log_set_stream(base);
    swap_state st;
    atomic_init(&st.stop, false);
    atomic_init(&st.logged, 0);
    pthread_t t;
    int created = pthread_create(&t, NULL, log_until_stopped, &st);
    size_t captured = 0;
    for (int i = 0; created == 0 && (i < 300 || atomic_load(&st.logged) < 3000); i++) {
        ts_log_begin();           /* swaps in a memstream ... */
        char *out = ts_log_end(); /* ... and closes it again */
        for (const char *p = out; *p != '\0'; p++)
            captured += *p == '\n';
        free(out);
        ec_log_set_stream(base);
    }
    atomic_store(&st.stop, true);
    if (created == 0)
        pthread_join(t, NULL);
    ec_log_set_stream(NULL);
    fclose(base);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_int_equal(created, 0);

    size_t in_base = count_newlines_in(base_path);
    size_t in_stderr = count_newlines_in(stderr_path);
    unlink(base_path);
    unlink(stderr_path);
    ts_rmtree(dir);
    free(base_path);
    free(stderr_path);
    free(dir);
    assert_int_equal(in_base + captured + in_stderr, atomic_load(&st.logged));
}

int main(void)
{
    setenv("TZ", "XYZ+05", 1); /* any local zone but UTC */
    tzset();
    ec_secmem_init(false);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_parsers_refuse_malformed_lines),
        T(test_text_line_format),
        T(test_text_quoting_and_escaping),
        T(test_text_null_and_odd_keys),
        T(test_json_line_format),
        T(test_json_escaping_round_trips),
        T(test_json_invalid_utf8_replaced),
        T(test_level_threshold),
        T(test_default_is_info_text),
        T(test_level_names_round_trip),
        T(test_secret_prints_redacted),
        T(test_null_secret_prints_redacted),
        T(test_long_value_truncated_parseable),
        T(test_long_event_truncated_parseable),
        T(test_many_fields_truncated_parseable),
        T(test_truncation_at_every_offset),
        T(test_fitting_line_not_truncated),
        T(test_concurrent_lines_never_interleave_text),
        T(test_concurrent_lines_never_interleave_json),
        T(test_stream_swap_while_logging),
    };
#undef T
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
