/*
 * The edgecap command line: `edgecap <command> [options]`. Each command has
 * --help and returns a sysexits(3) code. The process hardens itself (not
 * dumpable, no core files) before it reads anything that could hold a secret.
 */
#include <alsa/asoundlib.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <mbedtls/version.h>
#include <opus.h>
#include <opusenc.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <syslog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "edgecap/audio.h"
#include "edgecap/audit.h"
#include "edgecap/auth.h"
#include "edgecap/capture.h"
#include "edgecap/consent.h"
#include "edgecap/config.h"
#include "edgecap/file.h"
#include "edgecap/json.h"
#include "edgecap/keystore.h"
#include "edgecap/log.h"
#include "edgecap/metrics.h"
#include "edgecap/metrics_http.h"
#include "edgecap/provision.h"
#include "edgecap/report.h"
#include "edgecap/retention.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/speech.h"
#include "edgecap/spool.h"
#include "edgecap/tls_reason.h"
#include "edgecap/token_key.h"
#include "edgecap/transport.h"
#include "edgecap/upload.h"
#include "edgecap/version.h"
#include "edgecap/watchdog.h"

#include <mbedtls/x509_crt.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
    const char *summary;
} command;

static int cmd_run(int argc, char **argv);
static int cmd_capture(int argc, char **argv);
static int cmd_spool(int argc, char **argv);
static int cmd_upload_once(int argc, char **argv);
static int cmd_pin(int argc, char **argv);
static int cmd_provision(int argc, char **argv);
static int cmd_speech(int argc, char **argv);
static int cmd_reload(int argc, char **argv);
static int cmd_status(int argc, char **argv);
static int cmd_audit(int argc, char **argv);
static int cmd_check_config(int argc, char **argv);
static int cmd_wipe(int argc, char **argv);
static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const command commands[] = {
    {"run", cmd_run, "run --config FILE",
     "Run the daemon with the provisioning file FILE: capture continuously into the\n"
     "encrypted spool until SIGTERM or SIGINT, then close the open segment cleanly."},
    {"capture", cmd_capture, "capture --config FILE --seconds N",
     "Capture N seconds of audio (or until the source ends) into the encrypted spool,\n"
     "print what was sealed, and exit. SIGTERM/SIGINT stop early, cleanly."},
    {"upload-once", cmd_upload_once, "upload-once --config FILE",
     "Upload every spooled segment (oldest first) and exit: 0 when the spool is empty,\n"
     "69 (EX_UNAVAILABLE) with the reason when the peer cannot be reached or refuses.\n"
     "A segment leaves the spool only when the service proved it holds our bytes."},
    {"speech", cmd_speech, "speech jobs|submit-now --config FILE",
     "jobs: list the batch transcription state (blobs waiting for a job, and each job\n"
     "with its window, sequence range, state and attempts). submit-now: submit the\n"
     "waiting blobs as a job now (through the running daemon when there is one)."},
    {"reload", cmd_reload, "reload --config FILE",
     "Ask the daemon running on FILE's spool to re-read its provisioning file\n"
     "(as SIGHUP does). A file that does not validate leaves it on the old one."},
    {"status", cmd_status, "status --config FILE [--json]",
     "Summarise FILE's device: whether the daemon runs, the spool (segments, bytes,\n"
     "oldest age, quarantine) read from the spool itself, and while the daemon runs its\n"
     "counters (upload, breakers, TLS failures, tokens, jobs) from [metrics] listen or\n"
     "textfile. --json prints one JSON object."},
    {"audit", cmd_audit, "audit verify [--config CONF] FILE...",
     "Check an audit log's hash chain (each line carries the SHA-256 of the one before)\n"
     "and, with --config naming [logging] audit_hmac_key, every line's HMAC. Rotated\n"
     "files are given oldest first (FILE.2 FILE.1 FILE): each must continue the one\n"
     "before. Exits 0 when intact, 65 (EX_DATAERR) with FILE:LINE and why at the\n"
     "first broken line."},
    {"provision", cmd_provision, "provision init|show|install-cert --config FILE",
     "init [--key-type ec-p256|rsa-3072] [--csr PATH]: create the device key pair at\n"
     "[tls] client_key (never replacing one), the key store's KEK, and a CSR for\n"
     "O=edgecap, CN=<[device] id> (default: client_key with .csr); print the key's pin.\n"
     "With [device] keystore = pkcs11 the key pair is made on the token under [pkcs11]\n"
     "key_label (never replacing a key with that label; CSR: client_cert with .csr;\n"
     "78 (EX_CONFIG) without key_label).\n"
     "show: the installed certificate (subject, issuer, serial, validity, pin), whether\n"
     "it matches the device key, and the KEK id; 65 (EX_DATAERR) when it is expired or\n"
     "for another key, 66 (EX_NOINPUT) when none is installed.\n"
     "install-cert CERT.pem: replace [tls] client_cert atomically with CERT, only if it\n"
     "holds the device key, is valid now, allows clientAuth and chains to [tls]\n"
     "client_ca_file (or ca_file); otherwise say why and leave the old one untouched."},
    {"pin", cmd_pin, "pin CERT.pem",
     "Print the sha256// pin of a certificate's public key (SubjectPublicKeyInfo), the\n"
     "form [tls] pin_current and pin_next take."},
    {"spool", cmd_spool, "spool ls|verify --config FILE",
     "ls: list the spooled segments oldest first (name, sequence, UTC start, duration,\n"
     "size, state). verify: authenticate every segment; a segment that fails moves to\n"
     "quarantine/ and the exit status is 65 (EX_DATAERR)."},
    {"wipe", cmd_wipe, "wipe --config FILE --all",
     "Decommissioning: crypto-shred every spooled segment, .part, quarantined file,\n"
     "sealed transcript and the Speech job state, then destroy the key store's KEK\n"
     "and the device's TLS private key ([tls] client_key: overwritten and removed;\n"
     "keystore = pkcs11: the KEK and the key pair under [pkcs11] key_label are\n"
     "destroyed on the token), and print what was destroyed. The certificate\n"
     "(public) is kept, and so is the audit log (it holds no secrets); the wipe is\n"
     "audited first. Refuses without --all and while edgecap runs on the spool.\n"
     "Exits 74 (EX_IOERR) when anything could not be destroyed, after destroying\n"
     "everything else it could."},
    {"check-config", cmd_check_config, "check-config FILE",
     "Validate the provisioning file FILE and print its values, secrets as ***.\n"
     "Exits 0 when valid, 78 (EX_CONFIG) with FILE:LINE, the key and what was\n"
     "expected when not, 66 (EX_NOINPUT) when FILE cannot be opened."},
    {"version", cmd_version, "version",
     "Print the versions of edgecap and of the libraries it runs on."},
    {"help", cmd_help, "help [COMMAND]", "Show the commands, or one command's help."},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_usage(FILE *out)
{
    fprintf(out, "usage: edgecap <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-28s %.*s\n", commands[i].usage, (int)strcspn(commands[i].summary, "\n"),
                commands[i].summary);
    fprintf(out, "\n'edgecap <command> --help' shows a command's options.\n");
}

static void print_command_help(const command *c, FILE *out)
{
    fprintf(out, "usage: edgecap %s\n\n%s\n", c->usage, c->summary);
}

/* Parses --help, and --config FILE / --seconds N where the command takes
 * them (non-NULL). Returns -1 to go on, or an exit code. */
static int parse_opts(const command *c, int argc, char **argv, const char **config, long *seconds)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"config", required_argument, NULL, 'c'},
        {"seconds", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "+hc:s:", opts, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'h':
            print_command_help(c, stdout);
            return EX_OK;
        case 'c':
            if (config == NULL)
                goto bad;
            *config = optarg;
            break;
        case 's':
            if (seconds == NULL)
                goto bad;
            errno = 0;
            *seconds = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || *seconds < 1 || *seconds > 86400) {
                fprintf(stderr, "edgecap %s: --seconds expects 1..86400, got '%s'\n", c->name,
                        optarg);
                return EX_USAGE;
            }
            break;
        default:
            goto bad;
        }
    }
    return -1;
bad:
    fprintf(stderr, "edgecap %s: unknown or incomplete option '%s'\n", c->name, argv[optind - 1]);
    print_command_help(c, stderr);
    return EX_USAGE;
}

static int parse_common(const command *c, int argc, char **argv, const char **config)
{
    return parse_opts(c, argc, argv, config, NULL);
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

/* Loads a config (with or without reading its systemd credentials) and
 * reports a refusal the same way for every command. */
static int load_config_for(const char *path, ec_config *cfg, bool credentials_unread)
{
    ec_config_error err;
    ec_status st = credentials_unread ? ec_config_load_credentials_unread(cfg, path, &err)
                                      : ec_config_load(cfg, path, &err);
    if (st == EC_OK)
        return EX_OK;
    char msg[EC_CFG_PATH_MAX + 512];
    ec_config_error_format(&err, msg, sizeof msg);
    fprintf(stderr, "edgecap: %s\n", msg);
    return st == EC_ERR_NOT_FOUND ? EX_NOINPUT : EX_CONFIG;
}

static int load_config(const char *path, ec_config *cfg)
{
    return load_config_for(path, cfg, false);
}

/* For commands that never use a secret (reload, spool, capture): systemd
 * credentials are the daemon's (its unit passes them), so outside a unit
 * only their names are checked. */
static int load_config_no_secrets(const char *path, ec_config *cfg)
{
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    return load_config_for(path, cfg, creds == NULL || creds[0] == '\0');
}

static int cmd_check_config(int argc, char **argv)
{
    const command *c = find_command("check-config");
    int rc = parse_common(c, argc, argv, NULL);
    if (rc >= 0)
        return rc;
    if (optind != argc - 1) {
        fprintf(stderr, "edgecap check-config: expected one FILE\n");
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    ec_config cfg;
    rc = load_config(argv[optind], &cfg);
    if (rc != EX_OK)
        return rc;
    char digest[65];
    ec_hex_encode(cfg.sha256, sizeof cfg.sha256, digest);
    printf("# %s: valid (sha256 %s)\n", argv[optind], digest);
    ec_config_print(&cfg, stdout);
    ec_config_free(&cfg);
    return EX_OK;
}

/* Commands that take --config FILE (and nothing else positional): parses
 * and checks it. Returns -1 to go on, or the exit code. */
static int parse_config_command(const char *name, int argc, char **argv, const char **path)
{
    const command *c = find_command(name);
    *path = NULL;
    int rc = parse_common(c, argc, argv, path);
    if (rc >= 0)
        return rc;
    if (*path == NULL || optind != argc) {
        fprintf(stderr, "edgecap %s: --config FILE is required\n", name);
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    return -1;
}

/* Applies the config's logging and mlock policy; EX_OK or the exit code. */
static int start_secure(const ec_config *cfg)
{
    ec_log_options lo = {.level = (ec_log_level)cfg->logging.level,
                         .output = cfg->logging.syslog ? EC_LOG_TO_SYSLOG : EC_LOG_TO_STDERR,
                         .json = cfg->logging.json};
    ec_log_configure(&lo);
    if (ec_secmem_init(cfg->device.require_mlock) != EC_OK) {
        fprintf(stderr, "edgecap: refusing to start: secure memory cannot be locked and "
                        "[device] require_mlock is on\n");
        return EX_OSERR;
    }
    if (ec_rng_init() != EC_OK) {
        fprintf(stderr, "edgecap: cannot seed the random generator\n");
        return EX_OSERR;
    }
    return EX_OK;
}

/* The token key store of [pkcs11]; EX_OK or the exit code (the reason is
 * logged by the backend; the PIN never is). `key_optional`: the device key
 * need not exist yet (provision). `kek_existing`: never create the KEK (wipe). */
static int open_pkcs11_ex(const ec_config *cfg, ec_keystore *ks, bool key_optional,
                          bool kek_existing)
{
    ec_keystore_pkcs11_params p = {.module = cfg->pkcs11.module,
                                   .token_label = cfg->pkcs11.token_label,
                                   .pin = cfg->pkcs11.pin,
                                   .kek_label = cfg->pkcs11.kek_label,
                                   .key_label = cfg->pkcs11.key_label,
                                   .key_optional = key_optional,
                                   .kek_existing = kek_existing};
    ec_status st = ec_keystore_pkcs11_open(ks, &p);
    if (st == EC_OK)
        return EX_OK;
    fprintf(stderr, "edgecap: cannot open the PKCS#11 key store (token \"%s\" through %s): %s\n",
            cfg->pkcs11.token_label, cfg->pkcs11.module, ec_strerror(st));
    return st == EC_ERR_AUTH ? EX_NOPERM : st == EC_ERR_NOT_FOUND ? EX_UNAVAILABLE : EX_IOERR;
}

static int open_pkcs11(const ec_config *cfg, ec_keystore *ks, bool key_optional)
{
    return open_pkcs11_ex(cfg, ks, key_optional, false);
}

/* The key store a config names; EX_OK or the exit code (reason printed). */
static int open_keystore_for(const ec_config *cfg, ec_keystore *ks, bool key_optional)
{
    if (cfg->device.keystore == EC_KEYSTORE_PKCS11)
        return open_pkcs11(cfg, ks, key_optional);
    ec_status st = ec_keystore_file_open(ks, cfg->device.keystore_dir);
    if (st != EC_OK) {
        fprintf(stderr, "edgecap: cannot open the key store %s: %s\n", cfg->device.keystore_dir,
                ec_strerror(st));
        return st == EC_ERR_PERM ? EX_NOPERM : EX_IOERR;
    }
    return EX_OK;
}

static int open_keystore(const ec_config *cfg, ec_keystore *ks)
{
    return open_keystore_for(cfg, ks, false);
}

/* The key store and spool a config names; EX_OK or the exit code. An
 * observer (read_only) opens beside a running daemon. An owner audits what
 * it seals, quarantines and drops to `audit` (may be NULL). */
static int open_spool_audited(const ec_config *cfg, ec_keystore *ks, ec_spool **spool,
                              bool read_only, ec_audit *audit)
{
    int rc = open_keystore(cfg, ks);
    if (rc != EX_OK)
        return rc;
    ec_spool_params sp = {.dir = cfg->spool.dir,
                          .quota_bytes = cfg->spool.quota_bytes,
                          .when_full = cfg->spool.when_full,
                          .keystore = ks,
                          .read_only = read_only,
                          .audit = audit};
    ec_status st = ec_spool_open(spool, &sp);
    if (st != EC_OK) {
        ec_keystore_close(ks);
        fprintf(stderr, "edgecap: cannot open the spool %s: %s\n", cfg->spool.dir, ec_strerror(st));
        return st == EC_ERR_PERM ? EX_NOPERM : st == EC_ERR_BUSY ? EX_TEMPFAIL : EX_IOERR;
    }
    return EX_OK;
}

static int open_spool(const ec_config *cfg, ec_keystore *ks, ec_spool **spool, bool read_only)
{
    return open_spool_audited(cfg, ks, spool, read_only, NULL);
}

/* The audit trail with cfg's rotation and syslog copy. */
static ec_status open_audit(const ec_config *cfg, ec_audit **audit)
{
    int fac = cfg->logging.audit_syslog_facility;
    ec_audit_params ap = {.path = cfg->logging.audit_file,
                          .hmac_key = cfg->logging.audit_hmac_key,
                          .max_bytes = cfg->logging.audit_max_bytes,
                          .keep = cfg->logging.audit_keep,
                          .syslog = cfg->logging.audit_syslog,
                          .syslog_socket = cfg->logging.audit_syslog_socket,
                          .syslog_facility = fac == 0 ? LOG_AUTHPRIV : LOG_LOCAL0 + (fac - 1) * 8,
                          .syslog_format = cfg->logging.audit_syslog_format};
    return ec_audit_open_params(audit, &ap);
}

static int open_source(const ec_config *cfg, ec_audio_source *src)
{
    ec_audio_params ap = {.rate_hz = (uint32_t)cfg->capture.rate_hz,
                          .channels = (uint8_t)cfg->capture.channels,
                          .period_frames = (uint32_t)cfg->capture.period_frames,
                          .buffer_frames = (uint32_t)cfg->capture.buffer_frames,
                          .paced = cfg->capture.file_realtime};
    ec_status st;
    if (cfg->capture.source == EC_SOURCE_FILE) {
        ap.device_or_path = cfg->capture.file;
        st = ec_audio_file_open(src, &ap);
    } else {
        ap.device_or_path = cfg->capture.device;
        st = ec_audio_alsa_open(src, &ap);
    }
    if (st != EC_OK) {
        fprintf(stderr, "edgecap: cannot open the audio source %s: %s\n", ap.device_or_path,
                ec_strerror(st));
        return st == EC_ERR_NOT_FOUND ? EX_NOINPUT : EX_UNAVAILABLE;
    }
    return EX_OK;
}

/* The consent gate the config asks for ([consent] window, switch or
 * state_file), or none (*gate NULL) when it asks for neither. */
static int open_consent(const ec_config *cfg, ec_audit *audit, ec_switch *sw, ec_consent **gate)
{
    *gate = NULL;
    const char *path =
        cfg->consent.switch_path[0] != '\0' ? cfg->consent.switch_path : cfg->consent.state_file;
    if (cfg->consent.n_windows == 0 && path[0] == '\0')
        return EX_OK;
    ec_consent_window w[EC_CFG_WINDOWS_MAX];
    for (size_t i = 0; i < cfg->consent.n_windows; i++) {
        if (!ec_consent_window_parse(cfg->consent.windows[i], &w[i]))
            return EX_SOFTWARE; /* validated when the config was loaded */
    }
    /* the local time zone, read once (TZ, else /etc/localtime) */
    tzset();
    ec_status st = path[0] != '\0' ? ec_switch_file_open(sw, path) : EC_OK;
    ec_consent_params p = {.windows = w,
                           .n_windows = cfg->consent.n_windows,
                           .sw = path[0] != '\0' ? sw : NULL,
                           .audit = audit};
    if (st == EC_OK)
        st = ec_consent_new(gate, &p);
    if (st != EC_OK) {
        fprintf(stderr, "edgecap: cannot set up the consent gate: %s\n", ec_strerror(st));
        ec_switch_close(sw);
        return EX_SOFTWARE;
    }
    return EX_OK;
}

static int64_t now_utc_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ec_capture_params capture_params(const ec_config *cfg, ec_audio_source *src, ec_spool *spool,
                                        uint64_t max_frames)
{
    uint32_t block = (uint32_t)cfg->capture.period_frames;
    uint64_t queue =
        (uint64_t)cfg->capture.queue_ms * (uint64_t)cfg->capture.rate_hz / 1000 / block;
    ec_capture_params p = {
        .source = src,
        .spool = spool,
        .device_id = cfg->device.id,
        .segment = {.segment_seconds = (uint32_t)cfg->capture.segment_seconds,
                    .vad = cfg->capture.vad,
                    .vad_threshold_dbfs = cfg->capture.vad_threshold_dbfs,
                    .vad_hangover_ms = (uint32_t)cfg->capture.vad_hangover_ms},
        .encode = {.bitrate_bps = cfg->encoder.bitrate_bps,
                   .complexity = cfg->encoder.complexity,
                   .vbr = cfg->encoder.vbr,
                   .application = cfg->encoder.application,
                   .frame_ms = cfg->encoder.frame_ms,
                   .max_page_ms = cfg->encoder.max_page_ms},
        .block_frames = block,
        .queue_blocks = queue < 2 ? 2 : (uint32_t)queue,
        .max_frames = max_frames,
        .start_utc_ms = now_utc_ms(),
    };
    return p;
}

static void block_signals(sigset_t *set)
{
    /* Taken synchronously (sigwait), so blocked before any thread exists:
     * the pipeline's threads inherit the mask. */
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

static const char *signal_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM";
}

/* ---- the delivery stack: identity, auth, batch jobs, transcripts, uploader ---- */

typedef struct {
    uint8_t *cert_der, *key_der;
    size_t cert_len, key_len;
    ec_auth *auth;
    ec_batch *batch;
    ec_spool *transcripts;
    ec_uploader *uploader;
    ec_audit *audit; /* not owned */
} delivery;

/* Stops the delivery threads (an upload in flight finishes or is abandoned
 * unacknowledged); their stats stay readable until delivery_close. */
static void delivery_stop(delivery *d)
{
    if (d->uploader != NULL)
        ec_uploader_stop(d->uploader);
    if (d->batch != NULL)
        ec_batch_stop(d->batch);
}

static void delivery_close(delivery *d)
{
    ec_uploader_close(&d->uploader);
    ec_batch_close(&d->batch);
    ec_spool_close(&d->transcripts);
    ec_auth_close(&d->auth);
    ec_secmem_free(d->cert_der);
    ec_secmem_free(d->key_der);
    memset(d, 0, sizeof *d);
}

/* The device certificate and its key: [tls] client_key, or (*key NULL) the
 * key in the token, checked to belong to the certificate. `why` says what
 * failed. */
static ec_status load_identity(const ec_config *cfg, const ec_keystore *ks, uint8_t **cert,
                               size_t *cert_len, uint8_t **key, size_t *key_len, char *why,
                               size_t why_len)
{
    *key = NULL;
    *key_len = 0;
    if (!ec_keystore_has_device_key(ks)) {
        ec_status st = ec_keystore_file_client_credentials(
            cfg->tls.client_cert, cfg->tls.client_key, cert, cert_len, key, key_len);
        if (st != EC_OK)
            snprintf(why, why_len, "[tls] client_cert %s / client_key %s: %s", cfg->tls.client_cert,
                     cfg->tls.client_key, ec_strerror(st));
        return st;
    }
    ec_status st = ec_keystore_file_certificate(cfg->tls.client_cert, cert, cert_len);
    if (st != EC_OK) {
        snprintf(why, why_len, "the device certificate: %s", ec_strerror(st));
        return st;
    }
    char reason[120];
    st = ec_token_key_check_pair(ks, *cert, *cert_len, reason, sizeof reason);
    if (st != EC_OK) {
        snprintf(why, why_len, "the token's device key ([pkcs11] key_label = %s): %s",
                 cfg->pkcs11.key_label, reason);
        ec_secmem_free(*cert);
        *cert = NULL;
    }
    return st;
}

/* Opens what delivering the spool needs under `cfg` (the uploader only with
 * `uploader`). EC_OK, or the status with the reason logged. */
static ec_status delivery_open(delivery *d, const ec_config *cfg, ec_keystore *ks, ec_spool *spool,
                               ec_audit *audit, bool uploader)
{
    memset(d, 0, sizeof *d);
    d->audit = audit;
    char why[EC_CFG_PATH_MAX + 64] = "";
    ec_status st = load_identity(cfg, ks, &d->cert_der, &d->cert_len, &d->key_der, &d->key_len, why,
                                 sizeof why);
    if (st != EC_OK)
        goto out;
    const ec_keystore *key_store = ec_keystore_has_device_key(ks) ? ks : NULL;
    ec_auth_params ap = {.cfg = cfg,
                         .cert_der = d->cert_der,
                         .cert_len = d->cert_len,
                         .key_der = d->key_der,
                         .key_len = d->key_len,
                         .audit = audit,
                         .key_store = key_store};
    if ((st = ec_auth_open(&d->auth, &ap, why, sizeof why)) != EC_OK)
        goto out;
    if (cfg->speech.batch) {
        ec_batch_params bp = {.cfg = cfg,
                              .auth = d->auth,
                              .audit = audit,
                              .spool = spool,
                              .cert_der = d->cert_der,
                              .cert_len = d->cert_len,
                              .key_der = d->key_der,
                              .key_len = d->key_len,
                              .key_store = key_store};
        if ((st = ec_batch_open(&d->batch, &bp)) != EC_OK) {
            snprintf(why, sizeof why, "the batch job state in %s", cfg->spool.dir);
            goto out;
        }
    }
    if (cfg->upload.target == EC_TARGET_SPEECH && cfg->speech.keep_transcripts) {
        ec_spool_params sp = {.dir = cfg->speech.transcript_dir,
                              .quota_bytes = cfg->spool.quota_bytes,
                              .when_full = cfg->spool.when_full,
                              .keystore = ks};
        if ((st = ec_spool_open(&d->transcripts, &sp)) != EC_OK) {
            snprintf(why, sizeof why, "the transcript directory %s", cfg->speech.transcript_dir);
            goto out;
        }
    }
    if (uploader) {
        ec_uploader_params up = {.cfg = cfg,
                                 .spool = spool,
                                 .audit = audit,
                                 .auth = d->auth,
                                 .batch = d->batch,
                                 .transcripts = d->transcripts,
                                 .cert_der = d->cert_der,
                                 .cert_len = d->cert_len,
                                 .key_der = d->key_der,
                                 .key_len = d->key_len,
                                 .key_store = key_store};
        if ((st = ec_uploader_open(&d->uploader, &up)) != EC_OK)
            snprintf(why, sizeof why, "the uploader");
    }
out:
    if (st != EC_OK) {
        ec_log(EC_LOG_ERROR, "delivery_unavailable", EC_LOG_STATUS(st), EC_LOG_STR("what", why));
        delivery_close(d);
    }
    return st;
}

static ec_status delivery_start(delivery *d)
{
    ec_log(EC_LOG_INFO, "delivery_ready", EC_LOG_STR("auth", ec_auth_mode_name(d->auth)),
           EC_LOG_BOOL("batch", d->batch != NULL),
           EC_LOG_BOOL("keep_transcripts", d->transcripts != NULL));
    /* the auth mode in force, at start and after every reload */
    ec_audit(d->audit, "delivery_started", EC_LOG_STR("auth", ec_auth_mode_name(d->auth)),
             EC_LOG_BOOL("batch", d->batch != NULL),
             EC_LOG_BOOL("keep_transcripts", d->transcripts != NULL));
    ec_status st = d->uploader != NULL ? ec_uploader_start(d->uploader) : EC_OK;
    if (st == EC_OK && d->batch != NULL)
        st = ec_batch_start(d->batch);
    return st;
}

/* The closed segments waiting for delivery, and the oldest one's age. */
static void spool_waiting(ec_spool *spool, uint64_t *segments, double *oldest_age_s)
{
    ec_spool_entry *entries = NULL;
    size_t n = 0;
    if (ec_spool_list(spool, &entries, &n) != EC_OK)
        return;
    int64_t now = (int64_t)time(NULL) * 1000, oldest = 0;
    for (size_t i = 0; i < n; i++) {
        if (entries[i].state != EC_SEG_CLOSED)
            continue;
        (*segments)++;
        if (oldest == 0 || entries[i].meta.start_utc_ms < oldest)
            oldest = entries[i].meta.start_utc_ms;
    }
    *oldest_age_s = oldest > 0 && now > oldest ? (double)(now - oldest) / 1000.0 : 0;
    free(entries);
}

/* One snapshot of every stage's counters to [metrics] textfile and the
 * [metrics] listen endpoint. `capture` is NULL when nothing captures (or the
 * last stats when it stopped); `upload_before` holds the totals of the
 * uploaders that reloads replaced. */
static void write_metrics(const ec_config *cfg, const ec_capture_stats *capture, ec_spool *spool,
                          const delivery *dv, const ec_upload_stats *upload_before,
                          ec_metrics_server *srv)
{
    if (cfg->metrics.textfile[0] == '\0' && srv == NULL)
        return;
    ec_metrics_snapshot m = {.device_id = cfg->device.id, .delivering = dv->uploader != NULL};
    if (capture != NULL) {
        m.capture = *capture;
        m.have_capture = true;
    }
    ec_spool_get_stats(spool, &m.spool);
    m.spool_bytes = ec_spool_used_bytes(spool);
    spool_waiting(spool, &m.spool_segments, &m.spool_oldest_age_s);
    if (dv->uploader != NULL) {
        ec_uploader_get_stats(dv->uploader, &m.upload);
        m.have_upload = true;
    }
    /* counters run on across reloads (a new uploader starts at zero) */
    if (upload_before->segments_acknowledged > 0 || upload_before->attempts_failed > 0) {
        ec_upload_stats_add(&m.upload, upload_before);
        m.have_upload = true;
    }
    if (dv->auth != NULL) {
        ec_auth_get_stats(dv->auth, &m.auth);
        m.have_auth = true;
    }
    if (dv->batch != NULL) {
        ec_batch_get_stats(dv->batch, &m.batch);
        m.have_batch = true;
    }
    static char text[EC_METRICS_TEXT_MAX];
    size_t len = 0;
    ec_status st = ec_metrics_format(&m, text, sizeof text, &len);
    if (st == EC_OK)
        ec_metrics_server_publish(srv, text, len);
    if (st == EC_OK && cfg->metrics.textfile[0] != '\0')
        st = ec_metrics_write_textfile(cfg->metrics.textfile, text, len);
    if (st != EC_OK)
        ec_log(EC_LOG_WARN, "metrics_write_failed", EC_LOG_STR("path", cfg->metrics.textfile),
               EC_LOG_STATUS(st));
}

/* Crypto-shreds what in `spool` is past [spool] max_age_hours; the count
 * of what went. */
static size_t purge_expired(const ec_config *cfg, ec_spool *spool, ec_audit *audit)
{
    ec_retention_result r;
    if (spool == NULL ||
        ec_retention_purge(spool, audit, cfg->spool.max_age_hours, now_utc_ms(), &r) != EC_OK)
        return 0;
    if (r.shredded > 0 || r.failed > 0)
        ec_log(r.failed > 0 ? EC_LOG_WARN : EC_LOG_INFO, "retention_pass",
               EC_LOG_UINT("shredded", r.shredded), EC_LOG_UINT("bytes", r.bytes),
               EC_LOG_UINT("deferred", r.deferred), EC_LOG_UINT("failed", r.failed),
               EC_LOG_INT("max_age_hours", cfg->spool.max_age_hours));
    return r.shredded;
}

/* [metrics] listen, from the first configuration (a reload keeps it). A
 * listener that cannot start is an error, but capture goes on without it. */
static void start_metrics_server(const ec_config *cfg, ec_metrics_server **srv)
{
    if (cfg->metrics.listen[0] == '\0')
        return;
    char why[256];
    ec_status st = ec_metrics_server_start(srv, cfg->metrics.listen, why, sizeof why);
    if (st != EC_OK)
        ec_log(EC_LOG_ERROR, "metrics_listen_failed", EC_LOG_STR("listen", cfg->metrics.listen),
               EC_LOG_STR("reason", why), EC_LOG_STATUS(st));
    else
        ec_log(EC_LOG_INFO, "metrics_listening", EC_LOG_STR("listen", cfg->metrics.listen));
}

/* The daemon's pid, beside its spool, for `reload` and `speech submit-now`. */
#define PID_FILE "daemon.pid"

/* Loads `path` for a reload: a new heap config, or NULL with the refusal
 * logged and audited (the daemon keeps its running configuration). */
static ec_config *reload_config(const char *path, ec_audit *audit)
{
    ec_config *next = malloc(sizeof *next);
    if (next == NULL)
        return NULL;
    ec_config_error err;
    ec_status st = ec_config_load(next, path, &err);
    if (st == EC_OK)
        return next;
    free(next);
    char msg[EC_CFG_PATH_MAX + 512];
    ec_config_error_format(&err, msg, sizeof msg);
    ec_log(EC_LOG_ERROR, "reload_refused", EC_LOG_STR("reason", msg),
           EC_LOG_STR("effect", "running on the previous configuration"));
    ec_audit(audit, "reload_refused", EC_LOG_STR("reason", msg));
    return NULL;
}

/* Whether `cfg`'s CA bundle and device identity load (the files they name
 * are read again: they may have been replaced under an unchanged file) and
 * suit its auth mode. A reload checks this before it stops the running
 * delivery. */
static bool identity_usable(const ec_config *cfg, const ec_keystore *ks, char *why, size_t why_len)
{
    uint8_t *cert = NULL, *key = NULL, *ca = NULL;
    size_t cert_len = 0, key_len = 0, ca_len = 0;
    ec_auth *auth = NULL;
    ec_status st = ec_transport_load_ca(cfg->tls.ca_file, &ca, &ca_len, why, why_len);
    free(ca);
    if (st != EC_OK)
        return false;
    st = load_identity(cfg, ks, &cert, &cert_len, &key, &key_len, why, why_len);
    if (st == EC_OK) {
        ec_auth_params ap = {.cfg = cfg,
                             .cert_der = cert,
                             .cert_len = cert_len,
                             .key_der = key,
                             .key_len = key_len,
                             .key_store = ec_keystore_has_device_key(ks) ? ks : NULL};
        st = ec_auth_open(&auth, &ap, why, why_len);
        ec_auth_close(&auth);
    }
    ec_secmem_free(cert);
    ec_secmem_free(key);
    return st == EC_OK;
}

/* What the watchdog judges liveness by: capture and upload progress. */
static ec_liveness_sample liveness_sample(ec_capture *cap, const delivery *dv)
{
    ec_liveness_sample s = {0};
    ec_capture_stats cs;
    ec_capture_get_stats(cap, &cs);
    s.capture_frames = cs.frames_captured;
    s.capture_finished = ec_capture_finished(cap);
    if (dv->uploader != NULL) {
        ec_upload_stats us;
        ec_uploader_get_stats(dv->uploader, &us);
        s.have_upload = true;
        s.upload_heartbeats = us.heartbeats;
    }
    return s;
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *running_status(const delivery *dv)
{
    return dv->uploader != NULL ? "capturing and uploading"
                                : "capturing into the spool only (upload unavailable)";
}

static void free_live(ec_config *live, ec_config *first)
{
    if (live != first) {
        ec_config_free(live);
        free(live);
    } else {
        ec_config_free_secrets(first); /* capture still reads the rest */
    }
}

static int cmd_run(int argc, char **argv)
{
    const char *path = NULL;
    int rc = parse_config_command("run", argc, argv, &path);
    if (rc >= 0)
        return rc;
    sigset_t wanted;
    block_signals(&wanted);

    ec_config cfg;
    ec_keystore ks = {0};
    ec_spool *spool = NULL;
    ec_audio_source src = {0};
    ec_capture *cap = NULL;
    ec_capture_stats final_capture;
    const ec_capture_stats *last_capture = NULL;
    ec_audit *audit = NULL;
    ec_switch sw = {0};
    ec_consent *gate = NULL;
    delivery dv = {0};
    ec_watchdog wd = {0}; /* systemd or the board's watchdog, when there is one */
    ec_watchdog_feeder feeder;
    ec_metrics_server *msrv = NULL;
    ec_config *live = &cfg;              /* what delivery runs on; a reload replaces it */
    ec_upload_stats upload_before = {0}; /* totals of the uploaders reloads replaced */
    rc = load_config(path, &cfg);
    if (rc != EX_OK)
        return rc;
    if ((rc = start_secure(&cfg)) != EX_OK)
        goto out;
    /* systemd's socket or the board's device; a no-op without either */
    (void)ec_watchdog_open_env(&wd);
    /* before the spool, whose recovery at open is audited, and before
     * capture, whose consent gate audits its state from the first frame on;
     * without it, nothing is delivered (capture goes on) */
    ec_status audit_st = open_audit(&cfg, &audit);
    if ((rc = open_spool_audited(&cfg, &ks, &spool, false, audit)) != EX_OK ||
        (rc = open_source(&cfg, &src)) != EX_OK)
        goto out;

    char digest[65];
    ec_hex_encode(cfg.sha256, sizeof cfg.sha256, digest);
    ec_secmem_stats ms;
    ec_secmem_get_stats(&ms);
    ec_log(EC_LOG_INFO, "ready", EC_LOG_STR("version", EC_VERSION),
           EC_LOG_STR("device", cfg.device.id), EC_LOG_STR("config", cfg.source_path),
           EC_LOG_STR("config_sha256", digest), EC_LOG_INT("pid", (long long)getpid()),
           EC_LOG_BOOL("mlock", ms.mlock_refusals == 0));

    ec_audit(audit, "started", EC_LOG_STR("version", EC_VERSION),
             EC_LOG_STR("device", cfg.device.id), EC_LOG_STR("config_sha256", digest),
             EC_LOG_INT("pid", (long long)getpid()));
    if ((rc = open_consent(&cfg, audit, &sw, &gate)) != EX_OK)
        goto out;
    start_metrics_server(&cfg, &msrv);
    ec_capture_params cp = capture_params(&cfg, &src, spool, 0);
    cp.consent = gate;
    ec_status st = ec_capture_start(&cap, &cp);
    if (st != EC_OK) {
        ec_log(EC_LOG_ERROR, "capture_start_failed", EC_LOG_STATUS(st));
        rc = EX_SOFTWARE;
        goto out;
    }
    /* Upload runs beside capture; if it cannot start, capture goes on and
     * the spool keeps the audio until it can. */
    if ((st = audit_st) != EC_OK ||
        (st = delivery_open(&dv, live, &ks, spool, audit, true)) != EC_OK ||
        (st = delivery_start(&dv)) != EC_OK) {
        ec_log(EC_LOG_ERROR, "upload_unavailable", EC_LOG_STATUS(st),
               EC_LOG_STR("effect", "capturing into the spool only"));
        delivery_close(&dv);
    }
    char pid_text[32];
    int pid_len = snprintf(pid_text, sizeof pid_text, "%ld\n", (long)getpid());
    if (ec_spool_put_file(spool, PID_FILE, (const uint8_t *)pid_text, (size_t)pid_len) != EC_OK)
        ec_log(EC_LOG_WARN, "pid_file_failed", EC_LOG_STR("effect", "edgecap reload unavailable"));
    /* The first retention pass (it may shred a long backlog) before READY:
     * a board's watchdog still allows for a slow start meanwhile. */
    (void)purge_expired(live, spool, audit);
    (void)purge_expired(live, dv.transcripts, audit);
    struct timespec last_purge;
    clock_gettime(CLOCK_MONOTONIC, &last_purge);
    /* Up: spool open, capture running, delivery started (or known not to). */
    ec_watchdog_ready(&wd, running_status(&dv));
    ec_watchdog_feeder_init(&feeder, &wd,
                            (int64_t)cfg.upload.connect_timeout_ms +
                                (int64_t)cfg.upload.low_speed_seconds * 1000 + 5000);
    if (wd.ping_interval_ms > 0)
        ec_log(EC_LOG_INFO, "watchdog", EC_LOG_INT("timeout_ms", (long long)wd.timeout_ms),
               EC_LOG_INT("ping_interval_ms", (long long)wd.ping_interval_ms));
    int sig = 0;
    const struct timespec tick = {0, 200 * 1000 * 1000};
    struct timespec last_metrics = {0, 0};
    for (;;) {
        struct timespec mono;
        clock_gettime(CLOCK_MONOTONIC, &mono);
        /* once a minute after the first pass: the uploader never sends
         * what is past its age, and a segment in flight is left for the
         * next pass */
        if (mono.tv_sec - last_purge.tv_sec >= EC_RETENTION_INTERVAL_S) {
            (void)purge_expired(live, spool, audit);
            (void)purge_expired(live, dv.transcripts, audit);
            last_purge = mono;
        }
        if (last_metrics.tv_sec == 0 ||
            mono.tv_sec - last_metrics.tv_sec >= live->metrics.interval_seconds) {
            ec_capture_stats cs;
            ec_capture_get_stats(cap, &cs);
            write_metrics(live, &cs, spool, &dv, &upload_before, msrv);
            last_metrics = mono;
        }
        ec_liveness_sample alive = liveness_sample(cap, &dv);
        ec_watchdog_feed(&feeder, &wd, &alive, monotonic_ms());
        sig = sigtimedwait(&wanted, NULL, &tick);
        if (sig == SIGUSR1) {
            if (dv.batch != NULL)
                ec_batch_kick(dv.batch, true);
            else
                ec_log(EC_LOG_WARN, "submit_now_ignored",
                       EC_LOG_STR("reason", "no batch transcription running"));
            continue;
        }
        if (sig == SIGHUP) {
            /* Capture goes on throughout: only delivery restarts. Capture,
             * spool and key store settings take effect at the next start. */
            ec_watchdog_reloading(&wd);
            ec_config *next = reload_config(cfg.source_path, audit);
            char why[2 * EC_CFG_PATH_MAX + 128];
            /* a working delivery is only replaced by one whose identity loads */
            if (next != NULL && dv.auth != NULL && !identity_usable(next, &ks, why, sizeof why)) {
                ec_log(EC_LOG_ERROR, "reload_refused", EC_LOG_STR("reason", why),
                       EC_LOG_STR("effect", "running on the previous configuration"));
                ec_audit(audit, "reload_refused", EC_LOG_STR("reason", why));
                ec_config_free(next);
                free(next);
                next = NULL;
            }
            if (next == NULL) {
                ec_watchdog_ready(&wd, "reload refused: running on the previous configuration");
                continue;
            }
            if (dv.uploader != NULL) {
                ec_uploader_stop(dv.uploader); /* its totals are final only once it stopped */
                ec_upload_stats gone;
                ec_uploader_get_stats(dv.uploader, &gone);
                ec_upload_stats_add(&upload_before, &gone);
            }
            delivery_close(&dv);
            free_live(live, &cfg);
            live = next;
            char next_digest[65];
            ec_hex_encode(live->sha256, sizeof live->sha256, next_digest);
            st = delivery_open(&dv, live, &ks, spool, audit, true);
            if (st == EC_OK)
                st = delivery_start(&dv);
            if (st != EC_OK)
                delivery_close(&dv);
            ec_log(st == EC_OK ? EC_LOG_INFO : EC_LOG_ERROR, "reload_accepted",
                   EC_LOG_STR("config_sha256", next_digest), EC_LOG_BOOL("delivering", st == EC_OK),
                   EC_LOG_STR("note", "capture, spool and key store settings apply at restart"));
            ec_audit(audit, "reload_accepted", EC_LOG_STR("config_sha256", next_digest),
                     EC_LOG_BOOL("delivering", st == EC_OK));
            ec_watchdog_ready(&wd, running_status(&dv));
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT)
            break;
        /* A source that failed (a device gone) ends the daemon with an error,
         * so that its supervisor restarts it; a file that simply ended does not. */
        ec_capture_stats cs;
        ec_capture_get_stats(cap, &cs);
        if (ec_capture_finished(cap) && cs.source_error != EC_OK) {
            ec_log(EC_LOG_ERROR, "stopping", EC_LOG_STR("reason", "audio source failed"),
                   EC_LOG_STATUS(cs.source_error));
            rc = EX_IOERR;
            goto out;
        }
    }
    ec_log(EC_LOG_INFO, "stopping", EC_LOG_STR("signal", signal_name(sig)));
    rc = EX_OK;
out:
    ec_watchdog_stopping(&wd);
    /* Everything that moves stops first (the last segment is sealed and
     * audited), so the last metrics are final. */
    if (cap != NULL) {
        ec_capture_join(&cap, &final_capture);
        last_capture = &final_capture;
    }
    delivery_stop(&dv);
    if (spool != NULL) /* the last word, at shutdown */
        write_metrics(live, last_capture, spool, &dv, &upload_before, msrv);
    ec_metrics_server_stop(&msrv);
    if (spool != NULL)
        (void)ec_spool_put_file(spool, PID_FILE, (const uint8_t *)"0\n", 2);
    ec_consent_free(&gate);
    ec_switch_close(&sw);
    delivery_close(&dv);
    char live_digest[65];
    ec_hex_encode(live->sha256, sizeof live->sha256, live_digest);
    ec_audit(audit, "stopped", EC_LOG_INT("exit_status", rc),
             EC_LOG_STR("config_sha256", live_digest));
    ec_audio_close(&src);
    ec_spool_close(&spool);
    ec_audit_close(&audit);
    ec_keystore_close(&ks);
    if (live != &cfg) {
        ec_config_free(live);
        free(live);
    }
    ec_config_free(&cfg);
    ec_rng_free();
    ec_watchdog_close(&wd);
    if (rc == EX_OK)
        ec_log(EC_LOG_INFO, "stopped");
    return rc;
}

static int cmd_capture(int argc, char **argv)
{
    const command *c = find_command("capture");
    const char *path = NULL;
    long seconds = 0;
    int rc = parse_opts(c, argc, argv, &path, &seconds);
    if (rc >= 0)
        return rc;
    if (path == NULL || seconds == 0 || optind != argc) {
        fprintf(stderr, "edgecap capture: --config FILE and --seconds N are required\n");
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    sigset_t wanted;
    block_signals(&wanted);
    ec_config cfg;
    ec_keystore ks = {0};
    ec_spool *spool = NULL;
    ec_audio_source src = {0};
    ec_capture *cap = NULL;
    ec_audit *audit = NULL;
    ec_capture_stats stats = {0};
    ec_switch sw = {0};
    ec_consent *gate = NULL;
    /* its audit lines need the HMAC key, credential or not */
    if ((rc = load_config(path, &cfg)) != EX_OK)
        return rc;
    if ((rc = start_secure(&cfg)) != EX_OK)
        goto out;
    /* as in `run`, capture does not wait for the audit trail */
    if (open_audit(&cfg, &audit) != EC_OK)
        ec_log(EC_LOG_WARN, "audit_unavailable", EC_LOG_STR("path", cfg.logging.audit_file),
               EC_LOG_STR("effect", "capturing without audit lines"));
    if ((rc = open_spool_audited(&cfg, &ks, &spool, false, audit)) != EX_OK ||
        (rc = open_source(&cfg, &src)) != EX_OK ||
        (rc = open_consent(&cfg, audit, &sw, &gate)) != EX_OK)
        goto out;
    ec_capture_params cp =
        capture_params(&cfg, &src, spool, (uint64_t)seconds * (uint64_t)cfg.capture.rate_hz);
    cp.consent = gate;
    ec_status st = ec_capture_start(&cap, &cp);
    if (st != EC_OK) {
        ec_log(EC_LOG_ERROR, "capture_start_failed", EC_LOG_STATUS(st));
        rc = EX_SOFTWARE;
        goto out;
    }
    /* Until the capture ends by itself or a signal asks it to. */
    const struct timespec tick = {0, 100 * 1000 * 1000};
    while (!ec_capture_finished(cap)) {
        int sig = sigtimedwait(&wanted, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            ec_log(EC_LOG_INFO, "stopping", EC_LOG_STR("signal", signal_name(sig)));
            break;
        }
    }
    ec_capture_join(&cap, &stats);
    printf("captured %" PRIu64 " frames (%.3f s), sealed %" PRIu64 " segments, failed %" PRIu64
           ", overruns %" PRIu64 ", dropped %" PRIu64 " frames, refused %" PRIu64
           " frames, gated %" PRIu64 " frames, withheld %" PRIu64 " frames\n",
           stats.frames_captured, (double)stats.frames_captured / cfg.capture.rate_hz,
           stats.segments_sealed, stats.segments_failed, stats.overruns, stats.frames_dropped,
           stats.frames_refused, stats.segmenter.frames_gated, stats.frames_withheld);
    rc = stats.segments_failed > 0 || stats.source_error != EC_OK ? EX_IOERR : EX_OK;
out:
    ec_capture_join(&cap, NULL);
    ec_consent_free(&gate);
    ec_switch_close(&sw);
    ec_audio_close(&src);
    ec_spool_close(&spool);
    ec_audit_close(&audit);
    ec_keystore_close(&ks);
    ec_config_free(&cfg);
    ec_rng_free();
    return rc;
}

static void format_utc(int64_t ms, char *out, size_t out_len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, out_len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, out_len - n, ".%03dZ", (int)(ms % 1000));
}

/* `NAME SUB --config FILE` with SUB one of `subs` (two): -1 to go on with
 * *which set, or an exit code. */
/* Sets *which to the index of argv[1] in `subs` (n of them) and returns -1,
 * or answers --help / an unknown SUB ("expected `expected`") with the exit
 * code. */
static int pick_subcommand(const command *c, int argc, char **argv, const char *const *subs, int n,
                           const char *expected, int *which)
{
    *which = -1;
    for (int i = 0; argc >= 2 && i < n; i++)
        if (strcmp(argv[1], subs[i]) == 0)
            *which = i;
    if (*which >= 0)
        return -1;
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        print_command_help(c, stdout);
        return EX_OK;
    }
    fprintf(stderr, "edgecap %s: expected %s\n", c->name, expected);
    print_command_help(c, stderr);
    return EX_USAGE;
}

static int parse_subcommand(const command *c, int argc, char **argv, const char *const subs[2],
                            int *which, const char **path)
{
    char expected[64];
    snprintf(expected, sizeof expected, "%s or %s", subs[0], subs[1]);
    int rc = pick_subcommand(c, argc, argv, subs, 2, expected, which);
    if (rc >= 0)
        return rc;
    *path = NULL;
    rc = parse_common(c, argc - 1, argv + 1, path);
    if (rc >= 0)
        return rc;
    if (*path == NULL || optind != argc - 1) {
        fprintf(stderr, "edgecap %s %s: --config FILE is required\n", c->name, argv[1]);
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    return -1;
}

static int cmd_spool(int argc, char **argv)
{
    static const char *const subs[2] = {"ls", "verify"};
    int which = -1;
    const char *path = NULL;
    int rc = parse_subcommand(find_command("spool"), argc, argv, subs, &which, &path);
    if (rc >= 0)
        return rc;
    bool verify = which == 1;
    ec_config cfg;
    ec_keystore ks = {0};
    ec_spool *spool = NULL;
    ec_audit *audit = NULL;
    /* verify writes audit lines, which need the HMAC key wherever it is;
     * ls reads nothing secret */
    if ((rc = verify ? load_config(path, &cfg) : load_config_no_secrets(path, &cfg)) != EX_OK)
        return rc;
    if ((rc = start_secure(&cfg)) != EX_OK)
        goto out;
    /* what verify quarantines is audited */
    if (verify && open_audit(&cfg, &audit) != EC_OK)
        ec_log(EC_LOG_WARN, "audit_unavailable", EC_LOG_STR("path", cfg.logging.audit_file),
               EC_LOG_STR("effect", "quarantines are logged, not audited"));
    /* ls observes; verify owns the spool (to quarantine) unless a daemon
     * does, then it only reports */
    rc = open_spool_audited(&cfg, &ks, &spool, !verify, audit);
    if (rc == EX_TEMPFAIL && verify) {
        fprintf(stderr, "edgecap: a running edgecap owns the spool: verifying without "
                        "moving failures to quarantine/\n");
        rc = open_spool(&cfg, &ks, &spool, true);
    }
    if (rc != EX_OK)
        goto out;
    if (verify) {
        size_t checked = 0, failed = 0;
        ec_status st = ec_spool_verify_all(spool, &checked, &failed);
        if (st != EC_OK) {
            fprintf(stderr, "edgecap: cannot verify the spool: %s\n", ec_strerror(st));
            rc = EX_IOERR;
            goto out;
        }
        printf("verified %zu segments: %zu authentic, %zu failed%s\n", checked, checked - failed,
               failed, failed > 0 ? " (moved to quarantine/)" : "");
        rc = failed > 0 ? EX_DATAERR : EX_OK;
        goto out;
    }
    ec_spool_entry *entries = NULL;
    size_t n = 0;
    ec_status st = ec_spool_list(spool, &entries, &n);
    if (st != EC_OK) {
        fprintf(stderr, "edgecap: cannot list the spool: %s\n", ec_strerror(st));
        rc = EX_IOERR;
        goto out;
    }
    printf("%-44s %10s %-24s %10s %10s %s\n", "NAME", "SEQ", "START (UTC)", "DURATION_S", "SIZE_B",
           "STATE");
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        char when[40];
        format_utc(entries[i].meta.start_utc_ms, when, sizeof when);
        const ec_spool_entry *e = &entries[i];
        char duration[32];
        if (e->state == EC_SEG_CLOSED && e->meta.sample_rate_hz > 0)
            snprintf(duration, sizeof duration, "%.3f",
                     (double)e->pcm_frames / e->meta.sample_rate_hz);
        else
            snprintf(duration, sizeof duration, "-");
        printf("%-44s %10" PRIu64 " %-24s %10s %10" PRIu64 " %s\n", e->name, e->meta.sequence, when,
               duration, e->size_bytes, e->state == EC_SEG_CLOSED ? "closed" : "writing");
        total += e->size_bytes;
    }
    printf("%zu segments, %" PRIu64 " bytes\n", n, total);
    free(entries);
    rc = EX_OK;
out:
    ec_spool_close(&spool);
    ec_audit_close(&audit);
    ec_keystore_close(&ks);
    ec_config_free(&cfg);
    ec_rng_free();
    return rc;
}

static int cmd_upload_once(int argc, char **argv)
{
    const char *path = NULL;
    int rc = parse_config_command("upload-once", argc, argv, &path);
    if (rc >= 0)
        return rc;
    sigset_t wanted;
    block_signals(&wanted);
    ec_config cfg;
    ec_keystore ks = {0};
    ec_spool *spool = NULL;
    ec_audit *audit = NULL;
    delivery dv = {0};
    if ((rc = load_config(path, &cfg)) != EX_OK)
        return rc;
    if ((rc = start_secure(&cfg)) != EX_OK)
        goto out;
    ec_status st = open_audit(&cfg, &audit);
    if (st == EC_OK && (rc = open_spool_audited(&cfg, &ks, &spool, false, audit)) != EX_OK)
        goto out;
    size_t purged = st == EC_OK ? purge_expired(&cfg, spool, audit) : 0;
    if (st == EC_OK)
        st = delivery_open(&dv, &cfg, &ks, spool, audit, true);
    purged += purge_expired(&cfg, dv.transcripts, audit);
    if (purged > 0)
        printf("purged %zu segments older than %d hours (crypto-shredded, not uploaded)\n", purged,
               cfg.spool.max_age_hours);
    ec_uploader *u = dv.uploader;
    if (st != EC_OK) {
        fprintf(stderr, "edgecap: cannot upload: %s (see the log above)\n", ec_strerror(st));
        rc = st == EC_ERR_UNSUPPORTED ? EX_UNAVAILABLE : EX_CONFIG;
        goto out;
    }
    /* a bounded number of failed attempts, each after its backoff */
    st = ec_uploader_drain(u, (unsigned)cfg.upload.breaker_failures * 2);
    ec_upload_stats us;
    ec_uploader_get_stats(u, &us);
    printf("uploaded %llu segments (%llu bytes, %llu already there), %llu failed attempts, "
           "%llu conflicts\n",
           (unsigned long long)us.segments_acknowledged, (unsigned long long)us.bytes_acknowledged,
           (unsigned long long)us.acknowledged_existing, (unsigned long long)us.attempts_failed,
           (unsigned long long)us.conflicts);
    if (st == EC_OK) {
        rc = EX_OK;
    } else {
        fprintf(stderr, "edgecap: the spool is not empty: %s: %s\n", ec_strerror(st),
                us.last_reason);
        rc = EX_UNAVAILABLE;
    }
    if (dv.batch != NULL) {
        int64_t next = 0;
        (void)ec_batch_step(dv.batch, false, &next);
    }
out:
    delivery_close(&dv);
    ec_spool_close(&spool);
    ec_audit_close(&audit);
    ec_keystore_close(&ks);
    ec_config_free(&cfg);
    ec_rng_free();
    return rc;
}

/* The pid of the daemon that owns cfg's spool (from its pid file), or 0
 * when none runs. */
/* The pid holding the flock on `dir` (from /proc/locks), or 0. */
static long lock_holder(const char *dir)
{
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return 0;
    FILE *f = fopen("/proc/locks", "re");
    if (f == NULL)
        return 0;
    char line[256];
    long holder = 0;
    while (holder == 0 && fgets(line, sizeof line, f) != NULL) {
        char kind[16], mode[16];
        long pid = 0;
        unsigned maj = 0, min = 0;
        unsigned long long ino = 0;
        if (sscanf(line, "%*[^:]: %15s %*s %15s %ld %x:%x:%llu", kind, mode, &pid, &maj, &min,
                   &ino) == 6 &&
            strcmp(kind, "FLOCK") == 0 && ino == (unsigned long long)sb.st_ino &&
            maj == major(sb.st_dev) && min == minor(sb.st_dev))
            holder = pid;
    }
    fclose(f);
    return holder;
}

/* The pid of the daemon that owns cfg's spool, or 0: its pid file must name
 * the process that holds the spool's lock right now (a stale file, a reused
 * pid or `edgecap capture` holding the lock all give 0). */
static pid_t daemon_pid(ec_spool *observer, const char *dir)
{
    uint8_t *text = NULL;
    size_t len = 0;
    if (ec_spool_get_file(observer, PID_FILE, 64, &text, &len) != EC_OK)
        return 0;
    long pid = strtol((const char *)text, NULL, 10);
    free(text);
    return pid > 1 && lock_holder(dir) == pid ? (pid_t)pid : 0;
}

/* Signals the daemon running on cfg's spool; EX_OK, or EX_UNAVAILABLE. */
static int signal_daemon(const ec_config *cfg, ec_keystore *ks, int sig, const char *what)
{
    ec_spool *observer = NULL;
    int rc = open_spool(cfg, ks, &observer, true);
    if (rc != EX_OK)
        return rc;
    pid_t pid = daemon_pid(observer, cfg->spool.dir);
    ec_spool_close(&observer);
    ec_keystore_close(ks);
    if (pid == 0 || kill(pid, sig) != 0) {
        fprintf(stderr, "edgecap: no running edgecap owns the spool %s\n", cfg->spool.dir);
        return EX_UNAVAILABLE;
    }
    printf("asked edgecap (pid %ld) to %s\n", (long)pid, what);
    return EX_OK;
}

static int cmd_reload(int argc, char **argv)
{
    const char *path = NULL;
    int rc = parse_config_command("reload", argc, argv, &path);
    if (rc >= 0)
        return rc;
    ec_config cfg;
    ec_keystore ks = {0};
    /* the file is validated here first, so a bad one is reported to the
     * person who asked (the daemon would refuse it too) */
    if ((rc = load_config_no_secrets(path, &cfg)) != EX_OK)
        return rc;
    rc = signal_daemon(&cfg, &ks, SIGHUP, "reload its provisioning file");
    ec_config_free(&cfg);
    return rc;
}

/* The spool's own facts, for `status`. */
static void spool_facts(ec_spool *spool, const char *dir, ec_report *r)
{
    r->spool_bytes = ec_spool_used_bytes(spool);
    spool_waiting(spool, &r->spool_segments, &r->spool_oldest_age_s);
    char qdir[EC_CFG_PATH_MAX + 16];
    snprintf(qdir, sizeof qdir, "%s/quarantine", dir);
    DIR *d = opendir(qdir);
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        r->quarantined += e->d_type == DT_REG;
    if (d != NULL)
        closedir(d);
}

/* The running daemon's metrics: from its listener, else its textfile. */
static char *daemon_metrics(const ec_config *cfg, char *from, size_t from_len)
{
    char *text = malloc(EC_METRICS_TEXT_MAX + 4096);
    if (text == NULL)
        return NULL;
    if (cfg->metrics.listen[0] != '\0') {
        ec_status st = ec_report_scrape(cfg->metrics.listen, text, EC_METRICS_TEXT_MAX + 4096);
        if (st == EC_OK) {
            snprintf(from, from_len, "listener %s", cfg->metrics.listen);
            return text;
        }
        snprintf(from, from_len, "nowhere (listener %s: %s)", cfg->metrics.listen, ec_strerror(st));
    }
    FILE *f = cfg->metrics.textfile[0] != '\0' ? fopen(cfg->metrics.textfile, "re") : NULL;
    if (f != NULL) {
        size_t n = fread(text, 1, EC_METRICS_TEXT_MAX, f);
        fclose(f);
        text[n] = '\0';
        snprintf(from, from_len, "textfile %s", cfg->metrics.textfile);
        return text;
    }
    if (cfg->metrics.listen[0] == '\0')
        snprintf(from, from_len, "nowhere (neither [metrics] listen nor textfile is set)");
    free(text);
    return NULL;
}

static int cmd_status(int argc, char **argv)
{
    /* --json is this command's own; the rest parses as usual */
    bool json = false;
    int kept = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--json") == 0)
            json = true;
        else
            argv[kept++] = argv[i];
    }
    const char *path = NULL;
    int rc = parse_config_command("status", kept, argv, &path);
    if (rc >= 0)
        return rc;
    ec_config cfg;
    ec_keystore ks = {0};
    ec_spool *spool = NULL;
    char *metrics = NULL;
    if ((rc = load_config(path, &cfg)) != EX_OK)
        return rc;
    if ((rc = start_secure(&cfg)) != EX_OK || (rc = open_spool(&cfg, &ks, &spool, true)) != EX_OK)
        goto out;
    ec_report r = {.device_id = cfg.device.id, .spool_dir = cfg.spool.dir};
    r.daemon_pid = daemon_pid(spool, cfg.spool.dir);
    spool_facts(spool, cfg.spool.dir, &r);
    if (r.daemon_pid > 0)
        metrics = daemon_metrics(&cfg, r.metrics_from, sizeof r.metrics_from);
    r.metrics = metrics;
    if (json)
        rc = ec_report_print_json(&r, stdout) == EC_OK ? EX_OK : EX_SOFTWARE;
    else
        ec_report_print_text(&r, stdout);
out:
    free(metrics);
    ec_spool_close(&spool);
    ec_keystore_close(&ks);
    ec_config_free(&cfg);
    ec_rng_free();
    return rc;
}

static int cmd_speech(int argc, char **argv)
{
    static const char *const subs[2] = {"jobs", "submit-now"};
    int which = -1;
    const char *path = NULL;
    int rc = parse_subcommand(find_command("speech"), argc, argv, subs, &which, &path);
    if (rc >= 0)
        return rc;
    bool submit_now = which == 1;
    sigset_t wanted;
    block_signals(&wanted);
    ec_config cfg;
    ec_keystore ks = {0};
    ec_spool *spool = NULL;
    ec_audit *audit = NULL;
    delivery dv = {0};
    ec_batch *observed = NULL;
    if ((rc = load_config(path, &cfg)) != EX_OK)
        return rc;
    if (!cfg.speech.batch) {
        fprintf(stderr, "edgecap speech: [speech] batch is off in %s\n", path);
        rc = EX_CONFIG;
        goto out;
    }
    if ((rc = start_secure(&cfg)) != EX_OK)
        goto out;
    rc = open_spool(&cfg, &ks, &spool, !submit_now);
    if (rc == EX_TEMPFAIL && submit_now) {
        /* a daemon owns the spool: it submits */
        rc = signal_daemon(&cfg, &ks, SIGUSR1, "submit the waiting blobs now");
        goto out;
    }
    if (rc != EX_OK)
        goto out;
    ec_status st;
    if (!submit_now) {
        ec_batch_params bp = {.cfg = &cfg, .spool = spool, .read_only = true};
        st = ec_batch_open(&observed, &bp);
        if (st == EC_ERR_PROTOCOL) {
            fprintf(stderr,
                    "edgecap speech: %s/%s is damaged; it is left in place for inspection\n",
                    cfg.spool.dir, EC_BATCH_STATE_FILE);
            rc = EX_DATAERR;
            goto out;
        }
        if (st != EC_OK) {
            fprintf(stderr, "edgecap speech: cannot read the job state in %s: %s\n", cfg.spool.dir,
                    ec_strerror(st));
            rc = EX_IOERR;
            goto out;
        }
        ec_batch_print(observed, stdout);
        rc = EX_OK;
        goto out;
    }
    if ((st = open_audit(&cfg, &audit)) != EC_OK ||
        (st = delivery_open(&dv, &cfg, &ks, spool, audit, false)) != EC_OK) {
        fprintf(stderr, "edgecap speech: cannot reach Speech: %s (see the log above)\n",
                ec_strerror(st));
        rc = EX_UNAVAILABLE;
        goto out;
    }
    int64_t next = 0;
    st = ec_batch_step(dv.batch, true, &next);
    ec_batch_print(dv.batch, stdout);
    rc = st == EC_OK ? EX_OK : EX_UNAVAILABLE;
out:
    ec_batch_close(&observed);
    delivery_close(&dv);
    ec_audit_close(&audit);
    ec_spool_close(&spool);
    ec_keystore_close(&ks);
    ec_config_free(&cfg);
    ec_rng_free();
    return rc;
}

static int cmd_audit(int argc, char **argv)
{
    const command *c = find_command("audit");
    if (argc < 2 || strcmp(argv[1], "verify") != 0) {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            print_command_help(c, stdout);
            return EX_OK;
        }
        fprintf(stderr, "edgecap audit: expected verify\n");
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    const char *path = NULL;
    int rc = parse_common(c, argc - 1, argv + 1, &path);
    if (rc >= 0)
        return rc;
    if (optind > argc - 2) {
        fprintf(stderr, "edgecap audit verify: expected FILE (or several, oldest first)\n");
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    const char *const *files = (const char *const *)argv + optind + 1;
    size_t n_files = (size_t)(argc - optind - 1);
    ec_config cfg;
    ec_config_init(&cfg);
    if (path != NULL && (rc = load_config(path, &cfg)) != EX_OK)
        return rc;
    if (path != NULL && cfg.logging.audit_hmac_key == NULL) {
        fprintf(stderr, "edgecap audit verify: %s provisions no [logging] audit_hmac_key\n", path);
        ec_config_free(&cfg);
        return EX_CONFIG;
    }
    ec_audit_report r;
    ec_status st = ec_audit_verify_files(files, n_files, cfg.logging.audit_hmac_key, &r);
    const char *bad = files[r.bad_file];
    if (st == EC_OK) {
        char cont[160] = "";
        if (r.continues)
            snprintf(cont, sizeof cont, ", continuing from %s (after %llu lines of an older file)",
                     r.continues_from, r.continues_after);
        const char *macs = r.macs_checked ? "every HMAC verified"
                                          : "HMACs not checked (no --config with audit_hmac_key)";
        if (n_files == 1)
            printf("%s: %zu lines, hash chain intact%s, %s\n", files[0], r.lines, cont, macs);
        else
            printf("%s .. %s: %zu files, %zu lines, hash chain intact across them%s, %s\n",
                   files[0], files[n_files - 1], n_files, r.lines, cont, macs);
        rc = EX_OK;
    } else if (st == EC_ERR_CRYPTO) {
        fprintf(stderr, "edgecap: %s:%zu: %s\n", bad, r.first_bad_line, r.reason);
        rc = EX_DATAERR;
    } else {
        fprintf(stderr, "edgecap: cannot read %s: %s\n", bad,
                st == EC_ERR_NOT_FOUND ? "no such file" : ec_strerror(st));
        rc = st == EC_ERR_NOT_FOUND ? EX_NOINPUT : EX_IOERR;
    }
    ec_config_free(&cfg);
    return rc;
}

static int cmd_pin(int argc, char **argv)
{
    const command *c = find_command("pin");
    int rc = parse_common(c, argc, argv, NULL);
    if (rc >= 0)
        return rc;
    if (optind != argc - 1) {
        fprintf(stderr, "edgecap pin: expected one CERT.pem\n");
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    char pin[EC_TLS_PIN_MAX];
    if (mbedtls_x509_crt_parse_file(&crt, argv[optind]) != 0) {
        fprintf(stderr, "edgecap pin: %s is not a PEM or DER certificate\n", argv[optind]);
        mbedtls_x509_crt_free(&crt);
        return EX_DATAERR;
    }
    rc = EX_SOFTWARE;
    if (ec_tls_spki_pin(&crt, pin, sizeof pin) == EC_OK) {
        printf("%s\n", pin);
        rc = EX_OK;
    }
    mbedtls_x509_crt_free(&crt);
    return rc;
}

/* `provision init|show|install-cert --config FILE ...`: the glue around
 * firmware/provision.c (options, config, key store, audit log, exit codes). */
static int cmd_provision(int argc, char **argv)
{
    const command *c = find_command("provision");
    static const char *const subs[] = {"init", "show", "install-cert"};
    int which = -1;
    int rc = pick_subcommand(c, argc, argv, subs, 3, "init, show or install-cert", &which);
    if (rc >= 0)
        return rc;
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"config", required_argument, NULL, 'c'},
        {"key-type", required_argument, NULL, 'k'},
        {"csr", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *csr = NULL, *sub = subs[which];
    ec_key_type key_type = EC_KEY_TYPE_EC_P256;
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc - 1, argv + 1, "+hc:k:o:", opts, NULL)) != -1) {
        if (ch == 'h') {
            print_command_help(c, stdout);
            return EX_OK;
        } else if (ch == 'c') {
            path = optarg;
        } else if (ch == 'k' && which == 0) {
            if (ec_provision_parse_key_type(optarg, &key_type) != EC_OK) {
                fprintf(stderr,
                        "edgecap provision init: --key-type expects ec-p256 or rsa-3072, "
                        "got '%s'\n",
                        optarg);
                return EX_USAGE;
            }
        } else if (ch == 'o' && which == 0) {
            csr = optarg;
        } else if (ch == 'k' || ch == 'o') {
            fprintf(stderr, "edgecap provision %s: %s applies to init only\n", sub,
                    ch == 'k' ? "--key-type" : "--csr");
            return EX_USAGE;
        } else {
            fprintf(stderr, "edgecap provision %s: unknown or incomplete option '%s'\n", sub,
                    argv[optind]);
            print_command_help(c, stderr);
            return EX_USAGE;
        }
    }
    int positional = which == 2 ? 1 : 0;
    if (path == NULL || argc - 1 - optind != positional) {
        fprintf(stderr, "edgecap provision %s: --config FILE%s is required\n", sub,
                which == 2 ? " and one CERT.pem" : "");
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    ec_config cfg;
    ec_keystore ks = {0};
    ec_audit *audit = NULL;
    char why[EC_PROVISION_WHY_BYTES];
    if ((rc = load_config(path, &cfg)) != EX_OK)
        return rc;
    if ((rc = start_secure(&cfg)) != EX_OK)
        goto out;
    /* the device key on a token is what init makes */
    if ((rc = open_keystore_for(&cfg, &ks, true)) != EX_OK)
        goto out;
    ec_status st;
    if (which == 1) {
        st = ec_provision_show(&cfg, &ks, stdout);
        rc = st == EC_OK ? EX_OK : st == EC_ERR_NOT_FOUND ? EX_NOINPUT : EX_DATAERR;
        goto out;
    }
    if ((st = ec_audit_open(&audit, cfg.logging.audit_file, cfg.logging.audit_hmac_key)) != EC_OK) {
        fprintf(stderr, "edgecap provision %s: cannot open the audit log %s: %s\n", sub,
                cfg.logging.audit_file, ec_strerror(st));
        rc = EX_IOERR;
        goto out;
    }
    if (which == 0) {
        ec_provision_init_params pp = {
            .cfg = &cfg, .keystore = &ks, .audit = audit, .key_type = key_type, .csr_path = csr};
        st = ec_provision_init(&pp, stdout, why, sizeof why);
        if (st != EC_OK)
            fprintf(stderr, "edgecap provision init: %s\n", why);
        rc = st == EC_OK              ? EX_OK
             : st == EC_ERR_EXISTS    ? EX_CANTCREAT
             : st == EC_ERR_IO        ? EX_IOERR
             : st == EC_ERR_NOT_FOUND ? EX_CANTCREAT
             : st == EC_ERR_CONFIG    ? EX_CONFIG
                                      : EX_SOFTWARE;
        goto out;
    }
    st = ec_provision_install_cert(&cfg, &ks, audit, argv[optind + 1], stdout, why, sizeof why);
    if (st != EC_OK)
        fprintf(stderr, "edgecap provision install-cert: refused: %s; %s is unchanged\n", why,
                cfg.tls.client_cert);
    rc = st == EC_OK              ? EX_OK
         : st == EC_ERR_NOT_FOUND ? EX_NOINPUT
         : st == EC_ERR_CONFIG    ? EX_CONFIG
         : st == EC_ERR_IO        ? EX_IOERR
                                  : EX_DATAERR;
out:
    ec_audit_close(&audit);
    ec_keystore_close(&ks);
    ec_config_free(&cfg);
    ec_rng_free();
    return rc;
}

static int cmd_version(int argc, char **argv)
{
    const command *c = find_command("version");
    int rc = parse_common(c, argc, argv, NULL);
    if (rc >= 0)
        return rc;
    if (optind != argc) {
        fprintf(stderr, "edgecap version: unexpected argument '%s'\n", argv[optind]);
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    char mbed[32];
    mbedtls_version_get_string(mbed);
    printf("edgecap %s\n", EC_VERSION);
    printf("%s\n", curl_version()); /* "libcurl/7.88.1 mbedTLS/2.28.x" */
    printf("mbedTLS %s\n", mbed);
    printf("alsa-lib %s\n", snd_asoundlib_version());
    printf("%s\n", opus_get_version_string()); /* "libopus 1.3.1" */
    printf("%s\n", ope_get_version_string());  /* "libopusenc 0.2.1" */
    return EX_OK;
}

static int cmd_help(int argc, char **argv)
{
    int rc = parse_common(find_command("help"), argc, argv, NULL);
    if (rc >= 0)
        return rc;
    if (optind < argc) {
        const command *c = find_command(argv[optind]);
        if (c == NULL) {
            fprintf(stderr, "edgecap: unknown command '%s'\n", argv[optind]);
            print_usage(stderr);
            return EX_USAGE;
        }
        print_command_help(c, stdout);
        return EX_OK;
    }
    print_usage(stdout);
    return EX_OK;
}

/* ---- wipe ------------------------------------------------------------------ */

/* Stands in for a key store whose KEK is already gone: nothing unwraps. */
static ec_status absent_wrap(void *ctx, const uint8_t *key, const uint8_t *aad, size_t aad_len,
                             uint8_t *out)
{
    (void)ctx, (void)key, (void)aad, (void)aad_len, (void)out;
    return EC_ERR_CRYPTO;
}

static ec_status absent_unwrap(void *ctx, const uint8_t *in, const uint8_t *aad, size_t aad_len,
                               uint8_t *key)
{
    (void)ctx, (void)in, (void)aad, (void)aad_len, (void)key;
    return EC_ERR_CRYPTO;
}

static void absent_kek_id(void *ctx, uint8_t *out)
{
    (void)ctx;
    memset(out, 0, EC_KEK_ID_BYTES);
}

static void absent_close(void *ctx)
{
    (void)ctx;
}

static const ec_keystore_ops absent_ops = {.name = "absent",
                                           .wrap = absent_wrap,
                                           .unwrap = absent_unwrap,
                                           .kek_id = absent_kek_id,
                                           .close = absent_close};

/* Opens `dir` as the spool's owner for a wipe; EX_OK, or the exit code with
 * the reason printed (a running edgecap is named by pid). */
static int wipe_open(const char *dir, ec_keystore *ks, ec_spool **spool)
{
    ec_spool_params sp = {.dir = dir, .quota_bytes = INT64_MAX, .keystore = ks};
    ec_status st = ec_spool_open(spool, &sp);
    if (st == EC_ERR_BUSY) {
        long pid = lock_holder(dir);
        fprintf(stderr,
                "edgecap wipe: refusing: edgecap (pid %ld) is running on %s; stop it first\n", pid,
                dir);
        return EX_TEMPFAIL;
    }
    if (st != EC_OK) {
        fprintf(stderr, "edgecap wipe: cannot open %s: %s\n", dir, ec_strerror(st));
        return st == EC_ERR_PERM ? EX_NOPERM : EX_IOERR;
    }
    return EX_OK;
}

static void print_shredded(const char *what, const char *dir, const ec_retention_result *r)
{
    printf("%s %s: %zu sealed, %zu part, %zu quarantined crypto-shredded (%" PRIu64 " bytes)%s\n",
           what, dir, r->by_kind[EC_ITEM_SEALED], r->by_kind[EC_ITEM_PART],
           r->by_kind[EC_ITEM_QUARANTINED], r->bytes, r->failed > 0 ? ", some failed" : "");
}

/* The Speech job state and the NAME.tmp a stopped write left (both can name
 * the device's audio blobs): shredded and reported; false when one stays. */
static bool wipe_job_state(const ec_config *cfg, ec_spool *spool, uint64_t *total)
{
    static const char *const names[] = {EC_BATCH_STATE_FILE, EC_BATCH_STATE_FILE ".tmp"};
    bool ok = true;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        uint64_t bytes = 0;
        ec_status st = ec_spool_shred_file(spool, names[i], &bytes);
        *total += bytes;
        if (st == EC_OK) {
            printf("speech job state %s/%s: overwritten and removed (%" PRIu64 " bytes)\n",
                   cfg->spool.dir, names[i], bytes);
        } else if (st != EC_ERR_NOT_FOUND) {
            fprintf(stderr, "edgecap wipe: cannot remove the speech job state %s/%s: %s (%s)\n",
                    cfg->spool.dir, names[i], ec_strerror(st), strerror(errno));
            ok = false;
        }
    }
    return ok;
}

/* The device's TLS private key ([tls] client_key; the certificate is public
 * and stays): overwritten, removed, reported and audited; false when it
 * could not be destroyed. */
/* The key file: when `key` is a symlink, the file it names is shredded (the
 * key's bytes are there), then the link removed; `where` says which. */
static ec_status shred_key_file(const char *key, char *where, size_t where_len, uint64_t *bytes)
{
    char real[PATH_MAX];
    snprintf(where, where_len, "%s", key);
    if (realpath(key, real) == NULL)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    bool linked = strcmp(real, key) != 0;
    if (linked)
        snprintf(where, where_len, "%s -> %s", key, real);
    ec_status st = ec_file_shred(real, bytes);
    if (st == EC_OK && linked && unlink(key) != 0 && errno != ENOENT)
        st = EC_ERR_IO;
    if (st == EC_OK && linked)
        st = ec_file_fsync_parent(key);
    return st;
}

static bool wipe_device_key(const ec_config *cfg, const ec_keystore *ks, ec_audit *audit)
{
    bool token = cfg->device.keystore == EC_KEYSTORE_PKCS11;
    const char *key = token ? cfg->pkcs11.key_label : cfg->tls.client_key;
    if (key[0] == '\0')
        return true;
    char where[EC_CFG_PATH_MAX + PATH_MAX + 200];
    uint64_t bytes = 0;
    ec_status st;
    int err = 0;
    if (token) {
        snprintf(where, sizeof where, "%s on token %s", key, cfg->pkcs11.token_label);
        st = ks->ops->destroy_identity != NULL ? ks->ops->destroy_identity(ks->ctx, key)
                                               : EC_ERR_UNSUPPORTED;
    } else {
        st = shred_key_file(key, where, sizeof where, &bytes);
        err = errno;
    }
    const char *result = st == EC_OK ? "destroyed" : st == EC_ERR_NOT_FOUND ? "absent" : "failed";
    ec_audit(audit, "wipe_device_key", EC_LOG_STR("key", where), EC_LOG_STR("result", result),
             EC_LOG_UINT("bytes", bytes));
    if (st == EC_OK && token)
        printf("destroyed: device key %s (private and public key objects)\n", where);
    else if (st == EC_OK)
        printf("destroyed: device key %s (overwritten and removed, %" PRIu64 " bytes)\n", where,
               bytes);
    else if (st == EC_ERR_NOT_FOUND)
        printf("device key: none %s %s (already destroyed?)\n", token ? "under" : "at", where);
    else if (token)
        fprintf(stderr, "edgecap wipe: cannot destroy the device key %s: %s\n", where,
                ec_strerror(st));
    else
        fprintf(stderr, "edgecap wipe: cannot destroy the device key %s: %s (%s)\n", where,
                ec_strerror(st), strerror(err));
    if (cfg->tls.client_cert[0] != '\0' && access(cfg->tls.client_cert, F_OK) == 0)
        printf("kept: certificate %s (public, names the device but cannot act as it)\n",
               cfg->tls.client_cert);
    return st == EC_OK || st == EC_ERR_NOT_FOUND;
}

static int cmd_wipe(int argc, char **argv)
{
    const command *c = find_command("wipe");
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"config", required_argument, NULL, 'c'},
        {"all", no_argument, NULL, 'a'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool all = false;
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "+hc:", opts, NULL)) != -1) {
        if (ch == 'h') {
            print_command_help(c, stdout);
            return EX_OK;
        } else if (ch == 'c') {
            path = optarg;
        } else if (ch == 'a') {
            all = true;
        } else {
            fprintf(stderr, "edgecap wipe: unknown or incomplete option '%s'\n", argv[optind - 1]);
            print_command_help(c, stderr);
            return EX_USAGE;
        }
    }
    if (path == NULL || optind != argc) {
        fprintf(stderr, "edgecap wipe: --config FILE is required\n");
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    if (!all) {
        fprintf(stderr, "edgecap wipe: refusing without --all (a wipe destroys every spooled "
                        "segment and the key store's KEK, for good)\n");
        print_command_help(c, stderr);
        return EX_USAGE;
    }
    ec_config cfg;
    ec_keystore ks = {0};
    ec_spool *spool = NULL, *transcripts = NULL;
    ec_audit *audit = NULL;
    bool have_kek = false;
    int rc = load_config(path, &cfg);
    if (rc != EX_OK)
        return rc;
    if ((rc = start_secure(&cfg)) != EX_OK)
        goto out;
    bool token = cfg.device.keystore == EC_KEYSTORE_PKCS11;
    char ks_name[EC_CFG_PATH_MAX + 200];
    snprintf(ks_name, sizeof ks_name, token ? "token %s" : "%s",
             token ? cfg.pkcs11.token_label : cfg.device.keystore_dir);
    /* never mint a KEK only to destroy it */
    ec_status st = EC_OK;
    if (token && (rc = open_pkcs11_ex(&cfg, &ks, true, true)) != EX_OK)
        goto out;
    if (!token)
        st = ec_keystore_file_open_existing(&ks, cfg.device.keystore_dir);
    have_kek = st == EC_OK;
    if (st == EC_ERR_NOT_FOUND) {
        ks.ops = &absent_ops;
        ks.ctx = NULL;
    } else if (st != EC_OK) {
        fprintf(stderr, "edgecap wipe: cannot open the key store %s: %s\n", cfg.device.keystore_dir,
                ec_strerror(st));
        rc = st == EC_ERR_PERM ? EX_NOPERM : EX_IOERR;
        goto out;
    }
    if ((rc = wipe_open(cfg.spool.dir, &ks, &spool)) != EX_OK)
        goto out;
    const char *tdir = cfg.speech.transcript_dir;
    struct stat sb;
    if (tdir[0] != '\0' && stat(tdir, &sb) == 0 &&
        (rc = wipe_open(tdir, &ks, &transcripts)) != EX_OK)
        goto out;
    uint8_t id[EC_KEK_ID_BYTES];
    char kek_hex[2 * EC_KEK_ID_BYTES + 1];
    ks.ops->kek_id(ks.ctx, id);
    ec_hex_encode(id, sizeof id, kek_hex);
    if (token) /* a token without the KEK opens with an all-zero id */
        have_kek = strspn(kek_hex, "0") != strlen(kek_hex);
    /* the record comes first: if it cannot be written, nothing is destroyed */
    if ((st = open_audit(&cfg, &audit)) != EC_OK ||
        (st = ec_audit(audit, "wipe_started", EC_LOG_STR("device", cfg.device.id),
                       EC_LOG_STR("spool", cfg.spool.dir), EC_LOG_STR("transcripts", tdir),
                       EC_LOG_STR("keystore", ks_name),
                       EC_LOG_STR("kek_id", have_kek ? kek_hex : "none"))) != EC_OK) {
        fprintf(stderr, "edgecap wipe: cannot write the audit log %s: %s; nothing was destroyed\n",
                cfg.logging.audit_file, ec_strerror(st));
        rc = EX_IOERR;
        goto out;
    }
    ec_retention_result rs = {0}, rt = {0};
    (void)ec_retention_shred_all(spool, audit, &rs);
    print_shredded("spool", cfg.spool.dir, &rs);
    if (transcripts != NULL) {
        (void)ec_retention_shred_all(transcripts, audit, &rt);
        print_shredded("transcripts", tdir, &rt);
    }
    uint64_t jobs_bytes = 0;
    bool failed = rs.failed > 0 || rt.failed > 0 || !wipe_job_state(&cfg, spool, &jobs_bytes);
    if (!have_kek) {
        printf("KEK: none in %s (already destroyed?)\n", ks_name);
    } else if (ks.ops->destroy == NULL) {
        fprintf(stderr, "edgecap wipe: the %s key store cannot destroy its KEK\n", ks.ops->name);
        failed = true;
    } else if ((st = ks.ops->destroy(ks.ctx)) != EC_OK) {
        fprintf(stderr, "edgecap wipe: cannot destroy the KEK in %s: %s\n", ks_name,
                ec_strerror(st));
        failed = true;
    } else if (token) {
        printf("KEK %s destroyed (object %s on %s)\n", kek_hex, cfg.pkcs11.kek_label, ks_name);
    } else {
        printf("KEK %s destroyed (%s/kek overwritten and removed)\n", kek_hex, ks_name);
    }
    if (!wipe_device_key(&cfg, &ks, audit))
        failed = true;
    ec_audit(audit, "wipe_finished", EC_LOG_UINT("shredded", rs.shredded + rt.shredded),
             EC_LOG_UINT("bytes", rs.bytes + rt.bytes), EC_LOG_UINT("jobs_state_bytes", jobs_bytes),
             EC_LOG_STR("kek_id", have_kek ? kek_hex : "none"), EC_LOG_BOOL("complete", !failed));
    if (failed)
        fprintf(stderr, "edgecap wipe: incomplete: see the log above\n");
    rc = failed ? EX_IOERR : EX_OK;
out:
    ec_audit_close(&audit);
    ec_spool_close(&transcripts);
    ec_spool_close(&spool);
    ec_keystore_close(&ks); /* the absent store's close does nothing */
    ec_config_free(&cfg);
    ec_rng_free();
    return rc;
}

int main(int argc, char **argv)
{
    /* Freed heap is overwritten: libopus/libopusenc and mbedTLS's cipher
     * contexts (key schedules) live on the ordinary heap, since neither has
     * allocator hooks in the distro builds; this scrubs them when freed. */
    mallopt(M_PERTURB, 0xa5);
    /* Before anything can hold a secret: no core dumps, no ptrace by others. */
    if (ec_secmem_harden_process() != EC_OK) {
        fprintf(stderr, "edgecap: cannot harden the process: %s\n", strerror(errno));
        return EX_OSERR;
    }
    /* Until the config says otherwise, secrets go to secure memory whether or
     * not it can be locked; `run` applies [device] require_mlock. The probe is
     * silent: only `run` says (once, in the configured log format) whether an
     * unlocked start is acceptable, and a refusal must not be preceded by a
     * warning that says it goes on. */
    ec_log_configure(&(ec_log_options){.level = (ec_log_level)(EC_LOG_ERROR + 1)});
    (void)ec_secmem_init(false);
    ec_log_configure(&(ec_log_options){.level = EC_LOG_INFO, .output = EC_LOG_TO_STDERR});

    ec_json_global_init();
    if (ec_transport_global_init() != EC_OK) {
        fprintf(stderr, "edgecap: cannot initialise libcurl\n");
        return EX_SOFTWARE;
    }
    if (argc < 2) {
        print_usage(stderr);
        return EX_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return cmd_help(1, argv);
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(1, argv + 1);
    const command *c = find_command(argv[1]);
    if (c == NULL) {
        fprintf(stderr, "edgecap: unknown command '%s'\n", argv[1]);
        print_usage(stderr);
        return EX_USAGE;
    }
    return c->run(argc - 1, argv + 1);
}
