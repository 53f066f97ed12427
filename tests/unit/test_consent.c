/*
 * Consent: recording windows (syntax, days, ranges that wrap, midnight
 * crossing, boundaries, the local time zone from TZ), the file switch (fail
 * closed: missing, unreadable, "0", garbage are off) and the gate (one log
 * line and one audit line per change, never per poll).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "edgecap/consent.h"
#include "edgecap/secmem.h"
#include "edgecap/switch.h"
#include "support.h"

enum { SUN, MON, TUE, WED, THU, FRI, SAT };

static struct tm at(int wday, int hour, int min, int sec)
{
    struct tm tm = {.tm_wday = wday, .tm_hour = hour, .tm_min = min, .tm_sec = sec};
    return tm;
}

static ec_consent_window parsed(const char *text)
{
    ec_consent_window w;
    if (!ec_consent_window_parse(text, &w))
        fail_msg("\"%s\" was refused", text);
    return w;
}

static bool inside(const char *text, struct tm tm)
{
    ec_consent_window w = parsed(text);
    return ec_consent_in_windows(&w, 1, &tm);
}

/* ---- syntax ------------------------------------------------------------- */

static void test_window_syntax_accepted(void **state)
{
    (void)state;
    ec_consent_window w = parsed("mon-fri 08:00-17:30");
    assert_int_equal(w.days, 1 << MON | 1 << TUE | 1 << WED | 1 << THU | 1 << FRI);
    assert_int_equal(w.start_min, 8 * 60);
    assert_int_equal(w.end_min, 17 * 60 + 30);
    w = parsed("fri-mon 22:00-06:00"); /* a range that wraps over the weekend */
    assert_int_equal(w.days, 1 << FRI | 1 << SAT | 1 << SUN | 1 << MON);
    assert_true(w.end_min < w.start_min);
    w = parsed("daily 00:00-24:00");
    assert_int_equal(w.days, 0x7f);
    assert_int_equal(w.end_min, 1440);
    w = parsed("Sat 09:05-09:06");
    assert_int_equal(w.days, 1 << SAT);
    w = parsed("sun 23:59-00:00"); /* the last minute of Sunday */
    assert_int_equal(w.start_min, 1439);
    assert_int_equal(w.end_min, 0);
}

static void test_window_syntax_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "mon",
        "08:00-17:30",
        "mon 8:00-17:30",
        "mon 08:00-17:60",
        "mon 25:00-26:00",
        "mon 24:00-06:00", /* 24:00 only ends a window */
        "mon 08:00-24:01",
        "mon 08:00-08:00", /* empty */
        "daily 00:00-00:00",
        "mon-mon 08:00-09:00",
        "mon-fry 08:00-09:00",
        "monday 08:00-09:00",
        "mon,wed 08:00-09:00",
        "mon  08:00-09:00",
        "mon 08:00 - 09:00",
        "mon 08:00-09:00 ",
        "mon 08:00-09:00x",
        "mon 08:00~09:00",
        "mon 0a:00-09:00",
        "weekdays 08:00-17:00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ec_consent_window w;
        if (ec_consent_window_parse(bad[i], &w))
            fail_msg("\"%s\" was accepted", bad[i]);
    }
}

/* ---- evaluation --------------------------------------------------------- */

static void test_days_and_boundaries(void **state)
{
    (void)state;
    const char *w = "mon-fri 08:00-17:30";
    assert_true(inside(w, at(MON, 8, 0, 0)));    /* the start is inside */
    assert_false(inside(w, at(MON, 7, 59, 59))); /* a second before is not */
    assert_true(inside(w, at(FRI, 17, 29, 59)));
    assert_false(inside(w, at(FRI, 17, 30, 0))); /* the end is outside */
    assert_true(inside(w, at(WED, 12, 0, 0)));
    assert_false(inside(w, at(SAT, 12, 0, 0)));
    assert_false(inside(w, at(SUN, 12, 0, 0)));
    assert_true(inside("daily 00:00-24:00", at(SUN, 0, 0, 0)));
    assert_true(inside("daily 00:00-24:00", at(SAT, 23, 59, 59)));
    assert_true(inside("fri-mon 10:00-11:00", at(SUN, 10, 30, 0)));
    assert_false(inside("fri-mon 10:00-11:00", at(TUE, 10, 30, 0)));

    /* several windows: any one of them */
    ec_consent_window two[2] = {parsed("mon 08:00-09:00"), parsed("sat 10:00-12:00")};
    struct tm tm = at(SAT, 11, 0, 0);
    assert_true(ec_consent_in_windows(two, 2, &tm));
    tm = at(MON, 11, 0, 0);
    assert_false(ec_consent_in_windows(two, 2, &tm));
    assert_false(ec_consent_in_windows(two, 0, &tm));
}

static void test_midnight_crossing(void **state)
{
    (void)state;
    const char *w = "fri 22:00-06:00"; /* Friday 22:00 to Saturday 06:00 */
    assert_false(inside(w, at(FRI, 21, 59, 59)));
    assert_true(inside(w, at(FRI, 22, 0, 0)));
    assert_true(inside(w, at(FRI, 23, 59, 59)));
    assert_true(inside(w, at(SAT, 0, 0, 0)));
    assert_true(inside(w, at(SAT, 5, 59, 59)));
    assert_false(inside(w, at(SAT, 6, 0, 0)));
    assert_false(inside(w, at(SAT, 22, 30, 0))); /* Saturday evening is not listed */
    assert_false(inside(w, at(FRI, 3, 0, 0)));   /* nor Friday morning (Thursday night) */
    /* a listed Sunday night runs into Monday morning */
    assert_true(inside("sat-sun 20:00-07:00", at(MON, 6, 0, 0)));
    assert_false(inside("sat-sun 20:00-07:00", at(SAT, 6, 0, 0)));
    assert_true(inside("sun 23:59-00:00", at(SUN, 23, 59, 30)));
    assert_false(inside("sun 23:59-00:00", at(MON, 0, 0, 0)));
}

/* ---- the gate with real clocks and time zones --------------------------- */

typedef struct {
    char *dir;
    char *switch_path;
    char *audit_path;
    char *old_tz;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = ts_mkdtemp();
    f->switch_path = ts_strf("%s/switch", f->dir);
    f->audit_path = ts_strf("%s/audit.log", f->dir);
    const char *tz = getenv("TZ");
    f->old_tz = tz != NULL ? strdup(tz) : NULL;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->old_tz != NULL)
        setenv("TZ", f->old_tz, 1);
    else
        unsetenv("TZ");
    tzset();
    ts_rmtree(f->dir);
    free(f->dir);
    free(f->switch_path);
    free(f->audit_path);
    free(f->old_tz);
    free(f);
    return 0;
}

static void set_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

/* A UTC calendar time as time_t. */
static time_t utc(int year, int mon, int mday, int hour, int min, int sec)
{
    struct tm tm = {.tm_year = year - 1900,
                    .tm_mon = mon - 1,
                    .tm_mday = mday,
                    .tm_hour = hour,
                    .tm_min = min,
                    .tm_sec = sec};
    return timegm(&tm);
}

static ec_consent *gate_of(const char *window, ec_switch *sw, ec_audit *audit)
{
    ec_consent_window w;
    ec_consent_params p = {.sw = sw, .audit = audit};
    if (window != NULL) {
        w = parsed(window);
        p.windows = &w;
        p.n_windows = 1;
    }
    ec_consent *g = NULL;
    assert_int_equal(ec_consent_new(&g, &p), EC_OK);
    return g;
}

static bool poll_once(const char *window, time_t t)
{
    ec_consent *g = gate_of(window, NULL, NULL);
    ts_log_begin();
    bool open = ec_consent_poll(g, t);
    free(ts_log_end());
    ec_consent_free(&g);
    return open;
}

static void test_local_time_zone(void **state)
{
    (void)state;
    /* Monday 2026-11-23 02:45 UTC is 08:15 in UTC+05:30 and 21:45 on the
     * Sunday before in UTC-05:00 */
    time_t t = utc(2026, 11, 23, 2, 45, 0);
    set_tz("UTC0");
    assert_false(poll_once("mon-fri 08:00-17:30", t));
    set_tz("IST-5:30");
    assert_true(poll_once("mon-fri 08:00-17:30", t));
    set_tz("EST5");
    assert_false(poll_once("mon-fri 08:00-17:30", t));
    assert_true(poll_once("sun 21:00-22:00", t));

    /* daylight saving time follows the zone's rules: 13:30 UTC is 09:30
     * EDT in July and 08:30 EST in January */
    set_tz("EST5EDT,M3.2.0,M11.1.0");
    assert_true(poll_once("daily 09:00-10:00", utc(2026, 7, 15, 13, 30, 0)));
    assert_false(poll_once("daily 09:00-10:00", utc(2026, 1, 14, 13, 30, 0)));

    /* crossing midnight with real dates: Friday 2026-11-27 23:00 to
     * Saturday 01:00 local (UTC+01:00) */
    set_tz("CET-1");
    assert_false(poll_once("fri 23:00-01:00", utc(2026, 11, 27, 21, 59, 59)));
    assert_true(poll_once("fri 23:00-01:00", utc(2026, 11, 27, 22, 0, 0)));
    assert_true(poll_once("fri 23:00-01:00", utc(2026, 11, 27, 23, 59, 59)));
    assert_false(poll_once("fri 23:00-01:00", utc(2026, 11, 28, 0, 0, 0)));
}

/* ---- the switch ---------------------------------------------------------- */

static ec_switch_state read_with(fixture *f, const char *content, char *why, size_t why_len)
{
    if (content != NULL) {
        char *p = ts_write_file(f->dir, "switch", 0600, content);
        free(p);
    }
    ec_switch sw;
    assert_int_equal(ec_switch_file_open(&sw, f->switch_path), EC_OK);
    ec_switch_state s = ec_switch_read(&sw, why, why_len);
    ec_switch_close(&sw);
    return s;
}

static void test_switch_reader(void **state)
{
    fixture *f = *state;
    char why[96] = "";
    /* missing: off (unreadable, with the reason) */
    assert_int_equal(read_with(f, NULL, why, sizeof why), EC_SWITCH_UNREADABLE);
    assert_string_equal(why, "No such file or directory");
    static const struct {
        const char *content;
        ec_switch_state want;
    } cases[] = {
        {"1", EC_SWITCH_ON},
        {"1\n", EC_SWITCH_ON},
        {"on", EC_SWITCH_ON},
        {" ON \n", EC_SWITCH_ON},
        {"On\r\n", EC_SWITCH_ON},
        {"0", EC_SWITCH_OFF},
        {"0\n", EC_SWITCH_OFF},
        {"off", EC_SWITCH_OFF},
        {"", EC_SWITCH_OFF},
        {"yes", EC_SWITCH_OFF},
        {"11", EC_SWITCH_OFF},
        {"1 1", EC_SWITCH_OFF},
        {"onion", EC_SWITCH_OFF},
        {"\x01\xff", EC_SWITCH_OFF},
        /* long content is not a state, whatever it starts with */
        {"1                                       \n", EC_SWITCH_OFF},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ec_switch_state got = read_with(f, cases[i].content, NULL, 0);
        if (got != cases[i].want)
            fail_msg("content \"%s\": state %d, expected %d", cases[i].content, got, cases[i].want);
    }
    /* a directory where the file should be: unreadable */
    char *p = ts_strf("%s/switch", f->dir);
    remove(p);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(read_with(f, NULL, why, sizeof why), EC_SWITCH_UNREADABLE);
    assert_string_equal(why, "Is a directory");
    free(p);
    /* a zeroed switch reads as unreadable, closes safely */
    ec_switch none = {0};
    assert_int_equal(ec_switch_read(&none, NULL, 0), EC_SWITCH_UNREADABLE);
    ec_switch_close(&none);
    ec_switch_close(&none);
}

/* ---- transitions: logged and audited once ------------------------------- */

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strdup(buf);
}

static void put(fixture *f, const char *content)
{
    free(ts_write_file(f->dir, "switch", 0600, content));
}

static void test_transitions_logged_and_audited_once(void **state)
{
    fixture *f = *state;
    set_tz("UTC0");
    ec_audit *audit = NULL;
    assert_int_equal(ec_audit_open(&audit, f->audit_path, NULL), EC_OK);
    ec_switch sw;
    assert_int_equal(ec_switch_file_open(&sw, f->switch_path), EC_OK);
    ec_consent *g = gate_of("mon-fri 08:00-17:30", &sw, audit);
    time_t t = utc(2026, 11, 23, 7, 59, 0); /* Monday, before the window */
    put(f, "1\n");

    ts_log_begin();
    for (int i = 0; i < 50; i++) /* a minute, polled as the capture thread does */
        assert_false(ec_consent_poll(g, t + i));
    t += 60; /* 08:00: the window opens */
    for (int i = 0; i < 50; i++)
        assert_true(ec_consent_poll(g, t));
    put(f, "0\n");
    for (int i = 0; i < 50; i++)
        assert_false(ec_consent_poll(g, t));
    remove(f->switch_path); /* missing: off, and said once */
    for (int i = 0; i < 50; i++)
        assert_false(ec_consent_poll(g, t));
    assert_int_equal(mkdir(f->switch_path, 0700), 0); /* another reason, same spell */
    for (int i = 0; i < 50; i++)
        assert_false(ec_consent_poll(g, t));
    assert_int_equal(rmdir(f->switch_path), 0);
    put(f, "on");
    for (int i = 0; i < 50; i++)
        assert_true(ec_consent_poll(g, t + 1));
    t = utc(2026, 11, 23, 17, 30, 0); /* the window closes */
    assert_false(ec_consent_poll(g, t));
    assert_false(ec_consent_poll(g, t));
    char *log = ts_log_end();

    assert_int_equal(count(log, "event=consent_off"), 3);
    assert_int_equal(count(log, "event=consent_on"), 2);
    assert_int_equal(count(log, "event=consent_switch_unreadable"), 1);
    assert_non_null(strstr(log, "event=consent_off reason=window window=outside switch=on"));
    assert_non_null(strstr(log, "event=consent_on reason=window window=inside switch=on"));
    assert_non_null(strstr(log, "event=consent_off reason=switch window=inside switch=off"));
    assert_non_null(strstr(log, "event=consent_on reason=switch window=inside switch=on"));
    assert_non_null(strstr(log, "event=consent_switch_unreadable path="));
    assert_non_null(strstr(log, "reason=\"No such file or directory\" effect=\"counted as off\""));
    free(log);

    ec_audit_close(&audit);
    char *lines = slurp(f->audit_path);
    const char *want[] = {
        "\"event\":\"consent_off\",\"reason\":\"window\",\"window\":\"outside\",\"switch\":\"on\"",
        "\"event\":\"consent_on\",\"reason\":\"window\",\"window\":\"inside\",\"switch\":\"on\"",
        "\"event\":\"consent_off\",\"reason\":\"switch\",\"window\":\"inside\",\"switch\":\"off\"",
        "\"event\":\"consent_on\",\"reason\":\"switch\",\"window\":\"inside\",\"switch\":\"on\"",
        "\"event\":\"consent_off\",\"reason\":\"window\",\"window\":\"outside\",\"switch\":\"on\"",
    };
    const char *p = lines;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        p = strstr(p, want[i]);
        if (p == NULL)
            fail_msg("audit line %zu (%s) missing or out of order in:\n%s", i + 1, want[i], lines);
        p++;
    }
    assert_int_equal(count(lines, "\n"), 5);
    free(lines);
    ec_consent_free(&g);
    ec_consent_free(&g);
    ec_switch_close(&sw);
}

static void test_start_state_and_no_conditions(void **state)
{
    fixture *f = *state;
    /* neither window nor switch: always open, said once as reason=start */
    ec_consent *g = gate_of(NULL, NULL, NULL);
    ts_log_begin();
    assert_true(ec_consent_poll(g, 1000));
    assert_true(ec_consent_poll(g, 2000));
    char *log = ts_log_end();
    assert_int_equal(count(log, "event=consent_on reason=start window=none switch=none"), 1);
    free(log);
    ec_consent_free(&g);

    /* a switch that cannot be read at start: off, reason switch, said once */
    ec_switch sw;
    assert_int_equal(ec_switch_file_open(&sw, f->switch_path), EC_OK);
    g = gate_of(NULL, &sw, NULL);
    ts_log_begin();
    for (int i = 0; i < 10; i++)
        assert_false(ec_consent_poll(g, 1000 + i));
    log = ts_log_end();
    assert_int_equal(count(log, "event=consent_off reason=switch window=none switch=unreadable"),
                     1);
    assert_int_equal(count(log, "event=consent_switch_unreadable"), 1);
    free(log);
    ec_consent_free(&g);
    ec_switch_close(&sw);

    /* too many windows */
    ec_consent_window w[EC_CONSENT_WINDOWS_MAX + 1] = {0};
    ec_consent_params p = {.windows = w, .n_windows = EC_CONSENT_WINDOWS_MAX + 1};
    assert_int_equal(ec_consent_new(&g, &p), EC_ERR_INVALID);
    assert_null(g);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_syntax_accepted),
        cmocka_unit_test(test_window_syntax_refused),
        cmocka_unit_test(test_days_and_boundaries),
        cmocka_unit_test(test_midnight_crossing),
        cmocka_unit_test_setup_teardown(test_local_time_zone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transitions_logged_and_audited_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_state_and_no_conditions, setup, teardown),
    };
    return cmocka_run_group_tests_name("consent", tests, NULL, NULL);
}
