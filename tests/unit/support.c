/* Fixtures shared by the cmocka suites in tests/unit/ (scratch dirs, files,
 * log capture); see support.h. Not a test: the suites that link it assert. */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgecap/log.h"

char *ts_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    char *tmpl = ts_strf("%s/edgecap-test-XXXXXX", base != NULL ? base : "/tmp");
    if (mkdtemp(tmpl) == NULL) {
        free(tmpl);
        return NULL;
    }
    return tmpl;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ts_rmtree(const char *dir)
{
    if (dir != NULL)
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *ts_write_file(const char *dir, const char *name, mode_t mode, const char *text)
{
    char *path = ts_strf("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        free(path);
        return NULL;
    }
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n || fchmod(fd, mode) != 0) {
        close(fd);
        free(path);
        return NULL;
    }
    close(fd);
    return path;
}

char *ts_strf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0)
        out = NULL;
    va_end(ap);
    return out;
}

static char *log_buf;
static size_t log_len;
static FILE *log_stream;

void ts_log_begin(void)
{
    log_buf = NULL;
    log_len = 0;
    log_stream = open_memstream(&log_buf, &log_len);
    ec_log_set_stream(log_stream);
}

char *ts_log_end(void)
{
    ec_log_set_stream(NULL);
    fclose(log_stream);
    log_stream = NULL;
    char *out = log_buf;
    log_buf = NULL;
    return out != NULL ? out : strdup("");
}
