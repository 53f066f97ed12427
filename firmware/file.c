/* Durable-write helpers; see include/edgecap/file.h. */
#include "edgecap/file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgecap/fault.h"

ec_status ec_file_write_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return EC_ERR_IO;
        }
        p += n;
        len -= (size_t)n;
    }
    return EC_OK;
}

ec_status ec_file_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return EC_ERR_IO;
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? EC_OK : EC_ERR_IO;
}

/* The directory part of `path` ("." for a bare name, "/" for "/x"). */
static ec_status parent_dir(const char *path, char dir[PATH_MAX])
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        strcpy(dir, ".");
        return EC_OK;
    }
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= PATH_MAX)
        return EC_ERR_INVALID;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return EC_OK;
}

ec_status ec_file_fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    ec_status st = parent_dir(path, dir);
    return st == EC_OK ? ec_file_fsync_dir(dir) : st;
}

ec_status ec_file_shred_at(int dirfd, const char *name, uint64_t *bytes)
{
    *bytes = 0;
    struct stat sb;
    if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    ec_status st = EC_OK;
    int err = 0;
    if (S_ISREG(sb.st_mode)) {
        int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
        uint8_t zeros[4096] = {0};
        st = fd >= 0 ? EC_OK : EC_ERR_IO;
        for (off_t off = 0; st == EC_OK && off < sb.st_size; off += (off_t)sizeof zeros) {
            size_t n =
                sb.st_size - off < (off_t)sizeof zeros ? (size_t)(sb.st_size - off) : sizeof zeros;
            if (pwrite(fd, zeros, n, off) != (ssize_t)n)
                st = EC_ERR_IO;
        }
        if (st == EC_OK && fsync(fd) != 0)
            st = EC_ERR_IO;
        err = errno;
        if (fd >= 0)
            close(fd);
        *bytes = (uint64_t)sb.st_size;
    }
    if (st == EC_OK && (EC_FAULT("file.shred") || unlinkat(dirfd, name, 0) != 0))
        st = EC_ERR_IO, err = errno;
    if (st == EC_OK && fsync(dirfd) != 0)
        st = EC_ERR_IO, err = errno;
    errno = err;
    return st;
}

ec_status ec_file_shred(const char *path, uint64_t *bytes)
{
    char dir[PATH_MAX];
    *bytes = 0;
    ec_status st = parent_dir(path, dir);
    if (st != EC_OK)
        return st;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    const char *slash = strrchr(path, '/');
    st = ec_file_shred_at(dfd, slash == NULL ? path : slash + 1, bytes);
    int err = errno;
    close(dfd);
    errno = err;
    return st;
}
