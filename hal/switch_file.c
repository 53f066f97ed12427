/*
 * File consent switch (see include/edgecap/switch.h). The file is opened
 * afresh on every read, so a file replaced by rename (the usual atomic
 * write) is seen at once, and a sysfs attribute is re-read by the kernel.
 */
#include "edgecap/switch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* "1", "on", "0\n" ... fit; anything longer is not a switch state. */
#define SWITCH_READ_MAX 16

typedef struct {
    char path[256];
} file_switch;

static void say(char *why, size_t why_len, const char *text)
{
    if (why != NULL && why_len > 0)
        snprintf(why, why_len, "%s", text);
}

static ec_switch_state file_read(void *ctx, char *why, size_t why_len)
{
    file_switch *fs = ctx;
    char buf[SWITCH_READ_MAX + 1];
    ssize_t n = -1;
    /* O_NONBLOCK: a FIFO or device put in place of the file must not stall
     * the capture thread; regular and sysfs files ignore the flag. */
    int fd = open(fs->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd >= 0) {
        do
            n = read(fd, buf, SWITCH_READ_MAX);
        while (n < 0 && errno == EINTR);
    }
    int err = errno;
    if (fd >= 0)
        close(fd);
    if (n < 0) {
        say(why, why_len, strerror(err));
        return EC_SWITCH_UNREADABLE;
    }
    size_t len = (size_t)n, start = 0;
    while (len > 0 && strchr(" \t\r\n", buf[len - 1]) != NULL)
        len--;
    while (start < len && strchr(" \t\r\n", buf[start]) != NULL)
        start++;
    buf[len] = '\0';
    /* A full buffer may be the start of something longer: not a state. */
    if ((size_t)n == SWITCH_READ_MAX)
        return EC_SWITCH_OFF;
    const char *v = buf + start;
    return strcmp(v, "1") == 0 || strcasecmp(v, "on") == 0 ? EC_SWITCH_ON : EC_SWITCH_OFF;
}

static void file_close(void *ctx)
{
    free(ctx);
}

static const ec_switch_ops file_ops = {.name = "file", .read = file_read, .close = file_close};

ec_status ec_switch_file_open(ec_switch *sw, const char *path)
{
    memset(sw, 0, sizeof *sw);
    file_switch *fs = calloc(1, sizeof *fs);
    if (fs == NULL)
        return EC_ERR_NOMEM;
    if (path[0] == '\0' || strlen(path) >= sizeof fs->path) {
        free(fs);
        return EC_ERR_INVALID;
    }
    strcpy(fs->path, path);
    sw->ops = &file_ops;
    sw->ctx = fs;
    sw->path = fs->path;
    return EC_OK;
}

ec_switch_state ec_switch_read(ec_switch *sw, char *why, size_t why_len)
{
    if (sw == NULL || sw->ops == NULL) {
        say(why, why_len, "no switch");
        return EC_SWITCH_UNREADABLE;
    }
    return sw->ops->read(sw->ctx, why, why_len);
}

void ec_switch_close(ec_switch *sw)
{
    if (sw == NULL || sw->ops == NULL)
        return;
    sw->ops->close(sw->ctx);
    memset(sw, 0, sizeof *sw);
}
