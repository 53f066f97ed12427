/*
 * Small file helpers for durable writes: every byte written (EINTR and
 * short writes retried) and the directory entry of a new or renamed file
 * fsynced. Any module may call them.
 */
#ifndef EDGECAP_FILE_H
#define EDGECAP_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "edgecap/status.h"

/* Writes all `len` bytes of `buf` to `fd`; EC_ERR_IO (errno set) otherwise. */
ec_status ec_file_write_all(int fd, const void *buf, size_t len);

/* fsync(2) of the directory `dir`. */
ec_status ec_file_fsync_dir(const char *dir);

/* fsync(2) of the directory that holds `path` ("." for a bare name). */
ec_status ec_file_fsync_parent(const char *path);

/*
 * Shreds the file `name` in the directory `dirfd`: a regular file is
 * overwritten with zeros over its whole size and fsynced (*bytes gets its
 * size), then it is unlinked and the directory fsynced; anything else is
 * only unlinked. EC_ERR_NOT_FOUND when absent; EC_ERR_IO with errno set
 * otherwise (a read-only file system: EROFS). Fault seam file.shred (the
 * unlink).
 */
ec_status ec_file_shred_at(int dirfd, const char *name, uint64_t *bytes);

/* ec_file_shred_at for a path (its directory opened for the call). */
ec_status ec_file_shred(const char *path, uint64_t *bytes);

#endif
