/*
 * Secure memory: the one allocator for plaintext audio and secrets
 * (DESIGN invariant 2). Every allocation is its own mapping with an
 * inaccessible guard page on each side, locked with mlock(2), excluded from
 * core dumps (MADV_DONTDUMP), zero on allocation and wiped with
 * mbedtls_platform_zeroize on release. Freeing a pointer that this allocator
 * did not hand out (or freeing twice) is a programmer error and aborts, since
 * carrying on could leak or corrupt a secret.
 *
 * Thread-safe. Any module may call it; ec_secmem_init() is called once by main
 * before the first secret is read.
 */
#ifndef EDGECAP_SECMEM_H
#define EDGECAP_SECMEM_H

#include <stdbool.h>
#include <stddef.h>

#include "edgecap/status.h"

/*
 * Sets the mlock policy and probes whether locking works here. With
 * require_mlock, a refused lock is EC_ERR_MLOCK (the daemon must not start);
 * without it, a refusal is logged once as a warning and allocations go on
 * unlocked (still guarded, DONTDUMP and wiped). May be called again (tests,
 * reload) to change the policy.
 */
ec_status ec_secmem_init(bool require_mlock);

/*
 * Largest single allocation. Every byte is locked in RAM, so a runaway size
 * must fail here rather than make mlock fault in more than the board has (as
 * root, mlock is not capped by RLIMIT_MEMLOCK). An hour of 128 kb/s Opus is
 * about 58 MB.
 */
#define EC_SECMEM_MAX_BYTES ((size_t)256 * 1024 * 1024)

/* Zeroed, locked memory of `size_bytes` (1..EC_SECMEM_MAX_BYTES), or NULL with
 * errno set: EINVAL for 0, ENOMEM when too large or out of memory, the mlock
 * error when locking is required and refused. */
void *ec_secmem_alloc(size_t size_bytes);

/* Like ec_secmem_alloc, then copies `size_bytes` from `src` (NULL: EINVAL). */
void *ec_secmem_dup(const void *src, size_t size_bytes);

/* Wipes and releases; NULL is a no-op. Aborts on a foreign or freed pointer. */
void ec_secmem_free(void *ptr);

/* Usable size of a live allocation (0 for NULL). */
size_t ec_secmem_size(const void *ptr);

/* Whether the allocation holding `ptr` is mlocked. */
bool ec_secmem_is_locked(const void *ptr);

typedef struct {
    size_t live_allocations;
    size_t live_bytes;
    size_t locked_bytes;
    unsigned long mlock_refusals;
} ec_secmem_stats;

void ec_secmem_get_stats(ec_secmem_stats *stats);

/*
 * Process hardening that goes with secure memory: not dumpable
 * (PR_SET_DUMPABLE 0, which also blocks ptrace attach by other users) and no
 * core files (RLIMIT_CORE 0). Called first thing in main, before any secret is
 * read.
 */
ec_status ec_secmem_harden_process(void);

#endif
