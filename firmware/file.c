/* Durable-write helpers; see include/edgecap/file.h. */
#include "edgecap/file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

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

ec_status ec_file_fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return ec_file_fsync_dir(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof dir)
        return EC_ERR_INVALID;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return ec_file_fsync_dir(dir);
}
