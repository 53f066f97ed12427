/*
 * The loopback metrics listener (see include/edgecap/metrics_http.h).
 */
#include "edgecap/metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "edgecap/log.h"
#include "edgecap/metrics.h"

struct ec_metrics_server {
    ec_metrics_addr addr;
    int listen_fd;
    int stop_pipe[2];
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    char *text; /* EC_METRICS_TEXT_MAX: the last snapshot */
    size_t text_len;
    bool have_text;
    char *page; /* the thread's copy while it answers */
};

/* ---- address ------------------------------------------------------------ */

static bool parse_port(const char *s, in_port_t *port)
{
    unsigned long v = 0;
    if (*s == '\0' || strlen(s) > 5)
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v == 0 || v > 65535)
        return false;
    *port = htons((in_port_t)v);
    return true;
}

ec_status ec_metrics_listen_parse(const char *spec, ec_metrics_addr *out)
{
    memset(out, 0, sizeof *out);
    if (strncmp(spec, "unix:", 5) == 0) {
        const char *path = spec + 5;
        if (path[0] != '/' || strlen(path) >= sizeof out->path ||
            strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return EC_ERR_INVALID;
        size_t len = strlen(path) + 1; /* both checked above */
        struct sockaddr_un *un = (struct sockaddr_un *)&out->addr;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, len);
        memcpy(out->path, path, len);
        out->family = AF_UNIX;
        out->addr_len = (socklen_t)sizeof *un;
        return EC_OK;
    }
    char host[64];
    const char *port;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof host)
            return EC_ERR_INVALID;
        memcpy(host, spec + 1, (size_t)(close - spec - 1));
        host[close - spec - 1] = '\0';
        port = close + 2;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->addr;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1 || !parse_port(port, &in6->sin6_port))
            return EC_ERR_INVALID;
        if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return EC_ERR_POLICY;
        in6->sin6_family = AF_INET6;
        out->family = AF_INET6;
        out->addr_len = (socklen_t)sizeof *in6;
        return EC_OK;
    }
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= sizeof host)
        return EC_ERR_INVALID;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    port = colon + 1;
    struct sockaddr_in *in = (struct sockaddr_in *)&out->addr;
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1 || !parse_port(port, &in->sin_port))
        return EC_ERR_INVALID;
    if ((ntohl(in->sin_addr.s_addr) >> 24) != 127) /* 127.0.0.0/8 */
        return EC_ERR_POLICY;
    in->sin_family = AF_INET;
    out->family = AF_INET;
    out->addr_len = (socklen_t)sizeof *in;
    return EC_OK;
}

/* ---- one connection ------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on `fd` until `deadline`; false on timeout or stop. */
static bool wait_fd(ec_metrics_server *s, int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return false;
        struct pollfd p[2] = {{.fd = fd, .events = events},
                              {.fd = s->stop_pipe[0], .events = POLLIN}};
        int n = poll(p, 2, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || p[1].revents != 0)
            return false;
        if (n > 0)
            return true;
    }
}

static bool send_all(ec_metrics_server *s, int fd, const char *buf, size_t len, int64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(s, fd, POLLOUT, deadline))
            continue;
        return false;
    }
    return true;
}

static void answer(ec_metrics_server *s, int fd, int code, const char *extra_headers,
                   const char *body, size_t body_len, bool head, int64_t deadline)
{
    const char *phrase = code == 200   ? "OK"
                         : code == 400 ? "Bad Request"
                         : code == 404 ? "Not Found"
                         : code == 405 ? "Method Not Allowed"
                         : code == 408 ? "Request Timeout"
                         : code == 431 ? "Request Header Fields Too Large"
                                       : "Service Unavailable";
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     code, phrase,
                     code == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                 : "text/plain; charset=utf-8",
                     body_len, extra_headers);
    if (n > 0 && (size_t)n < sizeof hdr && send_all(s, fd, hdr, (size_t)n, deadline) && !head)
        (void)send_all(s, fd, body, body_len, deadline);
}

#define ERROR_ANSWER(s, fd, code, extra, msg, deadline)                                            \
    answer((s), (fd), (code), (extra), (msg), sizeof(msg) - 1, false, (deadline))

static void serve(ec_metrics_server *s, int fd)
{
    int64_t deadline = mono_ms() + EC_METRICS_HTTP_TIMEOUT_MS;
    char req[EC_METRICS_HTTP_REQUEST_MAX + 1];
    size_t len = 0;
    char *end = NULL;
    while (end == NULL) {
        if (len == EC_METRICS_HTTP_REQUEST_MAX) {
            ERROR_ANSWER(s, fd, 431, "", "request too large\n", deadline);
            return;
        }
        ssize_t n = recv(fd, req + len, EC_METRICS_HTTP_REQUEST_MAX - len, 0);
        if (n > 0) {
            len += (size_t)n;
            req[len] = '\0';
            end = strstr(req, "\r\n\r\n");
            continue;
        }
        if (n == 0)
            return; /* closed before a whole request */
        if (errno == EINTR)
            continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(s, fd, POLLIN, deadline))
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            ERROR_ANSWER(s, fd, 408, "", "request not complete in time\n",
                         mono_ms() + EC_METRICS_HTTP_TIMEOUT_MS);
        return;
    }
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    char method[16], target[256], version[16];
    size_t line_len = strcspn(req, "\r\n");
    req[line_len] = '\0';
    if (sscanf(req, "%15s %255s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0) {
        ERROR_ANSWER(s, fd, 400, "", "malformed request\n", deadline);
        return;
    }
    size_t path_len = strcspn(target, "?#");
    if (path_len != strlen("/metrics") || strncmp(target, "/metrics", path_len) != 0) {
        ERROR_ANSWER(s, fd, 404, "", "not found: only /metrics is served\n", deadline);
        return;
    }
    bool head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) {
        ERROR_ANSWER(s, fd, 405, "Allow: GET, HEAD\r\n", "method not allowed\n", deadline);
        return;
    }
    pthread_mutex_lock(&s->lock);
    bool have = s->have_text;
    size_t page_len = s->text_len;
    if (have)
        memcpy(s->page, s->text, page_len);
    pthread_mutex_unlock(&s->lock);
    if (!have) {
        ERROR_ANSWER(s, fd, 503, "", "no snapshot yet\n", deadline);
        return;
    }
    answer(s, fd, 200, "", s->page, page_len, head, deadline);
}

static void *server_thread(void *arg)
{
    ec_metrics_server *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN},
                              {.fd = s->stop_pipe[0], .events = POLLIN}};
        int n = poll(p, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || p[1].revents != 0)
            break;
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            continue;
        serve(s, fd);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    return NULL;
}

/* ---- lifecycle ----------------------------------------------------------- */

/* A Unix socket path: a stale socket (nobody answers) is replaced; a live
 * one, or anything that is not a socket, is left alone and refused. */
static ec_status prepare_unix_path(const ec_metrics_addr *a, char *why, size_t why_len)
{
    struct stat st;
    if (lstat(a->path, &st) != 0)
        return errno == ENOENT ? EC_OK : EC_ERR_IO;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(why, why_len, "%s exists and is not a socket", a->path);
        return EC_ERR_IO;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = probe >= 0 && connect(probe, (const struct sockaddr *)&a->addr, a->addr_len) == 0;
    if (probe >= 0)
        close(probe);
    if (live) {
        snprintf(why, why_len, "%s is in use by another process", a->path);
        return EC_ERR_BUSY;
    }
    return unlink(a->path) == 0 ? EC_OK : EC_ERR_IO;
}

static ec_status bind_listen(ec_metrics_server *s, char *why, size_t why_len)
{
    const ec_metrics_addr *a = &s->addr;
    if (a->family == AF_UNIX) {
        ec_status st = prepare_unix_path(a, why, why_len);
        if (st != EC_OK) {
            if (why[0] == '\0')
                snprintf(why, why_len, "%s: %s", a->path, strerror(errno));
            return st;
        }
    }
    s->listen_fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->listen_fd < 0) {
        snprintf(why, why_len, "socket: %s", strerror(errno));
        return EC_ERR_IO;
    }
    int one = 1;
    if (a->family != AF_UNIX)
        (void)setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* the socket file is born 0600: nobody else may connect, not even for
     * the moment between bind and chmod */
    mode_t old = a->family == AF_UNIX ? umask(0177) : 0;
    int rc = bind(s->listen_fd, (const struct sockaddr *)&a->addr, a->addr_len);
    int bind_errno = errno;
    if (a->family == AF_UNIX)
        umask(old);
    if (rc == 0 && a->family == AF_UNIX && chmod(a->path, 0600) != 0)
        rc = -1;
    if (rc != 0 || listen(s->listen_fd, 4) != 0) {
        snprintf(why, why_len, "bind: %s", strerror(rc != 0 ? bind_errno : errno));
        return EC_ERR_IO;
    }
    return EC_OK;
}

ec_status ec_metrics_server_start(ec_metrics_server **out, const char *spec, char *why,
                                  size_t why_len)
{
    *out = NULL;
    why[0] = '\0';
    ec_metrics_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return EC_ERR_NOMEM;
    s->listen_fd = -1;
    s->stop_pipe[0] = s->stop_pipe[1] = -1;
    pthread_mutex_init(&s->lock, NULL);
    ec_status st = ec_metrics_listen_parse(spec, &s->addr);
    if (st == EC_ERR_POLICY)
        snprintf(why, why_len, "%s is not a loopback address: refused", spec);
    else if (st != EC_OK)
        snprintf(why, why_len, "%s: expected 127.0.0.1:PORT, [::1]:PORT or unix:/absolute/path",
                 spec);
    if (st == EC_OK) {
        s->text = malloc(EC_METRICS_TEXT_MAX);
        s->page = malloc(EC_METRICS_TEXT_MAX);
        if (s->text == NULL || s->page == NULL || pipe2(s->stop_pipe, O_CLOEXEC) != 0)
            st = EC_ERR_NOMEM;
    }
    if (st == EC_OK)
        st = bind_listen(s, why, why_len);
    if (st == EC_OK) {
        if (pthread_create(&s->thread, NULL, server_thread, s) != 0) {
            snprintf(why, why_len, "cannot start its thread");
            st = EC_ERR_INTERNAL;
        } else {
            s->started = true;
        }
    }
    if (st != EC_OK) {
        ec_metrics_server_stop(&s);
        return st;
    }
    *out = s;
    return EC_OK;
}

void ec_metrics_server_publish(ec_metrics_server *s, const char *text, size_t len)
{
    if (s == NULL || len > EC_METRICS_TEXT_MAX)
        return;
    pthread_mutex_lock(&s->lock);
    memcpy(s->text, text, len);
    s->text_len = len;
    s->have_text = true;
    pthread_mutex_unlock(&s->lock);
}

void ec_metrics_server_stop(ec_metrics_server **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    ec_metrics_server *s = *sp;
    if (s->started) {
        (void)!write(s->stop_pipe[1], "x", 1);
        pthread_join(s->thread, NULL);
    }
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        if (s->addr.family == AF_UNIX)
            (void)unlink(s->addr.path);
    }
    if (s->stop_pipe[0] >= 0) {
        close(s->stop_pipe[0]);
        close(s->stop_pipe[1]);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->text);
    free(s->page);
    free(s);
    *sp = NULL;
}
