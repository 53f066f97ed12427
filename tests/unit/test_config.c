/*
 * The provisioning file (firmware/config.c). Most of this file is one table of
 * rejections: each row edits a minimal valid base file and names the exact
 * FILE:LINE, "[section] key" and message fragment the refusal must carry. The
 * rest proves what must be accepted (the shipped example, repeated list keys,
 * wildcard hosts), the documented defaults, that every key is documented, and
 * that secrets are read from safe files only and never printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgecap/config.h"
#include "edgecap/fault.h"
#include "edgecap/secmem.h"
#include "edgecap/secret.h"
#include "support.h"

/* Every secret value used below contains this marker; no error may. */
#define SECRET_MARK "s3cr3t"
#define PIN_A "sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
#define PIN_B "sha256//K2LyMgx2gfNPLFUiSwd2YpAvmcSTY4FUn1W3p1dSF0k="
#define OTHER_UID 65534

static char *g_dir; /* scratch directory with the secret files below */

/* ---- the base file and its edit points ----------------------------------- */

enum {
    S_HEAD,
    S_DEVICE,
    S_CAPTURE,
    S_ENCODER,
    S_SPOOL,
    S_UPLOAD,
    S_TLS,
    S_AUTH,
    S_SPEECH,
    S_LOGGING,
    S_METRICS,
    S_CONSENT,
    S_TAIL,
    N_SLOTS
};

static const char *const slot_markers[N_SLOTS] = {
    "@head", "@device", "@capture", "@encoder", "@spool",   "@upload", "@tls",
    "@auth", "@speech", "@logging", "@metrics", "@consent", "@tail",
};

/*
 * A minimal valid file. Each @marker line is replaced by a row's text for
 * that slot (or by a ";" comment), and each dropped line by ";", so a
 * one-line edit keeps every line number below; the L_* constants name them.
 */
static const char base[] = "@head\n"                                            /*  1 */
                           "[device]\n"                                         /*  2 */
                           "id = dev-1\n"                                       /*  3 */
                           "require_mlock = off\n"                              /*  4 */
                           "@device\n"                                          /*  5 */
                           "[capture]\n"                                        /*  6 */
                           "@capture\n"                                         /*  7 */
                           "[encoder]\n"                                        /*  8 */
                           "@encoder\n"                                         /*  9 */
                           "[spool]\n"                                          /* 10 */
                           "@spool\n"                                           /* 11 */
                           "[upload]\n"                                         /* 12 */
                           "endpoint = https://acct.blob.core.windows.net\n"    /* 13 */
                           "container = audio\n"                                /* 14 */
                           "@upload\n"                                          /* 15 */
                           "[tls]\n"                                            /* 16 */
                           "ca_file = /etc/edgecap/tls/ca.pem\n"                /* 17 */
                           "client_cert = /etc/edgecap/tls/client.pem\n"        /* 18 */
                           "client_key = /etc/edgecap/tls/client.key\n"         /* 19 */
                           "pin_current = " PIN_A "\n"                          /* 20 */
                           "allowed_hosts = acct.blob.core.windows.net, "       /* 21 */
                           "*.cognitiveservices.azure.com\n"                    /*    */
                           "allowed_hosts = login.microsoftonline.com, "        /* 22 */
                           "proxy.example.net\n"                                /*    */
                           "@tls\n"                                             /* 23 */
                           "[auth]\n"                                           /* 24 */
                           "tenant_id = 00000000-0000-0000-0000-000000000000\n" /* 25 */
                           "client_id = 11111111-1111-1111-1111-111111111111\n" /* 26 */
                           "@auth\n"                                            /* 27 */
                           "[speech]\n"                                         /* 28 */
                           "@speech\n"                                          /* 29 */
                           "[logging]\n"                                        /* 30 */
                           "@logging\n"                                         /* 31 */
                           "[metrics]\n"                                        /* 32 */
                           "@metrics\n"                                         /* 33 */
                           "[consent]\n"                                        /* 34 */
                           "@consent\n"                                         /* 35 */
                           "@tail\n";                                           /* 36 */

enum {
    L_HEAD = 1,
    L_DEVICE_HDR = 2,
    L_DEVICE = 5,
    L_CAPTURE_HDR = 6,
    L_CAPTURE = 7,
    L_ENCODER = 9,
    L_SPOOL = 11,
    L_UPLOAD_HDR = 12,
    L_CONTAINER = 14,
    L_UPLOAD = 15,
    L_TLS_HDR = 16,
    L_TLS = 23,
    L_AUTH_HDR = 24,
    L_AUTH = 27,
    L_SPEECH_HDR = 28,
    L_SPEECH = 29,
    L_LOGGING = 31,
    L_METRICS = 33,
    L_CONSENT_HDR = 34,
    L_CONSENT = 35,
    L_TAIL = 36,
};

#define MAX_DROPS 8

typedef struct {
    const char *name;
    const char *at[N_SLOTS];     /* text for a slot; "@DIR", "@LONG" expand */
    const char *drop[MAX_DROPS]; /* base lines starting with these become ";" */
    mode_t mode;                 /* of the config file; 0 = 0600 */
    char nul;                    /* this character is written as a NUL byte */
    bool other_owner;            /* chown the config file to OTHER_UID */
    bool no_credentials;         /* $CREDENTIALS_DIRECTORY unset (else @DIR/creds) */
    ec_status rc;                /* EC_OK stands for EC_ERR_CONFIG */
    unsigned line;
    const char *key;
    const char *fragment;
} reject_case;

/* Appends `text` to `f`, expanding @DIR (the scratch dir) and @LONG (200 x). */
static void put_expanded(FILE *f, const char *text)
{
    for (const char *p = text; *p != '\0'; p++) {
        if (strncmp(p, "@DIR", 4) == 0) {
            fputs(g_dir, f);
            p += 3;
        } else if (strncmp(p, "@LONG", 5) == 0) {
            for (int i = 0; i < 200; i++)
                fputc('x', f);
            p += 4;
        } else {
            fputc(*p, f);
        }
    }
}

/* The base file with a row's edits; `eol` ends every line. */
static char *render(const char *const at[N_SLOTS], const char *const drop[MAX_DROPS],
                    const char *eol, size_t *len_out)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    assert_non_null(f);
    for (const char *p = base; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p);
        char line[128];
        assert_true(n < sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl + 1;

        const char *text = line;
        for (int s = 0; s < N_SLOTS; s++) {
            if (strcmp(line, slot_markers[s]) == 0)
                text = at != NULL && at[s] != NULL ? at[s] : ";";
        }
        for (int d = 0; drop != NULL && d < MAX_DROPS && drop[d] != NULL; d++) {
            if (strncmp(line, drop[d], strlen(drop[d])) == 0)
                text = ";";
        }
        /* Multi-line slot text gets `eol` on every line too. */
        for (const char *t = text;;) {
            const char *tn = strchr(t, '\n');
            char piece[512];
            size_t pn = tn != NULL ? (size_t)(tn - t) : strlen(t);
            assert_true(pn < sizeof piece);
            memcpy(piece, t, pn);
            piece[pn] = '\0';
            put_expanded(f, piece);
            fputs(eol, f);
            if (tn == NULL)
                break;
            t = tn + 1;
        }
    }
    fclose(f);
    *len_out = len;
    return out;
}

static char *write_bytes(const char *dir, const char *name, mode_t mode, const char *bytes,
                         size_t len)
{
    char *path = ts_strf("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

static size_t live_secure_allocations(void)
{
    ec_secmem_stats s;
    ec_secmem_get_stats(&s);
    return s.live_allocations;
}

/* After a refused load the config must be empty: no secret, no value. */
static void assert_config_empty(const ec_config *cfg)
{
    assert_null(cfg->auth.sas_token);
    assert_null(cfg->auth.key_primary);
    assert_null(cfg->auth.key_secondary);
    assert_null(cfg->speech.content_sas);
    assert_null(cfg->logging.audit_hmac_key);
    static const ec_config zero;
    assert_memory_equal(cfg, &zero, sizeof zero);
}

/* ---- the rejection table -------------------------------------------------- */

/* clang-format off */
static reject_case cases[] = {
    /* sections */
    {.name = "unknown section with keys", .at = {[S_TAIL] = "[bogus]\nx = 1"},
     .line = L_TAIL, .key = "[bogus]", .fragment = "unknown section; expected device, capture"},
    {.name = "empty unknown section at the end", .at = {[S_TAIL] = "[bogus]"},
     .line = L_TAIL, .key = "[bogus]", .fragment = "unknown section"},
    {.name = "empty unknown section in the middle", .at = {[S_DEVICE] = "[Capture]"},
     .line = L_DEVICE, .key = "[Capture]", .fragment = "unknown section"},
    {.name = "empty unknown section after a BOM", .at = {[S_HEAD] = "\xEF\xBB\xBF[bogus]"},
     .line = L_HEAD, .key = "[bogus]", .fragment = "unknown section"},
    {.name = "empty unknown section after a vertical tab", .at = {[S_HEAD] = "\v[bogus]"},
     .line = L_HEAD, .key = "[bogus]", .fragment = "unknown section"},
    {.name = "unknown section name with blanks", .at = {[S_TAIL] = "[ metrics ]"},
     .line = L_TAIL, .key = "[ metrics ]", .fragment = "unknown section"},
    {.name = "unknown section with a long name",
     .at = {[S_TAIL] = "[a_section_name_far_longer_than_any_real_one]"},
     .line = L_TAIL, .key = "", .fragment = "unknown section (expected one of the documented"},
    {.name = "section given twice", .at = {[S_TAIL] = "[device]"},
     .line = L_TAIL, .key = "[device]", .fragment = "section appears twice (first at line 2)"},

    /* keys */
    {.name = "unknown key", .at = {[S_DEVICE] = "colour = blue"},
     .line = L_DEVICE, .key = "[device] colour", .fragment = "unknown key"},
    {.name = "key in the wrong section", .at = {[S_CAPTURE] = "bitrate_bps = 24000"},
     .line = L_CAPTURE, .key = "[capture] bitrate_bps", .fragment = "unknown key"},
    {.name = "key names are case-sensitive", .at = {[S_DEVICE] = "Keystore = file"},
     .line = L_DEVICE, .key = "[device] Keystore",
     .fragment = "unknown key (key names are lower-case)"},
    {.name = "secret-looking value under an unknown key",
     .at = {[S_SPEECH] = "sas_token = sv=1&sig=MISPLACED" SECRET_MARK},
     .line = L_SPEECH, .key = "[speech] sas_token", .fragment = "unknown key"},
    {.name = "key outside any section", .at = {[S_HEAD] = "id = dev-2"},
     .line = L_HEAD, .key = "",
     .fragment = "key outside any section (\"id\" must come after its [section] header)"},
    {.name = "secret-looking key outside any section",
     .at = {[S_HEAD] = "QUJDREVGR0hJSktM" SECRET_MARK "=="},
     .line = L_HEAD, .key = "", .fragment = "key outside any section"},
    {.name = "base64 secret pasted on a line of its own",
     .at = {[S_AUTH] = "mode = sas\nsas_token = sv=1&sig=FINE" SECRET_MARK
                       "\nAbCdEfGhIjKlMnOp" SECRET_MARK "0=="},
     .line = L_AUTH + 2, .key = "[auth]", .fragment = "unknown key (its name is not shown"},
    {.name = "secret on a line without ' = '",
     .at = {[S_AUTH] = "mode = sas\nsas_token sv=1&sig=NOEQ" SECRET_MARK},
     .line = L_AUTH + 1, .key = "[auth]", .fragment = "unknown key (its name is not shown"},
    {.name = "hex key on a line without '='",
     .at = {[S_AUTH] = "mode = key\nkey_primary 0123456789abcdef" SECRET_MARK},
     .line = L_AUTH + 1, .key = "[auth]", .fragment = "syntax error"},
    {.name = "duplicate key", .at = {[S_DEVICE] = "id = dev-2"},
     .line = L_DEVICE, .key = "[device] id", .fragment = "key given twice (first at line 3)"},
    {.name = "continuation line", .at = {[S_DEVICE] = "  on"},
     .line = L_DEVICE, .key = "[device] require_mlock",
     .fragment = "continuation lines are not supported"},
    {.name = "duplicate inline secret",
     .at = {[S_AUTH] = "mode = sas\nsas_token = sv=1&sig=ONE" SECRET_MARK
                       "\nsas_token = sv=1&sig=TWO" SECRET_MARK},
     .line = L_AUTH + 2, .key = "[auth] sas_token", .fragment = "key given twice (first at line 28)"},

    /* types */
    {.name = "integer: a word", .at = {[S_CAPTURE] = "channels = two"},
     .line = L_CAPTURE, .key = "[capture] channels", .fragment = "expected an integer, got \"two\""},
    {.name = "integer: unit suffix", .at = {[S_CAPTURE] = "segment_seconds = 60s"},
     .line = L_CAPTURE, .key = "[capture] segment_seconds",
     .fragment = "expected an integer, got \"60s\""},
    {.name = "integer: empty", .at = {[S_CAPTURE] = "channels ="},
     .line = L_CAPTURE, .key = "[capture] channels", .fragment = "expected an integer, got \"\""},
    {.name = "integer: hexadecimal", .at = {[S_ENCODER] = "complexity = 0x5"},
     .line = L_ENCODER, .key = "[encoder] complexity", .fragment = "expected an integer"},
    {.name = "integer: beyond 64 bits", .at = {[S_SPOOL] = "quota_bytes = 99999999999999999999"},
     .line = L_SPOOL, .key = "[spool] quota_bytes", .fragment = "expected an integer"},
    {.name = "boolean: not a boolean", .at = {[S_CAPTURE] = "vad = maybe"},
     .line = L_CAPTURE, .key = "[capture] vad",
     .fragment = "expected on|off (or true|false, yes|no, 1|0), got \"maybe\""},
    {.name = "boolean: empty", .at = {[S_LOGGING] = "json ="},
     .line = L_LOGGING, .key = "[logging] json", .fragment = "expected on|off"},
    {.name = "audit_max_bytes below a rotated file's minimum",
     .at = {[S_LOGGING] = "audit_max_bytes = 4096"}, .line = L_LOGGING,
     .key = "[logging] audit_max_bytes", .fragment = "must be 0 (never rotate) or at least 16384"},
    {.name = "audit_max_bytes negative", .at = {[S_LOGGING] = "audit_max_bytes = -1"},
     .line = L_LOGGING, .key = "[logging] audit_max_bytes",
     .fragment = "expected 0..1099511627776, got -1"},
    {.name = "audit_keep zero", .at = {[S_LOGGING] = "audit_keep = 0"}, .line = L_LOGGING,
     .key = "[logging] audit_keep", .fragment = "expected 1..99, got 0"},
    {.name = "audit_syslog_socket relative", .at = {[S_LOGGING] = "audit_syslog_socket = dev/log"},
     .line = L_LOGGING, .key = "[logging] audit_syslog_socket",
     .fragment = "expected an absolute path, got \"dev/log\""},
    {.name = "audit_syslog_socket longer than sun_path",
     .at = {[S_LOGGING] = "audit_syslog_socket = /run/"
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
     .line = L_LOGGING, .key = "[logging] audit_syslog_socket",
     .fragment = "value is longer than 107 characters"},
    {.name = "audit_syslog_facility not authpriv or local", .at = {[S_LOGGING] = "audit_syslog_facility = kern"},
     .line = L_LOGGING, .key = "[logging] audit_syslog_facility",
     .fragment = "expected authpriv|local0|local1|local2|local3|local4|local5|local6|local7, got \"kern\""},
    {.name = "audit_syslog_format unknown", .at = {[S_LOGGING] = "audit_syslog_format = json"},
     .line = L_LOGGING, .key = "[logging] audit_syslog_format",
     .fragment = "expected rfc3164|rfc5424, got \"json\""},
    {.name = "enum: unknown name", .at = {[S_CAPTURE] = "source = mic"},
     .line = L_CAPTURE, .key = "[capture] source", .fragment = "expected alsa|file, got \"mic\""},
    {.name = "enum: case-sensitive", .at = {[S_ENCODER] = "vbr = ON"},
     .line = L_ENCODER, .key = "[encoder] vbr",
     .fragment = "expected on|constrained|off, got \"ON\""},
    {.name = "enum: TLS 1.1", .at = {[S_TLS] = "min_version = 1.1"},
     .line = L_TLS, .key = "[tls] min_version", .fragment = "expected 1.2|1.3, got \"1.1\""},

    /* ranges and allowed sets */
    {.name = "below range", .at = {[S_CAPTURE] = "channels = 0"},
     .line = L_CAPTURE, .key = "[capture] channels", .fragment = "expected 1..2, got 0"},
    {.name = "above range", .at = {[S_ENCODER] = "complexity = 11"},
     .line = L_ENCODER, .key = "[encoder] complexity", .fragment = "expected 0..10, got 11"},
    {.name = "above a negative range", .at = {[S_CAPTURE] = "vad_threshold_dbfs = 3"},
     .line = L_CAPTURE, .key = "[capture] vad_threshold_dbfs", .fragment = "expected -90..0, got 3"},
    {.name = "64-bit below range", .at = {[S_SPOOL] = "quota_bytes = 1024"},
     .line = L_SPOOL, .key = "[spool] quota_bytes",
     .fragment = "expected 1048576..1099511627776, got 1024"},
    {.name = "64-bit above range", .at = {[S_UPLOAD] = "block_bytes = 104857601"},
     .line = L_UPLOAD, .key = "[upload] block_bytes",
     .fragment = "expected 65536..104857600, got 104857601"},
    {.name = "int key given a value beyond int", .at = {[S_UPLOAD] = "retry_max_ms = 4294967296"},
     .line = L_UPLOAD, .key = "[upload] retry_max_ms",
     .fragment = "expected 100..86400000, got 4294967296"},
    {.name = "rate_hz not in the set", .at = {[S_CAPTURE] = "rate_hz = 44100"},
     .line = L_CAPTURE, .key = "[capture] rate_hz",
     .fragment = "expected 8000, 16000 or 48000, got 44100"},
    {.name = "rate_hz zero", .at = {[S_CAPTURE] = "rate_hz = 0"},
     .line = L_CAPTURE, .key = "[capture] rate_hz", .fragment = "expected 8000, 16000 or 48000, got 0"},
    {.name = "frame_ms not in the set", .at = {[S_ENCODER] = "frame_ms = 30"},
     .line = L_ENCODER, .key = "[encoder] frame_ms", .fragment = "expected 10, 20, 40 or 60, got 30"},

    /* required keys */
    {.name = "missing device id", .drop = {"id ="},
     .line = L_DEVICE_HDR, .key = "[device] id", .fragment = "required key missing"},
    {.name = "missing pin_current", .drop = {"pin_current"},
     .line = L_TLS_HDR, .key = "[tls] pin_current", .fragment = "required key missing"},
    {.name = "missing allowed_hosts", .drop = {"allowed_hosts"},
     .line = L_TLS_HDR, .key = "[tls] allowed_hosts", .fragment = "required key missing"},
    {.name = "missing endpoint", .drop = {"endpoint ="},
     .line = L_UPLOAD_HDR, .key = "[upload] endpoint", .fragment = "required key missing"},
    {.name = "missing section", .drop = {"[tls]", "ca_file", "client_cert", "client_key",
                                         "pin_current", "allowed_hosts"},
     .line = L_TAIL, .key = "[tls] ca_file", .fragment = "required key missing"},
    {.name = "empty pin_current", .drop = {"pin_current"}, .at = {[S_TLS] = "pin_current ="},
     .line = L_TLS, .key = "[tls] pin_current", .fragment = "required key has an empty value"},
    {.name = "empty endpoint", .drop = {"endpoint ="}, .at = {[S_UPLOAD] = "endpoint ="},
     .line = L_UPLOAD, .key = "[upload] endpoint", .fragment = "required key has an empty value"},
    {.name = "empty allowed_hosts", .drop = {"allowed_hosts"}, .at = {[S_TLS] = "allowed_hosts ="},
     .line = L_TLS, .key = "[tls] allowed_hosts", .fragment = "required key has an empty value"},

    /* endpoints: https only, no path, query or credentials, allow-listed host */
    {.name = "http endpoint", .drop = {"endpoint ="},
     .at = {[S_UPLOAD] = "endpoint = http://acct.blob.core.windows.net"},
     .line = L_UPLOAD, .key = "[upload] endpoint",
     .fragment = "expected an https:// URL with a host and no path, query or credentials, got "
                 "\"http://acct.blob.core.windows.net\""},
    {.name = "http speech endpoint",
     .at = {[S_SPEECH] = "endpoint = http://edgecap-speech.cognitiveservices.azure.com"},
     .line = L_SPEECH, .key = "[speech] endpoint", .fragment = "expected an https:// URL"},
    {.name = "http authority_host", .at = {[S_AUTH] = "authority_host = http://login.microsoftonline.com"},
     .line = L_AUTH, .key = "[auth] authority_host", .fragment = "expected an https:// URL"},
    {.name = "endpoint with a path",
     .at = {[S_UPLOAD] = "secondary_endpoint = https://acct.blob.core.windows.net/audio"},
     .line = L_UPLOAD, .key = "[upload] secondary_endpoint", .fragment = "expected an https:// URL"},
    {.name = "endpoint with credentials (not quoted back)",
     .at = {[S_UPLOAD] = "secondary_endpoint = https://bob:hunter2" SECRET_MARK
                         "@acct.blob.core.windows.net"},
     .line = L_UPLOAD, .key = "[upload] secondary_endpoint", .fragment = "expected an https:// URL"},
    {.name = "endpoint with a SAS query (not quoted back)",
     .at = {[S_UPLOAD] = "secondary_endpoint = https://acct.blob.core.windows.net/?sv=2025&sig=Q"
                         SECRET_MARK},
     .line = L_UPLOAD, .key = "[upload] secondary_endpoint", .fragment = "expected an https:// URL"},
    {.name = "endpoint host not allowed", .drop = {"endpoint ="},
     .at = {[S_UPLOAD] = "endpoint = https://evil.example.com"},
     .line = L_UPLOAD, .key = "[upload] endpoint",
     .fragment = "host \"evil.example.com\" is not on [tls] allowed_hosts"},
    {.name = "secondary endpoint host not allowed",
     .at = {[S_UPLOAD] = "secondary_endpoint = https://acct-secondary.blob.core.windows.net"},
     .line = L_UPLOAD, .key = "[upload] secondary_endpoint",
     .fragment = "host \"acct-secondary.blob.core.windows.net\" is not on [tls] allowed_hosts"},
    {.name = "speech endpoint host not allowed",
     .at = {[S_SPEECH] = "endpoint = https://speech.example.com"},
     .line = L_SPEECH, .key = "[speech] endpoint",
     .fragment = "host \"speech.example.com\" is not on [tls] allowed_hosts"},
    {.name = "wildcard covers one label, not two",
     .at = {[S_SPEECH] = "endpoint = https://a.b.cognitiveservices.azure.com"},
     .line = L_SPEECH, .key = "[speech] endpoint", .fragment = "is not on [tls] allowed_hosts"},
    {.name = "wildcard does not cover the bare domain",
     .at = {[S_SPEECH] = "endpoint = https://cognitiveservices.azure.com"},
     .line = L_SPEECH, .key = "[speech] endpoint", .fragment = "is not on [tls] allowed_hosts"},
    {.name = "authority_host not allowed (entra)",
     .at = {[S_AUTH] = "authority_host = https://login.example.com"},
     .line = L_AUTH, .key = "[auth] authority_host",
     .fragment = "host \"login.example.com\" is not on [tls] allowed_hosts"},
    {.name = "default authority_host not allowed (entra)", .drop = {"allowed_hosts"},
     .at = {[S_TLS] = "allowed_hosts = acct.blob.core.windows.net"},
     .line = L_AUTH_HDR, .key = "[auth] authority_host",
     .fragment = "host \"login.microsoftonline.com\" is not on [tls] allowed_hosts"},
    {.name = "proxy host not allowed", .at = {[S_UPLOAD] = "proxy = https://proxy.evil.net:3128"},
     .line = L_UPLOAD, .key = "[upload] proxy",
     .fragment = "host \"proxy.evil.net\" is not on [tls] allowed_hosts"},
    {.name = "proxy without a port", .at = {[S_UPLOAD] = "proxy = https://proxy.example.net"},
     .line = L_UPLOAD, .key = "[upload] proxy", .fragment = "proxy URL with a port"},
    {.name = "proxy with credentials (not quoted back)",
     .at = {[S_UPLOAD] = "proxy = http://bob:hunter2" SECRET_MARK "@proxy.example.net:3128"},
     .line = L_UPLOAD, .key = "[upload] proxy", .fragment = "proxy URL with a port"},
    {.name = "socks proxy", .at = {[S_UPLOAD] = "proxy = socks5://proxy.example.net:1080"},
     .line = L_UPLOAD, .key = "[upload] proxy", .fragment = "proxy URL with a port"},
    {.name = "connect_to host not allowed",
     .at = {[S_UPLOAD] = "connect_to = other.blob.core.windows.net:443:10.1.2.3:443"},
     .line = L_UPLOAD, .key = "[upload] connect_to",
     .fragment = "host \"other.blob.core.windows.net\" is not on [tls] allowed_hosts"},
    {.name = "connect_to malformed",
     .at = {[S_UPLOAD] = "connect_to = acct.blob.core.windows.net:443"},
     .line = L_UPLOAD, .key = "[upload] connect_to",
     .fragment = "expected HOST:PORT:ADDRESS:PORT"},

    /* lines libinih must not see */
    {.name = "over-long line", .at = {[S_DEVICE] = "keystore_dir = /@LONG"},
     .line = L_DEVICE, .key = "[device] keystore_dir", .fragment = "line longer than 198 characters"},
    {.name = "over-long secret line",
     .at = {[S_AUTH] = "mode = sas\nsas_token = sv=1&sig=LONG" SECRET_MARK "@LONG"},
     .line = L_AUTH + 1, .key = "[auth] sas_token",
     .fragment = "line longer than 198 characters; put long secrets in the key's _file variant"},
    {.name = "over-long line before any section", .at = {[S_HEAD] = "id = @LONG"},
     .line = L_HEAD, .key = "", .fragment = "line longer than 198 characters"},
    {.name = "over-long base64 secret on a line of its own",
     .at = {[S_AUTH] = "QUJDREVGR0hJSktM" SECRET_MARK "@LONG=="},
     .line = L_AUTH, .key = "[auth]", .fragment = "line longer than 198 characters"},
    {.name = "over-long comment", .at = {[S_CONSENT] = "; @LONG"},
     .line = L_CONSENT, .key = "[consent]", .fragment = "line longer than 198 characters"},
    {.name = "NUL byte", .at = {[S_DEVICE] = "keystore_dir = /var/~lib"}, .nul = '~',
     .line = L_DEVICE, .key = "[device] keystore_dir", .fragment = "NUL byte"},
    {.name = "NUL byte in a secret",
     .at = {[S_AUTH] = "mode = sas\nsas_token = sv=1&sig=N~UL" SECRET_MARK}, .nul = '~',
     .line = L_AUTH + 1, .key = "[auth] sas_token", .fragment = "NUL byte"},
    {.name = "syntax error: no =", .at = {[S_DEVICE] = "just some words"},
     .line = L_DEVICE, .key = "[device]", .fragment = "syntax error"},
    {.name = "syntax error: unclosed header", .at = {[S_DEVICE] = "[capture"},
     .line = L_DEVICE, .key = "[device]", .fragment = "syntax error"},
    {.name = "syntax error before the first section", .at = {[S_HEAD] = "garbage"},
     .line = L_HEAD, .key = "", .fragment = "syntax error"},
    {.name = "syntax error is reported before a later error",
     .at = {[S_DEVICE] = "garbage", [S_TAIL] = "[bogus]"},
     .line = L_DEVICE, .key = "[device]", .fragment = "syntax error"},

    /* cross-key rules */
    {.name = "target blob without container", .drop = {"container"},
     .line = L_UPLOAD_HDR, .key = "[upload] container",
     .fragment = "required key missing with [upload] target = blob"},
    {.name = "target blob with an empty container", .drop = {"container"},
     .at = {[S_UPLOAD] = "container ="},
     .line = L_UPLOAD, .key = "[upload] container", .fragment = "required key has an empty value"},
    {.name = "target speech with sas", .drop = {"container"},
     .at = {[S_UPLOAD] = "target = speech", [S_AUTH] = "mode = sas\nsas_token_file = @DIR/sas"},
     .line = L_AUTH, .key = "[auth] mode", .fragment = "target speech takes entra or key"},
    {.name = "target blob with key",
     .at = {[S_AUTH] = "mode = key\nkey_primary_file = @DIR/sas"},
     .line = L_AUTH, .key = "[auth] mode", .fragment = "target blob takes sas or entra"},
    {.name = "target speech with container", .at = {[S_UPLOAD] = "target = speech"},
     .line = L_CONTAINER, .key = "[upload] container",
     .fragment = "only meaningful with [upload] target = blob"},
    {.name = "target speech with batch", .drop = {"container"},
     .at = {[S_UPLOAD] = "target = speech", [S_SPEECH] = "batch = on"},
     .line = L_SPEECH, .key = "[speech] batch", .fragment = "needs [upload] target = blob"},
    {.name = "batch without speech endpoint", .at = {[S_SPEECH] = "batch = on"},
     .line = L_SPEECH_HDR, .key = "[speech] endpoint",
     .fragment = "required key missing with [speech] batch = on"},
    {.name = "sas mode without a token", .at = {[S_AUTH] = "mode = sas"},
     .line = L_AUTH_HDR, .key = "[auth] sas_token",
     .fragment = "required key missing with [auth] mode = sas (or give sas_token_file or sas_token_credential)"},
    {.name = "key mode without a key", .drop = {"container"},
     .at = {[S_UPLOAD] = "target = speech", [S_AUTH] = "mode = key"},
     .line = L_AUTH_HDR, .key = "[auth] key_primary",
     .fragment = "required key missing with [auth] mode = key (or give key_primary_file or key_primary_credential)"},
    {.name = "secret both inline and as a file",
     .at = {[S_AUTH] = "mode = sas\nsas_token = sv=1&sig=INLINE" SECRET_MARK
                       "\nsas_token_file = @DIR/sas"},
     .line = L_AUTH + 2, .key = "[auth] sas_token_file",
     .fragment = "set either sas_token or sas_token_file, not both"},
    {.name = "optional secret both inline and as a file",
     .at = {[S_LOGGING] = "audit_hmac_key = HMAC" SECRET_MARK "\naudit_hmac_key_file = @DIR/sas"},
     .line = L_LOGGING + 1, .key = "[logging] audit_hmac_key_file",
     .fragment = "set either audit_hmac_key or audit_hmac_key_file, not both"},
    {.name = "entra without tenant_id", .drop = {"tenant_id"},
     .line = L_AUTH_HDR, .key = "[auth] tenant_id",
     .fragment = "required key missing with [auth] mode = entra"},
    {.name = "entra without client_id", .drop = {"client_id"},
     .line = L_AUTH_HDR, .key = "[auth] client_id",
     .fragment = "required key missing with [auth] mode = entra"},
    {.name = "entra with an empty tenant_id", .drop = {"tenant_id"},
     .at = {[S_AUTH] = "tenant_id ="},
     .line = L_AUTH, .key = "[auth] tenant_id", .fragment = "required key has an empty value"},
    {.name = "tenant_id not a GUID", .drop = {"tenant_id"}, .at = {[S_AUTH] = "tenant_id = contoso"},
     .line = L_AUTH, .key = "[auth] tenant_id",
     .fragment = "expected a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), got \"contoso\""},
    {.name = "buffer below two periods",
     .at = {[S_CAPTURE] = "period_frames = 1024\nbuffer_frames = 2000"},
     .line = L_CAPTURE + 1, .key = "[capture] buffer_frames",
     .fragment = "must be at least twice period_frames (1024)"},
    {.name = "period too large for the default buffer", .at = {[S_CAPTURE] = "period_frames = 2048"},
     .line = L_CAPTURE, .key = "[capture] period_frames",
     .fragment = "must be at most half of buffer_frames (3200)"},
    {.name = "retry_max below retry_base",
     .at = {[S_UPLOAD] = "retry_base_ms = 5000\nretry_max_ms = 1000"},
     .line = L_UPLOAD + 1, .key = "[upload] retry_max_ms",
     .fragment = "must not be below retry_base_ms (5000)"},
    {.name = "keep_transcripts without dir", .at = {[S_SPEECH] = "keep_transcripts = on"},
     .line = L_SPEECH_HDR, .key = "[speech] transcript_dir",
     .fragment = "required key missing with [speech] keep_transcripts = on"},
    {.name = "consent required without a switch", .at = {[S_CONSENT] = "required = on"},
     .line = L_CONSENT_HDR, .key = "[consent] switch",
     .fragment = "required key missing with [consent] required = on"},
    {.name = "consent required with an empty switch",
     .at = {[S_CONSENT] = "required = on\nswitch ="},
     .line = L_CONSENT + 1, .key = "[consent] switch",
     .fragment = "required key has an empty value with [consent] required = on"},
    {.name = "consent switch and its older name state_file",
     .at = {[S_CONSENT] = "switch = /run/edgecap/consent\nstate_file = /run/edgecap/consent"},
     .line = L_CONSENT + 1, .key = "[consent] state_file",
     .fragment = "state_file is the older name of switch: set one of them"},
    {.name = "consent switch: a relative path", .at = {[S_CONSENT] = "switch = run/consent"},
     .line = L_CONSENT, .key = "[consent] switch",
     .fragment = "expected an absolute path, got \"run/consent\""},
    {.name = "window: hour without two digits",
     .at = {[S_CONSENT] = "window = mon-fri 8:00-17:30"}, .line = L_CONSENT,
     .key = "[consent] window",
     .fragment = "expected DAYS HH:MM-HH:MM (DAYS: mon..sun, a range such as mon-fri, or daily; "
                 "times 00:00 to 24:00, start and end differ; an end before the start crosses "
                 "midnight), got \"mon-fri 8:00-17:30\""},
    {.name = "window: unknown day", .at = {[S_CONSENT] = "window = funday 08:00-09:00"},
     .line = L_CONSENT, .key = "[consent] window", .fragment = "got \"funday 08:00-09:00\""},
    {.name = "window: minute 60", .at = {[S_CONSENT] = "window = sat 10:00-10:60"},
     .line = L_CONSENT, .key = "[consent] window", .fragment = "got \"sat 10:00-10:60\""},
    {.name = "window: starts at 24:00", .at = {[S_CONSENT] = "window = daily 24:00-06:00"},
     .line = L_CONSENT, .key = "[consent] window", .fragment = "got \"daily 24:00-06:00\""},
    {.name = "window: empty (start = end)", .at = {[S_CONSENT] = "window = daily 08:00-08:00"},
     .line = L_CONSENT, .key = "[consent] window", .fragment = "got \"daily 08:00-08:00\""},
    {.name = "window: days but no times", .at = {[S_CONSENT] = "window = mon-fri"},
     .line = L_CONSENT, .key = "[consent] window", .fragment = "got \"mon-fri\""},
    {.name = "window: the bad one of a comma list",
     .at = {[S_CONSENT] = "window = mon 08:00-09:00, tue 09:00-9:30"}, .line = L_CONSENT,
     .key = "[consent] window", .fragment = "got \"tue 09:00-9:30\""},
    {.name = "window: the bad one on a repeated line",
     .at = {[S_CONSENT] = "window = mon 08:00-09:00\nwindow = wed-wed 08:00-09:00"},
     .line = L_CONSENT + 1, .key = "[consent] window", .fragment = "got \"wed-wed 08:00-09:00\""},
    {.name = "window: an empty item", .at = {[S_CONSENT] = "window = mon 08:00-09:00, , tue 08:00-09:00"},
     .line = L_CONSENT, .key = "[consent] window", .fragment = "item 2 is empty"},
    {.name = "window: more than 16",
     .at = {[S_CONSENT] = "window = mon 01:00-02:00, mon 02:00-03:00, mon 03:00-04:00, "
                          "mon 04:00-05:00, mon 05:00-06:00, mon 06:00-07:00\n"
                          "window = tue 01:00-02:00, tue 02:00-03:00, tue 03:00-04:00, "
                          "tue 04:00-05:00, tue 05:00-06:00, tue 06:00-07:00\n"
                          "window = wed 01:00-02:00, wed 02:00-03:00, wed 03:00-04:00, "
                          "wed 04:00-05:00, wed 05:00-06:00"},
     .line = L_CONSENT + 2, .key = "[consent] window", .fragment = "more than 16 items"},
    {.name = "capture file_realtime: not a boolean",
     .at = {[S_CAPTURE] = "file_realtime = paced"}, .line = L_CAPTURE,
     .key = "[capture] file_realtime",
     .fragment = "expected on|off (or true|false, yes|no, 1|0), got \"paced\""},
    {.name = "consent required with an empty state_file",
     .at = {[S_CONSENT] = "required = on\nstate_file ="},
     .line = L_CONSENT + 1, .key = "[consent] state_file",
     .fragment = "required key has an empty value"},
    {.name = "file source without a file", .at = {[S_CAPTURE] = "source = file"},
     .line = L_CAPTURE_HDR, .key = "[capture] file",
     .fragment = "required key missing with [capture] source = file"},
    {.name = "pin_next equals pin_current", .at = {[S_TLS] = "pin_next = " PIN_A},
     .line = L_TLS, .key = "[tls] pin_next", .fragment = "must differ from pin_current"},

    /* value shapes */
    {.name = "pin without sha256// prefix",
     .at = {[S_TLS] = "pin_next = K2LyMgx2gfNPLFUiSwd2YpAvmcSTY4FUn1W3p1dSF0k="},
     .line = L_TLS, .key = "[tls] pin_next",
     .fragment = "expected sha256// followed by the base64 SHA-256"},
    {.name = "pin not base64", .at = {[S_TLS] = "pin_next = sha256//not*base64"},
     .line = L_TLS, .key = "[tls] pin_next", .fragment = "expected sha256// followed by"},
    {.name = "pin of a SHA-1", .at = {[S_TLS] = "pin_next = sha256//2jmj7l5rSw0yVb/vlWAYkK/YBwk="},
     .line = L_TLS, .key = "[tls] pin_next", .fragment = "expected sha256// followed by"},
    {.name = "pin in a non-canonical base64 spelling",
     .at = {[S_TLS] = "pin_next = sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV="},
     .line = L_TLS, .key = "[tls] pin_next", .fragment = "expected sha256// followed by"},
    {.name = "malformed pin_current", .drop = {"pin_current"},
     .at = {[S_TLS] = "pin_current = sha1//2jmj7l5rSw0yVb/vlWAYkK/YBwk="},
     .line = L_TLS, .key = "[tls] pin_current", .fragment = "expected sha256// followed by"},
    {.name = "device id starting with a hyphen", .drop = {"id ="}, .at = {[S_DEVICE] = "id = -edge"},
     .line = L_DEVICE, .key = "[device] id", .fragment = "expected 1-64 of A-Z a-z 0-9 . _ -"},
    {.name = "too many tags",
     .at = {[S_DEVICE] = "tags = a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9,j=10,k=11"},
     .line = L_DEVICE, .key = "[device] tags", .fragment = "more than 10 items"},
    {.name = "too many tags across lines",
     .at = {[S_DEVICE] = "tags = a=1,b=2,c=3,d=4,e=5,f=6\ntags = g=7,h=8,i=9,j=10,k=11"},
     .line = L_DEVICE + 1, .key = "[device] tags", .fragment = "more than 10 items"},
    {.name = "malformed tag", .at = {[S_DEVICE] = "tags = 1abc=x"},
     .line = L_DEVICE, .key = "[device] tags", .fragment = "expected comma-separated name=value"},
    {.name = "tag name reserved for edgecap's metadata", .at = {[S_DEVICE] = "tags = Seq=7"},
     .line = L_DEVICE, .key = "[device] tags",
     .fragment = "tag name \"Seq\" is reserved for the metadata edgecap sets"},
    {.name = "tag name twice", .at = {[S_DEVICE] = "tags = site=a, line=b\ntags = SITE=c"},
     .line = L_DEVICE, .key = "[device] tags", .fragment = "tag name \"SITE\" given twice"},
    {.name = "host pattern with two wildcards", .at = {[S_TLS] = "allowed_hosts = *.*.example.com"},
     .line = L_TLS, .key = "[tls] allowed_hosts",
     .fragment = "expected comma-separated host names, each optionally starting with *., got "
                 "\"*.*.example.com\""},
    {.name = "host pattern that is only a star", .at = {[S_TLS] = "allowed_hosts = *"},
     .line = L_TLS, .key = "[tls] allowed_hosts", .fragment = "expected comma-separated host names"},
    {.name = "empty host in the list",
     .at = {[S_TLS] = "allowed_hosts = a.example.com,,b.example.com"},
     .line = L_TLS, .key = "[tls] allowed_hosts", .fragment = "item 6 is empty"},
    {.name = "too many hosts across lines",
     .at = {[S_TLS] = "allowed_hosts = h1.example.com, h2.example.com, h3.example.com, "
                      "h4.example.com, h5.example.com, h6.example.com, h7.example.com\n"
                      "allowed_hosts = h8.example.com, h9.example.com, h10.example.com, "
                      "h11.example.com, h12.example.com, h13.example.com"},
     .line = L_TLS + 1, .key = "[tls] allowed_hosts", .fragment = "more than 16 items"},
    {.name = "metrics listening beyond loopback", .at = {[S_METRICS] = "listen = 0.0.0.0:9464"},
     .line = L_METRICS, .key = "[metrics] listen", .fragment = "expected 127.0.0.1:PORT"},
    {.name = "prefix with a .. segment", .at = {[S_UPLOAD] = "prefix = a/../b"},
     .line = L_UPLOAD, .key = "[upload] prefix", .fragment = "blob path segments"},
    {.name = "container with capitals", .drop = {"container"}, .at = {[S_UPLOAD] = "container = Audio"},
     .line = L_UPLOAD, .key = "[upload] container", .fragment = "3-63 of a-z 0-9 -"},
    {.name = "relative path", .at = {[S_DEVICE] = "keystore_dir = var/lib/keys"},
     .line = L_DEVICE, .key = "[device] keystore_dir",
     .fragment = "expected an absolute path, got \"var/lib/keys\""},
    {.name = "relative client_ca_file", .at = {[S_TLS] = "client_ca_file = tls/device-ca.pem"},
     .line = L_TLS, .key = "[tls] client_ca_file",
     .fragment = "expected an absolute path, got \"tls/device-ca.pem\""},
    {.name = "locale", .at = {[S_SPEECH] = "locale = english"},
     .line = L_SPEECH, .key = "[speech] locale", .fragment = "expected a locale such as en-US"},

    /* secrets and their files */
    {.name = "empty inline secret", .at = {[S_AUTH] = "mode = sas\nsas_token ="},
     .line = L_AUTH + 1, .key = "[auth] sas_token", .fragment = "a secret must not be empty"},
    {.name = "relative secret file", .at = {[S_AUTH] = "mode = sas\nsas_token_file = secrets/sas"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_file", .fragment = "expected an absolute path"},
    {.name = "missing secret file", .at = {[S_AUTH] = "mode = sas\nsas_token_file = @DIR/nope"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_file", .fragment = "cannot open"},
    {.name = "empty secret file", .at = {[S_AUTH] = "mode = sas\nsas_token_file = @DIR/empty"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_file", .fragment = "is empty or not text"},
    {.name = "secret file with a NUL byte",
     .at = {[S_AUTH] = "mode = sas\nsas_token_file = @DIR/nultext"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_file", .fragment = "is empty or not text"},
    {.name = "secret file readable by others (0644)",
     .at = {[S_AUTH] = "mode = sas\nsas_token_file = @DIR/loose"}, .rc = EC_ERR_PERM,
     .line = L_AUTH + 1, .key = "[auth] sas_token_file",
     .fragment = "holds secrets but is readable by group or others (mode 0644); chmod 600"},
    {.name = "secret file writable by group (0620)",
     .at = {[S_LOGGING] = "audit_hmac_key_file = @DIR/gw"}, .rc = EC_ERR_PERM,
     .line = L_LOGGING, .key = "[logging] audit_hmac_key_file",
     .fragment = "is writable by group or others (mode 0620); chmod go-w"},
    {.name = "secret file owned by another user",
     .at = {[S_SPEECH] = "content_sas_file = @DIR/theirs"}, .rc = EC_ERR_PERM,
     .line = L_SPEECH, .key = "[speech] content_sas_file",
     .fragment = "is owned by uid 65534, not by the running user"},
    {.name = "secret file that is a FIFO", .at = {[S_AUTH] = "mode = sas\nsas_token_file = @DIR/fifo"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_file", .fragment = "is not a regular file"},
    {.name = "secret file that is a directory",
     .at = {[S_AUTH] = "mode = sas\nsas_token_file = @DIR"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_file", .fragment = "is not a regular file"},

    /* subscription keys go into a header line: visible ASCII only */
    {.name = "subscription key with a blank", .drop = {"container"},
     .at = {[S_UPLOAD] = "target = speech", [S_AUTH] = "mode = key\nkey_primary = 0123 " SECRET_MARK},
     .line = L_AUTH + 1, .key = "[auth] key_primary",
     .fragment = "not a subscription key: expected 1 to 256 visible ASCII characters, no blanks or "
                 "line breaks (the value is not shown)"},
    {.name = "subscription key file with two lines", .drop = {"container"},
     .at = {[S_UPLOAD] = "target = speech",
            [S_AUTH] = "mode = key\nkey_primary_file = @DIR/sas2\nkey_secondary_file = @DIR/keytwo"},
     .line = L_AUTH + 2, .key = "[auth] key_secondary_file", .fragment = "not a subscription key"},
    {.name = "subscription key file longer than 256", .drop = {"container"},
     .at = {[S_UPLOAD] = "target = speech", [S_AUTH] = "mode = key\nkey_primary_file = @DIR/keylong"},
     .line = L_AUTH + 1, .key = "[auth] key_primary_file", .fragment = "not a subscription key"},
    {.name = "subscription key credential that is not ASCII", .drop = {"container"},
     .at = {[S_UPLOAD] = "target = speech", [S_AUTH] = "mode = key\nkey_primary_credential = keyutf"},
     .line = L_AUTH + 1, .key = "[auth] key_primary_credential", .fragment = "not a subscription key"},

    /* systemd credentials ($CREDENTIALS_DIRECTORY = @DIR/creds) */
    {.name = "credential name with a slash",
     .at = {[S_AUTH] = "mode = sas\nsas_token_credential = ../sas"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_credential",
     .fragment = "expected a credential name (1-64 of A-Z a-z 0-9 . _ -, not starting with a dot)"},
    {.name = "credential name starting with a dot",
     .at = {[S_AUTH] = "mode = sas\nsas_token_credential = .sas"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_credential", .fragment = "expected a credential name"},
    {.name = "credential name with a blank",
     .at = {[S_LOGGING] = "audit_hmac_key_credential = audit key"},
     .line = L_LOGGING, .key = "[logging] audit_hmac_key_credential",
     .fragment = "expected a credential name"},
    {.name = "empty credential name", .at = {[S_AUTH] = "mode = sas\nsas_token_credential ="},
     .line = L_AUTH + 1, .key = "[auth] sas_token_credential", .fragment = "expected a credential name"},
    {.name = "credential name longer than 64",
     .at = {[S_AUTH] = "mode = sas\nsas_token_credential = "
                       "a123456789b123456789c123456789d123456789e123456789f123456789g1234"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_credential", .fragment = "expected a credential name"},
    {.name = "credential without $CREDENTIALS_DIRECTORY", .no_credentials = true,
     .at = {[S_AUTH] = "mode = sas\nsas_token_credential = sas"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_credential",
     .fragment = "credential \"sas\": $CREDENTIALS_DIRECTORY is not set (give it to the unit with "
                 "LoadCredential=sas:PATH or LoadCredentialEncrypted=sas:PATH)"},
    {.name = "credential that does not exist",
     .at = {[S_AUTH] = "mode = key\nkey_primary_credential = nope", [S_UPLOAD] = "target = speech"},
     .drop = {"container"},
     .line = L_AUTH + 1, .key = "[auth] key_primary_credential",
     .fragment = "credential \"nope\" not found in $CREDENTIALS_DIRECTORY (@DIR/creds)"},
    {.name = "empty credential", .at = {[S_AUTH] = "mode = sas\nsas_token_credential = empty"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_credential",
     .fragment = "credential \"empty\" is empty"},
    {.name = "credential longer than 16384 bytes",
     .at = {[S_SPEECH] = "content_sas_credential = big"},
     .line = L_SPEECH, .key = "[speech] content_sas_credential",
     .fragment = "credential \"big\" is longer than 16384 bytes"},
    {.name = "credential with a NUL byte",
     .at = {[S_AUTH] = "key_secondary_credential = nultext"},
     .line = L_AUTH, .key = "[auth] key_secondary_credential",
     .fragment = "credential \"nultext\" is not text (it holds a NUL byte)"},
    {.name = "credential writable by group", .rc = EC_ERR_PERM,
     .at = {[S_LOGGING] = "audit_hmac_key_credential = gw"},
     .line = L_LOGGING, .key = "[logging] audit_hmac_key_credential",
     .fragment = "credential \"gw\" is writable by group or others (mode 0620)"},
    {.name = "credential that is a FIFO", .at = {[S_AUTH] = "mode = sas\nsas_token_credential = fifo"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_credential",
     .fragment = "credential \"fifo\" is not a regular file"},
    {.name = "credential that is a symlink", .at = {[S_AUTH] = "mode = sas\nsas_token_credential = link"},
     .line = L_AUTH + 1, .key = "[auth] sas_token_credential",
     .fragment = "cannot open credential \"link\": "},
    {.name = "secret both inline and as a credential",
     .at = {[S_AUTH] = "mode = sas\nsas_token = sv=1&sig=INLINE" SECRET_MARK
                       "\nsas_token_credential = sas"},
     .line = L_AUTH + 2, .key = "[auth] sas_token_credential",
     .fragment = "set one of sas_token, sas_token_file or sas_token_credential, not several"},
    {.name = "secret both as a file and as a credential",
     .at = {[S_LOGGING] = "audit_hmac_key_credential = hmac\naudit_hmac_key_file = @DIR/sas"},
     .line = L_LOGGING, .key = "[logging] audit_hmac_key_credential",
     .fragment = "set one of audit_hmac_key, audit_hmac_key_file or audit_hmac_key_credential"},
    /* [pkcs11] */
    {.name = "pkcs11 without module", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\ntoken_label = edge\npin = 1234" SECRET_MARK},
     .line = L_TAIL, .key = "[pkcs11] module",
     .fragment = "required key missing with [device] keystore = pkcs11"},
    {.name = "pkcs11 without token_label", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\nmodule = /usr/lib/softhsm/libsofthsm2.so\npin = 1234" SECRET_MARK},
     .line = L_TAIL, .key = "[pkcs11] token_label",
     .fragment = "required key missing with [device] keystore = pkcs11"},
    {.name = "pkcs11 without pin", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\nmodule = /usr/lib/softhsm/libsofthsm2.so\ntoken_label = edge"},
     .line = L_TAIL, .key = "[pkcs11] pin",
     .fragment = "required key missing with [device] keystore = pkcs11 (or give pin_file or pin_credential)"},
    {.name = "pkcs11 pin and pin_file", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\nmodule = /m.so\ntoken_label = edge\npin = 1" SECRET_MARK
                "\npin_file = @DIR/sas"},
     .line = L_TAIL + 4, .key = "[pkcs11] pin_file", .fragment = "set either pin or pin_file, not both"},
    {.name = "pkcs11 relative module", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\nmodule = libsofthsm2.so"},
     .line = L_TAIL + 1, .key = "[pkcs11] module", .fragment = "expected an absolute path"},
    {.name = "pkcs11 token label over 32 bytes", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\ntoken_label = abcdefghijklmnopqrstuvwxyz0123456"},
     .line = L_TAIL + 1, .key = "[pkcs11] token_label",
     .fragment = "value is longer than 32 characters"},
    {.name = "pkcs11 key label not ASCII", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\nkey_label = cl\xc3\xa9"},
     .line = L_TAIL + 1, .key = "[pkcs11] key_label",
     .fragment = "expected 1-64 printable ASCII characters"},
    {.name = "pkcs11 empty kek_label", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\nmodule = /m.so\ntoken_label = edge\npin = 1" SECRET_MARK
                "\nkek_label ="},
     .line = L_TAIL + 4, .key = "[pkcs11] kek_label", .fragment = "required key has an empty value"},
    {.name = "pkcs11 section with keystore = file",
     .at = {[S_TAIL] = "[pkcs11]\nmodule = /usr/lib/softhsm/libsofthsm2.so"},
     .line = L_TAIL + 1, .key = "[pkcs11] module",
     .fragment = "only meaningful with [device] keystore = pkcs11"},
    {.name = "client_key beside a token key", .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\nmodule = /m.so\ntoken_label = edge\npin = 1" SECRET_MARK
                "\nkey_label = dev"},
     .line = L_TLS_HDR + 3, .key = "[tls] client_key",
     .fragment = "the device key is on the token ([pkcs11] key_label = dev); remove client_key"},
    {.name = "pkcs11 without key_label needs client_key", .drop = {"client_key"},
     .at = {[S_DEVICE] = "keystore = pkcs11",
     [S_TAIL] = "[pkcs11]\nmodule = /m.so\ntoken_label = edge\npin = 1" SECRET_MARK},
     .line = L_TLS_HDR, .key = "[tls] client_key",
     .fragment = "required key missing (or put the device key on the token: [pkcs11] key_label)"},

    /* the provisioning file itself */
    {.name = "inline secret in a group-readable file (0640)", .mode = 0640,
     .at = {[S_AUTH] = "mode = sas\nsas_token = sv=1&sig=INLINE" SECRET_MARK}, .rc = EC_ERR_PERM,
     .line = 0, .key = "",
     .fragment = "holds secrets but is readable by group or others (mode 0640); chmod 600 or move "
                 "them to *_file keys"},
    {.name = "inline secret in a world-readable file (0604)", .mode = 0604,
     .at = {[S_LOGGING] = "audit_hmac_key = HMAC" SECRET_MARK}, .rc = EC_ERR_PERM,
     .line = 0, .key = "", .fragment = "holds secrets but is readable by group or others (mode 0604)"},
    {.name = "group-writable file (0660)", .mode = 0660, .rc = EC_ERR_PERM,
     .line = 0, .key = "", .fragment = "is writable by group or others (mode 0660); chmod go-w"},
    {.name = "world-writable file (0602)", .mode = 0602, .rc = EC_ERR_PERM,
     .line = 0, .key = "", .fragment = "is writable by group or others (mode 0602)"},
    {.name = "file owned by another user", .other_owner = true, .rc = EC_ERR_PERM,
     .line = 0, .key = "", .fragment = "is owned by uid 65534, not by the running user (uid 0)"},
};
/* clang-format on */

#define N_CASES (sizeof cases / sizeof cases[0])

static void run_reject_case(void **state)
{
    const reject_case *c = *state;
    bool needs_root = c->other_owner ||
                      (c->at[S_SPEECH] != NULL && strstr(c->at[S_SPEECH], "@DIR/theirs") != NULL);
    if (needs_root && geteuid() != 0) {
        print_message("needs root to chown a file to uid %d\n", OTHER_UID);
        skip();
    }

    size_t len;
    char *text = render(c->at, c->drop, "\n", &len);
    if (c->nul != '\0') {
        for (size_t i = 0; i < len; i++)
            text[i] = text[i] == c->nul ? '\0' : text[i];
    }
    char *path = write_bytes(g_dir, "edgecap.conf", c->mode != 0 ? c->mode : 0600, text, len);
    if (c->other_owner)
        assert_int_equal(chown(path, OTHER_UID, OTHER_UID), 0);

    char *creds = ts_strf("%s/creds", g_dir);
    if (c->no_credentials)
        unsetenv("CREDENTIALS_DIRECTORY");
    else
        setenv("CREDENTIALS_DIRECTORY", creds, 1);
    free(creds);
    size_t live_before = live_secure_allocations();
    ec_config cfg;
    ec_config_error err;
    alarm(10); /* a FIFO must be refused, not waited on */
    ec_status rc = ec_config_load(&cfg, path, &err);
    alarm(0);
    char msg[1024];
    ec_config_error_format(&err, msg, sizeof msg);

    ec_status want = c->rc != EC_OK ? c->rc : EC_ERR_CONFIG;
    char *fragment = NULL;
    size_t fragment_len = 0;
    FILE *ff = open_memstream(&fragment, &fragment_len);
    assert_non_null(ff);
    put_expanded(ff, c->fragment);
    fclose(ff);
    if (rc != want || err.line != c->line || strcmp(err.key, c->key) != 0 ||
        strstr(err.message, fragment) == NULL) {
        fail_msg("%s: want rc %d, line %u, key \"%s\", \"%s\"\n  got rc %d: %s", c->name, want,
                 c->line, c->key, fragment, rc, msg);
    }
    free(fragment);

    /* The formatted error: FILE[:LINE]: [KEY: ]MESSAGE */
    char *prefix = c->line > 0 ? ts_strf("%s:%u: ", path, c->line) : ts_strf("%s: ", path);
    char *full = c->key[0] != '\0' ? ts_strf("%s%s: %s", prefix, c->key, err.message)
                                   : ts_strf("%s%s", prefix, err.message);
    assert_string_equal(msg, full);
    assert_string_equal(err.file, path);
    if (strstr(msg, SECRET_MARK) != NULL)
        fail_msg("%s: the error quotes a secret: %s", c->name, msg);

    /* Refused means empty: nothing kept, no secure memory left behind. */
    assert_config_empty(&cfg);
    assert_int_equal(live_secure_allocations(), live_before);

    free(prefix);
    free(full);
    free(path);
    free(text);
}

/* ---- accepted files ------------------------------------------------------- */

/* Loads a rendered variant of the base (mode 0600) and asserts it is valid. */
static void load_ok(ec_config *cfg, const char *const at[N_SLOTS],
                    const char *const drop[MAX_DROPS], const char *eol)
{
    size_t len;
    char *text = render(at, drop, eol, &len);
    char *path = write_bytes(g_dir, "ok.conf", 0600, text, len);
    ec_config_error err;
    ec_status rc = ec_config_load(cfg, path, &err);
    if (rc != EC_OK) {
        char msg[1024];
        ec_config_error_format(&err, msg, sizeof msg);
        fail_msg("expected a valid file, got rc %d: %s\n%s", rc, msg, text);
    }
    free(path);
    free(text);
}

static void test_base_is_valid(void **state)
{
    (void)state;
    ec_config cfg;
    load_ok(&cfg, NULL, NULL, "\n");
    assert_string_equal(cfg.device.id, "dev-1");
    assert_false(cfg.device.require_mlock);
    assert_string_equal(cfg.upload.endpoint, "https://acct.blob.core.windows.net");
    assert_string_equal(cfg.upload.container, "audio");
    assert_string_equal(cfg.tls.pin_current, PIN_A);
    assert_int_equal(cfg.auth.mode, EC_AUTH_ENTRA);
    assert_string_equal(cfg.auth.tenant_id, "00000000-0000-0000-0000-000000000000");
    assert_int_equal(cfg.capture.rate_hz, 16000); /* untouched keys keep defaults */
    assert_true(strstr(cfg.source_path, "ok.conf") != NULL);
    static const uint8_t zero[32];
    assert_memory_not_equal(cfg.sha256, zero, sizeof zero);
    ec_config_free(&cfg);
}

/* A token key store holding the device key: no [tls] client_key. */
static void test_accepts_pkcs11(void **state)
{
    (void)state;
    ec_config cfg;
    const char *at[N_SLOTS] = {
        [S_DEVICE] = "keystore = pkcs11",
        [S_TAIL] = "[pkcs11]\nmodule = /usr/lib/softhsm/libsofthsm2.so\n"
                   "token_label = edgecap token 1\npin_file = @DIR/sas\nkey_label = dev key",
    };
    const char *drop[MAX_DROPS] = {"client_key"};
    load_ok(&cfg, at, drop, "\n");
    assert_int_equal(cfg.device.keystore, EC_KEYSTORE_PKCS11);
    assert_string_equal(cfg.pkcs11.module, "/usr/lib/softhsm/libsofthsm2.so");
    assert_string_equal(cfg.pkcs11.token_label, "edgecap token 1");
    assert_string_equal(cfg.pkcs11.kek_label, "edgecap-kek");
    assert_string_equal(cfg.pkcs11.key_label, "dev key");
    assert_string_equal(cfg.tls.client_key, "");
    assert_non_null(cfg.pkcs11.pin);
    assert_true(ec_secret_len(cfg.pkcs11.pin) > 0);
    ec_config_free(&cfg);
    assert_null(cfg.pkcs11.pin);
}

/* CRLF line ends, inline comments, a BOM, a 0644 file without secrets. */
static void test_accepts_crlf_comments_bom(void **state)
{
    (void)state;
    ec_config cfg;
    const char *at[N_SLOTS] = {
        [S_HEAD] = "\xEF\xBB\xBF; leading BOM",
        [S_DEVICE] = "keystore = pkcs11 ; inline comment",
        [S_CAPTURE] = "# hash comment\nrate_hz = 48000",
        [S_ENCODER] = "vbr = constrained",
        [S_TAIL] = "[pkcs11]\nmodule = /usr/lib/softhsm/libsofthsm2.so\ntoken_label = edge\n"
                   "pin = 12" SECRET_MARK,
    };
    load_ok(&cfg, at, NULL, "\r\n");
    assert_int_equal(cfg.device.keystore, EC_KEYSTORE_PKCS11);
    assert_int_equal(cfg.capture.rate_hz, 48000);
    assert_int_equal(cfg.encoder.vbr, EC_VBR_CONSTRAINED);
    assert_string_equal(cfg.device.id, "dev-1"); /* no \r kept */
    ec_config_free(&cfg);

    size_t len;
    char *text = render(NULL, NULL, "\n", &len);
    char *path = write_bytes(g_dir, "readable.conf", 0644, text, len);
    ec_config_error err;
    assert_int_equal(ec_config_load(&cfg, path, &err), EC_OK);
    ec_config_free(&cfg);
    free(path);
    free(text);
}

static void test_line_length_boundary(void **state)
{
    (void)state;
    /* "keystore_dir = /" is 16 characters; pad the path to the limit. */
    char line[256];
    int n = snprintf(line, sizeof line, "keystore_dir = /");
    while (n < 198)
        line[n++] = 'k';
    line[n] = '\0';
    const char *at[N_SLOTS] = {[S_DEVICE] = line};
    ec_config cfg;
    load_ok(&cfg, at, NULL, "\n");
    assert_int_equal(strlen(cfg.device.keystore_dir), 198 - 15);
    ec_config_free(&cfg);

    strcat(line, "k"); /* 199 */
    size_t len;
    char *text = render(at, NULL, "\n", &len);
    char *path = write_bytes(g_dir, "long.conf", 0600, text, len);
    ec_config_error err;
    assert_int_equal(ec_config_load(&cfg, path, &err), EC_ERR_CONFIG);
    assert_int_equal(err.line, L_DEVICE);
    assert_string_equal(err.key, "[device] keystore_dir");
    free(path);
    free(text);
}

static const char *srcdir(void)
{
    const char *d = getenv("EC_SRCDIR");
    return d != NULL && d[0] != '\0' ? d : ".";
}

static char *example_path(void)
{
    return ts_strf("%s/config/edgecap.conf.example", srcdir());
}

static char *read_example(void);

static void test_example_validates(void **state)
{
    (void)state;
    char *path = example_path();
    ec_config cfg;
    ec_config_error err;
    ec_status rc = ec_config_load(&cfg, path, &err);
    if (rc == EC_ERR_PERM) {
        /* A checkout owned by another user (or group-writable): what is
         * under test here is the content, so validate a private copy. */
        print_message("%s: %s; validating a 0600 copy\n", path, err.message);
        char *text = read_example();
        char *copy = ts_write_file(g_dir, "example.conf", 0600, text);
        assert_non_null(copy);
        rc = ec_config_load(&cfg, copy, &err);
        free(copy);
        free(text);
    }
    if (rc != EC_OK) {
        char msg[1024];
        ec_config_error_format(&err, msg, sizeof msg);
        fail_msg("%s", msg);
    }
    assert_string_equal(cfg.device.id, "edge-0001");
    assert_false(cfg.device.require_mlock);
    assert_int_equal(cfg.device.n_tags, 2);
    assert_int_equal(cfg.tls.n_allowed_hosts, 4);
    assert_int_equal(cfg.auth.mode, EC_AUTH_ENTRA);
    assert_string_equal(cfg.upload.container, "audio");
    ec_config_free(&cfg);
    free(path);
}

static void test_lists_repeat_and_append(void **state)
{
    (void)state;
    ec_config cfg;
    const char *at[N_SLOTS] = {
        [S_DEVICE] = "tags = site=plant-7, line=packaging\ntags = shift=night",
    };
    load_ok(&cfg, at, NULL, "\n");
    assert_int_equal(cfg.device.n_tags, 3);
    assert_string_equal(cfg.device.tags[0], "site=plant-7");
    assert_string_equal(cfg.device.tags[1], "line=packaging");
    assert_string_equal(cfg.device.tags[2], "shift=night");
    /* the base gives allowed_hosts on two lines of two */
    assert_int_equal(cfg.tls.n_allowed_hosts, 4);
    assert_string_equal(cfg.tls.allowed_hosts[0], "acct.blob.core.windows.net");
    assert_string_equal(cfg.tls.allowed_hosts[1], "*.cognitiveservices.azure.com");
    assert_string_equal(cfg.tls.allowed_hosts[2], "login.microsoftonline.com");
    assert_string_equal(cfg.tls.allowed_hosts[3], "proxy.example.net");
    ec_config_free(&cfg);

    /* exactly the caps are accepted */
    const char *full[N_SLOTS] = {
        [S_DEVICE] = "tags = a=1,b=2,c=3,d=4,e=5\ntags = f=6,g=7,h=8,i=9,j=10",
        [S_TLS] = "allowed_hosts = h1.example.com, h2.example.com, h3.example.com, "
                  "h4.example.com, h5.example.com, h6.example.com\n"
                  "allowed_hosts = h7.example.com, h8.example.com, h9.example.com, "
                  "h10.example.com, h11.example.com, h12.example.com",
    };
    load_ok(&cfg, full, NULL, "\n");
    assert_int_equal(cfg.device.n_tags, EC_CFG_TAGS_MAX);
    assert_int_equal(cfg.tls.n_allowed_hosts, EC_CFG_HOSTS_MAX);
    ec_config_free(&cfg);
}

static void test_consent_accepted(void **state)
{
    (void)state;
    ec_config cfg;
    const char *at[N_SLOTS] = {
        [S_CONSENT] = "required = on\nswitch = /sys/class/gpio/gpio17/value\n"
                      "window = mon-fri 08:00-17:30, sat 09:00-12:00\nwindow = FRI 22:00-06:00\n"
                      "window = daily 00:00-24:00",
    };
    load_ok(&cfg, at, NULL, "\n");
    assert_true(cfg.consent.required);
    assert_string_equal(cfg.consent.switch_path, "/sys/class/gpio/gpio17/value");
    assert_int_equal(cfg.consent.n_windows, 4);
    assert_string_equal(cfg.consent.windows[0], "mon-fri 08:00-17:30");
    assert_string_equal(cfg.consent.windows[1], "sat 09:00-12:00");
    assert_string_equal(cfg.consent.windows[2], "FRI 22:00-06:00");
    assert_string_equal(cfg.consent.windows[3], "daily 00:00-24:00");
    ec_config_free(&cfg);

    /* the older name still works on its own */
    const char *older[N_SLOTS] = {[S_CONSENT] = "required = on\nstate_file = /run/consent"};
    load_ok(&cfg, older, NULL, "\n");
    assert_string_equal(cfg.consent.state_file, "/run/consent");
    assert_string_equal(cfg.consent.switch_path, "");
    assert_int_equal(cfg.consent.n_windows, 0);
    ec_config_free(&cfg);
}

static void test_wildcard_is_one_label(void **state)
{
    (void)state;
    ec_config cfg;
    ec_config_init(&cfg);
    strcpy(cfg.tls.allowed_hosts[0], "*.blob.core.windows.net");
    strcpy(cfg.tls.allowed_hosts[1], "login.microsoftonline.com");
    cfg.tls.n_allowed_hosts = 2;

    assert_true(ec_config_host_allowed(&cfg, "acct.blob.core.windows.net"));
    assert_true(ec_config_host_allowed(&cfg, "x.blob.core.windows.net"));
    assert_false(ec_config_host_allowed(&cfg, "blob.core.windows.net"));
    assert_false(ec_config_host_allowed(&cfg, "a.b.blob.core.windows.net"));
    assert_false(ec_config_host_allowed(&cfg, ".blob.core.windows.net"));
    assert_false(ec_config_host_allowed(&cfg, "acctblob.core.windows.net"));
    assert_false(ec_config_host_allowed(&cfg, "acct.blob.core.windows.net.evil.com"));
    assert_false(ec_config_host_allowed(&cfg, "acct.blob.core.windows.com"));
    /* an exact name is not a suffix pattern */
    assert_true(ec_config_host_allowed(&cfg, "login.microsoftonline.com"));
    assert_false(ec_config_host_allowed(&cfg, "a.login.microsoftonline.com"));
    assert_false(ec_config_host_allowed(&cfg, "xlogin.microsoftonline.com"));
    assert_false(ec_config_host_allowed(&cfg, "login.microsoftonline.co"));
    assert_false(ec_config_host_allowed(&cfg, "microsoftonline.com"));
    assert_false(ec_config_host_allowed(&cfg, ""));

    cfg.tls.n_allowed_hosts = 0;
    assert_false(ec_config_host_allowed(&cfg, "acct.blob.core.windows.net"));
    ec_config_free(&cfg);
}

static void test_host_match_ignores_case(void **state)
{
    (void)state;
    ec_config cfg;
    ec_config_init(&cfg);
    strcpy(cfg.tls.allowed_hosts[0], "*.Blob.Core.Windows.Net");
    strcpy(cfg.tls.allowed_hosts[1], "LOGIN.microsoftonline.com");
    cfg.tls.n_allowed_hosts = 2;
    assert_true(ec_config_host_allowed(&cfg, "ACCT.BLOB.CORE.WINDOWS.NET"));
    assert_true(ec_config_host_allowed(&cfg, "acct.blob.core.windows.net"));
    assert_true(ec_config_host_allowed(&cfg, "login.MicrosoftOnline.COM"));
    ec_config_free(&cfg);

    /* and through a file: an upper-case endpoint against lower-case hosts */
    const char *at[N_SLOTS] = {[S_UPLOAD] =
                                   "secondary_endpoint = https://ACCT.Blob.Core.Windows.NET"};
    load_ok(&cfg, at, NULL, "\n");
    ec_config_free(&cfg);
}

/* Target speech with subscription keys from files; speech host via wildcard;
 * in key mode the authority host is not used, so it need not be listed. */
static void test_speech_target_accepted(void **state)
{
    (void)state;
    ec_config cfg;
    const char *drop[MAX_DROPS] = {"endpoint =", "container", "allowed_hosts"};
    const char *at[N_SLOTS] = {
        [S_UPLOAD] =
            "target = speech\nendpoint = https://edgecap-speech.cognitiveservices.azure.com",
        [S_TLS] = "allowed_hosts = *.cognitiveservices.azure.com",
        [S_AUTH] = "mode = key\nkey_primary_file = @DIR/sas\n"
                   "key_secondary_file = @DIR/sas2",
    };
    load_ok(&cfg, at, drop, "\n");
    assert_int_equal(cfg.upload.target, EC_TARGET_SPEECH);
    assert_int_equal(cfg.auth.mode, EC_AUTH_KEY);
    assert_non_null(cfg.auth.key_primary);
    assert_non_null(cfg.auth.key_secondary);
    assert_string_equal((const char *)ec_secret_bytes(cfg.auth.key_secondary),
                        "second-" SECRET_MARK);
    ec_config_free(&cfg);

    /* 256 characters from '!' to '~' are a key (the refusals are in the table) */
    at[S_AUTH] = "mode = key\nkey_primary_file = @DIR/keyedge";
    load_ok(&cfg, at, drop, "\n");
    assert_int_equal(ec_secret_len(cfg.auth.key_primary), 256);
    assert_int_equal(ec_secret_bytes(cfg.auth.key_primary)[0], '!');
    assert_int_equal(ec_secret_bytes(cfg.auth.key_primary)[255], '~');
    ec_config_free(&cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    ec_config cfg;
    ec_config_init(&cfg);
    assert_string_equal(cfg.device.id, "");
    assert_true(cfg.device.require_mlock);
    assert_int_equal(cfg.device.keystore, EC_KEYSTORE_FILE);
    assert_string_equal(cfg.device.keystore_dir, "/var/lib/edgecap/keys");
    assert_int_equal(cfg.device.n_tags, 0);

    assert_int_equal(cfg.capture.source, EC_SOURCE_ALSA);
    assert_string_equal(cfg.capture.device, "default");
    assert_string_equal(cfg.capture.file, "");
    assert_int_equal(cfg.capture.rate_hz, 16000);
    assert_int_equal(cfg.capture.channels, 1);
    assert_int_equal(cfg.capture.period_frames, 320);
    assert_int_equal(cfg.capture.buffer_frames, 3200);
    assert_int_equal(cfg.capture.segment_seconds, 60);
    assert_false(cfg.capture.vad);
    assert_int_equal(cfg.capture.vad_threshold_dbfs, -50);
    assert_int_equal(cfg.capture.vad_hangover_ms, 800);
    assert_int_equal(cfg.capture.queue_ms, 4000);

    assert_int_equal(cfg.encoder.bitrate_bps, 24000);
    assert_int_equal(cfg.encoder.complexity, 5);
    assert_int_equal(cfg.encoder.vbr, EC_VBR_ON);
    assert_int_equal(cfg.encoder.application, EC_APP_VOIP);
    assert_int_equal(cfg.encoder.frame_ms, 20);
    assert_int_equal(cfg.encoder.max_page_ms, 1000);

    assert_string_equal(cfg.spool.dir, "/var/lib/edgecap/spool");
    assert_int_equal(cfg.spool.quota_bytes, 268435456);
    assert_int_equal(cfg.spool.when_full, EC_WHEN_FULL_DROP_OLDEST);
    assert_int_equal(cfg.spool.max_age_hours, 168);

    assert_int_equal(cfg.upload.target, EC_TARGET_BLOB);
    assert_string_equal(cfg.upload.endpoint, "");
    assert_string_equal(cfg.upload.secondary_endpoint, "");
    assert_string_equal(cfg.upload.container, "");
    assert_string_equal(cfg.upload.prefix, "edgecap");
    assert_int_equal(cfg.upload.block_bytes, 4194304);
    assert_int_equal(cfg.upload.n_connect_to, 0);
    assert_string_equal(cfg.upload.proxy, "");
    assert_int_equal(cfg.upload.connect_timeout_ms, 10000);
    assert_int_equal(cfg.upload.low_speed_bytes_per_second, 1024);
    assert_int_equal(cfg.upload.low_speed_seconds, 30);
    assert_int_equal(cfg.upload.retry_base_ms, 1000);
    assert_int_equal(cfg.upload.retry_max_ms, 300000);
    assert_int_equal(cfg.upload.breaker_failures, 5);
    assert_int_equal(cfg.upload.breaker_cooldown_seconds, 60);
    assert_string_equal(cfg.upload.encryption_scope, "");
    assert_false(cfg.upload.index_tags);

    assert_string_equal(cfg.tls.pin_current, "");
    assert_string_equal(cfg.tls.pin_next, "");
    assert_int_equal(cfg.tls.n_allowed_hosts, 0);
    assert_int_equal(cfg.tls.min_version, EC_TLS_1_2);

    assert_int_equal(cfg.auth.mode, EC_AUTH_ENTRA);
    assert_string_equal(cfg.auth.authority_host, "https://login.microsoftonline.com");
    assert_null(cfg.auth.sas_token);
    assert_null(cfg.auth.key_primary);
    assert_null(cfg.auth.key_secondary);

    assert_false(cfg.speech.batch);
    assert_string_equal(cfg.speech.endpoint, "");
    assert_string_equal(cfg.speech.locale, "en-US");
    assert_int_equal(cfg.speech.batch_window_seconds, 3600);
    assert_int_equal(cfg.speech.batch_max_files, 100);
    assert_int_equal(cfg.speech.time_to_live_hours, 48);
    assert_false(cfg.speech.word_level_timestamps);
    assert_false(cfg.speech.diarization);
    assert_int_equal(cfg.speech.max_speakers, 2);
    assert_int_equal(cfg.speech.punctuation_mode, EC_PUNCT_DICTATED_AND_AUTOMATIC);
    assert_int_equal(cfg.speech.profanity_filter_mode, EC_PROFANITY_MASKED);
    assert_null(cfg.speech.content_sas);
    assert_false(cfg.speech.keep_transcripts);

    assert_int_equal(cfg.logging.level, 1 /* EC_LOG_INFO */);
    assert_false(cfg.logging.syslog);
    assert_false(cfg.logging.json);
    assert_string_equal(cfg.logging.audit_file, "/var/lib/edgecap/audit/audit.log");
    assert_null(cfg.logging.audit_hmac_key);
    assert_false(cfg.logging.audit_syslog);
    assert_int_equal(cfg.logging.audit_max_bytes, 0);
    assert_int_equal(cfg.logging.audit_keep, 5);
    assert_string_equal(cfg.logging.audit_syslog_socket, "/dev/log");
    assert_int_equal(cfg.logging.audit_syslog_facility, 0);
    assert_int_equal(cfg.logging.audit_syslog_format, 0);

    assert_string_equal(cfg.metrics.textfile, "");
    assert_string_equal(cfg.metrics.listen, "");
    assert_int_equal(cfg.metrics.interval_seconds, 15);

    assert_false(cfg.consent.required);
    assert_string_equal(cfg.consent.state_file, "");
    assert_string_equal(cfg.consent.switch_path, "");
    assert_int_equal(cfg.consent.n_windows, 0);
    assert_false(cfg.capture.file_realtime);
    ec_config_free(&cfg);
}

/* ---- documentation -------------------------------------------------------- */

/* One "[section] key = value" from ec_config_print. */
typedef struct {
    char section[32];
    char key[64];
    char value[600];
} printed_key;

/* Parses ec_config_print output; returns the number of keys (malloc'd array). */
static size_t parse_printed(const ec_config *cfg, printed_key **out)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ec_config_print(cfg, f);
    fclose(f);

    size_t n = 0, cap = 128;
    printed_key *keys = calloc(cap, sizeof *keys);
    char section[32] = "";
    for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '[') {
            assert_int_equal(sscanf(line, "[%31[^]]]", section), 1);
            continue;
        }
        const char *eq = strstr(line, " = ");
        assert_non_null(eq);
        assert_true(n < cap);
        snprintf(keys[n].section, sizeof keys[n].section, "%s", section);
        snprintf(keys[n].key, sizeof keys[n].key, "%.*s", (int)(eq - line), line);
        snprintf(keys[n].value, sizeof keys[n].value, "%s", eq + 3);
        n++;
    }
    free(buf);
    *out = keys;
    return n;
}

static bool is_secret_value(const char *v)
{
    return strcmp(v, "***") == 0 || strcmp(v, "(unset)") == 0;
}

/* The example, as lines; each line's section is tracked by the caller. */
static char *read_example(void)
{
    char *path = example_path();
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, f);
    assert_true(n > 0 && n < 65535);
    fclose(f);
    free(path);
    return text;
}

/*
 * Calls `fn` for every "key = value" line of the example, commented (";key =")
 * or not, with its section. Prose comments ("; text") are skipped.
 */
typedef void (*example_key_fn)(const char *section, const char *key, const char *value,
                               bool commented, void *ctx);

static void each_example_key(example_key_fn fn, void *ctx)
{
    char *text = read_example();
    char section[32] = "";
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '[') {
            assert_int_equal(sscanf(line, "[%31[^]]]", section), 1);
            continue;
        }
        bool commented = line[0] == ';';
        const char *p = commented ? line + 1 : line;
        size_t k = 0;
        while ((p[k] >= 'a' && p[k] <= 'z') || p[k] == '_' || (p[k] >= '0' && p[k] <= '9'))
            k++;
        if (k == 0)
            continue;
        const char *q = p + k;
        while (*q == ' ')
            q++;
        if (*q != '=')
            continue;
        q++;
        while (*q == ' ')
            q++;
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)k, p);
        fn(section, key, q, commented, ctx);
    }
    free(text);
}

typedef struct {
    const char *section;
    const char *key;
    bool found;
} find_ctx;

static void find_key(const char *section, const char *key, const char *value, bool commented,
                     void *ctx)
{
    (void)value;
    (void)commented;
    find_ctx *f = ctx;
    if (strcmp(section, f->section) == 0 && strcmp(key, f->key) == 0)
        f->found = true;
}

static bool example_documents(const char *section, const char *key)
{
    find_ctx f = {.section = section, .key = key};
    each_example_key(find_key, &f);
    return f.found;
}

/* Every key ec_config_print knows (and every secret's _file form) has a
 * "key =" line, commented or not, in its section of the example. */
static void test_every_key_documented(void **state)
{
    (void)state;
    ec_config cfg;
    ec_config_init(&cfg);
    printed_key *keys;
    size_t n = parse_printed(&cfg, &keys);
    assert_true(n > 80);
    int missing = 0;
    for (size_t i = 0; i < n; i++) {
        if (!example_documents(keys[i].section, keys[i].key)) {
            print_error("not documented: [%s] %s\n", keys[i].section, keys[i].key);
            missing++;
        }
        if (is_secret_value(keys[i].value)) {
            char file_key[80];
            snprintf(file_key, sizeof file_key, "%s_file", keys[i].key);
            if (!example_documents(keys[i].section, file_key)) {
                print_error("not documented: [%s] %s\n", keys[i].section, file_key);
                missing++;
            }
            snprintf(file_key, sizeof file_key, "%s_credential", keys[i].key);
            if (!example_documents(keys[i].section, file_key)) {
                print_error("not documented: [%s] %s\n", keys[i].section, file_key);
                missing++;
            }
        }
    }
    assert_int_equal(missing, 0);
    free(keys);
    ec_config_free(&cfg);
}

typedef struct {
    printed_key *keys;
    size_t n;
    int bad;
} doc_ctx;

/* A documented key must exist; a commented-out one shows its default. */
static void check_documented(const char *section, const char *key, const char *value,
                             bool commented, void *ctx)
{
    doc_ctx *d = ctx;
    for (size_t i = 0; i < d->n; i++) {
        const printed_key *p = &d->keys[i];
        if (strcmp(p->section, section) != 0)
            continue;
        if (strcmp(p->key, key) == 0) {
            /* Commented keys with a default must show it; secrets and keys
             * without a default ("Default: none") show an example instead. */
            if (commented && !is_secret_value(p->value) && p->value[0] != '\0' &&
                strcmp(p->value, value) != 0) {
                print_error("example shows [%s] %s = %s, default is %s\n", section, key, value,
                            p->value);
                d->bad++;
            }
            return;
        }
        if (is_secret_value(p->value) && strncmp(key, p->key, strlen(p->key)) == 0 &&
            (strcmp(key + strlen(p->key), "_file") == 0 ||
             strcmp(key + strlen(p->key), "_credential") == 0))
            return;
    }
    print_error("example documents [%s] %s, which is not a key\n", section, key);
    d->bad++;
}

static void test_example_shows_real_keys_and_defaults(void **state)
{
    (void)state;
    ec_config cfg;
    ec_config_init(&cfg);
    doc_ctx d = {0};
    d.n = parse_printed(&cfg, &d.keys);
    each_example_key(check_documented, &d);
    assert_int_equal(d.bad, 0);
    free(d.keys);
    ec_config_free(&cfg);
}

/* ---- secrets -------------------------------------------------------------- */

static void test_secret_file_read_and_trimmed(void **state)
{
    (void)state;
    ec_config cfg;
    const char *at[N_SLOTS] = {
        [S_AUTH] = "mode = sas\nsas_token_file = @DIR/sas",
        [S_LOGGING] = "audit_hmac_key_file = @DIR/hmac",
    };
    load_ok(&cfg, at, NULL, "\n");
    assert_non_null(cfg.auth.sas_token);
    assert_int_equal(ec_secret_len(cfg.auth.sas_token), strlen("sv=2025&sig=FILE" SECRET_MARK));
    assert_string_equal((const char *)ec_secret_bytes(cfg.auth.sas_token),
                        "sv=2025&sig=FILE" SECRET_MARK);
    assert_true(ec_secmem_size(cfg.auth.sas_token) > 0); /* held in secure memory */
    /* CRLF and trailing blanks go too; inner bytes stay */
    assert_string_equal((const char *)ec_secret_bytes(cfg.logging.audit_hmac_key),
                        "hmac key " SECRET_MARK);
    ec_config_free(&cfg);
    assert_null(cfg.auth.sas_token);
}

static void test_inline_secret_read(void **state)
{
    (void)state;
    ec_config cfg;
    const char *at[N_SLOTS] = {
        [S_AUTH] = "mode = sas\nsas_token = sv=2025&sig=INLINE" SECRET_MARK,
        [S_SPEECH] = "content_sas = sp=r&sig=CONTENT" SECRET_MARK,
    };
    load_ok(&cfg, at, NULL, "\n");
    assert_int_equal(cfg.auth.mode, EC_AUTH_SAS);
    assert_string_equal((const char *)ec_secret_bytes(cfg.auth.sas_token),
                        "sv=2025&sig=INLINE" SECRET_MARK);
    assert_true(ec_secmem_size(cfg.speech.content_sas) > 0);
    ec_config_free(&cfg);
}

static void test_credential_read(void **state)
{
    (void)state;
    char *creds = ts_strf("%s/creds", g_dir);
    setenv("CREDENTIALS_DIRECTORY", creds, 1);
    ec_config cfg;
    const char *at[N_SLOTS] = {
        [S_AUTH] = "mode = sas\nsas_token_credential = sas",
        [S_LOGGING] = "audit_hmac_key_credential = hmac",
    };
    load_ok(&cfg, at, NULL, "\n");
    assert_string_equal((const char *)ec_secret_bytes(cfg.auth.sas_token),
                        "sv=2025&sig=CRED" SECRET_MARK);
    assert_true(ec_secmem_size(cfg.auth.sas_token) > 0); /* held in secure memory */
    assert_string_equal((const char *)ec_secret_bytes(cfg.logging.audit_hmac_key),
                        "cred hmac " SECRET_MARK);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ec_config_print(&cfg, f);
    fclose(f);
    assert_null(strstr(buf, SECRET_MARK));
    assert_non_null(strstr(buf, "\nsas_token = ***\n"));
    free(buf);
    ec_config_free(&cfg);
    unsetenv("CREDENTIALS_DIRECTORY");
    free(creds);
}

/* For `edgecap reload` outside the unit: names checked, contents not read. */
static void test_credentials_unread(void **state)
{
    (void)state;
    unsetenv("CREDENTIALS_DIRECTORY");
    size_t len;
    const char *at[N_SLOTS] = {[S_AUTH] = "mode = sas\nsas_token_credential = edgecap.sas-token"};
    char *text = render(at, NULL, "\n", &len);
    char *path = write_bytes(g_dir, "unread.conf", 0600, text, len);
    ec_config cfg;
    ec_config_error err;
    assert_int_equal(ec_config_load_credentials_unread(&cfg, path, &err), EC_OK);
    assert_null(cfg.auth.sas_token);
    ec_config_free(&cfg);
    assert_int_equal(ec_config_load(&cfg, path, &err), EC_ERR_CONFIG); /* the daemon reads it */
    free(text);
    free(path);
    const char *bad[N_SLOTS] = {[S_AUTH] = "mode = sas\nsas_token_credential = ../sas"};
    text = render(bad, NULL, "\n", &len);
    path = write_bytes(g_dir, "unread.conf", 0600, text, len);
    assert_int_equal(ec_config_load_credentials_unread(&cfg, path, &err), EC_ERR_CONFIG);
    assert_int_equal(err.line, L_AUTH + 1);
    assert_string_equal(err.key, "[auth] sas_token_credential");
    assert_non_null(strstr(err.message, "expected a credential name"));
    free(text);
    free(path);
}

static void test_print_redacts_secrets(void **state)
{
    (void)state;
    ec_config cfg;
    const char *at[N_SLOTS] = {
        [S_AUTH] = "mode = sas\nsas_token = sv=2025&sig=INLINE" SECRET_MARK,
        [S_SPEECH] = "content_sas_file = @DIR/sas",
        [S_LOGGING] = "audit_hmac_key = HMAC" SECRET_MARK,
    };
    load_ok(&cfg, at, NULL, "\n");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ec_config_print(&cfg, f);
    fclose(f);
    assert_null(strstr(buf, SECRET_MARK));
    assert_null(strstr(buf, "sig="));
    assert_non_null(strstr(buf, "\nsas_token = ***\n"));
    assert_non_null(strstr(buf, "\ncontent_sas = ***\n"));
    assert_non_null(strstr(buf, "\naudit_hmac_key = ***\n"));
    assert_non_null(strstr(buf, "\nkey_primary = (unset)\n"));
    /* and ordinary values are shown */
    assert_non_null(strstr(buf, "[device]\nid = dev-1\n"));
    assert_non_null(strstr(buf, "\nallowed_hosts = acct.blob.core.windows.net, "
                                "*.cognitiveservices.azure.com, login.microsoftonline.com, "
                                "proxy.example.net\n"));
    free(buf);
    ec_config_free(&cfg);
}

/* Secrets loaded before a later error are wiped with everything else. */
static void test_failed_load_keeps_no_secret(void **state)
{
    (void)state;
    const char *at[N_SLOTS] = {
        [S_AUTH] = "mode = sas\nsas_token_file = @DIR/sas",
        [S_SPEECH] = "content_sas = sp=r&sig=CONTENT" SECRET_MARK,
        [S_CONSENT] = "required = maybe",
    };
    size_t len;
    char *text = render(at, NULL, "\n", &len);
    char *path = write_bytes(g_dir, "late.conf", 0600, text, len);
    size_t before = live_secure_allocations();
    ec_config cfg;
    ec_config_error err;
    assert_int_equal(ec_config_load(&cfg, path, &err), EC_ERR_CONFIG);
    assert_int_equal(err.line, L_CONSENT + 1); /* [auth] got two lines */
    assert_string_equal(err.key, "[consent] required");
    assert_config_empty(&cfg);
    assert_int_equal(live_secure_allocations(), before);
    ec_config_free(&cfg); /* freeing a refused config is safe */
    free(path);
    free(text);
}

/* Fail each secure allocation a load makes, one at a time: every failure is
 * a clean refusal that names the problem and leaks nothing. */
static void test_secure_memory_exhaustion(void **state)
{
    (void)state;
    const char *at[N_SLOTS] = {
        [S_AUTH] = "mode = sas\nsas_token_file = @DIR/sas",
        [S_SPEECH] = "content_sas = sp=r&sig=CONTENT" SECRET_MARK,
    };
    size_t len;
    char *text = render(at, NULL, "\n", &len);
    char *path = write_bytes(g_dir, "nomem.conf", 0600, text, len);
    size_t before = live_secure_allocations();
    unsigned failures = 0;
    for (unsigned skip_n = 0; skip_n < 20; skip_n++) {
        ec_fault_reset();
        ec_fault_arm("secmem.mmap", skip_n, 1);
        ec_config cfg;
        ec_config_error err;
        ec_status rc = ec_config_load(&cfg, path, &err);
        ec_fault_reset();
        if (rc == EC_OK) {
            ec_config_free(&cfg);
            break;
        }
        failures++;
        assert_int_equal(rc, EC_ERR_NOMEM);
        assert_non_null(strstr(err.message, "no secure memory"));
        assert_config_empty(&cfg);
        assert_int_equal(live_secure_allocations(), before);
    }
    /* the file, the file secret (read, then kept) and the inline secret */
    assert_true(failures >= 4);
    assert_true(failures < 20);
    free(path);
    free(text);
}

/* ---- the file itself ------------------------------------------------------ */

static void test_missing_file(void **state)
{
    (void)state;
    char *path = ts_strf("%s/does-not-exist.conf", g_dir);
    ec_config cfg;
    ec_config_error err;
    assert_int_equal(ec_config_load(&cfg, path, &err), EC_ERR_NOT_FOUND);
    assert_int_equal(err.line, 0);
    assert_string_equal(err.key, "");
    char *want = ts_strf("%s: cannot open %s: No such file or directory", path, path);
    char msg[1024];
    ec_config_error_format(&err, msg, sizeof msg);
    assert_string_equal(msg, want);
    assert_config_empty(&cfg);
    free(want);
    free(path);
}

static void test_directory_is_refused(void **state)
{
    (void)state;
    ec_config cfg;
    ec_config_error err;
    assert_int_equal(ec_config_load(&cfg, g_dir, &err), EC_ERR_IO);
    assert_non_null(strstr(err.message, "is not a regular file"));
    assert_config_empty(&cfg);
}

static void test_error_format(void **state)
{
    (void)state;
    ec_config_error err = {
        .file = "/etc/edgecap.conf", .line = 7, .key = "[tls] pin_next", .message = "bad"};
    char out[128];
    ec_config_error_format(&err, out, sizeof out);
    assert_string_equal(out, "/etc/edgecap.conf:7: [tls] pin_next: bad");
    err.line = 0;
    ec_config_error_format(&err, out, sizeof out);
    assert_string_equal(out, "/etc/edgecap.conf: [tls] pin_next: bad");
    err.key[0] = '\0';
    ec_config_error_format(&err, out, sizeof out);
    assert_string_equal(out, "/etc/edgecap.conf: bad");
    char small[8];
    ec_config_error_format(&err, small, sizeof small);
    assert_string_equal(small, "/etc/ed"); /* truncated, terminated */
}

/* ---- fixture -------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    g_dir = ts_mkdtemp();
    if (g_dir == NULL)
        return -1;
    char *p[] = {
        ts_write_file(g_dir, "sas", 0600, "sv=2025&sig=FILE" SECRET_MARK "\n"),
        ts_write_file(g_dir, "sas2", 0600, "second-" SECRET_MARK),
        ts_write_file(g_dir, "hmac", 0600, "hmac key " SECRET_MARK " \r\n"),
        ts_write_file(g_dir, "loose", 0644, "LOOSE" SECRET_MARK "\n"),
        ts_write_file(g_dir, "gw", 0620, "GW" SECRET_MARK "\n"),
        ts_write_file(g_dir, "empty", 0600, " \n"),
        ts_write_file(g_dir, "theirs", 0600, "THEIRS" SECRET_MARK "\n"),
        ts_write_file(g_dir, "keytwo", 0600, "NEWKEY" SECRET_MARK "\nOLDKEY" SECRET_MARK "\n"),
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        if (p[i] == NULL)
            rc = -1;
        free(p[i]);
    }
    free(write_bytes(g_dir, "nultext", 0600, "ab\0cd", 5));
    static char long_key[258];
    memset(long_key, 'k', sizeof long_key - 1);
    free(write_bytes(g_dir, "keylong", 0600, long_key, sizeof long_key - 1));
    /* the longest key accepted, with both ends of visible ASCII in it */
    static char edge_key[256];
    memset(edge_key, 'k', sizeof edge_key);
    edge_key[0] = '!';
    edge_key[sizeof edge_key - 1] = '~';
    free(write_bytes(g_dir, "keyedge", 0600, edge_key, sizeof edge_key));
    /* a credentials directory as systemd makes it (0400 files) */
    char *creds = ts_strf("%s/creds", g_dir);
    if (mkdir(creds, 0700) != 0)
        rc = -1;
    static char big[16 * 1024 + 2];
    memset(big, 'b', sizeof big - 1);
    char *q[] = {
        ts_write_file(creds, "sas", 0400, "sv=2025&sig=CRED" SECRET_MARK "\n"),
        ts_write_file(creds, "hmac", 0400, "cred hmac " SECRET_MARK),
        ts_write_file(creds, "empty", 0400, "\n"),
        ts_write_file(creds, "gw", 0620, "GW" SECRET_MARK),
        ts_write_file(creds, "big", 0400, big),
        ts_write_file(creds, "keyutf", 0400, "caf\xc3\xa9" SECRET_MARK),
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        if (q[i] == NULL)
            rc = -1;
        free(q[i]);
    }
    free(write_bytes(creds, "nultext", 0400, "ab\0cd", 5));
    char *cfifo = ts_strf("%s/fifo", creds), *clink = ts_strf("%s/link", creds);
    char *ctarget = ts_strf("%s/sas", creds);
    if (mkfifo(cfifo, 0400) != 0 || symlink(ctarget, clink) != 0)
        rc = -1;
    free(cfifo);
    free(clink);
    free(ctarget);
    free(creds);
    char *theirs = ts_strf("%s/theirs", g_dir);
    if (geteuid() == 0 && chown(theirs, OTHER_UID, OTHER_UID) != 0)
        rc = -1;
    free(theirs);
    char *fifo = ts_strf("%s/fifo", g_dir);
    if (mkfifo(fifo, 0600) != 0)
        rc = -1;
    free(fifo);
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_rmtree(g_dir);
    free(g_dir);
    g_dir = NULL;
    return 0;
}

int main(void)
{
    ec_secmem_init(false);
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_base_is_valid),
        cmocka_unit_test(test_accepts_crlf_comments_bom),
        cmocka_unit_test(test_accepts_pkcs11),
        cmocka_unit_test(test_line_length_boundary),
        cmocka_unit_test(test_example_validates),
        cmocka_unit_test(test_lists_repeat_and_append),
        cmocka_unit_test(test_consent_accepted),
        cmocka_unit_test(test_wildcard_is_one_label),
        cmocka_unit_test(test_host_match_ignores_case),
        cmocka_unit_test(test_speech_target_accepted),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key_documented),
        cmocka_unit_test(test_example_shows_real_keys_and_defaults),
        cmocka_unit_test(test_secret_file_read_and_trimmed),
        cmocka_unit_test(test_inline_secret_read),
        cmocka_unit_test(test_credential_read),
        cmocka_unit_test(test_credentials_unread),
        cmocka_unit_test(test_print_redacts_secrets),
        cmocka_unit_test(test_failed_load_keeps_no_secret),
        cmocka_unit_test(test_secure_memory_exhaustion),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_directory_is_refused),
        cmocka_unit_test(test_error_format),
    };
    const size_t n_fixed = sizeof fixed / sizeof fixed[0];

    /* One cmocka test per table row, so each row reports by name. */
    struct CMUnitTest *tests = calloc(n_fixed + N_CASES, sizeof *tests);
    char **names = calloc(N_CASES, sizeof *names);
    if (tests == NULL || names == NULL)
        return 1;
    memcpy(tests, fixed, sizeof fixed);
    for (size_t i = 0; i < N_CASES; i++) {
        names[i] = ts_strf("reject: %s", cases[i].name);
        tests[n_fixed + i] = (struct CMUnitTest){
            .name = names[i], .test_func = run_reject_case, .initial_state = &cases[i]};
    }
    int rc =
        _cmocka_run_group_tests("config", tests, n_fixed + N_CASES, group_setup, group_teardown);
    for (size_t i = 0; i < N_CASES; i++)
        free(names[i]);
    free(names);
    free(tests);
    return rc;
}
