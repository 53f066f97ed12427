/*
 * A hardware watchdog through the Linux watchdog API (the kernel's
 * watchdog-api documentation: WDIOC_SETTIMEOUT, WDIOC_KEEPALIVE and the magic
 * close character 'V'). Opening the device arms the timer; edgecap then pings
 * it only while its pipeline makes progress (firmware/watchdog.c), so a hung
 * daemon resets the board. A clean exit writes 'V' before closing, which
 * disarms the timer (unless the driver was built "nowayout"): the board's
 * supervisor feeds the device itself while edgecap is not running. A crash
 * closes without it and the timer keeps running.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/watchdog.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgecap/log.h"
#include "edgecap/watchdog.h"

typedef struct {
    int fd;
} devwd;

static ec_status dev_send(void *ctx, const char *state)
{
    devwd *d = ctx;
    /* READY, STATUS and the rest mean nothing to a timer. */
    if (strstr(state, "WATCHDOG=1") == NULL)
        return EC_OK;
    int dummy = 0;
    return ioctl(d->fd, WDIOC_KEEPALIVE, &dummy) == 0 ? EC_OK : EC_ERR_IO;
}

static void dev_close(void *ctx)
{
    devwd *d = ctx;
    ssize_t n;
    do {
        n = write(d->fd, "V", 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        ec_log(EC_LOG_WARN, "watchdog_disarm_failed", EC_LOG_STR("reason", strerror(errno)),
               EC_LOG_STR("effect", "the timer keeps running: the board resets unless fed"));
    close(d->fd);
    free(d);
}

static const ec_watchdog_ops dev_ops = {
    .name = "device",
    .on_timeout = "the watchdog resets the board unless it recovers",
    .notify = dev_send,
    .close = dev_close,
};

static ec_status refuse(const char *path, const char *reason)
{
    ec_log(EC_LOG_ERROR, "watchdog_open_failed", EC_LOG_STR("device", path),
           EC_LOG_STR("reason", reason),
           EC_LOG_STR("effect", "running without a hardware watchdog"));
    return EC_ERR_UNSUPPORTED;
}

ec_status ec_watchdog_dev_open(ec_watchdog *wd, const char *path, unsigned timeout_s)
{
    memset(wd, 0, sizeof *wd);
    if (path == NULL || path[0] != '/')
        return refuse(path != NULL ? path : "", "not an absolute path");
    if (timeout_s < EC_WATCHDOG_DEV_MIN_S || timeout_s > EC_WATCHDOG_DEV_MAX_S)
        return refuse(path, "timeout out of range (" EC_WATCHDOG_DEV_RANGE " s)");
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return refuse(path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode)) {
        close(fd);
        return refuse(path, "not a character device");
    }
    /* Opening armed it: every failure from here must disarm it again. */
    struct watchdog_info info = {0};
    int want = (int)timeout_s, got = want;
    const char *failed = NULL;
    if (ioctl(fd, WDIOC_GETSUPPORT, &info) != 0)
        failed = "not a watchdog (WDIOC_GETSUPPORT refused)";
    else if (!(info.options & WDIOF_SETTIMEOUT) || ioctl(fd, WDIOC_SETTIMEOUT, &got) != 0) {
        /* a fixed-timeout timer: run on what it has */
        if (ioctl(fd, WDIOC_GETTIMEOUT, &got) != 0 || got <= 0)
            failed = "its timeout can be neither set nor read";
    }
    devwd *d = failed == NULL ? calloc(1, sizeof *d) : NULL;
    if (d == NULL) {
        if (write(fd, "V", 1) != 1)
            ec_log(EC_LOG_WARN, "watchdog_disarm_failed", EC_LOG_STR("device", path));
        close(fd);
        return refuse(path, failed != NULL ? failed : "out of memory");
    }
    d->fd = fd;
    wd->ops = &dev_ops;
    wd->ctx = d;
    wd->timeout_ms = (int64_t)got * 1000;
    /* a quarter: a board reset costs more than a missed service restart */
    wd->ping_interval_ms = wd->timeout_ms / 4;
    char identity[sizeof info.identity + 1];
    memcpy(identity, info.identity, sizeof info.identity);
    identity[sizeof info.identity] = '\0';
    ec_log(EC_LOG_INFO, "watchdog_device", EC_LOG_STR("device", path),
           EC_LOG_STR("identity", identity), EC_LOG_INT("timeout_s", got),
           EC_LOG_INT("requested_s", want),
           EC_LOG_BOOL("magic_close", (info.options & WDIOF_MAGICCLOSE) != 0));
    (void)dev_send(d, "WATCHDOG=1"); /* from now on, a timeout from here */
    return EC_OK;
}

/* ---- the board's choice ------------------------------------------------------ */

ec_status ec_watchdog_open_env(ec_watchdog *wd)
{
    memset(wd, 0, sizeof *wd);
    const char *notify = getenv("NOTIFY_SOCKET");
    if (notify != NULL && notify[0] != '\0')
        return ec_watchdog_sdnotify_open(wd);
    const char *dev = getenv("EDGECAP_WATCHDOG_DEVICE");
    if (dev == NULL || dev[0] == '\0')
        return EC_OK;
    const char *secs = getenv("EDGECAP_WATCHDOG_SECONDS");
    unsigned long timeout = EC_WATCHDOG_DEV_DEFAULT_S;
    if (secs != NULL && secs[0] != '\0') {
        char *end = NULL;
        errno = 0;
        timeout = secs[0] >= '0' && secs[0] <= '9' ? strtoul(secs, &end, 10) : 0;
        if (errno != 0 || end == NULL || *end != '\0' || timeout > EC_WATCHDOG_DEV_MAX_S)
            timeout = 0; /* refused below with the range */
    }
    return ec_watchdog_dev_open(wd, dev, (unsigned)timeout);
}
