/*
 * HAL watchdog: tells the board's supervisor that the daemon is up, what it
 * is doing, and — only while the pipeline is seen to make progress — that it
 * is alive. Backends: systemd's notification socket (hal/watchdog_sdnotify.c,
 * the documented NOTIFY_SOCKET datagram protocol, without libsystemd), and a
 * Linux watchdog device (hal/watchdog_dev.c, /dev/watchdog: a hung daemon
 * resets the board; the field image's supervisor names it).
 *
 * Messages use sd_notify's vocabulary (READY=1, RELOADING=1, STOPPING=1,
 * STATUS=..., WATCHDOG=1); a backend acts on what it understands. Without a
 * supervisor (no NOTIFY_SOCKET) every call is a no-op.
 *
 * The liveness check decides whether a ping is deserved: a stage is stuck when
 * its progress counter has not moved for longer than its stall bound. The
 * capture stage counts frames read (a source that ended cleanly is not
 * stuck); the upload stage counts the uploader's heartbeats (each pass, each
 * slice of a backoff wait, each libcurl progress call during a transfer).
 *
 * Owned by main (run).
 */
#ifndef EDGECAP_WATCHDOG_H
#define EDGECAP_WATCHDOG_H

#include <stdbool.h>
#include <stdint.h>

#include "edgecap/status.h"

typedef struct {
    const char *name;
    /* What happens when pings stop, for the log ("the supervisor restarts
     * edgecap"). */
    const char *on_timeout;
    /* Sends one notification (newline-separated VAR=value lines). */
    ec_status (*notify)(void *ctx, const char *state);
    void (*close)(void *ctx);
} ec_watchdog_ops;

typedef struct {
    const ec_watchdog_ops *ops; /* NULL: no supervisor, nothing is sent */
    void *ctx;
    /* How often to ping: half the supervisor's timeout; 0 = no watchdog. */
    int64_t ping_interval_ms;
    /* The supervisor's timeout itself (WATCHDOG_USEC), 0 = none. */
    int64_t timeout_ms;
} ec_watchdog;

/*
 * Opens the systemd backend from the environment: NOTIFY_SOCKET (a path, or
 * '@' for an abstract address), WATCHDOG_USEC and WATCHDOG_PID (the watchdog
 * applies only when WATCHDOG_PID is unset or names this process). Without
 * NOTIFY_SOCKET, *wd is a no-op watchdog and the result is EC_OK.
 * EC_ERR_UNSUPPORTED for an address kind it does not speak (logged; *wd is
 * then a no-op too).
 */
ec_status ec_watchdog_sdnotify_open(ec_watchdog *wd);

/* The device backend's timeout range and default (seconds). */
#define EC_WATCHDOG_DEV_MIN_S 4u
#define EC_WATCHDOG_DEV_MAX_S 3600u
#define EC_WATCHDOG_DEV_RANGE "4-3600"
#define EC_WATCHDOG_DEV_DEFAULT_S 60u

/*
 * Opens a Linux watchdog device (`path`, a character device; opening it arms
 * the timer) with a timeout of `timeout_s` (the driver may round it: the
 * timeout it reports is used), pings it once, and logs the device, its
 * identity and the timeout. Pings (WATCHDOG=1) go out every quarter timeout;
 * other messages are ignored. Closing writes the magic 'V' (disarm) first.
 * EC_ERR_UNSUPPORTED (logged, *wd a no-op, the device disarmed again) for a
 * path that is not absolute, cannot be opened, is not a watchdog, or a
 * timeout outside EC_WATCHDOG_DEV_MIN_S..MAX_S.
 */
ec_status ec_watchdog_dev_open(ec_watchdog *wd, const char *path, unsigned timeout_s);

/*
 * The backend the board's supervisor asks for: NOTIFY_SOCKET (systemd) first;
 * else EDGECAP_WATCHDOG_DEVICE (a watchdog device path) with
 * EDGECAP_WATCHDOG_SECONDS (its timeout, default EC_WATCHDOG_DEV_DEFAULT_S;
 * anything but a number in range is refused); else a no-op and EC_OK.
 */
ec_status ec_watchdog_open_env(ec_watchdog *wd);

/* Sends `state` as is; EC_OK (and nothing sent) without a supervisor. */
ec_status ec_watchdog_notify(ec_watchdog *wd, const char *state);

/* READY=1 with a STATUS= line. */
void ec_watchdog_ready(ec_watchdog *wd, const char *status);
/* RELOADING=1 with MONOTONIC_USEC= (as systemd 253+ asks) and a STATUS= line. */
void ec_watchdog_reloading(ec_watchdog *wd);
/* STOPPING=1 with a STATUS= line. */
void ec_watchdog_stopping(ec_watchdog *wd);
/* STATUS= only. */
void ec_watchdog_status(ec_watchdog *wd, const char *status);

/* Closes the backend; safe on a zeroed or closed watchdog. */
void ec_watchdog_close(ec_watchdog *wd);

/* ---- pipeline liveness --------------------------------------------------- */

typedef struct {
    uint64_t capture_frames; /* frames read from the source so far */
    /* the source ended (cleanly or not): not stuck. Capture that stops on
     * purpose (e.g. paused outside a consent window) must be reported here
     * too, or the watchdog withholds pings and systemd restarts the daemon. */
    bool capture_finished;
    bool have_upload; /* an uploader runs */
    uint64_t upload_heartbeats;
} ec_liveness_sample;

typedef struct {
    int64_t capture_stall_ms, upload_stall_ms;
    ec_liveness_sample last;
    int64_t capture_moved_ms, upload_moved_ms; /* when each counter last moved */
    bool started;
} ec_liveness;

void ec_liveness_init(ec_liveness *l, int64_t capture_stall_ms, int64_t upload_stall_ms);

/* Records a sample taken at `now_ms` (monotonic); returns NULL when every
 * stage is alive, or the name of a stuck stage ("capture", "upload"). */
const char *ec_liveness_check(ec_liveness *l, const ec_liveness_sample *s, int64_t now_ms);

/*
 * Called on every tick of the daemon's main loop: when a ping is due and the
 * pipeline is alive, sends WATCHDOG=1. Logs once when it starts withholding
 * pings (stage stuck) and once when they resume. No-op without a watchdog.
 */
typedef struct {
    ec_liveness liveness;
    int64_t last_ping_ms;
    const char *withheld; /* the stuck stage while pings are withheld */
    uint64_t pings_sent;
} ec_watchdog_feeder;

void ec_watchdog_feeder_init(ec_watchdog_feeder *f, const ec_watchdog *wd,
                             int64_t upload_stall_floor_ms);
void ec_watchdog_feed(ec_watchdog_feeder *f, ec_watchdog *wd, const ec_liveness_sample *s,
                      int64_t now_ms);

#endif
