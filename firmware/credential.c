/* systemd credentials from $CREDENTIALS_DIRECTORY; see include/edgecap/credential.h. */
#include "edgecap/credential.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgecap/secmem.h"

bool ec_credential_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > EC_CREDENTIAL_NAME_MAX || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)name[i]) && strchr("._-", name[i]) == NULL)
            return false;
    }
    return true;
}

ec_status ec_credential_read(const char *name, size_t max_bytes, ec_secret **out, char *why,
                             size_t why_len)
{
    ec_status st = EC_OK;
    int fd = -1;
    char *data = NULL;
    *out = NULL;
    if (!ec_credential_name_valid(name)) {
        snprintf(why, why_len, "expected a credential name (%s)", EC_CREDENTIAL_NAME_RULE);
        return EC_ERR_INVALID;
    }
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (dir == NULL || dir[0] == '\0') {
        snprintf(why, why_len,
                 "credential \"%s\": $CREDENTIALS_DIRECTORY is not set (give it to the unit with "
                 "LoadCredential=%s:PATH or LoadCredentialEncrypted=%s:PATH)",
                 name, name, name);
        return EC_ERR_NOT_FOUND;
    }
    if (dir[0] != '/') {
        snprintf(why, why_len, "credential \"%s\": $CREDENTIALS_DIRECTORY is not an absolute path",
                 name);
        return EC_ERR_NOT_FOUND;
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        snprintf(why, why_len, "credential \"%s\": $CREDENTIALS_DIRECTORY is too long", name);
        return EC_ERR_NOT_FOUND;
    }
    /* O_NONBLOCK: a FIFO in its place is refused below, not waited on. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT)
            snprintf(why, why_len, "credential \"%s\" not found in $CREDENTIALS_DIRECTORY (%s)",
                     name, dir);
        else
            snprintf(why, why_len, "cannot open credential \"%s\": %s", name, strerror(err));
        return err == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(why, why_len, "credential \"%s\" is not a regular file", name);
        st = EC_ERR_IO;
        goto out;
    }
    if (sb.st_uid != geteuid() && sb.st_uid != 0) {
        snprintf(why, why_len,
                 "credential \"%s\" is owned by uid %u, neither the running user (uid %u) nor root",
                 name, (unsigned)sb.st_uid, (unsigned)geteuid());
        st = EC_ERR_PERM;
        goto out;
    }
    if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        snprintf(why, why_len, "credential \"%s\" is writable by group or others (mode %04o)", name,
                 (unsigned)(sb.st_mode & 07777));
        st = EC_ERR_PERM;
        goto out;
    }
    if (sb.st_size < 0 || (size_t)sb.st_size > max_bytes) {
        snprintf(why, why_len, "credential \"%s\" is longer than %zu bytes", name, max_bytes);
        st = EC_ERR_IO;
        goto out;
    }
    data = ec_secmem_alloc((size_t)sb.st_size + 1);
    if (data == NULL) {
        snprintf(why, why_len, "no secure memory for credential \"%s\"", name);
        st = EC_ERR_NOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t n = read(fd, data + got, (size_t)sb.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, why_len, "cannot read credential \"%s\": %s", name,
                     n < 0 ? strerror(errno) : "short read");
            st = EC_ERR_IO;
            goto out;
        }
        got += (size_t)n;
    }
    size_t len = got;
    while (len > 0 && isspace((unsigned char)data[len - 1]))
        len--;
    if (len == 0) {
        snprintf(why, why_len, "credential \"%s\" is empty", name);
        st = EC_ERR_IO;
        goto out;
    }
    if (memchr(data, '\0', len) != NULL) {
        snprintf(why, why_len, "credential \"%s\" is not text (it holds a NUL byte)", name);
        st = EC_ERR_IO;
        goto out;
    }
    if (ec_secret_new(out, data, len) != EC_OK) {
        snprintf(why, why_len, "no secure memory for credential \"%s\"", name);
        st = EC_ERR_NOMEM;
    }
out:
    ec_secmem_free(data); /* wipes */
    if (fd >= 0)
        close(fd);
    return st;
}
