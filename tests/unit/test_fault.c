/* Fault-injection registry: when an armed point fires, and that a test bug
 * (a name that can never match, a full table) stops loudly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "edgecap/fault.h"

static int reset(void **state)
{
    (void)state;
    ec_fault_reset();
    return 0;
}

/* Which of the next `n` hits of `point` fail, as a string of 'x' (fail) and
 * '.' (pass). */
static void pattern(const char *point, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = ec_fault_hit(point) ? 'x' : '.';
    out[n] = '\0';
}

static void test_unarmed_never_fails_and_counts(void **state)
{
    (void)state;
    char got[9];
    assert_int_equal(ec_fault_hits("t.unarmed"), 0);
    pattern("t.unarmed", 8, got);
    assert_string_equal(got, "........");
    assert_int_equal(ec_fault_hits("t.unarmed"), 8);
}

static void test_skip_then_count(void **state)
{
    (void)state;
    char got[9];
    ec_fault_arm("t.point", 2, 3);
    pattern("t.point", 8, got);
    assert_string_equal(got, "..xxx...");
}

static void test_count_zero_fails_forever(void **state)
{
    (void)state;
    char got[9];
    ec_fault_arm("t.point", 1, 0);
    pattern("t.point", 8, got);
    assert_string_equal(got, ".xxxxxxx");
}

static void test_first_hit(void **state)
{
    (void)state;
    char got[5];
    ec_fault_arm("t.point", 0, 1);
    pattern("t.point", 4, got);
    assert_string_equal(got, "x...");
}

/* `skip` counts from arming, not from the last reset; hits keep counting. */
static void test_skip_counts_from_arming(void **state)
{
    (void)state;
    char got[6];
    pattern("t.point", 5, got); /* earlier, unarmed traffic */
    ec_fault_arm("t.point", 1, 1);
    pattern("t.point", 4, got);
    assert_string_equal(got, ".x..");
    assert_int_equal(ec_fault_hits("t.point"), 9);
}

static void test_rearm_replaces(void **state)
{
    (void)state;
    char got[5];
    ec_fault_arm("t.point", 0, 0);
    pattern("t.point", 2, got);
    assert_string_equal(got, "xx");
    ec_fault_arm("t.point", 2, 1);
    pattern("t.point", 4, got);
    assert_string_equal(got, "..x.");
}

static void test_points_are_independent(void **state)
{
    (void)state;
    char a[4], b[4];
    ec_fault_arm("t.a", 0, 0);
    pattern("t.a", 3, a);
    pattern("t.b", 3, b);
    assert_string_equal(a, "xxx");
    assert_string_equal(b, "...");
    assert_int_equal(ec_fault_hits("t.a"), 3);
    assert_int_equal(ec_fault_hits("t.b"), 3);
}

static void test_reset_disarms_and_clears(void **state)
{
    (void)state;
    char got[4];
    ec_fault_arm("t.point", 0, 0);
    pattern("t.point", 2, got);
    ec_fault_reset();
    assert_int_equal(ec_fault_hits("t.point"), 0);
    pattern("t.point", 3, got);
    assert_string_equal(got, "...");
}

static void test_seam_macro_reaches_registry(void **state)
{
    (void)state;
    ec_fault_arm("t.macro", 0, 1);
    assert_true(EC_FAULT("t.macro"));
    assert_false(EC_FAULT("t.macro"));
    assert_int_equal(ec_fault_hits("t.macro"), 2);
}

#define THREADS 4
#define HITS_PER_THREAD 1000

static void *hammer(void *arg)
{
    unsigned *failed = arg;
    for (int i = 0; i < HITS_PER_THREAD; i++) {
        if (ec_fault_hit("t.threads"))
            (*failed)++;
    }
    return NULL;
}

/* Under contention the armed budget is spent exactly once. */
static void test_threads_share_one_budget(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    unsigned failed[THREADS] = {0};
    ec_fault_arm("t.threads", 100, 50);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &failed[i]), 0);
    unsigned total = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        total += failed[i];
    }
    assert_int_equal(total, 50);
    assert_int_equal(ec_fault_hits("t.threads"), THREADS * HITS_PER_THREAD);
}

/* Runs `fn` in a child with its stderr captured into `err` (NUL-terminated);
 * returns the wait status. */
static int in_child(void (*fn)(void), char *err, size_t err_size)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(SIGABRT, SIG_DFL);
        dup2(pipefd[1], STDERR_FILENO);
        close(pipefd[0]);
        fn();
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

static void arm_long_name(void)
{
    /* 64 characters: one more than a point name can hold. */
    ec_fault_arm("t.01234567890123456789012345678901234567890123456789012345678901", 0, 0);
}

static void arm_63_char_name(void)
{
    ec_fault_arm("t.0123456789012345678901234567890123456789012345678901234567890", 0, 1);
    if (!ec_fault_hit("t.0123456789012345678901234567890123456789012345678901234567890"))
        _exit(3);
}

static void fill_table(void)
{
    char name[32];
    for (int i = 0; i <= 64; i++) {
        snprintf(name, sizeof name, "t.fill.%d", i);
        ec_fault_arm(name, 0, 0);
    }
}

static void test_overlong_name_aborts(void **state)
{
    (void)state;
    char err[512];
    int status = in_child(arm_long_name, err, sizeof err);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(err, "longer than 63 characters"));

    status = in_child(arm_63_char_name, err, sizeof err);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_full_table_aborts(void **state)
{
    (void)state;
    char err[512];
    int status = in_child(fill_table, err, sizeof err);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(err, "more than 64 distinct points"));
    assert_non_null(strstr(err, "t.fill.64"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_unarmed_never_fails_and_counts, reset),
        cmocka_unit_test_setup(test_skip_then_count, reset),
        cmocka_unit_test_setup(test_count_zero_fails_forever, reset),
        cmocka_unit_test_setup(test_first_hit, reset),
        cmocka_unit_test_setup(test_skip_counts_from_arming, reset),
        cmocka_unit_test_setup(test_rearm_replaces, reset),
        cmocka_unit_test_setup(test_points_are_independent, reset),
        cmocka_unit_test_setup(test_reset_disarms_and_clears, reset),
        cmocka_unit_test_setup(test_seam_macro_reaches_registry, reset),
        cmocka_unit_test_setup(test_overlong_name_aborts, reset),
        cmocka_unit_test_setup(test_full_table_aborts, reset),
        /* after the forking tests: a child of a threaded parent inherits
         * glibc's cached thread stacks, which valgrind reports as leaks */
        cmocka_unit_test_setup(test_threads_share_one_budget, reset),
    };
    return cmocka_run_group_tests_name("fault", tests, NULL, NULL);
}
