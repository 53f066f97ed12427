/*
 * The systemd notification socket, spoken directly (sd_notify(3)'s
 * documented protocol): each notification is one datagram of
 * newline-separated VAR=value lines sent to the AF_UNIX SOCK_DGRAM address in
 * $NOTIFY_SOCKET, a file system path or, with a leading '@', an abstract
 * address. No libsystemd: the board images have no systemd libraries.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "edgecap/log.h"
#include "edgecap/watchdog.h"

typedef struct {
    int fd;
    struct sockaddr_un addr;
    socklen_t addr_len;
} sdnotify;

static ec_status sd_send(void *ctx, const char *state)
{
    sdnotify *s = ctx;
    size_t len = strlen(state);
    ssize_t n;
    do {
        n = sendto(s->fd, state, len, MSG_NOSIGNAL, (const struct sockaddr *)&s->addr, s->addr_len);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)len ? EC_OK : EC_ERR_IO;
}

static void sd_close(void *ctx)
{
    sdnotify *s = ctx;
    close(s->fd);
    free(s);
}

static const ec_watchdog_ops sdnotify_ops = {
    .name = "sdnotify",
    .on_timeout = "the supervisor restarts edgecap unless it recovers",
    .notify = sd_send,
    .close = sd_close,
};

/* A positive decimal number, or 0 when `v` is not one. */
static unsigned long long parse_positive(const char *v)
{
    if (v == NULL || v[0] < '0' || v[0] > '9')
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    return errno == 0 && *end == '\0' ? x : 0;
}

ec_status ec_watchdog_sdnotify_open(ec_watchdog *wd)
{
    memset(wd, 0, sizeof *wd);
    const char *where = getenv("NOTIFY_SOCKET");
    if (where == NULL || where[0] == '\0')
        return EC_OK;
    sdnotify *s = calloc(1, sizeof *s);
    if (s == NULL)
        return EC_ERR_NOMEM;
    size_t n = strlen(where);
    s->addr.sun_family = AF_UNIX;
    if ((where[0] != '/' && where[0] != '@') || n < 2 || n > sizeof s->addr.sun_path - 1) {
        /* vsock: and other kinds that newer systemd versions speak */
        ec_log(EC_LOG_WARN, "notify_socket_unsupported",
               EC_LOG_STR("reason", "NOTIFY_SOCKET is neither an absolute path nor @abstract"),
               EC_LOG_STR("effect", "no readiness or watchdog notifications"));
        free(s);
        return EC_ERR_UNSUPPORTED;
    }
    memcpy(s->addr.sun_path, where, n);
    if (where[0] == '@')
        s->addr.sun_path[0] = '\0'; /* abstract: no trailing NUL in the length */
    s->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (where[0] == '/'));
    s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        ec_log(EC_LOG_WARN, "notify_socket_failed", EC_LOG_STR("reason", strerror(errno)));
        free(s);
        return EC_ERR_IO;
    }
    wd->ops = &sdnotify_ops;
    wd->ctx = s;
    /* The watchdog is ours only when WATCHDOG_PID is unset or names us. */
    unsigned long long usec = parse_positive(getenv("WATCHDOG_USEC"));
    const char *pid_text = getenv("WATCHDOG_PID");
    unsigned long long pid = parse_positive(pid_text);
    bool ours = pid_text == NULL || pid == (unsigned long long)getpid();
    if (usec > 0 && ours) {
        wd->timeout_ms = (int64_t)(usec / 1000 > 0 ? usec / 1000 : 1);
        wd->ping_interval_ms = wd->timeout_ms / 2 > 0 ? wd->timeout_ms / 2 : 1;
    }
    return EC_OK;
}
