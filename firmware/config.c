/*
 * Provisioning-file loader (see include/edgecap/config.h). The file is read
 * into secure memory (it may hold secrets), handed to libinih line by line by
 * our own reader (which also counts lines, rejects over-long lines and
 * unknown section headers), and every key is checked against one table that
 * also carries the defaults. Cross-key rules run after the whole file is read.
 */
#include "edgecap/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <mbedtls/base64.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "edgecap/consent.h"
#include "edgecap/credential.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"

#define CONFIG_FILE_MAX_BYTES (64 * 1024)
#define SECRET_FILE_MAX_BYTES (16 * 1024)

/* ---- key table ---------------------------------------------------------- */

typedef enum {
    K_STR,
    K_INT,
    K_I64,
    K_BOOL,
    K_ENUM,
    K_SECRET,
    K_SECRET_FILE,
    K_LIST,
    K_SECRET_CREDENTIAL /* NAME of a systemd credential holding the secret */
} key_type;

/* A string check: true when `v` is acceptable; otherwise says what is expected. */
typedef bool (*str_check)(const char *v);

typedef struct {
    const char *section;
    const char *name;
    key_type type;
    size_t offset;
    size_t size;              /* K_STR/K_LIST: bytes of one string */
    size_t max_items;         /* K_LIST */
    size_t count_offset;      /* K_LIST */
    long long min, max;       /* K_INT/K_I64 */
    const int *allowed;       /* K_INT: allowed values, 0-terminated, or NULL */
    const char *const *names; /* K_ENUM: NULL-terminated */
    str_check check;          /* K_STR/K_LIST items */
    const char *expect;       /* what a valid value looks like, for errors */
    const char *def;          /* default, parsed like a file value; NULL = none */
    bool required;
} key_def;

#define OFF(field) offsetof(ec_config, field)
#define SZ(field) sizeof(((ec_config *)0)->field)

static bool check_device_id(const char *v);
static bool check_abs_path(const char *v);
static bool check_path_or_empty(const char *v);
static bool check_https_url(const char *v);
static bool check_proxy_url(const char *v);
static bool check_host_pattern(const char *v);
static bool check_pin(const char *v);
static bool check_connect_to(const char *v);
static bool check_container(const char *v);
static bool check_prefix(const char *v);
static bool check_locale(const char *v);
static bool check_guid(const char *v);
static bool check_scope(const char *v);
static bool check_tag(const char *v);
static bool check_alsa_name(const char *v);
static bool check_listen(const char *v);
static bool check_window(const char *v);
static bool check_token_label(const char *v);
static bool check_object_label(const char *v);

static const int rates_hz[] = {8000, 16000, 48000, 0};
static const int frame_sizes_ms[] = {10, 20, 40, 60, 0};
static const char *const source_names[] = {"alsa", "file", NULL};
static const char *const vbr_names[] = {"on", "constrained", "off", NULL};
static const char *const app_names[] = {"voip", "audio", NULL};
static const char *const when_full_names[] = {"drop-oldest", "refuse-new", NULL};
static const char *const target_names[] = {"blob", "speech", NULL};
static const char *const tls_names[] = {"1.2", "1.3", NULL};
static const char *const auth_names[] = {"sas", "entra", "key", NULL};
static const char *const keystore_names[] = {"file", "pkcs11", NULL};
static const char *const assertion_alg_names[] = {"PS256", "ES256", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const punct_names[] = {"None", "Dictated", "Automatic", "DictatedAndAutomatic",
                                          NULL};
static const char *const profanity_names[] = {"None", "Removed", "Tags", "Masked", NULL};
static const char *const facility_names[] = {"authpriv", "local0", "local1", "local2", "local3",
                                             "local4",   "local5", "local6", "local7", NULL};
static const char *const syslog_format_names[] = {"rfc3164", "rfc5424", NULL};

#define STR(sec, key, field, chk, exp, dflt, req)                                                  \
    {                                                                                              \
        .section = sec, .name = key, .type = K_STR, .offset = OFF(field), .size = SZ(field),       \
        .check = chk, .expect = exp, .def = dflt, .required = req                                  \
    }
#define INT(sec, key, field, lo, hi, dflt)                                                         \
    {                                                                                              \
        .section = sec, .name = key, .type = K_INT, .offset = OFF(field), .min = lo, .max = hi,    \
        .def = dflt                                                                                \
    }
#define INTSET(sec, key, field, set, exp, dflt)                                                    \
    {                                                                                              \
        .section = sec, .name = key, .type = K_INT, .offset = OFF(field), .min = 0,                \
        .max = INT_MAX, .allowed = set, .expect = exp, .def = dflt                                 \
    }
#define I64(sec, key, field, lo, hi, dflt)                                                         \
    {                                                                                              \
        .section = sec, .name = key, .type = K_I64, .offset = OFF(field), .min = lo, .max = hi,    \
        .def = dflt                                                                                \
    }
#define BOOL(sec, key, field, dflt)                                                                \
    {                                                                                              \
        .section = sec, .name = key, .type = K_BOOL, .offset = OFF(field), .def = dflt             \
    }
#define ENUM(sec, key, field, nm, dflt)                                                            \
    {                                                                                              \
        .section = sec, .name = key, .type = K_ENUM, .offset = OFF(field), .names = nm,            \
        .def = dflt                                                                                \
    }
#define SECRET(sec, key, field)                                                                    \
    {.section = sec, .name = key, .type = K_SECRET, .offset = OFF(field)},                         \
        {.section = sec,                                                                           \
         .name = key "_file",                                                                      \
         .type = K_SECRET_FILE,                                                                    \
         .offset = OFF(field),                                                                     \
         .check = check_abs_path,                                                                  \
         .expect = "an absolute path"},                                                            \
    {                                                                                              \
        .section = sec, .name = key "_credential", .type = K_SECRET_CREDENTIAL,                    \
        .offset = OFF(field)                                                                       \
    }
#define LIST(sec, key, field, count, chk, exp, dflt, req)                                          \
    {                                                                                              \
        .section = sec, .name = key, .type = K_LIST, .offset = OFF(field),                         \
        .size = sizeof(((ec_config *)0)->field[0]),                                                \
        .max_items = sizeof(((ec_config *)0)->field) / sizeof(((ec_config *)0)->field[0]),         \
        .count_offset = OFF(count), .check = chk, .expect = exp, .def = dflt, .required = req      \
    }

static const key_def keys[] = {
    STR("device", "id", device.id, check_device_id,
        "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit", NULL, true),
    BOOL("device", "require_mlock", device.require_mlock, "on"),
    ENUM("device", "keystore", device.keystore, keystore_names, "file"),
    STR("device", "keystore_dir", device.keystore_dir, check_abs_path, "an absolute path",
        "/var/lib/edgecap/keys", false),
    LIST("device", "tags", device.tags, device.n_tags, check_tag,
         "comma-separated name=value (name: letter or _ then letters, digits, _; value: letters, "
         "digits, space and + - . / : = _)",
         "", false),

    ENUM("capture", "source", capture.source, source_names, "alsa"),
    STR("capture", "device", capture.device, check_alsa_name, "an ALSA PCM name without spaces",
        "default", false),
    STR("capture", "file", capture.file, check_path_or_empty, "an absolute path", "", false),
    INTSET("capture", "rate_hz", capture.rate_hz, rates_hz, "8000, 16000 or 48000", "16000"),
    INT("capture", "channels", capture.channels, 1, 2, "1"),
    INT("capture", "period_frames", capture.period_frames, 32, 65536, "320"),
    INT("capture", "buffer_frames", capture.buffer_frames, 64, 1048576, "3200"),
    INT("capture", "segment_seconds", capture.segment_seconds, 1, 3600, "60"),
    BOOL("capture", "vad", capture.vad, "off"),
    INT("capture", "vad_threshold_dbfs", capture.vad_threshold_dbfs, -90, 0, "-50"),
    INT("capture", "vad_hangover_ms", capture.vad_hangover_ms, 0, 10000, "800"),
    INT("capture", "queue_ms", capture.queue_ms, 100, 60000, "4000"),
    BOOL("capture", "file_realtime", capture.file_realtime, "off"),

    INT("encoder", "bitrate_bps", encoder.bitrate_bps, 6000, 256000, "24000"),
    INT("encoder", "complexity", encoder.complexity, 0, 10, "5"),
    ENUM("encoder", "vbr", encoder.vbr, vbr_names, "on"),
    ENUM("encoder", "application", encoder.application, app_names, "voip"),
    INTSET("encoder", "frame_ms", encoder.frame_ms, frame_sizes_ms, "10, 20, 40 or 60", "20"),
    INT("encoder", "max_page_ms", encoder.max_page_ms, 20, 10000, "1000"),

    STR("spool", "dir", spool.dir, check_abs_path, "an absolute path", "/var/lib/edgecap/spool",
        false),
    I64("spool", "quota_bytes", spool.quota_bytes, 1048576LL, 1099511627776LL, "268435456"),
    ENUM("spool", "when_full", spool.when_full, when_full_names, "drop-oldest"),
    INT("spool", "max_age_hours", spool.max_age_hours, 1, 8760, "168"),

    ENUM("upload", "target", upload.target, target_names, "blob"),
    STR("upload", "endpoint", upload.endpoint, check_https_url,
        "an https:// URL with a host and no path, query or credentials", NULL, true),
    STR("upload", "secondary_endpoint", upload.secondary_endpoint, check_https_url,
        "an https:// URL with a host and no path, query or credentials", "", false),
    STR("upload", "container", upload.container, check_container,
        "3-63 of a-z 0-9 -, starting with a letter or digit, no double hyphen", "", false),
    STR("upload", "prefix", upload.prefix, check_prefix,
        "blob path segments of A-Z a-z 0-9 . _ - separated by /", "edgecap", false),
    I64("upload", "block_bytes", upload.block_bytes, 65536LL, 104857600LL, "4194304"),
    LIST("upload", "connect_to", upload.connect_to, upload.n_connect_to, check_connect_to,
         "HOST:PORT:ADDRESS:PORT (ADDRESS may be [IPv6])", "", false),
    STR("upload", "proxy", upload.proxy, check_proxy_url,
        "an https:// or http:// (CONNECT only) proxy URL with a port", "", false),
    INT("upload", "connect_timeout_ms", upload.connect_timeout_ms, 100, 120000, "10000"),
    INT("upload", "low_speed_bytes_per_second", upload.low_speed_bytes_per_second, 1, 1000000000,
        "1024"),
    INT("upload", "low_speed_seconds", upload.low_speed_seconds, 1, 600, "30"),
    INT("upload", "retry_base_ms", upload.retry_base_ms, 10, 60000, "1000"),
    INT("upload", "retry_max_ms", upload.retry_max_ms, 100, 86400000, "300000"),
    INT("upload", "breaker_failures", upload.breaker_failures, 1, 100, "5"),
    INT("upload", "breaker_cooldown_seconds", upload.breaker_cooldown_seconds, 1, 86400, "60"),
    STR("upload", "encryption_scope", upload.encryption_scope, check_scope,
        "3-63 letters and digits", "", false),
    BOOL("upload", "index_tags", upload.index_tags, "off"),

    STR("tls", "ca_file", tls.ca_file, check_abs_path, "an absolute path", NULL, true),
    STR("tls", "client_cert", tls.client_cert, check_abs_path, "an absolute path", NULL, true),
    STR("tls", "client_key", tls.client_key, check_path_or_empty, "an absolute path", "", false),
    STR("tls", "pin_current", tls.pin_current, check_pin,
        "sha256// followed by the base64 SHA-256 of the server's SubjectPublicKeyInfo", NULL, true),
    STR("tls", "pin_next", tls.pin_next, check_pin,
        "sha256// followed by the base64 SHA-256 of the server's SubjectPublicKeyInfo", "", false),
    LIST("tls", "allowed_hosts", tls.allowed_hosts, tls.n_allowed_hosts, check_host_pattern,
         "comma-separated host names, each optionally starting with *.", NULL, true),
    ENUM("tls", "min_version", tls.min_version, tls_names, "1.2"),
    STR("tls", "client_ca_file", tls.client_ca_file, check_path_or_empty, "an absolute path", "",
        false),

    ENUM("auth", "mode", auth.mode, auth_names, "entra"),
    SECRET("auth", "sas_token", auth.sas_token),
    STR("auth", "tenant_id", auth.tenant_id, check_guid,
        "a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", "", false),
    STR("auth", "client_id", auth.client_id, check_guid,
        "a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", "", false),
    STR("auth", "authority_host", auth.authority_host, check_https_url,
        "an https:// URL with a host and no path, query or credentials",
        "https://login.microsoftonline.com", false),
    ENUM("auth", "assertion_alg", auth.assertion_alg, assertion_alg_names, "PS256"),
    SECRET("auth", "key_primary", auth.key_primary),
    SECRET("auth", "key_secondary", auth.key_secondary),

    BOOL("speech", "batch", speech.batch, "off"),
    STR("speech", "endpoint", speech.endpoint, check_https_url,
        "an https:// URL with a host and no path, query or credentials", "", false),
    BOOL("speech", "allow_public_endpoint", speech.allow_public_endpoint, "off"),
    STR("speech", "locale", speech.locale, check_locale, "a locale such as en-US", "en-US", false),
    INT("speech", "batch_window_seconds", speech.batch_window_seconds, 60, 86400, "3600"),
    INT("speech", "batch_max_files", speech.batch_max_files, 1, 1000, "100"),
    INT("speech", "time_to_live_hours", speech.time_to_live_hours, 6, 744, "48"),
    BOOL("speech", "word_level_timestamps", speech.word_level_timestamps, "off"),
    BOOL("speech", "diarization", speech.diarization, "off"),
    INT("speech", "max_speakers", speech.max_speakers, 2, 35, "2"),
    ENUM("speech", "punctuation_mode", speech.punctuation_mode, punct_names,
         "DictatedAndAutomatic"),
    ENUM("speech", "profanity_filter_mode", speech.profanity_filter_mode, profanity_names,
         "Masked"),
    SECRET("speech", "content_sas", speech.content_sas),
    BOOL("speech", "keep_transcripts", speech.keep_transcripts, "off"),
    STR("speech", "transcript_dir", speech.transcript_dir, check_path_or_empty, "an absolute path",
        "", false),

    ENUM("logging", "level", logging.level, level_names, "info"),
    BOOL("logging", "syslog", logging.syslog, "off"),
    BOOL("logging", "json", logging.json, "off"),
    STR("logging", "audit_file", logging.audit_file, check_path_or_empty, "an absolute path",
        "/var/lib/edgecap/audit/audit.log", false),
    SECRET("logging", "audit_hmac_key", logging.audit_hmac_key),
    BOOL("logging", "audit_syslog", logging.audit_syslog, "off"),
    I64("logging", "audit_max_bytes", logging.audit_max_bytes, 0, 1LL << 40, "0"),
    INT("logging", "audit_keep", logging.audit_keep, 1, 99, "5"),
    STR("logging", "audit_syslog_socket", logging.audit_syslog_socket, check_abs_path,
        "an absolute path", "/dev/log", false),
    ENUM("logging", "audit_syslog_facility", logging.audit_syslog_facility, facility_names,
         "authpriv"),
    ENUM("logging", "audit_syslog_format", logging.audit_syslog_format, syslog_format_names,
         "rfc3164"),

    STR("metrics", "textfile", metrics.textfile, check_path_or_empty, "an absolute path", "",
        false),
    STR("metrics", "listen", metrics.listen, check_listen,
        "127.0.0.1:PORT, [::1]:PORT or unix:/absolute/path", "", false),
    INT("metrics", "interval_seconds", metrics.interval_seconds, 1, 3600, "15"),

    BOOL("consent", "required", consent.required, "off"),
    STR("consent", "state_file", consent.state_file, check_path_or_empty, "an absolute path", "",
        false),
    STR("consent", "switch", consent.switch_path, check_path_or_empty, "an absolute path", "",
        false),
    LIST("consent", "window", consent.windows, consent.n_windows, check_window,
         "DAYS HH:MM-HH:MM (DAYS: mon..sun, a range such as mon-fri, or daily; times 00:00 to "
         "24:00, start and end differ; an end before the start crosses midnight)",
         "", false),

    STR("pkcs11", "module", pkcs11.module, check_path_or_empty, "an absolute path", "", false),
    STR("pkcs11", "token_label", pkcs11.token_label, check_token_label,
        "1-32 printable ASCII characters, no leading or trailing space", "", false),
    SECRET("pkcs11", "pin", pkcs11.pin),
    STR("pkcs11", "kek_label", pkcs11.kek_label, check_object_label,
        "1-64 printable ASCII characters, no leading or trailing space", "edgecap-kek", false),
    STR("pkcs11", "key_label", pkcs11.key_label, check_object_label,
        "1-64 printable ASCII characters, no leading or trailing space", "", false),
};

#define N_KEYS (sizeof keys / sizeof keys[0])

static const char *const sections[] = {"device",  "capture", "encoder", "spool",
                                       "upload",  "tls",     "auth",    "speech",
                                       "logging", "metrics", "consent", "pkcs11"};
#define N_SECTIONS (sizeof sections / sizeof sections[0])

/* ---- string checks ------------------------------------------------------ */

static bool all_chars(const char *v, const char *extra)
{
    for (const char *p = v; *p != '\0'; p++) {
        if (!isalnum((unsigned char)*p) && strchr(extra, *p) == NULL)
            return false;
    }
    return true;
}

static bool check_device_id(const char *v)
{
    size_t n = strlen(v);
    return n >= 1 && n <= 64 && isalnum((unsigned char)v[0]) && all_chars(v, "._-");
}

static bool check_abs_path(const char *v)
{
    if (v[0] != '/')
        return false;
    for (const char *p = v; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    }
    return true;
}

static bool check_path_or_empty(const char *v)
{
    return v[0] == '\0' || check_abs_path(v);
}

/* Parses an absolute URL with curl's own parser; fills scheme and host. */
static bool parse_url(const char *v, char *scheme, size_t scheme_len, char *host, size_t host_len,
                      bool want_port)
{
    bool ok = false;
    CURLU *u = curl_url();
    char *sch = NULL, *hst = NULL, *user = NULL, *pass = NULL, *query = NULL, *frag = NULL,
         *path = NULL, *port = NULL;
    if (u == NULL || curl_url_set(u, CURLUPART_URL, v, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &sch, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &hst, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_PASSWORD, &pass, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0)
        goto out;
    if (want_port && curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        goto out;
    if (strlen(sch) >= scheme_len || strlen(hst) >= host_len || hst[0] == '\0')
        goto out;
    strcpy(scheme, sch);
    strcpy(host, hst);
    ok = true;
out:
    curl_free(sch);
    curl_free(hst);
    curl_free(user);
    curl_free(pass);
    curl_free(query);
    curl_free(frag);
    curl_free(path);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}

static bool url_host(const char *v, char *host, size_t host_len)
{
    char scheme[16];
    return parse_url(v, scheme, sizeof scheme, host, host_len, false);
}

static bool check_https_url(const char *v)
{
    char scheme[16], host[EC_CFG_HOST_MAX];
    if (v[0] == '\0')
        return true; /* unset; required-ness is checked separately */
    return parse_url(v, scheme, sizeof scheme, host, sizeof host, false) &&
           strcmp(scheme, "https") == 0;
}

static bool check_proxy_url(const char *v)
{
    char scheme[16], host[EC_CFG_HOST_MAX];
    if (v[0] == '\0')
        return true;
    return parse_url(v, scheme, sizeof scheme, host, sizeof host, true) &&
           (strcmp(scheme, "https") == 0 || strcmp(scheme, "http") == 0);
}

static bool check_hostname(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '.') {
            if (label == 0 || p[-1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-')
            return false;
        if (label == 0 && *p == '-')
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0;
}

static bool check_host_pattern(const char *v)
{
    if (strncmp(v, "*.", 2) == 0)
        v += 2;
    return check_hostname(v);
}

static bool check_pin(const char *v)
{
    if (v[0] == '\0')
        return true;
    if (strncmp(v, "sha256//", 8) != 0)
        return false;
    unsigned char digest[48];
    size_t n = 0;
    if (mbedtls_base64_decode(digest, sizeof digest, &n, (const unsigned char *)v + 8,
                              strlen(v + 8)) != 0 ||
        n != 32)
        return false;
    /* Only the canonical encoding: pins are compared as text (libcurl's
     * CURLOPT_PINNEDPUBLICKEY does, and so does pin_next != pin_current), and
     * the decoder ignores the last character's spare bits. */
    unsigned char again[48];
    size_t m = 0;
    return mbedtls_base64_encode(again, sizeof again, &m, digest, n) == 0 &&
           strcmp((const char *)again, v + 8) == 0;
}

static bool check_port(const char *p, size_t n)
{
    if (n == 0 || n > 5)
        return false;
    long port = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return false;
        port = port * 10 + (p[i] - '0');
    }
    return port >= 1 && port <= 65535;
}

/* HOST:PORT:ADDRESS:PORT, as libcurl's CURLOPT_CONNECT_TO takes it. */
static bool split_connect_to(const char *v, char *host, size_t host_len)
{
    const char *c1 = strchr(v, ':');
    if (c1 == NULL || (size_t)(c1 - v) >= host_len)
        return false;
    const char *c2 = strchr(c1 + 1, ':');
    if (c2 == NULL || !check_port(c1 + 1, (size_t)(c2 - c1 - 1)))
        return false;
    const char *addr = c2 + 1;
    const char *c3;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':' || close == addr + 1)
            return false;
        for (const char *p = addr + 1; p < close; p++) {
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return false;
        }
        c3 = close + 1;
    } else {
        c3 = strchr(addr, ':');
        if (c3 == NULL || c3 == addr)
            return false;
        for (const char *p = addr; p < c3; p++) {
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
                return false;
        }
    }
    if (!check_port(c3 + 1, strlen(c3 + 1)))
        return false;
    memcpy(host, v, (size_t)(c1 - v));
    host[c1 - v] = '\0';
    return check_hostname(host);
}

static bool check_connect_to(const char *v)
{
    char host[EC_CFG_HOST_MAX];
    return v[0] == '\0' || split_connect_to(v, host, sizeof host);
}

static bool check_container(const char *v)
{
    size_t n = strlen(v);
    if (n == 0)
        return true;
    if (n < 3 || n > 63 || !isalnum((unsigned char)v[0]) || v[n - 1] == '-' ||
        strstr(v, "--") != NULL)
        return false;
    for (const char *p = v; *p != '\0'; p++) {
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-')
            return false;
    }
    return true;
}

static bool check_prefix(const char *v)
{
    if (v[0] == '\0')
        return true;
    if (v[0] == '/' || v[strlen(v) - 1] == '/' || strstr(v, "//") != NULL)
        return false;
    if (!all_chars(v, "._-/"))
        return false;
    /* no "." or ".." segments */
    const char *seg = v;
    while (seg != NULL) {
        const char *end = strchr(seg, '/');
        size_t n = end != NULL ? (size_t)(end - seg) : strlen(seg);
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        seg = end != NULL ? end + 1 : NULL;
    }
    return true;
}

static bool check_locale(const char *v)
{
    size_t i = 0;
    while (islower((unsigned char)v[i]))
        i++;
    if (i < 2 || i > 3 || v[i] != '-')
        return false;
    size_t j = 0;
    while (isalnum((unsigned char)v[i + 1 + j]))
        j++;
    return j >= 2 && j <= 8 && v[i + 1 + j] == '\0';
}

static bool check_guid(const char *v)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    if (v[0] == '\0')
        return true;
    if (strlen(v) != sizeof shape - 1)
        return false;
    for (size_t i = 0; shape[i] != '\0'; i++) {
        if (shape[i] == '-' ? v[i] != '-' : !isxdigit((unsigned char)v[i]))
            return false;
    }
    return true;
}

static bool check_scope(const char *v)
{
    size_t n = strlen(v);
    return n == 0 || (n >= 3 && n <= 63 && all_chars(v, ""));
}

static bool check_tag(const char *v)
{
    const char *eq = strchr(v, '=');
    if (eq == NULL || eq == v || (size_t)(eq - v) > 64)
        return false;
    if (!isalpha((unsigned char)v[0]) && v[0] != '_')
        return false;
    for (const char *p = v; p < eq; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false;
    }
    return strlen(eq + 1) <= 256 && all_chars(eq + 1, " +-./:=_");
}

static bool check_alsa_name(const char *v)
{
    if (v[0] == '\0')
        return false;
    for (const char *p = v; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return false;
    }
    return true;
}

static bool check_listen(const char *v)
{
    if (v[0] == '\0')
        return true;
    if (strncmp(v, "unix:", 5) == 0)
        return check_abs_path(v + 5) && strlen(v + 5) < 108;
    const char *port;
    if (strncmp(v, "127.0.0.1:", 10) == 0)
        port = v + 10;
    else if (strncmp(v, "[::1]:", 6) == 0)
        port = v + 6;
    else
        return false;
    return check_port(port, strlen(port));
}

_Static_assert(EC_CFG_WINDOWS_MAX <= EC_CONSENT_WINDOWS_MAX, "every window fits the gate");

static bool check_window(const char *v)
{
    ec_consent_window w;
    return ec_consent_window_parse(v, &w);
}

/* PKCS#11 labels are blank-padded (token) or compared byte for byte (objects):
 * printable ASCII without leading or trailing blanks is unambiguous. */
static bool check_label(const char *v, size_t max, bool empty_ok)
{
    size_t n = strlen(v);
    if (n == 0)
        return empty_ok;
    if (n > max || v[0] == ' ' || v[n - 1] == ' ')
        return false;
    for (const char *p = v; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7e)
            return false;
    }
    return true;
}

static bool check_token_label(const char *v)
{
    return check_label(v, 32, true);
}

static bool check_object_label(const char *v)
{
    return check_label(v, 64, true);
}

/* ---- parse state and errors --------------------------------------------- */

typedef struct {
    ec_config *cfg;
    ec_config_error *err;
    const char *path;
    /* the reader's view of the file */
    const char *buf;
    size_t len;
    size_t pos;
    unsigned line;
    int current_section; /* index of the last section header read, or -1 */
    unsigned key_lines[N_KEYS];
    unsigned section_lines[N_SECTIONS];
    bool has_error;
    ec_status status; /* what the first error returns: EC_ERR_CONFIG unless set */
    bool has_inline_secret;
    bool credentials_unread; /* KEY_credential: check the name only */
} parse_state;

/* Records the first problem (returning true) and ignores later ones. */
static bool set_error(parse_state *st, unsigned line, const char *section, const char *key,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static bool set_error(parse_state *st, unsigned line, const char *section, const char *key,
                      const char *fmt, ...)
{
    if (st->has_error)
        return false; /* report the first problem */
    st->has_error = true;
    st->status = EC_ERR_CONFIG;
    ec_config_error *e = st->err;
    snprintf(e->file, sizeof e->file, "%s", st->path);
    e->line = line;
    if (section != NULL && key != NULL)
        snprintf(e->key, sizeof e->key, "[%s] %s", section, key);
    else if (section != NULL)
        snprintf(e->key, sizeof e->key, "[%s]", section);
    else
        e->key[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return true;
}

/* A value quoted back in an error, shortened and with controls made visible.
 * Never used for secrets. */
static const char *shown(const char *v, char *out, size_t out_len)
{
    size_t n = 0;
    for (const char *p = v; *p != '\0' && n + 4 < out_len; p++)
        out[n++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
    if (v[n] != '\0' && n >= 3) {
        out[n - 3] = '.';
        out[n - 2] = '.';
        out[n - 1] = '.';
    }
    out[n] = '\0';
    return out;
}

/* A URL quoted back in an error, without what may be a credential: the
 * user:password part and the query (a pasted SAS URL) become ***. */
static const char *shown_url(const char *v, char *out, size_t out_len)
{
    char tmp[EC_CFG_URL_MAX + 16];
    const char *sep = strstr(v, "://");
    const char *auth = sep != NULL ? sep + 3 : v;
    size_t auth_len = strcspn(auth, "/?#");
    const char *at = memrchr(auth, '@', auth_len);
    const char *host = at != NULL ? at + 1 : auth;
    const char *rest = auth + auth_len; /* path, then query or fragment */
    size_t path_len = strcspn(rest, "?#");
    snprintf(tmp, sizeof tmp, "%.*s%s%.*s%.*s%s", (int)(auth - v), v, at != NULL ? "***@" : "",
             (int)(auth + auth_len - host), host, (int)path_len, rest,
             rest[path_len] == '\0'  ? ""
             : rest[path_len] == '?' ? "?***"
                                     : "#***");
    return shown(tmp, out, out_len);
}

static int section_index(const char *name)
{
    for (size_t i = 0; i < N_SECTIONS; i++) {
        if (strcmp(sections[i], name) == 0)
            return (int)i;
    }
    return -1;
}

static int key_index(const char *section, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

/* A key whose name differs only in case, so that "Keystore" may be named. */
static int key_index_nocase(const char *section, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(keys[i].section, section) == 0 && strcasecmp(keys[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

/* ---- file reading with ownership and mode checks ------------------------ */

typedef struct {
    char *data; /* secure memory, NUL-terminated */
    size_t len;
    mode_t mode;
} loaded_file;

/*
 * Opens and reads `path` into secure memory after checking that it is a
 * regular file owned by the running user and not writable by group or others
 * (and, when `secret`, not readable by them either). `why` names the file's
 * role in messages.
 */
static ec_status read_checked(const char *path, bool secret, size_t max_bytes, loaded_file *out,
                              char *why, size_t why_len)
{
    ec_status st = EC_OK;
    out->data = NULL;
    out->len = 0;
    /* O_NONBLOCK: a FIFO (or a device) in place of the file must be refused
     * below, not waited on; regular files ignore the flag. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        snprintf(why, why_len, "cannot open %s: %s", path, strerror(err));
        return err == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(why, why_len, "%s is not a regular file", path);
        st = EC_ERR_IO;
        goto out;
    }
    if (sb.st_uid != geteuid()) {
        snprintf(why, why_len, "%s is owned by uid %u, not by the running user (uid %u)", path,
                 (unsigned)sb.st_uid, (unsigned)geteuid());
        st = EC_ERR_PERM;
        goto out;
    }
    if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        snprintf(why, why_len, "%s is writable by group or others (mode %04o); chmod go-w", path,
                 (unsigned)(sb.st_mode & 07777));
        st = EC_ERR_PERM;
        goto out;
    }
    if (secret && (sb.st_mode & (S_IRGRP | S_IROTH)) != 0) {
        snprintf(why, why_len,
                 "%s holds secrets but is readable by group or others (mode %04o); chmod 600", path,
                 (unsigned)(sb.st_mode & 07777));
        st = EC_ERR_PERM;
        goto out;
    }
    if (sb.st_size < 0 || (size_t)sb.st_size > max_bytes) {
        snprintf(why, why_len, "%s is larger than %zu bytes", path, max_bytes);
        st = EC_ERR_IO;
        goto out;
    }
    out->data = ec_secmem_alloc((size_t)sb.st_size + 1);
    if (out->data == NULL) {
        snprintf(why, why_len, "no secure memory to read %s", path);
        st = EC_ERR_NOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t n = read(fd, out->data + got, (size_t)sb.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, why_len, "cannot read %s: %s", path, n < 0 ? strerror(errno) : "short");
            st = EC_ERR_IO;
            goto out;
        }
        got += (size_t)n;
    }
    out->len = got;
    out->mode = sb.st_mode;
out:
    if (st != EC_OK) {
        ec_secmem_free(out->data);
        out->data = NULL;
    }
    close(fd);
    return st;
}

/* ---- value setters ------------------------------------------------------ */

static void *field(ec_config *cfg, const key_def *k)
{
    return (char *)cfg + k->offset;
}

static bool parse_ll(const char *v, long long *out)
{
    if (v[0] == '\0' || isspace((unsigned char)v[0]))
        return false;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0')
        return false;
    *out = x;
    return true;
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static void names_list(const char *const *names, char *out, size_t out_len)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; names[i] != NULL; i++) {
        int w = snprintf(out + n, out_len - n, "%s%s", i == 0 ? "" : "|", names[i]);
        if (w < 0 || (size_t)w >= out_len - n)
            break;
        n += (size_t)w;
    }
}

/* Replaces a secret field; takes `bytes` by copy. */
static ec_status store_secret(ec_config *cfg, const key_def *k, const char *bytes, size_t len)
{
    ec_secret **slot = field(cfg, k);
    ec_secret *s = NULL;
    ec_status rc = ec_secret_new(&s, bytes, len);
    if (rc != EC_OK)
        return rc;
    ec_secret_free(slot);
    *slot = s;
    return EC_OK;
}

/* Applies one value; on a bad value records an error and returns false. */
static bool apply(parse_state *st, const key_def *k, const char *value, unsigned line, bool append)
{
    char sv[72];
    ec_config *cfg = st->cfg;
    switch (k->type) {
    case K_STR: {
        if (strlen(value) >= k->size) {
            set_error(st, line, k->section, k->name, "value is longer than %zu characters",
                      k->size - 1);
            return false;
        }
        if (k->check != NULL && !k->check(value)) {
            bool url = k->check == check_https_url || k->check == check_proxy_url;
            set_error(st, line, k->section, k->name, "expected %s, got \"%s\"", k->expect,
                      url ? shown_url(value, sv, sizeof sv) : shown(value, sv, sizeof sv));
            return false;
        }
        strcpy(field(cfg, k), value);
        return true;
    }
    case K_INT:
    case K_I64: {
        long long x;
        if (!parse_ll(value, &x)) {
            set_error(st, line, k->section, k->name, "expected an integer, got \"%s\"",
                      shown(value, sv, sizeof sv));
            return false;
        }
        if (k->allowed != NULL) {
            bool found = false;
            for (const int *a = k->allowed; *a != 0; a++)
                found = found || *a == x;
            if (!found) {
                set_error(st, line, k->section, k->name, "expected %s, got %lld", k->expect, x);
                return false;
            }
        } else if (x < k->min || x > k->max) {
            set_error(st, line, k->section, k->name, "expected %lld..%lld, got %lld", k->min,
                      k->max, x);
            return false;
        }
        if (k->type == K_INT)
            *(int *)field(cfg, k) = (int)x;
        else
            *(int64_t *)field(cfg, k) = (int64_t)x;
        return true;
    }
    case K_BOOL:
        if (!parse_bool(value, field(cfg, k))) {
            set_error(st, line, k->section, k->name,
                      "expected on|off (or true|false, yes|no, 1|0), got \"%s\"",
                      shown(value, sv, sizeof sv));
            return false;
        }
        return true;
    case K_ENUM:
        for (int i = 0; k->names[i] != NULL; i++) {
            if (strcmp(value, k->names[i]) == 0) {
                *(int *)field(cfg, k) = i;
                return true;
            }
        }
        {
            char names[160];
            names_list(k->names, names, sizeof names);
            set_error(st, line, k->section, k->name, "expected %s, got \"%s\"", names,
                      shown(value, sv, sizeof sv));
        }
        return false;
    case K_SECRET:
        /* The value is never quoted back. */
        if (value[0] == '\0') {
            set_error(st, line, k->section, k->name, "a secret must not be empty");
            return false;
        }
        if (store_secret(cfg, k, value, strlen(value)) != EC_OK) {
            if (set_error(st, line, k->section, k->name, "no secure memory for the secret"))
                st->status = EC_ERR_NOMEM;
            return false;
        }
        st->has_inline_secret = true;
        return true;
    case K_SECRET_FILE: {
        if (!check_abs_path(value)) {
            set_error(st, line, k->section, k->name, "expected %s, got \"%s\"", k->expect,
                      shown(value, sv, sizeof sv));
            return false;
        }
        loaded_file f;
        char why[EC_CFG_PATH_MAX + 120];
        ec_status rc = read_checked(value, true, SECRET_FILE_MAX_BYTES, &f, why, sizeof why);
        if (rc != EC_OK) {
            /* An unsafe owner or mode is EC_ERR_PERM wherever the file is named;
             * a missing or unreadable one is a problem of this config. */
            if (set_error(st, line, k->section, k->name, "%s", why) &&
                (rc == EC_ERR_PERM || rc == EC_ERR_NOMEM))
                st->status = rc;
            return false;
        }
        size_t n = f.len;
        while (n > 0 && isspace((unsigned char)f.data[n - 1]))
            n--;
        bool ok = n > 0 && memchr(f.data, '\0', n) == NULL;
        if (!ok) {
            set_error(st, line, k->section, k->name, "%s is empty or not text", value);
        } else if (store_secret(cfg, k, f.data, n) != EC_OK) {
            if (set_error(st, line, k->section, k->name, "no secure memory for the secret"))
                st->status = EC_ERR_NOMEM;
            ok = false;
        }
        ec_secmem_free(f.data);
        return ok;
    }
    case K_SECRET_CREDENTIAL: {
        if (st->credentials_unread) {
            if (!ec_credential_name_valid(value)) {
                set_error(st, line, k->section, k->name, "expected a credential name (%s)",
                          EC_CREDENTIAL_NAME_RULE);
                return false;
            }
            return true;
        }
        ec_secret *secret = NULL;
        char why[EC_CFG_PATH_MAX + 200];
        ec_status rc = ec_credential_read(value, SECRET_FILE_MAX_BYTES, &secret, why, sizeof why);
        if (rc != EC_OK) {
            if (set_error(st, line, k->section, k->name, "%s", why) &&
                (rc == EC_ERR_PERM || rc == EC_ERR_NOMEM))
                st->status = rc;
            return false;
        }
        ec_secret **slot = field(cfg, k);
        ec_secret_free(slot);
        *slot = secret;
        return true;
    }
    case K_LIST: {
        size_t *count = (size_t *)((char *)cfg + k->count_offset);
        char *items = field(cfg, k);
        if (!append) {
            *count = 0;
            memset(items, 0, k->size * k->max_items);
        }
        const char *p = value;
        while (*p != '\0') {
            while (*p == ' ' || *p == '\t')
                p++;
            const char *end = strchr(p, ',');
            size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
            while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
                n--;
            if (*count >= k->max_items) {
                set_error(st, line, k->section, k->name, "more than %zu items", k->max_items);
                return false;
            }
            char *item = items + *count * k->size;
            if (n == 0 || n >= k->size) {
                set_error(st, line, k->section, k->name, "expected %s; item %zu is %s", k->expect,
                          *count + 1, n == 0 ? "empty" : "too long");
                return false;
            }
            memcpy(item, p, n);
            item[n] = '\0';
            if (!k->check(item)) {
                set_error(st, line, k->section, k->name, "expected %s, got \"%s\"", k->expect,
                          shown(item, sv, sizeof sv));
                return false;
            }
            (*count)++;
            if (end == NULL)
                break;
            p = end + 1;
        }
        return true;
    }
    }
    return false;
}

/* ---- libinih glue ------------------------------------------------------- */

/*
 * Whether a name from the file may be quoted back as a key name. libinih takes
 * everything before a line's first '=' as the name, so a base64 secret pasted
 * on a line of its own ("...Zm9v==") arrives as a "key"; real keys (and their
 * typos) are short lower-case identifiers, secrets are not.
 */
static bool plausible_key_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 40 || !islower((unsigned char)name[0]))
        return false;
    for (const char *p = name; *p != '\0'; p++) {
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '_')
            return false;
    }
    return true;
}

/* The section a line belongs to: the last header at or before it, or NULL. */
static const char *section_at(const parse_state *st, unsigned line)
{
    int best = -1;
    for (size_t i = 0; i < N_SECTIONS; i++) {
        if (st->section_lines[i] != 0 && st->section_lines[i] <= line &&
            (best < 0 || st->section_lines[i] > st->section_lines[best]))
            best = (int)i;
    }
    return best >= 0 ? sections[best] : NULL;
}

/*
 * Reports a line that libinih must not see (too long, a NUL byte) with the
 * section it is in and, when the line starts like "name =", the key; the rest
 * of the line (perhaps a secret) is never quoted.
 */
static void line_error(parse_state *st, const char *p, const char *end, const char *msg)
{
    char name[64];
    size_t n = 0;
    while (p + n < end && n < sizeof name - 1 && p[n] != '=' && p[n] != ':' && p[n] != ' ' &&
           p[n] != '\t' && p[n] != '\0')
        n++;
    const char *q = p + n;
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    memcpy(name, p, n);
    name[n] = '\0';
    bool has_key = q < end && (*q == '=' || *q == ':') && plausible_key_name(name);
    /* Without a section there is nothing to pair a key with. */
    if (st->current_section < 0)
        set_error(st, st->line, NULL, NULL, "%s", msg);
    else
        set_error(st, st->line, sections[st->current_section], has_key ? name : NULL, "%s", msg);
}

/*
 * fgets-like reader over the file held in secure memory. It counts lines (the
 * distro libinih does not pass line numbers to the handler), refuses lines
 * that libinih would silently truncate, and checks section headers so that an
 * empty unknown section is reported too.
 */
static char *reader(char *str, int num, void *stream)
{
    parse_state *st = stream;
    if (st->pos >= st->len || st->has_error)
        return NULL;
    const char *start = st->buf + st->pos;
    const char *nl = memchr(start, '\n', st->len - st->pos);
    size_t n = nl != NULL ? (size_t)(nl - start) + 1 : st->len - st->pos;
    st->line++;
    size_t content = n - (nl != NULL ? 1 : 0);
    if (content > 0 && start[content - 1] == '\r')
        content--;

    /* Where libinih's view of the line starts: it skips a UTF-8 BOM on the
     * first line and any leading white space (isspace, as lskip does). */
    const char *end = start + content;
    const char *p = start;
    if (st->line == 1 && content >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    while (p < end && isspace((unsigned char)*p))
        p++;

    if (memchr(start, '\0', n) != NULL) {
        line_error(st, p, end, "NUL byte in line: not a text file");
        return NULL;
    }
    if (n + 1 > (size_t)num) {
        char msg[120];
        snprintf(msg, sizeof msg,
                 "line longer than %d characters; put long secrets in the key's _file variant",
                 num - 2);
        line_error(st, p, end, msg);
        return NULL;
    }
    memcpy(str, start, n);
    str[n] = '\0';
    st->pos += n;

    /* A section header: "[name]" after optional blanks. */
    if (p < end && *p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (close != NULL) {
            char name[32];
            size_t nl2 = (size_t)(close - p - 1);
            if (nl2 >= sizeof name) {
                set_error(st, st->line, NULL, NULL,
                          "unknown section (expected one of the documented sections)");
                return NULL;
            }
            memcpy(name, p + 1, nl2);
            name[nl2] = '\0';
            int si = section_index(name);
            if (si < 0) {
                set_error(st, st->line, name, NULL,
                          "unknown section; expected device, capture, encoder, spool, upload, "
                          "tls, auth, speech, logging, metrics or consent");
                return NULL;
            }
            if (st->section_lines[si] != 0) {
                set_error(st, st->line, name, NULL, "section appears twice (first at line %u)",
                          st->section_lines[si]);
                return NULL;
            }
            st->section_lines[si] = st->line;
            st->current_section = si;
        }
    }
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_state *st = user;
    if (st->has_error)
        return 0;
    if (section[0] == '\0') {
        if (plausible_key_name(name))
            set_error(st, st->line, NULL, NULL,
                      "key outside any section (\"%s\" must come after its [section] header)",
                      name);
        else
            set_error(st, st->line, NULL, NULL, "key outside any section");
        return 0;
    }
    int ki = key_index(section, name);
    if (ki < 0) {
        if (plausible_key_name(name))
            set_error(st, st->line, section, name, "unknown key");
        else if (key_index_nocase(section, name) >= 0)
            set_error(st, st->line, section, name, "unknown key (key names are lower-case)");
        else
            set_error(st, st->line, section, NULL,
                      "unknown key (its name is not shown: it does not look like one; a secret "
                      "pasted on a line of its own?)");
        return 0;
    }
    bool append = st->key_lines[ki] != 0 && keys[ki].type == K_LIST;
    if (st->key_lines[ki] != 0 && !append) {
        set_error(st, st->line, section, name,
                  "key given twice (first at line %u); continuation lines are not supported",
                  st->key_lines[ki]);
        return 0;
    }
    if (!append)
        st->key_lines[ki] = st->line;
    return apply(st, &keys[ki], value, st->line, append) ? 1 : 0;
}

/* Overwrites stack that libinih used for lines (which may have held secrets). */
__attribute__((noinline)) static void burn_stack(void)
{
    volatile unsigned char scratch[8192];
    mbedtls_platform_zeroize((void *)scratch, sizeof scratch);
}

/* ---- cross-key rules ---------------------------------------------------- */

static unsigned line_of(const parse_state *st, const char *section, const char *name)
{
    int ki = key_index(section, name);
    if (ki >= 0 && st->key_lines[ki] != 0)
        return st->key_lines[ki];
    int si = section_index(section);
    if (si >= 0 && st->section_lines[si] != 0)
        return st->section_lines[si];
    return st->line; /* end of file */
}

static bool is_set(const parse_state *st, const char *section, const char *name)
{
    int ki = key_index(section, name);
    return ki >= 0 && st->key_lines[ki] != 0;
}

/* Whether a key that is in the file left its value empty ("key ="). */
static bool is_empty(const parse_state *st, const char *section, const char *name)
{
    int ki = key_index(section, name);
    if (ki < 0)
        return false;
    const key_def *k = &keys[ki];
    const char *f = (const char *)st->cfg + k->offset;
    if (k->type == K_STR)
        return f[0] == '\0';
    if (k->type == K_LIST)
        return *(const size_t *)((const char *)st->cfg + k->count_offset) == 0;
    return false;
}

/* A required key must be in the file and, for strings and lists, not empty:
 * the string checks accept "" for optional keys, so "pin_current =" would
 * otherwise count as given. */
static void require(parse_state *st, const char *section, const char *name, const char *why)
{
    if (!is_set(st, section, name))
        set_error(st, line_of(st, section, name), section, name, "required key missing%s%s",
                  why != NULL ? " " : "", why != NULL ? why : "");
    else if (is_empty(st, section, name))
        set_error(st, line_of(st, section, name), section, name,
                  "required key has an empty value%s%s", why != NULL ? " " : "",
                  why != NULL ? why : "");
}

static void require_secret(parse_state *st, const char *section, const char *name, const char *why)
{
    char file_key[64], cred_key[64];
    snprintf(file_key, sizeof file_key, "%s_file", name);
    snprintf(cred_key, sizeof cred_key, "%s_credential", name);
    bool inline_set = is_set(st, section, name), file_set = is_set(st, section, file_key);
    bool cred_set = is_set(st, section, cred_key);
    if (inline_set && file_set)
        set_error(st, line_of(st, section, file_key), section, file_key,
                  "set either %s or %s, not both", name, file_key);
    else if (cred_set && (inline_set || file_set))
        set_error(st, line_of(st, section, cred_key), section, cred_key,
                  "set one of %s, %s or %s, not several", name, file_key, cred_key);
    else if (why != NULL && !inline_set && !file_set && !cred_set)
        set_error(st, line_of(st, section, name), section, name,
                  "required key missing %s (or give %s or %s)", why, file_key, cred_key);
}

/* A subscription key goes into an HTTP header line (Ocp-Apim-Subscription-Key):
 * a blank, a line break or a control character in it would end that header
 * early or start another, so only visible ASCII passes. Azure's keys are 32
 * hex digits or, newer, 84 letters and digits. Blames the line that gave
 * the key (inline, _file or _credential); the value is never quoted. */
#define SUBSCRIPTION_KEY_MAX 256
static void check_subscription_key(parse_state *st, const char *name, const ec_secret *key)
{
    if (key == NULL)
        return;
    const uint8_t *b = ec_secret_bytes(key);
    size_t n = ec_secret_len(key);
    bool ok = n >= 1 && n <= SUBSCRIPTION_KEY_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = b[i] > 0x20 && b[i] < 0x7f;
    if (ok)
        return;
    char file_key[64], cred_key[64];
    snprintf(file_key, sizeof file_key, "%s_file", name);
    snprintf(cred_key, sizeof cred_key, "%s_credential", name);
    const char *given = is_set(st, "auth", file_key)   ? file_key
                        : is_set(st, "auth", cred_key) ? cred_key
                                                       : name;
    set_error(st, line_of(st, "auth", given), "auth", given,
              "not a subscription key: expected 1 to %d visible ASCII characters, no blanks or "
              "line breaks (the value is not shown)",
              SUBSCRIPTION_KEY_MAX);
}

static void require_allowed_host(parse_state *st, const char *section, const char *name,
                                 const char *host)
{
    if (!ec_config_host_allowed(st->cfg, host))
        set_error(st, line_of(st, section, name), section, name,
                  "host \"%s\" is not on [tls] allowed_hosts", host);
}

static void check_url_host(parse_state *st, const char *section, const char *name, const char *url)
{
    char host[EC_CFG_HOST_MAX];
    if (url[0] == '\0')
        return;
    if (!url_host(url, host, sizeof host)) {
        set_error(st, line_of(st, section, name), section, name, "cannot parse URL");
        return;
    }
    require_allowed_host(st, section, name, host);
}

/* Speech is reached through the resource's custom domain over its private
 * endpoint (NAME.cognitiveservices.azure.com, or the sovereign clouds'
 * equivalents), never through a regional public host, unless the file says
 * so with [speech] allow_public_endpoint = on. */
static void check_speech_host(parse_state *st, const char *section, const char *name,
                              const char *url)
{
    static const char *const custom[] = {".cognitiveservices.azure.com",
                                         ".cognitiveservices.azure.us",
                                         ".cognitiveservices.azure.cn"};
    char host[EC_CFG_HOST_MAX];
    if (url[0] == '\0' || !url_host(url, host, sizeof host))
        return;
    size_t n = strlen(host);
    for (size_t i = 0; i < sizeof custom / sizeof custom[0]; i++) {
        size_t k = strlen(custom[i]);
        /* exactly one label (the resource's name) before the suffix */
        if (n > k && strcasecmp(host + n - k, custom[i]) == 0 && memchr(host, '.', n - k) == NULL)
            return;
    }
    if (st->cfg->speech.allow_public_endpoint)
        return;
    set_error(st, line_of(st, section, name), section, name,
              "%s is not a Speech custom domain: use https://NAME.cognitiveservices.azure.com "
              "(reached through the private endpoint), or set [speech] allow_public_endpoint = on",
              host);
}

/* Tags become blob metadata (and index tags) beside the names edgecap sets
 * itself; Azure compares metadata names without regard to case. */
static void check_tag_names(parse_state *st)
{
    static const char *const reserved[] = {"device", "seq",        "start",   "durationms",
                                           "codec",  "samplerate", "channels"};
    const ec_config *c = st->cfg;
    for (size_t i = 0; i < c->device.n_tags; i++) {
        const char *tag = c->device.tags[i];
        size_t n = strcspn(tag, "=");
        for (size_t r = 0; r < sizeof reserved / sizeof reserved[0]; r++) {
            if (strlen(reserved[r]) == n && strncasecmp(tag, reserved[r], n) == 0)
                set_error(st, line_of(st, "device", "tags"), "device", "tags",
                          "tag name \"%.*s\" is reserved for the metadata edgecap sets", (int)n,
                          tag);
        }
        for (size_t j = 0; j < i; j++) {
            const char *other = c->device.tags[j];
            if (strcspn(other, "=") == n && strncasecmp(tag, other, n) == 0)
                set_error(st, line_of(st, "device", "tags"), "device", "tags",
                          "tag name \"%.*s\" given twice", (int)n, tag);
        }
    }
}

/* A rotated file must hold more than its rotated record and one line. */
static void check_audit_rotation(parse_state *st)
{
    int64_t max = st->cfg->logging.audit_max_bytes;
    if (max != 0 && max < 16384)
        set_error(st, line_of(st, "logging", "audit_max_bytes"), "logging", "audit_max_bytes",
                  "must be 0 (never rotate) or at least 16384");
}

/* [pkcs11] goes with keystore = pkcs11; the device key is either on the token
 * ([pkcs11] key_label) or in [tls] client_key, never both. */
static void check_pkcs11(parse_state *st)
{
    const ec_config *c = st->cfg;
    static const char *const names[] = {"module",         "token_label", "pin",      "pin_file",
                                        "pin_credential", "kek_label",   "key_label"};
    if (c->device.keystore == EC_KEYSTORE_PKCS11) {
        require(st, "pkcs11", "module", "with [device] keystore = pkcs11");
        require(st, "pkcs11", "token_label", "with [device] keystore = pkcs11");
        require_secret(st, "pkcs11", "pin", "with [device] keystore = pkcs11");
        if (is_set(st, "pkcs11", "kek_label") && is_empty(st, "pkcs11", "kek_label"))
            require(st, "pkcs11", "kek_label", NULL);
    } else {
        require_secret(st, "pkcs11", "pin", NULL);
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if (is_set(st, "pkcs11", names[i]))
                set_error(st, line_of(st, "pkcs11", names[i]), "pkcs11", names[i],
                          "only meaningful with [device] keystore = pkcs11");
        }
    }
    if (c->device.keystore == EC_KEYSTORE_PKCS11 && c->pkcs11.key_label[0] != '\0') {
        if (is_set(st, "tls", "client_key") && !is_empty(st, "tls", "client_key"))
            set_error(st, line_of(st, "tls", "client_key"), "tls", "client_key",
                      "the device key is on the token ([pkcs11] key_label = %s); remove "
                      "client_key",
                      c->pkcs11.key_label);
    } else {
        require(st, "tls", "client_key",
                c->device.keystore == EC_KEYSTORE_PKCS11
                    ? "(or put the device key on the token: [pkcs11] key_label)"
                    : NULL);
    }
}

static void validate(parse_state *st)
{
    ec_config *c = st->cfg;

    check_tag_names(st);
    check_audit_rotation(st);

    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].required)
            require(st, keys[i].section, keys[i].name, NULL);
    }
    require_secret(st, "auth", "sas_token",
                   c->auth.mode == EC_AUTH_SAS ? "with [auth] mode = sas" : NULL);
    require_secret(st, "auth", "key_primary",
                   c->auth.mode == EC_AUTH_KEY ? "with [auth] mode = key" : NULL);
    require_secret(st, "auth", "key_secondary", NULL);
    check_subscription_key(st, "key_primary", c->auth.key_primary);
    check_subscription_key(st, "key_secondary", c->auth.key_secondary);
    require_secret(st, "speech", "content_sas", NULL);
    require_secret(st, "logging", "audit_hmac_key", NULL);

    if (c->capture.source == EC_SOURCE_FILE)
        require(st, "capture", "file", "with [capture] source = file");
    /* Blame the key the file gave: with buffer_frames left at its default, the
     * period is what is too large. */
    if (c->capture.buffer_frames < 2 * c->capture.period_frames) {
        if (is_set(st, "capture", "buffer_frames"))
            set_error(st, line_of(st, "capture", "buffer_frames"), "capture", "buffer_frames",
                      "must be at least twice period_frames (%d)", c->capture.period_frames);
        else
            set_error(st, line_of(st, "capture", "period_frames"), "capture", "period_frames",
                      "must be at most half of buffer_frames (%d)", c->capture.buffer_frames);
    }
    if (c->upload.retry_max_ms < c->upload.retry_base_ms)
        set_error(st, line_of(st, "upload", "retry_max_ms"), "upload", "retry_max_ms",
                  "must not be below retry_base_ms (%d)", c->upload.retry_base_ms);

    if (c->upload.target == EC_TARGET_BLOB) {
        require(st, "upload", "container", "with [upload] target = blob");
        if (c->auth.mode == EC_AUTH_KEY)
            set_error(st, line_of(st, "auth", "mode"), "auth", "mode",
                      "target blob takes sas or entra; subscription keys are for target speech");
        if (c->speech.batch)
            require(st, "speech", "endpoint", "with [speech] batch = on");
    } else {
        if (c->auth.mode == EC_AUTH_SAS)
            set_error(st, line_of(st, "auth", "mode"), "auth", "mode",
                      "target speech takes entra or key; SAS tokens are for target blob");
        if (c->speech.batch)
            set_error(st, line_of(st, "speech", "batch"), "speech", "batch",
                      "batch transcription reads from Blob Storage: needs [upload] target = "
                      "blob");
        if (is_set(st, "upload", "container"))
            set_error(st, line_of(st, "upload", "container"), "upload", "container",
                      "only meaningful with [upload] target = blob");
    }
    if (c->auth.mode == EC_AUTH_ENTRA) {
        require(st, "auth", "tenant_id", "with [auth] mode = entra");
        require(st, "auth", "client_id", "with [auth] mode = entra");
        check_url_host(st, "auth", "authority_host", c->auth.authority_host);
    } else if (c->auth.mode == EC_AUTH_SAS && c->speech.batch) {
        /* a SAS cannot authorise Speech: batch jobs use Entra ID */
        require(st, "auth", "tenant_id", "with [speech] batch = on (Speech takes Entra ID)");
        require(st, "auth", "client_id", "with [speech] batch = on (Speech takes Entra ID)");
        check_url_host(st, "auth", "authority_host", c->auth.authority_host);
    }
    if (c->speech.keep_transcripts)
        require(st, "speech", "transcript_dir", "with [speech] keep_transcripts = on");
    if (is_set(st, "consent", "switch") && is_set(st, "consent", "state_file"))
        set_error(st, line_of(st, "consent", "state_file"), "consent", "state_file",
                  "state_file is the older name of switch: set one of them");
    else if (c->consent.required && !is_set(st, "consent", "state_file"))
        require(st, "consent", "switch", "with [consent] required = on");
    else if (c->consent.required)
        require(st, "consent", "state_file", "with [consent] required = on");
    check_pkcs11(st);
    if (c->tls.pin_next[0] != '\0' && strcmp(c->tls.pin_next, c->tls.pin_current) == 0)
        set_error(st, line_of(st, "tls", "pin_next"), "tls", "pin_next",
                  "must differ from pin_current (it is the key the server rotates to)");

    /* Where bytes may go: every endpoint's host must be allow-listed. */
    check_url_host(st, "upload", "endpoint", c->upload.endpoint);
    check_url_host(st, "upload", "secondary_endpoint", c->upload.secondary_endpoint);
    check_url_host(st, "speech", "endpoint", c->speech.endpoint);
    check_url_host(st, "upload", "proxy", c->upload.proxy);
    check_speech_host(st, "speech", "endpoint", c->speech.endpoint);
    if (c->upload.target == EC_TARGET_SPEECH) {
        check_speech_host(st, "upload", "endpoint", c->upload.endpoint);
        check_speech_host(st, "upload", "secondary_endpoint", c->upload.secondary_endpoint);
    }
    for (size_t i = 0; i < c->upload.n_connect_to; i++) {
        char host[EC_CFG_HOST_MAX];
        if (split_connect_to(c->upload.connect_to[i], host, sizeof host))
            require_allowed_host(st, "upload", "connect_to", host);
    }
}

/* ---- public API --------------------------------------------------------- */

static void apply_defaults(ec_config *cfg)
{
    parse_state st = {.cfg = cfg, .path = "(defaults)"};
    ec_config_error ignored;
    st.err = &ignored;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].def != NULL)
            (void)apply(&st, &keys[i], keys[i].def, 0, false);
    }
}

void ec_config_init(ec_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    apply_defaults(cfg);
}

void ec_config_free_secrets(ec_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].type == K_SECRET)
            ec_secret_free(field(cfg, &keys[i]));
    }
}

void ec_config_free(ec_config *cfg)
{
    if (cfg == NULL)
        return;
    ec_config_free_secrets(cfg);
    mbedtls_platform_zeroize(cfg, sizeof *cfg);
}

static ec_status load(ec_config *cfg, const char *path, ec_config_error *err,
                      bool credentials_unread)
{
    memset(err, 0, sizeof *err);
    ec_config_init(cfg);
    parse_state st = {.cfg = cfg,
                      .err = err,
                      .path = path,
                      .current_section = -1,
                      .credentials_unread = credentials_unread};
    char why[EC_CFG_PATH_MAX + 120];
    loaded_file f = {0};

    /* Secrets or not, the file must be ours and not writable by others. */
    ec_status rc = read_checked(path, false, CONFIG_FILE_MAX_BYTES, &f, why, sizeof why);
    if (rc != EC_OK) {
        set_error(&st, 0, NULL, NULL, "%s", why);
        goto out;
    }
    snprintf(cfg->source_path, sizeof cfg->source_path, "%s", path);
    mbedtls_sha256_ret((const unsigned char *)f.data, f.len, cfg->sha256, 0);

    st.buf = f.data;
    st.len = f.len;
    int ini_rc = ini_parse_stream(reader, &st, handler, &st);
    burn_stack();
    /* libinih reads on after a line it cannot parse (it returns the first
     * such line), so an error found later must not hide it. */
    if (ini_rc > 0 && (!st.has_error || (unsigned)ini_rc < err->line)) {
        st.has_error = false;
        set_error(&st, (unsigned)ini_rc, section_at(&st, (unsigned)ini_rc), NULL,
                  "syntax error: expected [section], key = value, or a ; or # comment");
    } else if (ini_rc < 0 && !st.has_error) {
        set_error(&st, 0, NULL, NULL, "libinih could not parse the file");
    }
    if (!st.has_error)
        validate(&st);
    if (!st.has_error && st.has_inline_secret && (f.mode & (S_IRGRP | S_IROTH)) != 0 &&
        set_error(&st, 0, NULL, NULL,
                  "%s holds secrets but is readable by group or others (mode %04o); chmod 600 "
                  "or move them to *_file keys",
                  path, (unsigned)(f.mode & 07777)))
        st.status = EC_ERR_PERM;
    rc = st.has_error ? st.status : EC_OK;
out:
    ec_secmem_free(f.data);
    if (rc != EC_OK)
        ec_config_free(cfg);
    return rc;
}

ec_status ec_config_load(ec_config *cfg, const char *path, ec_config_error *err)
{
    return load(cfg, path, err, false);
}

ec_status ec_config_load_credentials_unread(ec_config *cfg, const char *path, ec_config_error *err)
{
    return load(cfg, path, err, true);
}

void ec_config_error_format(const ec_config_error *err, char *out, size_t out_len)
{
    char where[EC_CFG_PATH_MAX + 16];
    if (err->line > 0)
        snprintf(where, sizeof where, "%s:%u", err->file, err->line);
    else
        snprintf(where, sizeof where, "%s", err->file);
    if (err->key[0] != '\0')
        snprintf(out, out_len, "%s: %s: %s", where, err->key, err->message);
    else
        snprintf(out, out_len, "%s: %s", where, err->message);
}

void ec_config_print(const ec_config *cfg, FILE *out)
{
    const char *last = "";
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        const void *f = (const char *)cfg + k->offset;
        if (strcmp(last, k->section) != 0) {
            fprintf(out, "%s[%s]\n", i == 0 ? "" : "\n", k->section);
            last = k->section;
        }
        switch (k->type) {
        case K_STR:
            fprintf(out, "%s = %s\n", k->name, (const char *)f);
            break;
        case K_INT:
            fprintf(out, "%s = %d\n", k->name, *(const int *)f);
            break;
        case K_I64:
            fprintf(out, "%s = %lld\n", k->name, (long long)*(const int64_t *)f);
            break;
        case K_BOOL:
            fprintf(out, "%s = %s\n", k->name, *(const bool *)f ? "on" : "off");
            break;
        case K_ENUM:
            fprintf(out, "%s = %s\n", k->name, k->names[*(const int *)f]);
            break;
        case K_SECRET:
            fprintf(out, "%s = %s\n", k->name,
                    *(ec_secret *const *)f != NULL ? EC_SECRET_REDACTED : "(unset)");
            break;
        case K_SECRET_FILE:
        case K_SECRET_CREDENTIAL:
            break; /* shown through its secret */
        case K_LIST: {
            size_t count = *(const size_t *)((const char *)cfg + k->count_offset);
            fprintf(out, "%s = ", k->name);
            for (size_t j = 0; j < count; j++)
                fprintf(out, "%s%s", j == 0 ? "" : ", ", (const char *)f + j * k->size);
            fputc('\n', out);
            break;
        }
        }
    }
}

bool ec_config_host_allowed(const ec_config *cfg, const char *host)
{
    size_t hl = strlen(host);
    for (size_t i = 0; i < cfg->tls.n_allowed_hosts; i++) {
        const char *pat = cfg->tls.allowed_hosts[i];
        if (strncmp(pat, "*.", 2) == 0) {
            /* exactly one label in place of the star */
            const char *dot = strchr(host, '.');
            if (dot != NULL && dot != host && strcasecmp(dot + 1, pat + 2) == 0)
                return true;
        } else if (strlen(pat) == hl && strcasecmp(pat, host) == 0) {
            return true;
        }
    }
    return false;
}
