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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "edgecap/config.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"
#include "edgecap/version.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
    const char *summary;
} command;

static int cmd_run(int argc, char **argv);
static int cmd_check_config(int argc, char **argv);
static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const command commands[] = {
    {"run", cmd_run, "run --config FILE",
     "Run the daemon with the provisioning file FILE until SIGTERM or SIGINT."},
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
        fprintf(out, "  %-28s %.*s\n", commands[i].usage,
                (int)strcspn(commands[i].summary, "\n"), commands[i].summary);
    fprintf(out, "\n'edgecap <command> --help' shows a command's options.\n");
}

static void print_command_help(const command *c, FILE *out)
{
    fprintf(out, "usage: edgecap %s\n\n%s\n", c->usage, c->summary);
}

/* Parses only --help (and, when `config` is non-NULL, --config FILE). Returns
 * -1 to go on, or an exit code. */
static int parse_common(const command *c, int argc, char **argv, const char **config)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"config", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "+hc:", opts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            print_command_help(c, stdout);
            return EX_OK;
        case 'c':
            if (config != NULL) {
                *config = optarg;
                break;
            }
            /* fall through */
        default:
            fprintf(stderr, "edgecap %s: unknown or incomplete option '%s'\n", c->name,
                    argv[optind - 1]);
            print_command_help(c, stderr);
            return EX_USAGE;
        }
    }
    return -1;
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

/* Loads a config and reports a refusal the same way for every command. */
static int load_config(const char *path, ec_config *cfg)
{
    ec_config_error err;
    ec_status st = ec_config_load(cfg, path, &err);
    if (st == EC_OK)
        return EX_OK;
    char msg[EC_CFG_PATH_MAX + 512];
    ec_config_error_format(&err, msg, sizeof msg);
    fprintf(stderr, "edgecap: %s\n", msg);
    return st == EC_ERR_NOT_FOUND ? EX_NOINPUT : EX_CONFIG;
}

static void hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
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
    hex(cfg.sha256, sizeof cfg.sha256, digest);
    printf("# %s: valid (sha256 %s)\n", argv[optind], digest);
    ec_config_print(&cfg, stdout);
    ec_config_free(&cfg);
    return EX_OK;
}

static int cmd_run(int argc, char **argv)
{
    const command *c = find_command("run");
    const char *path = NULL;
    int rc = parse_common(c, argc, argv, &path);
    if (rc >= 0)
        return rc;
    if (path == NULL || optind != argc) {
        fprintf(stderr, "edgecap run: --config FILE is required\n");
        print_command_help(c, stderr);
        return EX_USAGE;
    }

    /* Signals are taken synchronously with sigwait, so block them before any
     * thread exists. */
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGTERM);
    sigaddset(&wanted, SIGINT);
    sigaddset(&wanted, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &wanted, NULL);

    ec_config cfg;
    rc = load_config(path, &cfg);
    if (rc != EX_OK)
        return rc;
    ec_log_options lo = {.level = (ec_log_level)cfg.logging.level,
                         .output = cfg.logging.syslog ? EC_LOG_TO_SYSLOG : EC_LOG_TO_STDERR,
                         .json = cfg.logging.json};
    ec_log_configure(&lo);
    if (ec_secmem_init(cfg.device.require_mlock) != EC_OK) {
        ec_config_free(&cfg);
        fprintf(stderr, "edgecap: refusing to start: secure memory cannot be locked and "
                        "[device] require_mlock is on\n");
        return EX_OSERR;
    }

    char digest[65];
    hex(cfg.sha256, sizeof cfg.sha256, digest);
    ec_secmem_stats ms;
    ec_secmem_get_stats(&ms);
    ec_log(EC_LOG_INFO, "ready", EC_LOG_STR("version", EC_VERSION),
           EC_LOG_STR("device", cfg.device.id), EC_LOG_STR("config", cfg.source_path),
           EC_LOG_STR("config_sha256", digest), EC_LOG_INT("pid", (long long)getpid()),
           EC_LOG_BOOL("mlock", ms.mlock_refusals == 0));

    int sig = 0;
    for (;;) {
        if (sigwait(&wanted, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            ec_log(EC_LOG_WARN, "reload_ignored",
                   EC_LOG_STR("reason", "live reload is not available in this build"));
            continue;
        }
        break;
    }
    ec_log(EC_LOG_INFO, "stopping", EC_LOG_STR("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    ec_config_free(&cfg);
    ec_log(EC_LOG_INFO, "stopped");
    return EX_OK;
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
    printf("%s\n", ope_get_version_string()); /* "libopusenc 0.2.1" */
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

int main(int argc, char **argv)
{
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
