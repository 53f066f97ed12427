/*
 * The provisioning file: one INI file (parsed by libinih) that configures a
 * device. ec_config_load() validates it strictly — unknown section or key, bad
 * type, out-of-range value, missing required key, a non-https endpoint, an
 * endpoint host not on [tls] allowed_hosts, an unsafe file owner or mode —
 * and reports the first problem as "FILE:LINE: [section] key: what was
 * expected". Secrets (inline or from a *_file) are held in secure memory as
 * ec_secret and never printed. Every key is documented, with default and
 * range, in config/edgecap.conf.example.
 *
 * Owned by main (load at start, reload on SIGHUP); stages receive const
 * pointers to their own section.
 */
#ifndef EDGECAP_CONFIG_H
#define EDGECAP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "edgecap/secret.h"
#include "edgecap/status.h"

#define EC_CFG_PATH_MAX 256
#define EC_CFG_URL_MAX 512
#define EC_CFG_NAME_MAX 128
#define EC_CFG_HOSTS_MAX 16
#define EC_CFG_HOST_MAX 254
#define EC_CFG_TAGS_MAX 10
#define EC_CFG_TAG_MAX 256
#define EC_CFG_CONNECT_TO_MAX 4
#define EC_CFG_WINDOWS_MAX 16 /* EC_CONSENT_WINDOWS_MAX */
#define EC_CFG_WINDOW_MAX 32

typedef enum { EC_SOURCE_ALSA = 0, EC_SOURCE_FILE = 1 } ec_capture_source;
typedef enum { EC_VBR_ON = 0, EC_VBR_CONSTRAINED = 1, EC_VBR_OFF = 2 } ec_encoder_vbr;
typedef enum { EC_APP_VOIP = 0, EC_APP_AUDIO = 1 } ec_encoder_application;
typedef enum { EC_WHEN_FULL_DROP_OLDEST = 0, EC_WHEN_FULL_REFUSE_NEW = 1 } ec_spool_when_full;
typedef enum { EC_TARGET_BLOB = 0, EC_TARGET_SPEECH = 1 } ec_upload_target;
typedef enum { EC_TLS_1_2 = 0, EC_TLS_1_3 = 1 } ec_tls_min_version;
typedef enum { EC_AUTH_SAS = 0, EC_AUTH_ENTRA = 1, EC_AUTH_KEY = 2 } ec_auth_mode;
typedef enum { EC_KEYSTORE_FILE = 0, EC_KEYSTORE_PKCS11 = 1 } ec_keystore_kind;
typedef enum { EC_ASSERTION_PS256 = 0, EC_ASSERTION_ES256 = 1 } ec_assertion_alg;
typedef enum {
    EC_PUNCT_NONE = 0,
    EC_PUNCT_DICTATED = 1,
    EC_PUNCT_AUTOMATIC = 2,
    EC_PUNCT_DICTATED_AND_AUTOMATIC = 3
} ec_punctuation_mode;
typedef enum {
    EC_PROFANITY_NONE = 0,
    EC_PROFANITY_REMOVED = 1,
    EC_PROFANITY_TAGS = 2,
    EC_PROFANITY_MASKED = 3
} ec_profanity_mode;

typedef struct {
    struct {
        char id[65];
        bool require_mlock;
        int keystore; /* ec_keystore_kind */
        char keystore_dir[EC_CFG_PATH_MAX];
        char tags[EC_CFG_TAGS_MAX][EC_CFG_TAG_MAX]; /* "key=value" */
        size_t n_tags;
    } device;
    struct {
        int source; /* ec_capture_source */
        char device[EC_CFG_NAME_MAX];
        char file[EC_CFG_PATH_MAX];
        int rate_hz;
        int channels;
        int period_frames;
        int buffer_frames;
        int segment_seconds;
        bool vad;
        int vad_threshold_dbfs;
        int vad_hangover_ms;
        int queue_ms;
        bool file_realtime; /* pace the file source like a card */
    } capture;
    struct {
        int bitrate_bps;
        int complexity;
        int vbr;         /* ec_encoder_vbr */
        int application; /* ec_encoder_application */
        int frame_ms;
        int max_page_ms;
    } encoder;
    struct {
        char dir[EC_CFG_PATH_MAX];
        int64_t quota_bytes;
        int when_full; /* ec_spool_when_full */
        int max_age_hours;
    } spool;
    struct {
        int target; /* ec_upload_target */
        char endpoint[EC_CFG_URL_MAX];
        char secondary_endpoint[EC_CFG_URL_MAX];
        char container[64];
        char prefix[EC_CFG_NAME_MAX];
        int64_t block_bytes;
        char connect_to[EC_CFG_CONNECT_TO_MAX][EC_CFG_URL_MAX];
        size_t n_connect_to;
        char proxy[EC_CFG_URL_MAX];
        int connect_timeout_ms;
        int low_speed_bytes_per_second;
        int low_speed_seconds;
        int retry_base_ms;
        int retry_max_ms;
        int breaker_failures;
        int breaker_cooldown_seconds;
        char encryption_scope[64];
        bool index_tags;
    } upload;
    struct {
        char ca_file[EC_CFG_PATH_MAX];
        char client_cert[EC_CFG_PATH_MAX];
        char client_key[EC_CFG_PATH_MAX];
        char pin_current[64];
        char pin_next[64];
        char allowed_hosts[EC_CFG_HOSTS_MAX][EC_CFG_HOST_MAX];
        size_t n_allowed_hosts;
        int min_version;                      /* ec_tls_min_version */
        char client_ca_file[EC_CFG_PATH_MAX]; /* CA of device certificates ("": ca_file) */
    } tls;
    struct {
        int mode; /* ec_auth_mode */
        ec_secret *sas_token;
        char tenant_id[40];
        char client_id[40];
        char authority_host[EC_CFG_URL_MAX];
        int assertion_alg; /* ec_assertion_alg */
        ec_secret *key_primary;
        ec_secret *key_secondary;
    } auth;
    struct {
        bool batch;
        char endpoint[EC_CFG_URL_MAX];
        bool allow_public_endpoint;
        char locale[16];
        int batch_window_seconds;
        int batch_max_files;
        int time_to_live_hours;
        bool word_level_timestamps;
        bool diarization;
        int max_speakers;
        int punctuation_mode;      /* ec_punctuation_mode */
        int profanity_filter_mode; /* ec_profanity_mode */
        ec_secret *content_sas;
        bool keep_transcripts;
        char transcript_dir[EC_CFG_PATH_MAX];
    } speech;
    struct {
        int level; /* ec_log_level */
        bool syslog;
        bool json;
        char audit_file[EC_CFG_PATH_MAX];
        ec_secret *audit_hmac_key;
        bool audit_syslog;
        int64_t audit_max_bytes;       /* 0 = never rotate */
        int audit_keep;                /* rotated files kept */
        char audit_syslog_socket[108]; /* AF_UNIX datagram socket (sun_path) */
        int audit_syslog_facility;     /* 0 authpriv, 1..8 local0..local7 */
        int audit_syslog_format;       /* 0 rfc3164, 1 rfc5424 */
    } logging;
    struct {
        char textfile[EC_CFG_PATH_MAX];
        char listen[EC_CFG_NAME_MAX];
        int interval_seconds;
    } metrics;
    struct {
        bool required;
        char state_file[EC_CFG_PATH_MAX]; /* older name of switch_path */
        char switch_path[EC_CFG_PATH_MAX];
        char windows[EC_CFG_WINDOWS_MAX][EC_CFG_WINDOW_MAX]; /* "mon-fri 08:00-17:30" */
        size_t n_windows;
    } consent;
    struct {
        char module[EC_CFG_PATH_MAX]; /* the PKCS#11 module (dlopen'ed) */
        char token_label[33];         /* at most 32 bytes, as in CK_TOKEN_INFO */
        ec_secret *pin;               /* the user PIN */
        char kek_label[65];
        char key_label[65]; /* "" = the device key is [tls] client_key */
    } pkcs11;

    char source_path[EC_CFG_PATH_MAX];
    uint8_t sha256[32]; /* of the file as read; the audit log records it */
} ec_config;

/* Where and why a provisioning file was refused. */
typedef struct {
    char file[EC_CFG_PATH_MAX];
    unsigned line; /* 0 when the problem is the file itself */
    char key[80];  /* "[section] key", or "" */
    char message[320];
} ec_config_error;

/* Fills every key with its documented default. */
void ec_config_init(ec_config *cfg);

/*
 * Reads and validates `path` into `cfg` (which is initialised here). On
 * failure returns EC_ERR_CONFIG (an invalid file, or a *_file that is missing
 * or unreadable), EC_ERR_PERM (an unsafe owner or mode of the file or of a
 * *_file, or inline secrets in a file others may read), EC_ERR_NOT_FOUND (no
 * file at `path`), EC_ERR_IO or EC_ERR_NOMEM (no secure memory); it leaves
 * `cfg` empty (secrets wiped) and describes the first problem in `err`.
 */
ec_status ec_config_load(ec_config *cfg, const char *path, ec_config_error *err);

/*
 * Like ec_config_load, but a KEY_credential is checked for its name only and
 * not read (that secret stays unset): for a command that validates the file
 * for a daemon which has the credentials while the command does not
 * (`edgecap reload` run by hand, outside the unit).
 */
ec_status ec_config_load_credentials_unread(ec_config *cfg, const char *path, ec_config_error *err);

/* Wipes secrets and resets to an empty state; safe on an init'ed config. */
void ec_config_free(ec_config *cfg);

/* Wipes only the secrets (after a reload replaced them), keeping the rest
 * for the stages that still read it (capture). */
void ec_config_free_secrets(ec_config *cfg);

/* "FILE:LINE: [section] key: message" (or without the parts that are empty). */
void ec_config_error_format(const ec_config_error *err, char *out, size_t out_len);

/* Prints every key and its value, secrets as ***: `[section]` headers, then
 * `key = value` lines. */
void ec_config_print(const ec_config *cfg, FILE *out);

/* Whether `host` matches [tls] allowed_hosts ("*.example.com" = one label). */
bool ec_config_host_allowed(const ec_config *cfg, const char *host);

#endif
