/*
 * Consent gate (see include/edgecap/consent.h): recording windows in local
 * time, the HAL consent switch, and one log line and one audit line per
 * change of state.
 */
#include "edgecap/consent.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "edgecap/log.h"

#define MIN_PER_DAY 1440

static const char *const day_names[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct ec_consent {
    ec_consent_window windows[EC_CONSENT_WINDOWS_MAX];
    size_t n_windows;
    ec_switch *sw;
    ec_audit *audit;
    bool started;      /* a state has been decided (and logged) */
    bool open;         /* capture allowed */
    time_t window_sec; /* when in_window was last evaluated */
    bool in_window;
    ec_switch_state sw_state;
};

/* ---- windows ------------------------------------------------------------ */

static int day_index(const char *p)
{
    for (int d = 0; d < 7; d++) {
        if (strncasecmp(p, day_names[d], 3) == 0)
            return d;
    }
    return -1;
}

/* "HH:MM" at p; 24:00 only when `end`. */
static bool parse_hhmm(const char *p, bool end, uint16_t *out)
{
    for (int i = 0; i < 5; i++) {
        if (i == 2 ? p[i] != ':' : (p[i] < '0' || p[i] > '9'))
            return false;
    }
    int h = (p[0] - '0') * 10 + (p[1] - '0'), m = (p[3] - '0') * 10 + (p[4] - '0');
    if (m > 59 || h > 24 || (h == 24 && (!end || m != 0)))
        return false;
    *out = (uint16_t)(h * 60 + m);
    return true;
}

bool ec_consent_window_parse(const char *text, ec_consent_window *out)
{
    memset(out, 0, sizeof *out);
    const char *sp = strchr(text, ' ');
    if (sp == NULL)
        return false;
    size_t dn = (size_t)(sp - text);
    if (dn == 5 && strncasecmp(text, "daily", 5) == 0) {
        out->days = 0x7f;
    } else if (dn == 3 && day_index(text) >= 0) {
        out->days = (uint8_t)(1u << day_index(text));
    } else if (dn == 7 && text[3] == '-' && day_index(text) >= 0 && day_index(text + 4) >= 0) {
        int from = day_index(text), to = day_index(text + 4);
        if (from == to)
            return false; /* "mon-mon": say "mon" */
        for (int d = from;; d = (d + 1) % 7) {
            out->days |= (uint8_t)(1u << d);
            if (d == to)
                break;
        }
    } else {
        return false;
    }
    const char *t = sp + 1;
    if (strlen(t) != 11 || t[5] != '-' || !parse_hhmm(t, false, &out->start_min) ||
        !parse_hhmm(t + 6, true, &out->end_min))
        return false;
    return out->start_min != out->end_min && !(out->start_min == 0 && out->end_min == 0);
}

bool ec_consent_in_windows(const ec_consent_window *w, size_t n, const struct tm *tm)
{
    int day = tm->tm_wday, yesterday = (day + 6) % 7;
    int minute = tm->tm_hour * 60 + tm->tm_min;
    for (size_t i = 0; i < n; i++) {
        bool today = (w[i].days >> day) & 1u;
        if (w[i].start_min < w[i].end_min) {
            if (today && minute >= w[i].start_min && minute < w[i].end_min)
                return true;
        } else {
            /* crosses midnight: the evening of a listed day, the morning after */
            if (today && minute >= w[i].start_min)
                return true;
            if (((w[i].days >> yesterday) & 1u) && minute < w[i].end_min)
                return true;
        }
    }
    return false;
}

/* ---- the gate ----------------------------------------------------------- */

ec_status ec_consent_new(ec_consent **out, const ec_consent_params *p)
{
    *out = NULL;
    if (p->n_windows > EC_CONSENT_WINDOWS_MAX || (p->n_windows > 0 && p->windows == NULL))
        return EC_ERR_INVALID;
    ec_consent *g = calloc(1, sizeof *g);
    if (g == NULL)
        return EC_ERR_NOMEM;
    if (p->n_windows > 0)
        memcpy(g->windows, p->windows, p->n_windows * sizeof *p->windows);
    g->n_windows = p->n_windows;
    g->sw = p->sw;
    g->audit = p->audit;
    g->window_sec = (time_t)-1;
    *out = g;
    return EC_OK;
}

static const char *switch_word(const ec_consent *g)
{
    if (g->sw == NULL)
        return "none";
    return g->sw_state == EC_SWITCH_ON ? "on" : g->sw_state == EC_SWITCH_OFF ? "off" : "unreadable";
}

static void transition(ec_consent *g, bool open, const char *reason)
{
    const char *event = open ? "consent_on" : "consent_off";
    const char *window = g->n_windows == 0 ? "none" : g->in_window ? "inside" : "outside";
    ec_log(EC_LOG_INFO, event, EC_LOG_STR("reason", reason), EC_LOG_STR("window", window),
           EC_LOG_STR("switch", switch_word(g)),
           EC_LOG_STR("effect", open ? "capturing" : "not capturing; open segment closed"));
    ec_audit(g->audit, event, EC_LOG_STR("reason", reason), EC_LOG_STR("window", window),
             EC_LOG_STR("switch", switch_word(g)));
    g->open = open;
}

bool ec_consent_poll(ec_consent *g, time_t now)
{
    bool was_in = g->in_window;
    ec_switch_state was_sw = g->sw_state;
    if (now != g->window_sec) {
        g->window_sec = now;
        if (g->n_windows == 0) {
            g->in_window = true;
        } else {
            struct tm tm;
            g->in_window = localtime_r(&now, &tm) != NULL &&
                           ec_consent_in_windows(g->windows, g->n_windows, &tm);
        }
    }
    if (g->sw != NULL) {
        char why[96];
        g->sw_state = ec_switch_read(g->sw, why, sizeof why);
        /* once per spell of unreadability, not per frame (nor per reason:
         * a file replaced by a directory passes through "missing") */
        if (g->sw_state == EC_SWITCH_UNREADABLE &&
            (was_sw != EC_SWITCH_UNREADABLE || !g->started)) {
            ec_log(EC_LOG_WARN, "consent_switch_unreadable", EC_LOG_STR("path", g->sw->path),
                   EC_LOG_STR("reason", why), EC_LOG_STR("effect", "counted as off"));
        }
    } else {
        g->sw_state = EC_SWITCH_ON;
    }
    bool open = g->in_window && g->sw_state == EC_SWITCH_ON;
    if (!g->started) {
        g->started = true;
        transition(g, open, open ? "start" : !g->in_window ? "window" : "switch");
    } else if (open != g->open) {
        /* what changed; when both did, the window is named */
        bool window_changed = was_in != g->in_window;
        transition(g, open, window_changed ? "window" : "switch");
    }
    return open;
}

void ec_consent_free(ec_consent **g)
{
    if (g == NULL || *g == NULL)
        return;
    free(*g);
    *g = NULL;
}
