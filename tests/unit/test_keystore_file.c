/*
 * File key store: the KEK is created once (0600, 32 bytes, directory 0700),
 * reused afterwards, never replaced, and refused when its file is unsafe.
 * Wrap/unwrap round-trips and rejects a changed AAD or wrapped key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "edgecap/fault.h"
#include "edgecap/keystore.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "support.h"

static int setup(void **state)
{
    *state = ts_mkdtemp();
    ec_fault_reset();
    return *state == NULL;
}

static int teardown(void **state)
{
    ts_rmtree(*state);
    free(*state);
    ec_fault_reset();
    return 0;
}

static void read_kek(const char *path, uint8_t out[32])
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(out, 1, 32, f), 32);
    fclose(f);
}

static void test_created_once_then_reused(void **state)
{
    char *ksdir = ts_strf("%s/keys", (char *)*state);
    char *kek = ts_strf("%s/kek", ksdir);
    ec_keystore a, b;
    assert_int_equal(ec_keystore_file_open(&a, ksdir), EC_OK);
    struct stat sb;
    assert_int_equal(stat(ksdir, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);
    assert_int_equal(stat(kek, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(sb.st_size, 32);
    uint8_t first[32], second[32], id_a[EC_KEK_ID_BYTES], id_b[EC_KEK_ID_BYTES];
    read_kek(kek, first);
    a.ops->kek_id(a.ctx, id_a);
    ec_keystore_close(&a);
    ec_keystore_close(&a); /* closing twice is safe */

    assert_int_equal(ec_keystore_file_open(&b, ksdir), EC_OK);
    read_kek(kek, second);
    assert_memory_equal(first, second, 32);
    b.ops->kek_id(b.ctx, id_b);
    assert_memory_equal(id_a, id_b, sizeof id_a);
    /* The id is not the key. */
    assert_null(memmem(first, 32, id_a, 8));
    ec_keystore_close(&b);
    free(kek);
    free(ksdir);
}

static void test_wrap_round_trip_and_aad(void **state)
{
    char *ksdir = ts_strf("%s/keys", (char *)*state);
    ec_keystore ks;
    assert_int_equal(ec_keystore_file_open(&ks, ksdir), EC_OK);
    uint8_t key[32], back[32], wrapped[EC_WRAPPED_KEY_BYTES];
    assert_int_equal(ec_rng_bytes(key, sizeof key), EC_OK);
    const uint8_t aad[] = "segment header";
    assert_int_equal(ks.ops->wrap(ks.ctx, key, aad, sizeof aad, wrapped), EC_OK);
    assert_null(memmem(wrapped, sizeof wrapped, key, 16));
    assert_int_equal(ks.ops->unwrap(ks.ctx, wrapped, aad, sizeof aad, back), EC_OK);
    assert_memory_equal(key, back, 32);
    const uint8_t other_aad[] = "segment headeR";
    assert_int_equal(ks.ops->unwrap(ks.ctx, wrapped, other_aad, sizeof other_aad, back),
                     EC_ERR_CRYPTO);
    wrapped[20] ^= 1;
    assert_int_equal(ks.ops->unwrap(ks.ctx, wrapped, aad, sizeof aad, back), EC_ERR_CRYPTO);
    ec_keystore_close(&ks);
    free(ksdir);
}

static void test_unsafe_kek_refused_not_replaced(void **state)
{
    const char *dir = *state;
    char *ksdir = ts_strf("%s/keys", dir);
    char *kek = ts_strf("%s/kek", ksdir);
    ec_keystore ks;
    assert_int_equal(ec_keystore_file_open(&ks, ksdir), EC_OK);
    ec_keystore_close(&ks);
    uint8_t before[32], after[32];
    read_kek(kek, before);

    assert_int_equal(chmod(kek, 0640), 0);
    assert_int_equal(ec_keystore_file_open(&ks, ksdir), EC_ERR_PERM);
    assert_null(ks.ops);
    assert_int_equal(chmod(kek, 0600), 0);

    if (geteuid() == 0) {
        assert_int_equal(chown(kek, 65534, 65534), 0);
        assert_int_equal(ec_keystore_file_open(&ks, ksdir), EC_ERR_PERM);
        assert_int_equal(chown(kek, 0, 0), 0);
    }
    read_kek(kek, after);
    assert_memory_equal(before, after, 32);

    /* A KEK file of the wrong size is an error, never silently recreated. */
    FILE *f = fopen(kek, "ab");
    assert_non_null(f);
    fputc('x', f);
    fclose(f);
    assert_int_equal(ec_keystore_file_open(&ks, ksdir), EC_ERR_IO);

    /* A group-writable key store directory is refused. */
    char *ksdir2 = ts_strf("%s/keys2", dir);
    assert_int_equal(mkdir(ksdir2, 0770), 0);
    assert_int_equal(chmod(ksdir2, 0770), 0);
    assert_int_equal(ec_keystore_file_open(&ks, ksdir2), EC_ERR_PERM);
    free(ksdir2);
    free(kek);
    free(ksdir);
}

static void test_failed_write_leaves_nothing(void **state)
{
    char *ksdir = ts_strf("%s/keys", (char *)*state);
    char *kek = ts_strf("%s/kek", ksdir);
    ec_keystore ks;
    ec_fault_arm("keystore.write", 0, 1);
    assert_int_equal(ec_keystore_file_open(&ks, ksdir), EC_ERR_IO);
    struct stat sb;
    assert_int_not_equal(stat(kek, &sb), 0); /* no half-written KEK */
    /* The next start creates it. */
    assert_int_equal(ec_keystore_file_open(&ks, ksdir), EC_OK);
    assert_int_equal(stat(kek, &sb), 0);
    ec_keystore_close(&ks);
    free(kek);
    free(ksdir);
}

static void test_concurrent_first_use_agrees(void **state)
{
    /* Several processes creating the KEK at once end with one KEK they all use. */
    char *ksdir = ts_strf("%s/keys", (char *)*state);
    int pipes[4][2];
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pipe(pipes[i]), 0);
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            ec_keystore ks;
            uint8_t id[EC_KEK_ID_BYTES] = {0};
            if (ec_keystore_file_open(&ks, ksdir) == EC_OK)
                ks.ops->kek_id(ks.ctx, id);
            _exit(write(pipes[i][1], id, sizeof id) == sizeof id ? 0 : 1);
        }
        close(pipes[i][1]);
    }
    uint8_t ids[4][EC_KEK_ID_BYTES];
    for (int i = 0; i < 4; i++) {
        int status;
        assert_int_equal(read(pipes[i][0], ids[i], EC_KEK_ID_BYTES), EC_KEK_ID_BYTES);
        close(pipes[i][0]);
        waitpid(pids[i], &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ec_keystore ks;
    uint8_t id[EC_KEK_ID_BYTES];
    assert_int_equal(ec_keystore_file_open(&ks, ksdir), EC_OK);
    ks.ops->kek_id(ks.ctx, id);
    for (int i = 0; i < 4; i++)
        assert_memory_equal(ids[i], id, sizeof id);
    ec_keystore_close(&ks);
    free(ksdir);
}

int main(void)
{
    ec_secmem_init(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_created_once_then_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrap_round_trip_and_aad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsafe_kek_refused_not_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_first_use_agrees, setup, teardown),
    };
    int rc = cmocka_run_group_tests_name("keystore_file", tests, NULL, NULL);
    ec_rng_free();
    return rc;
}
