/*
 * Small file helpers for durable writes: every byte written (EINTR and
 * short writes retried) and the directory entry of a new or renamed file
 * fsynced. Any module may call them.
 */
#ifndef EDGECAP_FILE_H
#define EDGECAP_FILE_H

#include <stddef.h>

#include "edgecap/status.h"

/* Writes all `len` bytes of `buf` to `fd`; EC_ERR_IO (errno set) otherwise. */
ec_status ec_file_write_all(int fd, const void *buf, size_t len);

/* fsync(2) of the directory `dir`. */
ec_status ec_file_fsync_dir(const char *dir);

/* fsync(2) of the directory that holds `path` ("." for a bare name). */
ec_status ec_file_fsync_parent(const char *path);

#endif
