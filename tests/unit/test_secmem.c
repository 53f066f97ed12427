/*
 * Secure memory: zeroed, locked, not dumped, guarded on both sides, wiped on
 * release, strict about what it frees, and honest about the mlock policy.
 * Crashes that must happen (guard pages, double free) happen in a forked
 * child; the parent asserts how it died.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND_H 1
#endif
#endif

#include "edgecap/fault.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"
#include "edgecap/secret.h"
#include "support.h"

static size_t pg;

/* AddressSanitizer (make SAN=1) replaces mlock(2) with a stub that reports
 * success and locks nothing, so there the kernel's "lo" flag cannot show. */
#if defined(__SANITIZE_ADDRESS__)
#define MLOCK_IS_REAL false
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MLOCK_IS_REAL false
#endif
#endif
#ifndef MLOCK_IS_REAL
#define MLOCK_IS_REAL true
#endif

static bool under_valgrind(void)
{
#ifdef HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND)
        return true;
#endif
    const char *e = getenv("EC_UNDER_VALGRIND");
    return e != NULL && strcmp(e, "1") == 0;
}

/* ---- /proc/self/smaps ---------------------------------------------------- */

typedef struct {
    bool found;
    char perms[8];     /* "rw-p" */
    char vmflags[512]; /* "rd wr mr mw me lo ac dd" */
} mapping_info;

/* The mapping of this process that holds `addr`, from /proc/self/smaps. */
static mapping_info mapping_of(const void *addr)
{
    mapping_info info = {.found = false};
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    bool in_target = false;
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof line, f) != NULL) {
        uintptr_t lo, hi;
        char perms[8];
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi, perms) == 3) {
            in_target = a >= lo && a < hi;
            if (in_target) {
                info.found = true;
                snprintf(info.perms, sizeof info.perms, "%s", perms);
            }
        } else if (in_target && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(info.vmflags, sizeof info.vmflags, "%s", line + 8);
        }
    }
    fclose(f);
    return info;
}

static bool has_vmflag(const mapping_info *m, const char *flag)
{
    char copy[sizeof m->vmflags];
    memcpy(copy, m->vmflags, sizeof copy);
    char *save = NULL;
    for (char *t = strtok_r(copy, " \n", &save); t != NULL; t = strtok_r(NULL, " \n", &save)) {
        if (strcmp(t, flag) == 0)
            return true;
    }
    return false;
}

/*
 * Under qemu-user (the board tests) the guest's /proc/self/maps is emulated
 * but smaps is the host's (host addresses), and madvise is accepted without
 * being passed on, so the VmFlags checks run only natively (the kernel names
 * the emulator in /proc/self/status).
 */
static bool under_qemu_user(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return false;
    char line[128];
    bool qemu = false;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "Name:", 5) == 0) {
            qemu = strstr(line, "qemu-") != NULL;
            break;
        }
    }
    fclose(f);
    return qemu;
}

static bool smaps_is_native(void)
{
    return !under_qemu_user();
}

/* Crash tests need a forked child that runs (it does, under qemu-user too,
 * given the multiarch libc: see toolchain/aarch64.mk). */
static bool can_fork_crash_tests(void)
{
    return true;
}

/* ---- children that must die ---------------------------------------------- */

/* Runs fn(arg) in a child with default crash signals, no core file and its
 * stderr captured into `err`; returns the wait status. */
static int in_child(void (*fn)(void *), void *arg, char *err, size_t err_size)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka catches SIGSEGV to report a failed test; here it must kill. */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        signal(SIGABRT, SIG_DFL);
        struct rlimit core;
        if (getrlimit(RLIMIT_CORE, &core) == 0) {
            core.rlim_cur = 0;
            setrlimit(RLIMIT_CORE, &core);
        }
        dup2(pipefd[1], STDERR_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        fn(arg);
        _exit(0);
    }
    close(pipefd[1]);
    size_t got = 0;
    ssize_t n;
    while (got + 1 < err_size && (n = read(pipefd[0], err + got, err_size - 1 - got)) > 0)
        got += (size_t)n;
    err[got] = '\0';
    close(pipefd[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void assert_killed_by(int status, int sig)
{
    if (!WIFSIGNALED(status))
        fail_msg("child was not killed by signal %d (exited %d)", sig,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    assert_int_equal(WTERMSIG(status), sig);
}

static void assert_exited_ok(int status)
{
    if (!WIFEXITED(status))
        fail_msg("child was killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- fixtures ------------------------------------------------------------ */

/* What was live when the test started: zero, unless an earlier test failed
 * half-way (then only that test is reported, not every one after it). */
static ec_secmem_stats baseline;

static void assert_nothing_live(void)
{
    ec_secmem_stats s;
    ec_secmem_get_stats(&s);
    assert_int_equal(s.live_allocations, baseline.live_allocations);
    assert_int_equal(s.live_bytes, baseline.live_bytes);
    assert_int_equal(s.locked_bytes, baseline.locked_bytes);
}

/* Every test starts with locking required and working (tests run as root or
 * with enough RLIMIT_MEMLOCK) and nothing armed. */
static int setup(void **state)
{
    (void)state;
    ec_fault_reset();
    ec_log_configure(NULL);
    ec_secmem_get_stats(&baseline);
    return ec_secmem_init(true) == EC_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    ec_fault_reset();
    ec_secmem_stats s;
    ec_secmem_get_stats(&s);
    return s.live_allocations == baseline.live_allocations ? 0 : -1;
}

/* ---- allocation ---------------------------------------------------------- */

static void test_alloc_is_zeroed_page_aligned_and_sized(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 100, pg - 1, pg, pg + 1, 3 * pg + 5};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *p = ec_secmem_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % pg, 0);
        assert_int_equal(ec_secmem_size(p), sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++) {
            if (p[j] != 0)
                fail_msg("size %zu: byte %zu is 0x%02x, not zero", sizes[i], j, p[j]);
        }
        memset(p, 0xa5, sizes[i]); /* all of it is writable */
        ec_secmem_free(p);
    }
    assert_nothing_live();
}

static void test_alloc_is_locked_and_not_dumped(void **state)
{
    (void)state;
    uint8_t *p = ec_secmem_alloc(2 * pg + 1);
    assert_non_null(p);
    assert_true(ec_secmem_is_locked(p));
    if (smaps_is_native()) {
        mapping_info m = mapping_of(p);
        assert_true(m.found);
        assert_string_equal(m.perms, "rw-p");
        if (MLOCK_IS_REAL && !has_vmflag(&m, "lo"))
            fail_msg("data pages not mlocked: VmFlags:%s", m.vmflags);
        if (!has_vmflag(&m, "dd"))
            fail_msg("data pages not MADV_DONTDUMP: VmFlags:%s", m.vmflags);
        /* the last data page belongs to the same locked mapping */
        mapping_info last = mapping_of(p + 3 * pg - 1);
        assert_true(last.found);
        assert_string_equal(last.vmflags, m.vmflags);
    }
    ec_secmem_free(p);
    assert_nothing_live();
}

/* The pages on either side are inaccessible mappings, seen without a crash. */
static void test_guard_mappings_are_inaccessible(void **state)
{
    (void)state;
    uint8_t *p = ec_secmem_alloc(pg + 1);
    assert_non_null(p);
    if (smaps_is_native()) {
        mapping_info before = mapping_of(p - 1);
        mapping_info after = mapping_of(p + 2 * pg);
        assert_true(before.found);
        assert_true(after.found);
        assert_string_equal(before.perms, "---p");
        assert_string_equal(after.perms, "---p");
    }
    ec_secmem_free(p);
}

static void touch(void *addr)
{
    *(volatile uint8_t *)addr = 0x5a;
}

static void touch_child(void *addr)
{
    touch(addr);
}

static void test_guard_pages_fault(void **state)
{
    (void)state;
    if (under_valgrind() || !can_fork_crash_tests())
        skip(); /* memcheck would report the stray write itself */
    char err[1024];
    const size_t sizes[] = {1, pg, 2 * pg + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *p = ec_secmem_alloc(sizes[i]);
        assert_non_null(p);
        size_t data_bytes = (sizes[i] + pg - 1) / pg * pg;
        /* control: the last byte of the page-rounded data is fine */
        assert_exited_ok(in_child(touch_child, p + data_bytes - 1, err, sizeof err));
        assert_exited_ok(in_child(touch_child, p, err, sizeof err));
        /* one byte past the end, one byte before the start */
        assert_killed_by(in_child(touch_child, p + data_bytes, err, sizeof err), SIGSEGV);
        assert_killed_by(in_child(touch_child, p - 1, err, sizeof err), SIGSEGV);
        ec_secmem_free(p);
    }
    assert_nothing_live();
}

/* ---- freeing ------------------------------------------------------------- */

static void free_child(void *ptr)
{
    ec_secmem_free(ptr);
}

static void double_free_child(void *arg)
{
    (void)arg;
    void *p = ec_secmem_alloc(32);
    if (p == NULL)
        _exit(3);
    ec_secmem_free(p);
    ec_secmem_free(p);
}

static void test_double_free_aborts(void **state)
{
    (void)state;
    if (!can_fork_crash_tests())
        skip();
    char err[1024];
    assert_killed_by(in_child(double_free_child, NULL, err, sizeof err), SIGABRT);
    assert_non_null(strstr(err, "ec_secmem_free: pointer not from secure allocator"));
}

static void test_foreign_pointer_aborts(void **state)
{
    (void)state;
    if (!can_fork_crash_tests())
        skip();
    char err[1024];
    void *heap = malloc(64);
    assert_non_null(heap);
    assert_killed_by(in_child(free_child, heap, err, sizeof err), SIGABRT);
    assert_non_null(strstr(err, "not from secure allocator"));
    free(heap);

    char stack[16] = {0};
    assert_killed_by(in_child(free_child, stack, err, sizeof err), SIGABRT);

    /* inside a live allocation, but not what the allocator handed out */
    uint8_t *p = ec_secmem_alloc(64);
    assert_non_null(p);
    assert_killed_by(in_child(free_child, p + 1, err, sizeof err), SIGABRT);
    /* the parent's allocation was untouched by the child's attempt */
    assert_int_equal(ec_secmem_size(p), 64);
    /* control: the same child frees the real pointer and exits normally */
    assert_exited_ok(in_child(free_child, p, err, sizeof err));
    ec_secmem_free(p);
    assert_nothing_live();
}

static void test_null_is_harmless(void **state)
{
    (void)state;
    ec_secmem_free(NULL);
    assert_int_equal(ec_secmem_size(NULL), 0);
    assert_false(ec_secmem_is_locked(NULL));
    assert_nothing_live();
}

/* What a freed allocation's pages hold once released. The "secmem.unmap"
 * seam keeps the (wiped) pages mapped so they can be read; the test unmaps
 * them afterwards with the allocator's layout: [guard][data][guard]. */
static void release_and_unmap(uint8_t *data, size_t data_bytes)
{
    assert_int_equal(munmap(data - pg, data_bytes + 2 * pg), 0);
}

static void test_free_wipes(void **state)
{
    (void)state;
    const size_t size = pg + 100;
    uint8_t *p = ec_secmem_alloc(size);
    assert_non_null(p);
    /* Past `size` too, as an overrun within the last page would: the whole
     * page is wiped, not just what was asked for. */
    memset(p, 0xa5, 2 * pg);
    ec_fault_arm("secmem.unmap", 0, 1);
    ec_secmem_free(p);
    assert_int_equal(ec_fault_hits("secmem.unmap"), 1);
    assert_int_equal(ec_secmem_size(p), 0); /* no longer an allocation */
    for (size_t i = 0; i < 2 * pg; i++) {
        if (p[i] != 0)
            fail_msg("byte %zu of a freed allocation is 0x%02x, not wiped", i, p[i]);
    }
    release_and_unmap(p, 2 * pg);
    assert_nothing_live();
}

static void test_secret_free_wipes(void **state)
{
    (void)state;
    static const char token[] = "sv=2025-01-05&sig=Zm9vYmFyYmF6cXV4";
    ec_secret *s = NULL;
    assert_int_equal(ec_secret_new(&s, token, strlen(token)), EC_OK);
    uint8_t *page = (uint8_t *)s;
    assert_true(ec_secmem_is_locked(page));
    assert_non_null(memmem(page, pg, token, strlen(token)));
    ec_fault_arm("secmem.unmap", 0, 1);
    ec_secret_free(&s);
    assert_null(s);
    assert_null(memmem(page, pg, token, strlen(token)));
    for (size_t i = 0; i < pg; i++)
        assert_int_equal(page[i], 0);
    release_and_unmap(page, pg);
    assert_nothing_live();
}

/* ---- accounting and copies ----------------------------------------------- */

static void test_stats_track_and_return_to_zero(void **state)
{
    (void)state;
    ec_secmem_stats before, during, after;
    ec_secmem_get_stats(&before);
    uint8_t *a = ec_secmem_alloc(1);
    uint8_t *b = ec_secmem_alloc(pg);
    uint8_t *c = ec_secmem_alloc(pg + 1);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    ec_secmem_get_stats(&during);
    assert_int_equal(during.live_allocations, before.live_allocations + 3);
    assert_int_equal(during.live_bytes, before.live_bytes + 1 + pg + pg + 1);
    assert_int_equal(during.locked_bytes, before.locked_bytes + pg + pg + 2 * pg);
    assert_int_equal(during.mlock_refusals, before.mlock_refusals);
    ec_secmem_free(b);
    ec_secmem_get_stats(&during);
    assert_int_equal(during.live_allocations, before.live_allocations + 2);
    assert_int_equal(during.live_bytes, before.live_bytes + 1 + pg + 1);
    ec_secmem_free(a);
    ec_secmem_free(c);
    ec_secmem_get_stats(&after);
    assert_int_equal(after.live_allocations, before.live_allocations);
    assert_int_equal(after.live_bytes, before.live_bytes);
    assert_int_equal(after.locked_bytes, before.locked_bytes);
}

static void test_dup_copies(void **state)
{
    (void)state;
    uint8_t src[300];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)(i * 7 + 1);
    uint8_t *d = ec_secmem_dup(src, sizeof src);
    assert_non_null(d);
    assert_ptr_not_equal(d, src);
    assert_memory_equal(d, src, sizeof src);
    assert_int_equal(ec_secmem_size(d), sizeof src);
    assert_true(ec_secmem_is_locked(d));
    memset(src, 0, sizeof src); /* the copy is independent */
    assert_int_equal(d[1], 8);
    ec_secmem_free(d);

    errno = 0;
    assert_null(ec_secmem_dup(NULL, 16));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(ec_secmem_dup(src, 0));
    assert_int_equal(errno, EINVAL);
    assert_nothing_live();
}

static void test_zero_and_huge_sizes_refused(void **state)
{
    (void)state;
    errno = 0;
    assert_null(ec_secmem_alloc(0));
    assert_int_equal(errno, EINVAL);
    const size_t huge[] = {EC_SECMEM_MAX_BYTES + 1, SIZE_MAX / 2, SIZE_MAX - 2 * pg,
                           SIZE_MAX - pg + 1, SIZE_MAX};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        errno = 0;
        void *p = ec_secmem_alloc(huge[i]);
        if (p != NULL)
            fail_msg("allocation of %zu bytes was not refused", huge[i]);
        assert_int_equal(errno, ENOMEM);
    }
    /* a large but sane buffer is fine */
    uint8_t *big = ec_secmem_alloc(4 * 1024 * 1024);
    assert_non_null(big);
    big[4 * 1024 * 1024 - 1] = 1;
    ec_secmem_free(big);

    /* a secret too large for the allocator is refused before any arithmetic wraps */
    ec_secret *s = NULL;
    static const char byte = 'x';
    assert_int_equal(ec_secret_new(&s, &byte, SIZE_MAX), EC_ERR_NOMEM);
    assert_null(s);
    s = (ec_secret *)(uintptr_t)&byte; /* a stale handle is cleared on failure */
    assert_int_equal(ec_secret_new(&s, &byte, SIZE_MAX - 8), EC_ERR_NOMEM);
    assert_null(s);
    assert_nothing_live();
}

static void test_mmap_failure_reported(void **state)
{
    (void)state;
    ec_fault_arm("secmem.mmap", 0, 1);
    errno = 0;
    assert_null(ec_secmem_alloc(64));
    assert_int_equal(errno, ENOMEM);
    assert_nothing_live();
    void *p = ec_secmem_alloc(64); /* only the armed hit failed */
    assert_non_null(p);
    ec_secmem_free(p);
}

/* ---- mlock policy -------------------------------------------------------- */

static size_t count_lines_with(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        assert_non_null(copy);
        if (strstr(copy, needle) != NULL)
            n++;
        free(copy);
        line += len + (end != NULL ? 1 : 0);
    }
    return n;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p != '\0'; p++)
        n += *p == '\n';
    return n;
}

static void test_required_mlock_refused_at_init(void **state)
{
    (void)state;
    ec_secmem_stats before, after;
    ec_secmem_get_stats(&before);
    ec_fault_arm("secmem.mlock", 0, 0);
    ts_log_begin();
    ec_status st = ec_secmem_init(true);
    void *p = ec_secmem_alloc(64);
    int err = errno;
    char *log = ts_log_end();
    assert_int_equal(st, EC_ERR_MLOCK);
    assert_null(p);
    assert_int_equal(err, EPERM);
    assert_int_equal(count_lines(log), 1);
    assert_non_null(strstr(log, "level=error event=secmem_mlock_refused"));
    assert_non_null(strstr(log, "require_mlock = off"));
    assert_int_equal(count_lines_with(log, "secmem_unlocked"), 0);
    free(log);
    ec_secmem_get_stats(&after);
    assert_int_equal(after.mlock_refusals, before.mlock_refusals + 2);
    assert_nothing_live();
}

/* Locking worked at start, then stops working (RLIMIT_MEMLOCK reached):
 * with locking required, nothing unlocked is ever handed out. */
static void test_required_mlock_refused_later(void **state)
{
    (void)state;
    void *ok = ec_secmem_alloc(64);
    assert_non_null(ok);
    ec_fault_arm("secmem.mlock", 0, 0);
    ts_log_begin();
    for (int i = 0; i < 5; i++) {
        errno = 0;
        assert_null(ec_secmem_alloc(64));
        assert_int_equal(errno, EPERM);
    }
    char *log = ts_log_end();
    assert_int_equal(count_lines_with(log, "secmem_unlocked"), 0);
    free(log);
    assert_true(ec_secmem_is_locked(ok));
    ec_secmem_free(ok);
    assert_nothing_live();
}

#define UNLOCKED_ALLOCS 5

static void check_unlocked_allocations(const char *log_expectation_why)
{
    void *p[UNLOCKED_ALLOCS];
    for (int i = 0; i < UNLOCKED_ALLOCS; i++) {
        p[i] = ec_secmem_alloc(100);
        assert_non_null(p[i]);
        assert_false(ec_secmem_is_locked(p[i]));
    }
    ec_secmem_stats s;
    ec_secmem_get_stats(&s);
    assert_int_equal(s.live_allocations, baseline.live_allocations + UNLOCKED_ALLOCS);
    assert_int_equal(s.locked_bytes, baseline.locked_bytes);
    if (smaps_is_native()) {
        mapping_info m = mapping_of(p[0]);
        assert_true(m.found);
        assert_false(has_vmflag(&m, "lo"));
        if (!has_vmflag(&m, "dd")) /* still kept out of core dumps */
            fail_msg("%s: unlocked pages not MADV_DONTDUMP: %s", log_expectation_why, m.vmflags);
    }
    for (int i = 0; i < UNLOCKED_ALLOCS; i++)
        ec_secmem_free(p[i]);
}

static void test_unlocked_policy_warns_once(void **state)
{
    (void)state;
    ec_fault_arm("secmem.mlock", 0, 0);
    ts_log_begin();
    assert_int_equal(ec_secmem_init(false), EC_OK);
    check_unlocked_allocations("refused at init");
    char *log = ts_log_end();
    assert_int_equal(count_lines(log), 1);
    assert_int_equal(count_lines_with(log, "level=warn event=secmem_unlocked"), 1);
    assert_non_null(strstr(log, "RLIMIT_MEMLOCK"));
    free(log);
    assert_nothing_live();
}

static void test_unlocked_policy_warns_once_when_refusals_start_later(void **state)
{
    (void)state;
    ts_log_begin();
    assert_int_equal(ec_secmem_init(false), EC_OK); /* probe locks fine */
    ec_fault_arm("secmem.mlock", 0, 0);
    check_unlocked_allocations("refused after init");
    char *log = ts_log_end();
    assert_int_equal(count_lines(log), 1);
    assert_int_equal(count_lines_with(log, "level=warn event=secmem_unlocked"), 1);
    free(log);
    assert_nothing_live();
}

static void test_locking_resumes_when_allowed(void **state)
{
    (void)state;
    ec_fault_arm("secmem.mlock", 0, 0);
    ts_log_begin();
    assert_int_equal(ec_secmem_init(false), EC_OK);
    void *unlocked = ec_secmem_alloc(10);
    free(ts_log_end());
    assert_non_null(unlocked);
    ec_fault_reset();
    void *locked = ec_secmem_alloc(10);
    assert_non_null(locked);
    assert_false(ec_secmem_is_locked(unlocked));
    assert_true(ec_secmem_is_locked(locked));
    ec_secmem_stats s;
    ec_secmem_get_stats(&s);
    assert_int_equal(s.locked_bytes, baseline.locked_bytes + pg);
    ec_secmem_free(unlocked);
    ec_secmem_free(locked);
    assert_nothing_live();
}

/* ---- process hardening --------------------------------------------------- */

static void harden_child(void *arg)
{
    (void)arg;
    /* Start from a dumpable process allowed core files, so the change shows. */
    struct rlimit core;
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 || getrlimit(RLIMIT_CORE, &core) != 0)
        _exit(10);
    core.rlim_cur =
        core.rlim_max == RLIM_INFINITY || core.rlim_max > 1 << 20 ? 1 << 20 : core.rlim_max;
    if (setrlimit(RLIMIT_CORE, &core) != 0 || prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1)
        _exit(11);
    if (ec_secmem_harden_process() != EC_OK)
        _exit(12);
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
        _exit(13);
    if (getrlimit(RLIMIT_CORE, &core) != 0 || core.rlim_cur != 0 || core.rlim_max != 0)
        _exit(14);
    _exit(0);
}

static void test_harden_process(void **state)
{
    (void)state;
    if (!can_fork_crash_tests())
        skip();
    char err[256];
    int status = in_child(harden_child, NULL, err, sizeof err);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 13)
        fail_msg("process still dumpable after ec_secmem_harden_process");
    if (WEXITSTATUS(status) == 14)
        fail_msg("RLIMIT_CORE not 0/0 after ec_secmem_harden_process");
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- threads ------------------------------------------------------------- */

#define THREADS 4
#define ROUNDS 200

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    uintptr_t bad = 0;
    for (int i = 0; i < ROUNDS; i++) {
        size_t size = 1 + (size_t)rand_r(&seed) % (3 * pg);
        uint8_t *p = ec_secmem_alloc(size);
        if (p == NULL || p[size - 1] != 0 || ec_secmem_size(p) != size) {
            bad++;
            continue;
        }
        memset(p, (int)(uintptr_t)arg, size);
        ec_secmem_free(p);
    }
    return (void *)bad;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, (void *)(i + 1)), 0);
    for (int i = 0; i < THREADS; i++) {
        void *bad = NULL;
        assert_int_equal(pthread_join(t[i], &bad), 0);
        assert_null(bad);
    }
    assert_nothing_live();
}

int main(void)
{
    long page = sysconf(_SC_PAGESIZE);
    pg = page > 0 ? (size_t)page : 4096;
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_alloc_is_zeroed_page_aligned_and_sized),
        T(test_alloc_is_locked_and_not_dumped),
        T(test_guard_mappings_are_inaccessible),
        T(test_guard_pages_fault),
        T(test_double_free_aborts),
        T(test_foreign_pointer_aborts),
        T(test_null_is_harmless),
        T(test_free_wipes),
        T(test_secret_free_wipes),
        T(test_stats_track_and_return_to_zero),
        T(test_dup_copies),
        T(test_zero_and_huge_sizes_refused),
        T(test_mmap_failure_reported),
        T(test_required_mlock_refused_at_init),
        T(test_required_mlock_refused_later),
        T(test_unlocked_policy_warns_once),
        T(test_unlocked_policy_warns_once_when_refusals_start_later),
        T(test_locking_resumes_when_allowed),
        T(test_harden_process),
        T(test_threads),
    };
#undef T
    return cmocka_run_group_tests_name("secmem", tests, NULL, NULL);
}
