/*
 * HAL consent switch: a two-state input that says whether recording is
 * allowed right now. The file backend (hal/switch_file.c) reads a small file
 * on every poll: a file an operator or another service writes, or a GPIO's
 * sysfs `value` file (/sys/class/gpio/gpioN/value), which reads "0" or "1".
 *
 * Fail closed: only the content "1" or "on" (case-insensitive, surrounding
 * white space ignored) is on; anything else, a missing file and a file that
 * cannot be read are off. Cheap enough to poll once per capture period (one
 * open, one read, one close). Owned by firmware/consent.
 */
#ifndef EDGECAP_SWITCH_H
#define EDGECAP_SWITCH_H

#include <stdbool.h>
#include <stddef.h>

#include "edgecap/status.h"

typedef enum {
    EC_SWITCH_OFF = 0,
    EC_SWITCH_ON = 1,
    EC_SWITCH_UNREADABLE = 2, /* missing or unreadable: counts as off */
} ec_switch_state;

typedef struct {
    const char *name;
    /* Reads the switch now. With EC_SWITCH_UNREADABLE, `why` (may be NULL)
     * says why in a few words (strerror). */
    ec_switch_state (*read)(void *ctx, char *why, size_t why_len);
    void (*close)(void *ctx);
} ec_switch_ops;

typedef struct {
    const ec_switch_ops *ops;
    void *ctx;
    const char *path; /* what it reads, for messages */
} ec_switch;

/* A switch backed by the file at `path` (need not exist yet). */
ec_status ec_switch_file_open(ec_switch *sw, const char *path);

/* Reads any backend; EC_SWITCH_UNREADABLE on a closed or zeroed switch. */
ec_switch_state ec_switch_read(ec_switch *sw, char *why, size_t why_len);

/* Closes any backend; safe on a zeroed or closed switch. */
void ec_switch_close(ec_switch *sw);

#endif
