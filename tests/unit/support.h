/*
 * Helpers shared by the unit tests: scratch directories, files with a given
 * mode, and capturing what the logger writes.
 */
#ifndef EDGECAP_TEST_SUPPORT_H
#define EDGECAP_TEST_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* A fresh directory under $TMPDIR (or /tmp); removed by ts_rmtree. */
char *ts_mkdtemp(void);
void ts_rmtree(const char *dir);

/* Writes `text` to dir/name with `mode`; returns the malloc'd path. */
char *ts_write_file(const char *dir, const char *name, mode_t mode, const char *text);

/* printf into a malloc'd string. */
char *ts_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Starts capturing log lines into memory; ts_log_end returns them (malloc'd)
 * and restores stderr. */
void ts_log_begin(void);
char *ts_log_end(void);

#endif
