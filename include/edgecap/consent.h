/*
 * Consent and data minimisation: whether capture may run now. Two conditions,
 * both required:
 *   - recording windows ([consent] window, e.g. "mon-fri 08:00-17:30"), in
 *     the device's local time zone (TZ, else /etc/localtime; DST follows the
 *     zone's rules). A window whose end is not after its start crosses
 *     midnight: "fri 22:00-06:00" runs from Friday 22:00 to Saturday 06:00.
 *     No window configured = always inside.
 *   - the consent switch ([consent] switch, include/edgecap/switch.h): on
 *     only when it reads "1"/"on"; missing or unreadable = off. No switch
 *     configured = always on.
 * The capture thread polls the gate once per period (ec_consent_poll); a
 * change is logged and audited once (consent_on / consent_off with the
 * reason: window, switch, or start for the first state), never per frame.
 *
 * Owned by main (built from the config) and firmware/capture (polls it).
 */
#ifndef EDGECAP_CONSENT_H
#define EDGECAP_CONSENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "edgecap/audit.h"
#include "edgecap/status.h"
#include "edgecap/switch.h"

#define EC_CONSENT_WINDOWS_MAX 16

typedef struct {
    uint8_t days;       /* bit d = day d, struct tm's tm_wday (0 = Sunday) */
    uint16_t start_min; /* minute of the day, 0..1439 */
    uint16_t end_min;   /* 1..1440; <= start_min: ends the next day */
} ec_consent_window;

/*
 * Parses "DAYS HH:MM-HH:MM": DAYS is a day (mon tue wed thu fri sat sun), a
 * range of days ("mon-fri"; "fri-mon" wraps over the weekend) or "daily".
 * Times are 00:00..23:59; the end may be 24:00. Start and end must differ
 * (a whole day is 00:00-24:00). Returns false on anything else.
 */
bool ec_consent_window_parse(const char *text, ec_consent_window *out);

/* Whether the local time `tm` (from localtime_r) falls inside any window;
 * a start is inside, an end is outside. */
bool ec_consent_in_windows(const ec_consent_window *w, size_t n, const struct tm *tm);

typedef struct {
    const ec_consent_window *windows; /* copied */
    size_t n_windows;                 /* 0 = no window restriction */
    ec_switch *sw;                    /* NULL = no switch; owned by the caller */
    ec_audit *audit;                  /* may be NULL */
} ec_consent_params;

typedef struct ec_consent ec_consent;

ec_status ec_consent_new(ec_consent **out, const ec_consent_params *p);

/* Evaluates the gate at wall-clock time `now` (the window part is evaluated
 * once per second, the switch on every call). Returns true when capture may
 * run. Logs and audits a change of state. One thread at a time. */
bool ec_consent_poll(ec_consent *g, time_t now);

void ec_consent_free(ec_consent **g);

#endif
