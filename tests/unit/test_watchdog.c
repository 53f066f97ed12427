/*
 * The watchdog: the sd_notify datagram protocol against a real AF_UNIX socket
 * (path and abstract addresses, WATCHDOG_USEC/WATCHDOG_PID), and the liveness
 * rules as a table of sample sequences: a ping is deserved only while every
 * stage makes progress.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "edgecap/watchdog.h"
#include "support.h"

/* A receiving socket bound to `where` ("/path" or "@abstract"). */
static int listen_at(const char *where)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(where);
    memcpy(a.sun_path, where, n);
    if (where[0] == '@')
        a.sun_path[0] = '\0';
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (where[0] == '/'));
    assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
    return fd;
}

static void recv_text(int fd, char *buf, size_t len)
{
    ssize_t n = recv(fd, buf, len - 1, MSG_DONTWAIT);
    assert_true(n > 0);
    buf[n] = '\0';
}

static void assert_nothing_waiting(int fd)
{
    char buf[64];
    assert_true(recv(fd, buf, sizeof buf, MSG_DONTWAIT) < 0);
}

static void clear_env(void)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    unsetenv("EDGECAP_WATCHDOG_DEVICE");
    unsetenv("EDGECAP_WATCHDOG_SECONDS");
}

static void test_no_socket_is_a_noop(void **state)
{
    (void)state;
    clear_env();
    setenv("WATCHDOG_USEC", "1000000", 1);
    ec_watchdog wd;
    assert_int_equal(ec_watchdog_sdnotify_open(&wd), EC_OK);
    assert_null(wd.ops);
    assert_int_equal(wd.ping_interval_ms, 0);
    assert_int_equal(ec_watchdog_notify(&wd, "READY=1"), EC_OK);
    ec_watchdog_ready(&wd, "x");
    ec_watchdog_close(&wd);
    clear_env();
}

static void check_protocol(const char *where)
{
    clear_env();
    int rx = listen_at(where);
    setenv("NOTIFY_SOCKET", where, 1);
    setenv("WATCHDOG_USEC", "3000000", 1);
    ec_watchdog wd;
    assert_int_equal(ec_watchdog_sdnotify_open(&wd), EC_OK);
    assert_non_null(wd.ops);
    assert_int_equal(wd.timeout_ms, 3000);
    assert_int_equal(wd.ping_interval_ms, 1500);
    char buf[512];
    ec_watchdog_ready(&wd, "capturing");
    recv_text(rx, buf, sizeof buf);
    assert_string_equal(buf, "READY=1\nSTATUS=capturing");
    ec_watchdog_reloading(&wd);
    recv_text(rx, buf, sizeof buf);
    assert_true(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
    assert_non_null(strstr(buf, "\nSTATUS=reloading"));
    ec_watchdog_stopping(&wd);
    recv_text(rx, buf, sizeof buf);
    assert_true(strncmp(buf, "STOPPING=1\nSTATUS=", 18) == 0);
    assert_int_equal(ec_watchdog_notify(&wd, "WATCHDOG=1"), EC_OK);
    recv_text(rx, buf, sizeof buf);
    assert_string_equal(buf, "WATCHDOG=1");
    assert_nothing_waiting(rx);
    ec_watchdog_close(&wd);
    ec_watchdog_close(&wd); /* twice is safe */
    close(rx);
    clear_env();
}

static void test_path_socket(void **state)
{
    (void)state;
    char *dir = ts_mkdtemp();
    char *path = ts_strf("%s/notify", dir);
    check_protocol(path);
    free(path);
    ts_rmtree(dir);
    free(dir);
}

static void test_abstract_socket(void **state)
{
    (void)state;
    char *name = ts_strf("@edgecap-test-%ld", (long)getpid());
    check_protocol(name);
    free(name);
}

static void test_watchdog_pid(void **state)
{
    (void)state;
    char *name = ts_strf("@edgecap-test-pid-%ld", (long)getpid());
    int rx = listen_at(name);
    ec_watchdog wd;
    static const struct {
        const char *usec, *pid;
        int64_t interval_ms;
    } rows[] = {
        {"2000000", NULL, 1000},   /* no WATCHDOG_PID: ours */
        {"2000000", "self", 1000}, /* our pid */
        {"2000000", "1", 0},       /* another process's watchdog */
        {"2000000", "x", 0},       /* not a pid: not ours */
        {"0", NULL, 0},            /* disabled */
        {"abc", NULL, 0},          /* malformed */
        {"999", NULL, 1},          /* below a millisecond: still pings */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        clear_env();
        setenv("NOTIFY_SOCKET", name, 1);
        setenv("WATCHDOG_USEC", rows[i].usec, 1);
        char self[32];
        snprintf(self, sizeof self, "%ld", (long)getpid());
        if (rows[i].pid != NULL)
            setenv("WATCHDOG_PID", strcmp(rows[i].pid, "self") == 0 ? self : rows[i].pid, 1);
        assert_int_equal(ec_watchdog_sdnotify_open(&wd), EC_OK);
        if (wd.ping_interval_ms != rows[i].interval_ms)
            fail_msg("row %zu: interval %lld, want %lld", i, (long long)wd.ping_interval_ms,
                     (long long)rows[i].interval_ms);
        /* readiness goes out either way */
        assert_int_equal(ec_watchdog_notify(&wd, "READY=1"), EC_OK);
        char buf[64];
        recv_text(rx, buf, sizeof buf);
        ec_watchdog_close(&wd);
    }
    close(rx);
    free(name);
    clear_env();
}

static void test_unsupported_address(void **state)
{
    (void)state;
    static const char *const bad[] = {"vsock:2:1234", "relative/path", "@", "/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_env();
        setenv("NOTIFY_SOCKET", bad[i], 1);
        ec_watchdog wd;
        ts_log_begin();
        ec_status st = ec_watchdog_sdnotify_open(&wd);
        char *log = ts_log_end();
        assert_int_equal(st, EC_ERR_UNSUPPORTED);
        assert_null(wd.ops);
        assert_non_null(strstr(log, "notify_socket_unsupported"));
        free(log);
    }
    clear_env();
}

/* ---- liveness table -------------------------------------------------------- */

typedef struct {
    int64_t at_ms;
    uint64_t frames;
    bool finished;
    bool upload;
    uint64_t beats;
    const char *stuck; /* expected: NULL alive, else the stage */
} step;

typedef struct {
    const char *name;
    step steps[8];
} liveness_case;

/* capture stall 1000 ms, upload stall 3000 ms */
static const liveness_case cases[] = {
    {"capture moving",
     {{0, 0, 0, 0, 0, NULL},
      {500, 10, 0, 0, 0, NULL},
      {1400, 20, 0, 0, 0, NULL},
      {2300, 30, 0, 0, 0, NULL},
      {-1, 0, 0, 0, 0, NULL}}},
    {"capture stalls, then resumes",
     {{0, 5, 0, 0, 0, NULL},
      {900, 5, 0, 0, 0, NULL},
      {1000, 5, 0, 0, 0, NULL},
      {1001, 5, 0, 0, 0, "capture"},
      {1500, 5, 0, 0, 0, "capture"},
      {1600, 6, 0, 0, 0, NULL},
      {-1, 0, 0, 0, 0, NULL}}},
    {"a source that ended is not stuck",
     {{0, 5, 0, 0, 0, NULL},
      {5000, 5, 1, 0, 0, NULL},
      {9000, 5, 1, 0, 0, NULL},
      {-1, 0, 0, 0, 0, NULL}}},
    {"upload stalls while capture moves",
     {{0, 1, 0, 1, 7, NULL},
      {1000, 2, 0, 1, 7, NULL},
      {2000, 3, 0, 1, 7, NULL},
      {3000, 4, 0, 1, 7, NULL},
      {3001, 5, 0, 1, 7, "upload"},
      {3500, 6, 0, 1, 8, NULL},
      {-1, 0, 0, 0, 0, NULL}}},
    {"no uploader: only capture counts",
     {{0, 1, 0, 0, 0, NULL},
      {900, 2, 0, 0, 0, NULL},
      {1800, 3, 0, 0, 0, NULL},
      {5000, 3, 0, 0, 0, "capture"},
      {-1, 0, 0, 0, 0, NULL}}},
    {"an uploader that appears (reload) starts its clock then",
     {{0, 1, 0, 0, 0, NULL},
      {900, 2, 0, 0, 0, NULL},
      {1800, 3, 0, 1, 0, NULL},
      {2700, 4, 0, 1, 0, NULL},
      {3600, 5, 0, 1, 0, NULL},
      {4700, 6, 0, 1, 1, NULL},
      {-1, 0, 0, 0, 0, NULL}}},
};

static void test_liveness_table(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ec_liveness l;
        ec_liveness_init(&l, 1000, 3000);
        for (const step *s = cases[c].steps; s->at_ms >= 0; s++) {
            ec_liveness_sample sample = {.capture_frames = s->frames,
                                         .capture_finished = s->finished,
                                         .have_upload = s->upload,
                                         .upload_heartbeats = s->beats};
            const char *got = ec_liveness_check(&l, &sample, s->at_ms);
            bool same = (got == NULL && s->stuck == NULL) ||
                        (got != NULL && s->stuck != NULL && strcmp(got, s->stuck) == 0);
            if (!same)
                fail_msg("%s: at %lld ms got %s, want %s", cases[c].name, (long long)s->at_ms,
                         got != NULL ? got : "alive", s->stuck != NULL ? s->stuck : "alive");
        }
    }
}

/* The feeder pings at the interval while alive, withholds while stuck. */
static void test_feeder(void **state)
{
    (void)state;
    clear_env();
    char *name = ts_strf("@edgecap-test-feed-%ld", (long)getpid());
    int rx = listen_at(name);
    setenv("NOTIFY_SOCKET", name, 1);
    setenv("WATCHDOG_USEC", "1000000", 1); /* pings every 500 ms, capture stall 1000 ms */
    ec_watchdog wd;
    assert_int_equal(ec_watchdog_sdnotify_open(&wd), EC_OK);
    ec_watchdog_feeder f;
    ec_watchdog_feeder_init(&f, &wd, 0);
    ec_liveness_sample s = {0};
    char buf[128];
    ts_log_begin();
    for (int64_t t = 0; t <= 1000; t += 100) { /* moving: pings at 0, 500, 1000 */
        s.capture_frames++;
        ec_watchdog_feed(&f, &wd, &s, t);
    }
    assert_int_equal(f.pings_sent, 3);
    for (int i = 0; i < 3; i++) {
        recv_text(rx, buf, sizeof buf);
        assert_string_equal(buf, "WATCHDOG=1");
    }
    for (int64_t t = 1100; t <= 3000; t += 100) /* stalled from 1000 ms */
        ec_watchdog_feed(&f, &wd, &s, t);
    /* pings at 1500 and 2000 (stall not yet > 1000 ms), then withheld */
    assert_int_equal(f.pings_sent, 5);
    s.capture_frames++;
    ec_watchdog_feed(&f, &wd, &s, 3100);
    assert_int_equal(f.pings_sent, 6);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "watchdog_withheld"));
    assert_non_null(strstr(log, "stage=capture"));
    assert_non_null(strstr(log, "watchdog_resumed"));
    free(log);
    ec_watchdog_close(&wd);
    close(rx);
    free(name);
    clear_env();
}

/* ---- the board's watchdog device --------------------------------------------
 * A real device resets the machine it runs on: the emulated board's i6300esb
 * under tests/system/image.sh is where it is opened and fed. Here: everything
 * it must refuse, each logged and leaving a no-op watchdog. */

static void test_device_refusals(void **state)
{
    (void)state;
    char *dir = ts_mkdtemp();
    char *plain = ts_strf("%s/watchdog", dir);
    FILE *f = fopen(plain, "w");
    assert_non_null(f);
    fclose(f);
    char *missing = ts_strf("%s/none", dir);
    static const char *const dev_null = "/dev/null";
    const struct {
        const char *device, *seconds, *reason;
    } rows[] = {
        {"watchdog", NULL, "not an absolute path"},
        {missing, NULL, "No such file or directory"},
        {plain, NULL, "not a character device"},
        {dev_null, NULL, "not a watchdog (WDIOC_GETSUPPORT refused)"},
        {dev_null, "3", "timeout out of range (4-3600 s)"},
        {dev_null, "3601", "timeout out of range"},
        {dev_null, "0", "timeout out of range"},
        {dev_null, "60s", "timeout out of range"},
        {dev_null, "-60", "timeout out of range"},
        {dev_null, " 60", "timeout out of range"},
        {dev_null, "99999999999999999999", "timeout out of range"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        clear_env();
        setenv("EDGECAP_WATCHDOG_DEVICE", rows[i].device, 1);
        if (rows[i].seconds != NULL)
            setenv("EDGECAP_WATCHDOG_SECONDS", rows[i].seconds, 1);
        ec_watchdog wd;
        ts_log_begin();
        ec_status st = ec_watchdog_open_env(&wd);
        char *log = ts_log_end();
        if (st != EC_ERR_UNSUPPORTED || wd.ops != NULL || wd.ping_interval_ms != 0 ||
            strstr(log, "event=watchdog_open_failed") == NULL ||
            strstr(log, rows[i].reason) == NULL)
            fail_msg("row %zu (%s, %s): status %d, log: %s", i, rows[i].device,
                     rows[i].seconds ? rows[i].seconds : "default", st, log);
        assert_int_equal(ec_watchdog_notify(&wd, "WATCHDOG=1"), EC_OK); /* a no-op */
        ec_watchdog_close(&wd);
        free(log);
    }
    /* systemd's socket, when there is one, comes first */
    char *sock = ts_strf("%s/notify", dir);
    int rx = listen_at(sock);
    clear_env();
    setenv("NOTIFY_SOCKET", sock, 1);
    setenv("EDGECAP_WATCHDOG_DEVICE", plain, 1);
    ec_watchdog wd;
    assert_int_equal(ec_watchdog_open_env(&wd), EC_OK);
    assert_non_null(wd.ops);
    assert_string_equal(wd.ops->name, "sdnotify");
    ec_watchdog_close(&wd);
    /* and neither: no watchdog, no complaint */
    clear_env();
    ts_log_begin();
    assert_int_equal(ec_watchdog_open_env(&wd), EC_OK);
    char *log = ts_log_end();
    assert_null(wd.ops);
    assert_string_equal(log, "");
    free(log);
    close(rx);
    free(sock);
    free(missing);
    free(plain);
    ts_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_socket_is_a_noop),
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_watchdog_pid),
        cmocka_unit_test(test_unsupported_address),
        cmocka_unit_test(test_liveness_table),
        cmocka_unit_test(test_feeder),
        cmocka_unit_test(test_device_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
