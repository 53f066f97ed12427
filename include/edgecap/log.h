/*
 * Logging: one line per event, as key=value text or as JSON, to stderr or
 * syslog, with a level threshold. Fields are typed (EC_LOG_STR, _INT, _UINT,
 * _BOOL, _SECRET): a secret can only be passed as EC_LOG_SECRET, which always
 * prints "***", and passing an ec_secret where a string is expected is a
 * compile error. No field formats audio; callers log sizes and names, never
 * contents.
 *
 *   ec_log(EC_LOG_INFO, "ready", EC_LOG_STR("config", path),
 *          EC_LOG_INT("pid", getpid()));
 *
 * Thread-safe: each line is written with one call.
 */
#ifndef EDGECAP_LOG_H
#define EDGECAP_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "edgecap/secret.h"
#include "edgecap/status.h"

typedef enum {
    EC_LOG_DEBUG = 0,
    EC_LOG_INFO = 1,
    EC_LOG_WARN = 2,
    EC_LOG_ERROR = 3,
} ec_log_level;

typedef enum {
    EC_LOG_TO_STDERR = 0,
    EC_LOG_TO_SYSLOG = 1,
} ec_log_output;

typedef enum {
    EC_LOG_F_NONE = 0, /* placeholder, never printed */
    EC_LOG_F_STR,
    EC_LOG_F_INT,
    EC_LOG_F_UINT,
    EC_LOG_F_BOOL,
    EC_LOG_F_SECRET,
} ec_log_field_type;

typedef struct {
    const char *key;
    ec_log_field_type type;
    union {
        const char *str;
        long long i;
        unsigned long long u;
        bool b;
        const ec_secret *secret;
    } v;
} ec_log_field;

/* _Generic without a default: anything but a C string (an ec_secret *, the
 * bytes from ec_secret_bytes(), a void * buffer, a number) is a compile error
 * with or without -Werror, not merely an incompatible-pointer warning. An
 * unset string is (const char *)NULL, printed as "" (text) or null (JSON). */
#if defined(__GNUC__) && __GNUC__ >= 4 && !defined(__CPPCHECK__)
#define EC_LOG_CSTR_(val) _Generic((val), char * : (val), const char * : (val))
#else
/* cppcheck (make lint, which defines __GNUC__ as 1) cannot parse _Generic;
 * gcc and clang enforce the rule (tests/system/secret_not_formattable.sh). */
#define EC_LOG_CSTR_(val) (val)
#endif
#define EC_LOG_STR(k, val)                                                                         \
    ((ec_log_field){.key = (k), .type = EC_LOG_F_STR, .v.str = EC_LOG_CSTR_(val)})
#define EC_LOG_INT(k, val) ((ec_log_field){.key = (k), .type = EC_LOG_F_INT, .v.i = (val)})
#define EC_LOG_UINT(k, val) ((ec_log_field){.key = (k), .type = EC_LOG_F_UINT, .v.u = (val)})
#define EC_LOG_BOOL(k, val) ((ec_log_field){.key = (k), .type = EC_LOG_F_BOOL, .v.b = (val)})
#define EC_LOG_SECRET(k, val)                                                                      \
    ((ec_log_field){.key = (k), .type = EC_LOG_F_SECRET, .v.secret = (val)})
#define EC_LOG_STATUS(st) EC_LOG_STR("error", ec_strerror(st))

/* Emits one event with its fields; below the threshold it does nothing. */
#define ec_log(level, event, ...)                                                                  \
    do {                                                                                           \
        const ec_log_field ec_log_fields_[] = {{.type = EC_LOG_F_NONE}, __VA_ARGS__};              \
        ec_log_emit((level), EC_LOG_CSTR_(event), ec_log_fields_,                                  \
                    sizeof ec_log_fields_ / sizeof ec_log_fields_[0]);                             \
    } while (0)

void ec_log_emit(ec_log_level level, const char *event, const ec_log_field *fields,
                 size_t n_fields);

typedef struct {
    ec_log_level level;
    ec_log_output output;
    bool json;
    const char *ident; /* syslog ident; "edgecap" when NULL */
} ec_log_options;

/* Applies options; safe to call again (reload). Default: info, stderr, text. */
void ec_log_configure(const ec_log_options *options);

/* Test seam: write lines to `stream` instead of stderr (NULL = stderr). */
void ec_log_set_stream(FILE *stream);

/* Lower-case hex of `n` bytes into `out` (2n + 1 bytes), for digests in log
 * and audit lines. */
void ec_hex_encode(const uint8_t *bytes, size_t n, char *out);

/* Parses "debug|info|warn|error"; false when unknown. */
bool ec_log_level_parse(const char *name, ec_log_level *level);

const char *ec_log_level_name(ec_log_level level);

#endif
