/*
 * [metrics] listen: the Prometheus text of the last snapshot, served over
 * HTTP/1.1 on a loopback TCP address (127.0.0.0/8 or ::1) or a Unix socket
 * (created 0600, unlinked at stop). Anything else is refused here too, even
 * when config validation was bypassed. One thread, one connection at a
 * time; a request is bounded in size (EC_METRICS_HTTP_REQUEST_MAX) and in
 * time (EC_METRICS_HTTP_TIMEOUT_MS), so a slow or silent client delays the
 * next scrape by at most that long. GET (or HEAD) /metrics answers 200;
 * another path 404, another method 405, a malformed request 400.
 *
 * The server only ever holds the rendered text: no secret can reach it.
 * Owned by main: `run` starts it, publishes every snapshot, stops it.
 */
#ifndef EDGECAP_METRICS_HTTP_H
#define EDGECAP_METRICS_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#include "edgecap/status.h"

#define EC_METRICS_HTTP_REQUEST_MAX 4096
#define EC_METRICS_HTTP_TIMEOUT_MS 2000

typedef struct {
    int family; /* AF_INET, AF_INET6 or AF_UNIX */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char path[108]; /* AF_UNIX */
} ec_metrics_addr;

/* Parses "IPV4:PORT", "[IPV6]:PORT" or "unix:/absolute/path": EC_ERR_INVALID
 * when malformed, EC_ERR_POLICY when the address is not loopback. */
ec_status ec_metrics_listen_parse(const char *spec, ec_metrics_addr *out);

typedef struct ec_metrics_server ec_metrics_server;

/* Binds `spec` and starts the thread; on failure `why` says what. */
ec_status ec_metrics_server_start(ec_metrics_server **out, const char *spec, char *why,
                                  size_t why_len);

/* Replaces the text served (copied). */
void ec_metrics_server_publish(ec_metrics_server *s, const char *text, size_t len);

/* Stops and joins the thread, closes the socket, unlinks a Unix socket. */
void ec_metrics_server_stop(ec_metrics_server **s);

#endif
