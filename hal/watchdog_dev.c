/*
 * A hardware watchdog through the Linux watchdog API (the kernel's
 * watchdog-api documentation: WDIOC_SETTIMEOUT, WDIOC_KEEPALIVE and the magic
 * close character 'V'). Opening the device arms the timer; edgecap then pings
 * it only while its pipeline makes progress (firmware/watchdog.c), so a hung
 * daemon resets the board.
 *
 * Two timeouts: the running one (the board's choice), and a longer one while
 * edgecap is busy with something that does not ping (starting up: spool
 * recovery over a long backlog, the first retention pass; reloading;
 * stopping), so that a slow start is not taken for a hang and the board does
 * not reset in a loop. READY=1 sets the running one, RELOADING=1 and
 * STOPPING=1 the longer one (the driver may cap it: then it stays shorter).
 *
 * A clean exit writes 'V' before closing, which disarms a driver that
 * supports the magic close (unless built "nowayout"): the board's supervisor
 * feeds the device itself while edgecap is not running. A crash closes
 * without it: with the magic close the timer keeps running; without it the
 * kernel stops the timer on any close, and the supervisor's restart is what
 * is left.
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

/* The timeout while edgecap starts, reloads or stops (seconds). */
#define BUSY_TIMEOUT_S 300

typedef struct {
    int fd;
    int run_s, busy_s; /* as the driver took them */
} devwd;

static ec_status keepalive(const devwd *d)
{
    int dummy = 0;
    return ioctl(d->fd, WDIOC_KEEPALIVE, &dummy) == 0 ? EC_OK : EC_ERR_IO;
}

/* Sets the timeout (the driver pings on it too), then pings. */
static ec_status set_timeout(const devwd *d, int seconds)
{
    int t = seconds;
    if (d->busy_s != d->run_s && ioctl(d->fd, WDIOC_SETTIMEOUT, &t) != 0)
        return EC_ERR_IO;
    return keepalive(d);
}

static ec_status dev_send(void *ctx, const char *state)
{
    const devwd *d = ctx;
    if (strstr(state, "READY=1") != NULL)
        return set_timeout(d, d->run_s);
    if (strstr(state, "RELOADING=1") != NULL || strstr(state, "STOPPING=1") != NULL)
        return set_timeout(d, d->busy_s);
    if (strstr(state, "WATCHDOG=1") != NULL)
        return keepalive(d);
    return EC_OK; /* STATUS= means nothing to a timer */
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

/* The timeout the driver takes for `want` (it may round or refuse it). */
static int try_timeout(int fd, int want, int fallback)
{
    int t = want;
    return ioctl(fd, WDIOC_SETTIMEOUT, &t) == 0 && t > 0 ? t : fallback;
}

ec_status ec_watchdog_dev_open(ec_watchdog *wd, const char *path, unsigned timeout_s)
{
    memset(wd, 0, sizeof *wd);
    if (path == NULL || path[0] != '/')
        return refuse(path != NULL ? path : "", "not an absolute path");
    if (timeout_s < EC_WATCHDOG_DEV_MIN_S || timeout_s > EC_WATCHDOG_DEV_MAX_S)
        return refuse(path, "timeout out of range (" EC_WATCHDOG_DEV_RANGE " s)");
    /* Looked at before opening: a FIFO there would block the open, and
     * nothing but a watchdog may be written to. */
    struct stat st;
    if (stat(path, &st) != 0)
        return refuse(path, strerror(errno));
    if (!S_ISCHR(st.st_mode))
        return refuse(path, "not a character device");
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return refuse(path, strerror(errno));
    struct watchdog_info info = {0};
    if (ioctl(fd, WDIOC_GETSUPPORT, &info) != 0) {
        close(fd); /* not a watchdog: nothing to disarm, nothing written */
        return refuse(path, "not a watchdog (WDIOC_GETSUPPORT refused)");
    }
    /* A watchdog, armed by the open: every failure from here disarms it. */
    int want = (int)timeout_s, run = 0, busy = 0;
    if (info.options & WDIOF_SETTIMEOUT)
        run = try_timeout(fd, want, 0);
    if (run <= 0 && (ioctl(fd, WDIOC_GETTIMEOUT, &run) != 0 || run <= 0))
        run = 0; /* a fixed timer that does not say its timeout */
    else if ((info.options & WDIOF_SETTIMEOUT) && run < BUSY_TIMEOUT_S)
        busy = try_timeout(fd, BUSY_TIMEOUT_S, run);
    else
        busy = run; /* a fixed timer, or already long: no switching */
    devwd *d = run > 0 ? calloc(1, sizeof *d) : NULL;
    if (d == NULL) {
        if (write(fd, "V", 1) != 1)
            ec_log(EC_LOG_WARN, "watchdog_disarm_failed", EC_LOG_STR("device", path));
        close(fd);
        return refuse(path, run > 0 ? "out of memory" : "its timeout can be neither set nor read");
    }
    d->fd = fd;
    d->run_s = run;
    d->busy_s = busy;
    wd->ops = &dev_ops;
    wd->ctx = d;
    wd->timeout_ms = (int64_t)run * 1000;
    /* a quarter: a board reset costs more than a missed service restart */
    wd->ping_interval_ms = wd->timeout_ms / 4;
    char identity[sizeof info.identity + 1];
    memcpy(identity, info.identity, sizeof info.identity);
    identity[sizeof info.identity] = '\0';
    ec_log(EC_LOG_INFO, "watchdog_device", EC_LOG_STR("device", path),
           EC_LOG_STR("identity", identity), EC_LOG_INT("timeout_s", run),
           EC_LOG_INT("requested_s", want), EC_LOG_INT("busy_timeout_s", busy),
           EC_LOG_BOOL("magic_close", (info.options & WDIOF_MAGICCLOSE) != 0));
    (void)keepalive(d); /* until READY=1: the busy timeout, from here */
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
