/*
 * Secure allocator (see include/edgecap/secmem.h). Each allocation is an
 * anonymous mapping laid out as  [guard][data pages][guard]  so a linear
 * overrun or underrun faults instead of reading a neighbour's secret. Records
 * of live allocations (address and size only, never contents) sit in a small
 * list so that a foreign pointer or a double free is caught before anything is
 * touched.
 */
#include "edgecap/secmem.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <mbedtls/platform_util.h>

#include "edgecap/fault.h"
#include "edgecap/log.h"

typedef struct secmem_record {
    struct secmem_record *next;
    uint8_t *data;
    size_t size;       /* as asked for */
    size_t data_bytes; /* whole pages */
    bool locked;
} secmem_record;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static secmem_record *live;
static bool require_mlock = true;
static bool warned_unlocked;
static ec_secmem_stats stats;

/* Not cached: sysconf(_SC_PAGESIZE) is a cheap read, and an unguarded static
 * cache would be a data race between the first concurrent callers. */
static size_t page_bytes(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static int try_mlock(void *addr, size_t len)
{
    if (EC_FAULT("secmem.mlock")) {
        errno = EPERM;
        return -1;
    }
    return mlock(addr, len);
}

/* Called with `lock` held; true when this refusal is the one to warn about. */
static bool note_refusal(void)
{
    stats.mlock_refusals++;
    if (warned_unlocked)
        return false;
    warned_unlocked = true;
    return true;
}

/* Called without `lock`: a slow log sink must not stall every allocation. */
static void warn_unlocked(int err)
{
    ec_log(EC_LOG_WARN, "secmem_unlocked", EC_LOG_STR("reason", strerror(err)),
           EC_LOG_STR("hint", "raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK"));
}

ec_status ec_secmem_init(bool require)
{
    size_t pg = page_bytes();
    void *probe = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe == MAP_FAILED)
        return EC_ERR_NOMEM;
    int rc = try_mlock(probe, pg);
    int err = errno;
    if (rc == 0)
        munlock(probe, pg);
    munmap(probe, pg);

    pthread_mutex_lock(&lock);
    require_mlock = require;
    warned_unlocked = false;
    ec_status st = EC_OK;
    bool warn = false;
    if (rc != 0) {
        if (require) {
            stats.mlock_refusals++;
            st = EC_ERR_MLOCK;
        } else {
            warn = note_refusal();
        }
    }
    pthread_mutex_unlock(&lock);
    if (warn)
        warn_unlocked(err);
    if (st != EC_OK)
        ec_log(EC_LOG_ERROR, "secmem_mlock_refused", EC_LOG_STR("reason", strerror(err)),
               EC_LOG_STR("hint", "raise RLIMIT_MEMLOCK, grant CAP_IPC_LOCK, or set "
                                  "[device] require_mlock = off"));
    return st;
}

void *ec_secmem_alloc(size_t size)
{
    size_t pg = page_bytes();
    if (size == 0) {
        errno = EINVAL;
        return NULL;
    }
    /* Also keeps the page arithmetic below far from overflow. */
    if (size > EC_SECMEM_MAX_BYTES) {
        errno = ENOMEM;
        return NULL;
    }
    size_t data_bytes = (size + pg - 1) / pg * pg;
    size_t total = data_bytes + 2 * pg;

    secmem_record *rec = calloc(1, sizeof *rec);
    if (rec == NULL || EC_FAULT("secmem.mmap")) {
        free(rec);
        errno = ENOMEM;
        return NULL;
    }
    uint8_t *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        free(rec);
        errno = ENOMEM;
        return NULL;
    }
    uint8_t *data = base + pg;
    if (mprotect(data, data_bytes, PROT_READ | PROT_WRITE) != 0 ||
        madvise(data, data_bytes, MADV_DONTDUMP) != 0) {
        int err = errno;
        munmap(base, total);
        free(rec);
        errno = err;
        return NULL;
    }
#ifdef MADV_WIPEONFORK
    /* A forked child (none today) must not inherit plaintext; older kernels
     * lack it, which is not a reason to refuse. */
    (void)madvise(data, data_bytes, MADV_WIPEONFORK);
#endif

    bool locked = try_mlock(data, data_bytes) == 0;
    int lock_err = errno;

    bool warn = false;
    pthread_mutex_lock(&lock);
    if (!locked) {
        if (require_mlock) {
            stats.mlock_refusals++;
            pthread_mutex_unlock(&lock);
            munmap(base, total);
            free(rec);
            errno = lock_err;
            return NULL;
        }
        warn = note_refusal();
    }
    rec->data = data;
    rec->size = size;
    rec->data_bytes = data_bytes;
    rec->locked = locked;
    rec->next = live;
    live = rec;
    stats.live_allocations++;
    stats.live_bytes += size;
    if (locked)
        stats.locked_bytes += data_bytes;
    pthread_mutex_unlock(&lock);
    if (warn)
        warn_unlocked(lock_err);
    return data;
}

void *ec_secmem_dup(const void *src, size_t size)
{
    if (src == NULL) {
        errno = EINVAL;
        return NULL;
    }
    void *p = ec_secmem_alloc(size);
    if (p != NULL)
        memcpy(p, src, size);
    return p;
}

/* Called with `lock` held; unlinks when `unlink` is set. */
static secmem_record *find_record(const void *ptr, bool unlink)
{
    secmem_record **link = &live;
    for (secmem_record *r = live; r != NULL; link = &r->next, r = r->next) {
        if (r->data == ptr) {
            if (unlink)
                *link = r->next;
            return r;
        }
    }
    return NULL;
}

void ec_secmem_free(void *ptr)
{
    if (ptr == NULL)
        return;
    pthread_mutex_lock(&lock);
    secmem_record *rec = find_record(ptr, true);
    if (rec == NULL) {
        pthread_mutex_unlock(&lock);
        /* Double free or a pointer from elsewhere: a bug that could leak or
         * clobber a secret. Stop here rather than guess. */
        static const char msg[] = "edgecap: ec_secmem_free: pointer not from secure "
                                  "allocator (double free?)\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
            /* nothing more can be done */
        }
        abort();
    }
    stats.live_allocations--;
    stats.live_bytes -= rec->size;
    if (rec->locked)
        stats.locked_bytes -= rec->data_bytes;
    pthread_mutex_unlock(&lock);

    size_t pg = page_bytes();
    mbedtls_platform_zeroize(rec->data, rec->data_bytes);
    if (rec->locked)
        munlock(rec->data, rec->data_bytes);
    /* Test seam: keep the wiped pages mapped so a test can read them back
     * and prove the wipe happened (the test unmaps them itself). */
    if (!EC_FAULT("secmem.unmap"))
        munmap(rec->data - pg, rec->data_bytes + 2 * pg);
    free(rec);
}

size_t ec_secmem_size(const void *ptr)
{
    if (ptr == NULL)
        return 0;
    pthread_mutex_lock(&lock);
    const secmem_record *rec = find_record(ptr, false);
    size_t n = rec != NULL ? rec->size : 0;
    pthread_mutex_unlock(&lock);
    return n;
}

bool ec_secmem_is_locked(const void *ptr)
{
    pthread_mutex_lock(&lock);
    const secmem_record *rec = find_record(ptr, false);
    bool locked = rec != NULL && rec->locked;
    pthread_mutex_unlock(&lock);
    return locked;
}

void ec_secmem_get_stats(ec_secmem_stats *out)
{
    pthread_mutex_lock(&lock);
    *out = stats;
    pthread_mutex_unlock(&lock);
}

ec_status ec_secmem_harden_process(void)
{
    const struct rlimit no_core = {0, 0};
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &no_core) != 0)
        return EC_ERR_INTERNAL;
    return EC_OK;
}
