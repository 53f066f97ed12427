/*
 * PKCS#11 key store against a real token: SoftHSM2 (Debian's softhsm2) with
 * its token directory in the test's scratch directory (SOFTHSM2_CONF), never
 * the system one. The KEK is created on the token on first open,
 * non-extractable (CKA_VALUE cannot be read), reused afterwards; wrapping has
 * the file store's layout (checked by decrypting with a known KEK imported
 * into the token), tampering is EC_ERR_CRYPTO; a wrong PIN, a missing module,
 * token or key are clear errors that never show the PIN.
 *
 * The module is a native shared object: when it cannot be loaded (qemu-user
 * runs of board builds) or SoftHSM is not installed, the tests skip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include <mbedtls/ecdsa.h>
#include <mbedtls/gcm.h>
#include <mbedtls/pk.h>

#include "edgecap/fault.h"
#include "edgecap/audit.h"
#include "edgecap/config.h"
#include "edgecap/keystore.h"
#include "edgecap/provision.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/token_key.h"
#include "support.h"

#include <mbedtls/ecp.h>
#include <mbedtls/md.h>
#include <mbedtls/rsa.h>
#include <mbedtls/x509_crt.h>

#define MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN "edgecap-unit"
#define PIN "unit-pin-5309"
#define KEY_LABEL "edgecap-device"

static char *dir;
static bool usable;
static ec_secret *pin;

static int run(const char *cmd)
{
    char *full = ts_strf("%s >>'%s/tools.log' 2>&1", cmd, dir);
    int rc = system(full);
    free(full);
    return rc;
}

static void set_bools(const char *label, int decrypt, int unwrap, int derive);

static int group_setup(void **state)
{
    (void)state;
    ec_secmem_init(false);
    ec_rng_init();
    dir = ts_mkdtemp();
    char *conf = ts_strf("directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
                         "log.level = ERROR\n",
                         dir);
    char *path = ts_write_file(dir, "softhsm2.conf", 0600, conf);
    setenv("SOFTHSM2_CONF", path, 1);
    char *tokens = ts_strf("%s/tokens", dir);
    mkdir(tokens, 0700);
    void *dl = dlopen(MODULE, RTLD_NOW | RTLD_LOCAL);
    usable =
        dl != NULL && access("/usr/bin/softhsm2-util", X_OK) == 0 &&
        access("/usr/bin/pkcs11-tool", X_OK) == 0 &&
        run("softhsm2-util --init-token --free --label " TOKEN " --pin " PIN " --so-pin so-" PIN) ==
            0 &&
        run("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
            " --keypairgen --key-type EC:prime256v1 --label " KEY_LABEL
            " --id 0d --usage-sign") == 0 &&
        run("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
            " --keypairgen --key-type EC:prime256v1 --label other --id 0f --usage-sign") == 0 &&
        run("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
            " --keypairgen --key-type EC:secp384r1 --label p384 --id 0e --usage-sign") == 0 &&
        run("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
            " --keypairgen --key-type EC:prime256v1 --label pub-only --id 10 --usage-sign") == 0 &&
        run("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
            " --delete-object --type privkey --label pub-only") == 0 &&
        run("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
            " --keypairgen --key-type rsa:1024 --label rsa-1024 --id 11 --usage-sign") == 0;
    if (dl != NULL)
        dlclose(dl);
    /* pkcs11-tool's key pairs can decrypt and unwrap too (SoftHSM's
     * defaults): the device keys among them are made sign only, as the
     * store wants; "decrypting" stays as it is, "deriving" only derives */
    usable = usable &&
             run("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
                 " --keypairgen --key-type EC:prime256v1 --label decrypting --id 12 "
                 "--usage-sign") == 0 &&
             run("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
                 " --keypairgen --key-type EC:prime256v1 --label deriving --id 13 --usage-sign "
                 "--usage-derive") == 0;
    if (usable) {
        static const char *const sign_only[] = {KEY_LABEL, "other", "p384", "rsa-1024", "deriving"};
        for (size_t i = 0; i < sizeof sign_only / sizeof sign_only[0]; i++)
            set_bools(sign_only[i], false, false, -1);
    }
    ec_secret_new(&pin, PIN, strlen(PIN));
    free(conf);
    free(path);
    free(tokens);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ec_secret_free(&pin);
    ts_rmtree(dir);
    free(dir);
    return 0;
}

static ec_keystore_pkcs11_params params(const char *kek_label)
{
    return (ec_keystore_pkcs11_params){.module = MODULE,
                                       .token_label = TOKEN,
                                       .pin = pin,
                                       .kek_label = kek_label,
                                       .key_label = ""};
}

/* A session of our own on the token (the key store must be closed: one
 * C_Initialize per process). */
typedef struct {
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    CK_SESSION_HANDLE s;
} direct;

static void direct_open(direct *d)
{
    d->dl = dlopen(MODULE, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(d->dl);
    CK_C_GetFunctionList get;
    *(void **)&get = dlsym(d->dl, "C_GetFunctionList");
    assert_int_equal(get(&d->f), CKR_OK);
    assert_int_equal(d->f->C_Initialize(NULL), CKR_OK);
    CK_SLOT_ID slots[8];
    CK_ULONG n = 8;
    assert_int_equal(d->f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    assert_true(n >= 1);
    assert_int_equal(
        d->f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &d->s),
        CKR_OK);
    assert_int_equal(d->f->C_Login(d->s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, strlen(PIN)), CKR_OK);
}

static void direct_close(direct *d)
{
    d->f->C_Logout(d->s);
    d->f->C_CloseSession(d->s);
    d->f->C_Finalize(NULL);
    dlclose(d->dl);
}

static CK_ULONG count_label(direct *d, CK_OBJECT_CLASS cls, const char *label,
                            CK_OBJECT_HANDLE *first)
{
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE h[4];
    CK_ULONG n = 0;
    assert_int_equal(d->f->C_FindObjectsInit(d->s, t, 2), CKR_OK);
    assert_int_equal(d->f->C_FindObjects(d->s, h, 4, &n), CKR_OK);
    d->f->C_FindObjectsFinal(d->s);
    if (n > 0 && first != NULL)
        *first = h[0];
    return n;
}

/* Sets CKA_DECRYPT, CKA_UNWRAP and CKA_DERIVE (each 0 or 1; -1 leaves it)
 * on the private key `label`. */
static void set_bools(const char *label, int decrypt, int unwrap, int derive)
{
    direct d;
    direct_open(&d);
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, label, &h), 1);
    const int want[] = {decrypt, unwrap, derive};
    static const CK_ATTRIBUTE_TYPE types[] = {CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE};
    for (size_t i = 0; i < 3; i++) {
        if (want[i] < 0)
            continue;
        CK_BBOOL v = want[i] ? CK_TRUE : CK_FALSE;
        CK_ATTRIBUTE a = {types[i], &v, sizeof v};
        assert_int_equal(d.f->C_SetAttributeValue(d.s, h, &a, 1), CKR_OK);
    }
    direct_close(&d);
}

/* Imports a known AES key of `len` bytes (sensitive; extractable or not)
 * under `label`. */
static void import_aes(const char *label, const uint8_t *key, size_t len, bool extractable)
{
    direct d;
    direct_open(&d);
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE, ext = extractable ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls},     {CKA_KEY_TYPE, &type, sizeof type},
        {CKA_TOKEN, &yes, sizeof yes},     {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes}, {CKA_EXTRACTABLE, &ext, sizeof ext},
        {CKA_ENCRYPT, &yes, sizeof yes},   {CKA_DECRYPT, &yes, sizeof yes},
        {CKA_WRAP, &no, sizeof no},        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_VALUE, (void *)key, len},
    };
    CK_OBJECT_HANDLE h;
    assert_int_equal(d.f->C_CreateObject(d.s, t, sizeof t / sizeof t[0], &h), CKR_OK);
    direct_close(&d);
}

#define NEED_TOKEN()                                                                               \
    do {                                                                                           \
        if (!usable)                                                                               \
            skip();                                                                                \
    } while (0)

static void test_kek_created_on_token_non_extractable(void **state)
{
    (void)state;
    NEED_TOKEN();
    ec_keystore ks;
    ec_keystore_pkcs11_params p = params("kek-a");
    ts_log_begin();
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "kek_created"));
    free(log);
    assert_string_equal(ks.ops->name, "pkcs11");
    assert_false(ec_keystore_has_device_key(&ks));
    uint8_t id_a[EC_KEK_ID_BYTES], id_b[EC_KEK_ID_BYTES];
    ks.ops->kek_id(ks.ctx, id_a);
    ec_keystore_close(&ks);

    /* reopened: the same KEK (same id), not a second one */
    ts_log_begin();
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    log = ts_log_end();
    assert_null(strstr(log, "kek_created"));
    free(log);
    ks.ops->kek_id(ks.ctx, id_b);
    assert_memory_equal(id_a, id_b, EC_KEK_ID_BYTES);
    ec_keystore_close(&ks);

    direct d;
    direct_open(&d);
    CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE;
    assert_int_equal(count_label(&d, CKO_SECRET_KEY, "kek-a", &kek), 1);
    uint8_t value[64];
    CK_ATTRIBUTE v = {CKA_VALUE, value, sizeof value};
    assert_int_equal(d.f->C_GetAttributeValue(d.s, kek, &v, 1), CKR_ATTRIBUTE_SENSITIVE);
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, token = CK_FALSE, never = CK_FALSE;
    CK_ULONG len = 0;
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sensitive, sizeof sensitive},
        {CKA_EXTRACTABLE, &extractable, sizeof extractable},
        {CKA_TOKEN, &token, sizeof token},
        {CKA_NEVER_EXTRACTABLE, &never, sizeof never},
        {CKA_VALUE_LEN, &len, sizeof len},
    };
    assert_int_equal(d.f->C_GetAttributeValue(d.s, kek, a, 5), CKR_OK);
    assert_true(sensitive);
    assert_false(extractable);
    assert_true(token);
    assert_true(never);
    assert_int_equal(len, 32);
    direct_close(&d);
}

static void test_wrap_unwrap_and_tamper(void **state)
{
    (void)state;
    NEED_TOKEN();
    ec_keystore ks;
    ec_keystore_pkcs11_params p = params("kek-b");
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    uint8_t key[EC_DATA_KEY_BYTES], back[EC_DATA_KEY_BYTES], w[EC_WRAPPED_KEY_BYTES],
        w2[EC_WRAPPED_KEY_BYTES];
    static const uint8_t aad[] = "segment header context";
    assert_int_equal(ec_rng_bytes(key, sizeof key), EC_OK);
    assert_int_equal(ks.ops->wrap(ks.ctx, key, aad, sizeof aad, w), EC_OK);
    assert_int_equal(ks.ops->wrap(ks.ctx, key, aad, sizeof aad, w2), EC_OK);
    /* a fresh nonce each time */
    assert_memory_not_equal(w, w2, EC_WRAP_NONCE_BYTES);
    assert_int_equal(ks.ops->unwrap(ks.ctx, w, aad, sizeof aad, back), EC_OK);
    assert_memory_equal(key, back, sizeof key);
    /* nonce, ciphertext, tag: one flipped bit each */
    static const size_t at[] = {0, EC_WRAP_NONCE_BYTES + 3, EC_WRAPPED_KEY_BYTES - 1};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        w[at[i]] ^= 0x10;
        assert_int_equal(ks.ops->unwrap(ks.ctx, w, aad, sizeof aad, back), EC_ERR_CRYPTO);
        w[at[i]] ^= 0x10;
    }
    static const uint8_t other_aad[] = "segment header contexT";
    assert_int_equal(ks.ops->unwrap(ks.ctx, w, other_aad, sizeof other_aad, back), EC_ERR_CRYPTO);
    /* and the session still works after the failures */
    assert_int_equal(ks.ops->unwrap(ks.ctx, w, aad, sizeof aad, back), EC_OK);
    assert_memory_equal(key, back, sizeof key);
    ec_keystore_close(&ks);

    /* another KEK cannot open it */
    p = params("kek-c");
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_int_equal(ks.ops->unwrap(ks.ctx, w, aad, sizeof aad, back), EC_ERR_CRYPTO);
    ec_keystore_close(&ks);
}

/* The layout is the file store's: nonce(12) || ciphertext(32) || tag(16),
 * AES-256-GCM with the caller's AAD; shown with a KEK whose bytes the test
 * knows (imported, then used only on the token). */
static void test_same_layout_as_file_store(void **state)
{
    (void)state;
    NEED_TOKEN();
    uint8_t kek[32], key[EC_DATA_KEY_BYTES], back[EC_DATA_KEY_BYTES], w[EC_WRAPPED_KEY_BYTES];
    assert_int_equal(ec_rng_bytes(kek, sizeof kek), EC_OK);
    assert_int_equal(ec_rng_bytes(key, sizeof key), EC_OK);
    import_aes("kek-known", kek, sizeof kek, false);
    ec_keystore ks;
    ec_keystore_pkcs11_params p = params("kek-known");
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    static const uint8_t aad[] = "aad";
    assert_int_equal(ks.ops->wrap(ks.ctx, key, aad, 3, w), EC_OK);
    mbedtls_gcm_context gcm;
    mbedtls_gcm_init(&gcm);
    assert_int_equal(mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, kek, 256), 0);
    assert_int_equal(mbedtls_gcm_auth_decrypt(&gcm, EC_DATA_KEY_BYTES, w, EC_WRAP_NONCE_BYTES, aad,
                                              3, w + EC_WRAP_NONCE_BYTES + EC_DATA_KEY_BYTES,
                                              EC_WRAP_TAG_BYTES, w + EC_WRAP_NONCE_BYTES, back),
                     0);
    assert_memory_equal(key, back, sizeof key);
    /* and the other way: what software sealed, the token opens */
    assert_int_equal(ec_rng_bytes(w, EC_WRAP_NONCE_BYTES), EC_OK);
    assert_int_equal(mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, EC_DATA_KEY_BYTES, w,
                                               EC_WRAP_NONCE_BYTES, aad, 3, key,
                                               w + EC_WRAP_NONCE_BYTES, EC_WRAP_TAG_BYTES,
                                               w + EC_WRAP_NONCE_BYTES + EC_DATA_KEY_BYTES),
                     0);
    mbedtls_gcm_free(&gcm);
    memset(back, 0, sizeof back);
    assert_int_equal(ks.ops->unwrap(ks.ctx, w, aad, 3, back), EC_OK);
    assert_memory_equal(key, back, sizeof key);
    uint8_t id[EC_KEK_ID_BYTES];
    ks.ops->kek_id(ks.ctx, id);
    /* the id is not derived from the key bytes: imported without CKA_ID, it
     * comes from the label, so no part of the KEK shows in it */
    assert_memory_not_equal(id, kek, EC_KEK_ID_BYTES);
    ec_keystore_close(&ks);
}

/* Two processes creating the KEK at once: the one that then sees another
 * KEK under the label destroys its own and uses the other, so one KEK is
 * left. The other process is simulated by a fault seam that creates a second
 * KEK right after ours. */
static void test_kek_creation_race_leaves_one(void **state)
{
    (void)state;
    NEED_TOKEN();
    ec_fault_reset();
    ec_fault_arm("pkcs11.kek_race", 0, 1);
    ec_keystore ks;
    ec_keystore_pkcs11_params p = params("kek-race");
    ts_log_begin();
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    char *log = ts_log_end();
    assert_null(strstr(log, "kek_created")); /* it took the other one */
    free(log);
    assert_int_equal(ec_fault_hits("pkcs11.kek_race"), 1);
    ec_fault_reset();
    uint8_t id_a[EC_KEK_ID_BYTES], id_b[EC_KEK_ID_BYTES];
    ks.ops->kek_id(ks.ctx, id_a);
    ec_keystore_close(&ks);
    direct d;
    direct_open(&d);
    assert_int_equal(count_label(&d, CKO_SECRET_KEY, "kek-race", NULL), 1);
    direct_close(&d);
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    ks.ops->kek_id(ks.ctx, id_b);
    assert_memory_equal(id_a, id_b, EC_KEK_ID_BYTES);
    ec_keystore_close(&ks);
}

typedef struct {
    const char *name;
    const char *module;
    const char *token;
    const char *pin;
    const char *kek_label;
    const char *key_label;
    ec_status want;
    const char *log_fragment;
} reject_case;

static const reject_case rejects[] = {
    {"wrong PIN", MODULE, TOKEN, "wrong-pin-8086", "kek-a", "", EC_ERR_AUTH,
     "the token refused the PIN"},
    {"missing module", "/nonexistent/libpkcs11-missing.so", TOKEN, PIN, "kek-a", "",
     EC_ERR_NOT_FOUND, "pkcs11_module_unloadable"},
    {"not a PKCS#11 module", "/lib/x86_64-linux-gnu/libz.so.1", TOKEN, PIN, "kek-a", "",
     EC_ERR_NOT_FOUND, "not a PKCS#11 module"},
    {"missing token", MODULE, "no-such-token", PIN, "kek-a", "", EC_ERR_NOT_FOUND,
     "pkcs11_token_not_found"},
    {"missing key label", MODULE, TOKEN, PIN, "kek-a", "no-such-key", EC_ERR_NOT_FOUND,
     "no private key with this label on the token"},
    {"key not on P-256", MODULE, TOKEN, PIN, "kek-a", "p384", EC_ERR_CRYPTO,
     "the key is not on the P-256 curve"},
    {"RSA key too short", MODULE, TOKEN, PIN, "kek-a", "rsa-1024", EC_ERR_CRYPTO,
     "the RSA key is not 2048 to 4096 bits"},
    {"extractable KEK", MODULE, TOKEN, PIN, "kek-extractable", "", EC_ERR_CRYPTO,
     "it is extractable or not sensitive"},
    {"KEK label on two keys", MODULE, TOKEN, PIN, "kek-twice", "", EC_ERR_CRYPTO,
     "more than one object has this label"},
    {"AES-128 KEK", MODULE, TOKEN, PIN, "kek-128", "", EC_ERR_CRYPTO, "the KEK is not AES-256"},
    {"device key that decrypts", MODULE, TOKEN, PIN, "kek-a", "decrypting", EC_ERR_CRYPTO,
     "event=pkcs11_object_refused label=decrypting reason=\"it can decrypt, unwrap or derive (a "
     "device key only signs: CKA_DECRYPT, CKA_UNWRAP and CKA_DERIVE must be false)\""},
    {"device key that derives", MODULE, TOKEN, PIN, "kek-a", "deriving", EC_ERR_CRYPTO,
     "event=pkcs11_object_refused label=deriving reason=\"it can decrypt, unwrap or derive"},
};

static void test_rejections(void **state)
{
    (void)state;
    NEED_TOKEN();
    uint8_t k[32] = {1};
    import_aes("kek-extractable", k, sizeof k, true);
    import_aes("kek-twice", k, sizeof k, false);
    import_aes("kek-twice", k, sizeof k, false);
    import_aes("kek-128", k, 16, false);
    for (size_t i = 0; i < sizeof rejects / sizeof rejects[0]; i++) {
        const reject_case *c = &rejects[i];
        if (strstr(c->module, "libz") != NULL && access(c->module, R_OK) != 0)
            continue;
        ec_secret *s = NULL;
        assert_int_equal(ec_secret_new(&s, c->pin, strlen(c->pin)), EC_OK);
        ec_keystore_pkcs11_params p = {.module = c->module,
                                       .token_label = c->token,
                                       .pin = s,
                                       .kek_label = c->kek_label,
                                       .key_label = c->key_label};
        ec_keystore ks = {0};
        ts_log_begin();
        ec_status st = ec_keystore_pkcs11_open(&ks, &p);
        char *log = ts_log_end();
        if (st != c->want || strstr(log, c->log_fragment) == NULL || strstr(log, c->pin) != NULL)
            fail_msg("%s: status %d (want %d), log: %s", c->name, st, c->want, log);
        assert_null(ks.ops);
        free(log);
        ec_secret_free(&s);
    }
    /* the failures left the module in a state where the next open works */
    ec_keystore ks;
    ec_keystore_pkcs11_params p = params("kek-a");
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    ec_keystore_close(&ks);
}

/* The token key's public half, read as CKA_EC_POINT (a DER OCTET STRING
 * around the uncompressed point) from the public key object. */
static void token_public_key(mbedtls_pk_context *pub)
{
    direct d;
    direct_open(&d);
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, KEY_LABEL, &h), 1);
    uint8_t point[80];
    CK_ATTRIBUTE a = {CKA_EC_POINT, point, sizeof point};
    assert_int_equal(d.f->C_GetAttributeValue(d.s, h, &a, 1), CKR_OK);
    direct_close(&d);
    assert_int_equal(a.ulValueLen, 67); /* 04 41 04 X Y */
    assert_int_equal(mbedtls_pk_setup(pub, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    mbedtls_ecp_keypair *ec = mbedtls_pk_ec(*pub);
    assert_int_equal(mbedtls_ecp_group_load(&ec->grp, MBEDTLS_ECP_DP_SECP256R1), 0);
    assert_int_equal(mbedtls_ecp_point_read_binary(&ec->grp, &ec->Q, point + 2, 65), 0);
}

/* A self-signed certificate whose signature the token makes through the
 * mbedTLS pk context: the same path as a TLS CertificateVerify. */
static size_t token_self_signed(const ec_keystore *ks, const mbedtls_pk_context *pub, uint8_t *out,
                                size_t cap)
{
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    assert_int_equal(ec_token_key_setup(&pk, ks, pub), EC_OK);
    mbedtls_x509write_cert w;
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    mbedtls_mpi_lset(&serial, 7);
    mbedtls_x509write_crt_set_subject_key(&w, &pk);
    mbedtls_x509write_crt_set_issuer_key(&w, &pk);
    assert_int_equal(mbedtls_x509write_crt_set_subject_name(&w, "CN=edgecap-unit"), 0);
    assert_int_equal(mbedtls_x509write_crt_set_issuer_name(&w, "CN=edgecap-unit"), 0);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    assert_int_equal(mbedtls_x509write_crt_set_serial(&w, &serial), 0);
    assert_int_equal(mbedtls_x509write_crt_set_validity(&w, "20250101000000", "20350101000000"), 0);
    int n = mbedtls_x509write_crt_der(&w, out, cap, ec_rng_mbedtls, NULL);
    assert_true(n > 0);
    memmove(out, out + cap - (size_t)n, (size_t)n);
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    mbedtls_pk_free(&pk);
    return (size_t)n;
}

static void test_device_key_signs_on_token(void **state)
{
    (void)state;
    NEED_TOKEN();
    mbedtls_pk_context pub;
    mbedtls_pk_init(&pub);
    token_public_key(&pub);
    ec_keystore ks;
    ec_keystore_pkcs11_params p = params("kek-a");
    p.key_label = KEY_LABEL;
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_true(ec_keystore_has_device_key(&ks));

    /* the raw r || s verifies under the public key (after DER encoding) */
    uint8_t hash[32], raw[64], der[MBEDTLS_ECDSA_MAX_LEN];
    size_t raw_len = 0, der_len = 0;
    assert_int_equal(ec_rng_bytes(hash, sizeof hash), EC_OK);
    assert_int_equal(ks.ops->sign_digest(ks.ctx, hash, sizeof hash, raw, sizeof raw, &raw_len),
                     EC_OK);
    assert_int_equal(raw_len, 64);
    assert_int_equal(ec_token_key_sig_to_der(raw, 32, der, sizeof der, &der_len), EC_OK);
    assert_int_equal(mbedtls_pk_verify(&pub, MBEDTLS_MD_SHA256, hash, 32, der, der_len), 0);
    hash[0] ^= 1;
    assert_int_not_equal(mbedtls_pk_verify(&pub, MBEDTLS_MD_SHA256, hash, 32, der, der_len), 0);

    /* a certificate signed through the pk context parses and verifies */
    uint8_t cert[1024];
    size_t cert_len = token_self_signed(&ks, &pub, cert, sizeof cert);
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    assert_int_equal(mbedtls_x509_crt_parse_der(&crt, cert, cert_len), 0);
    uint32_t flags = 0;
    assert_int_equal(mbedtls_x509_crt_verify(&crt, &crt, NULL, NULL, &flags, NULL, NULL), 0);
    mbedtls_x509_crt_free(&crt);
    char why[160];
    assert_int_equal(ec_token_key_check_pair(&ks, cert, cert_len, why, sizeof why), EC_OK);
    ec_keystore_close(&ks);

    /* the same certificate is not the other token key's */
    p.key_label = "other";
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_int_equal(ec_token_key_check_pair(&ks, cert, cert_len, why, sizeof why), EC_ERR_CRYPTO);
    assert_string_equal(why, "the token's key does not belong to the device certificate");
    ec_keystore_close(&ks);
    mbedtls_pk_free(&pub);
}

/* ---- the device key generated on the token (provision init) ------------------ */

static ec_keystore_pkcs11_params gen_params(const char *key_label)
{
    ec_keystore_pkcs11_params p = params("kek-a");
    p.key_label = key_label;
    p.key_optional = true;
    return p;
}

/* The public key object's CKA_EC_POINT under `label` (67 bytes). */
static void ec_point_of(const char *label, uint8_t point[67])
{
    direct d;
    direct_open(&d);
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, label, &h), 1);
    CK_ATTRIBUTE a = {CKA_EC_POINT, point, 67};
    assert_int_equal(d.f->C_GetAttributeValue(d.s, h, &a, 1), CKR_OK);
    assert_int_equal(a.ulValueLen, 67);
    direct_close(&d);
}

/*
 * A key pair generate_identity made, seen from outside (the key store
 * closed): one key pair under `label`, CKA_ID = the label on both halves,
 * the private half a token object, private, sensitive (its `secret`
 * attribute unreadable), never extractable, sign only; the public half a
 * token object for verify. Leaves `d` open, the public half in *pub.
 */
static void check_generated_pair(direct *d, const char *label, CK_ATTRIBUTE_TYPE secret,
                                 CK_MECHANISM_TYPE allowed, CK_OBJECT_HANDLE *pubh)
{
    direct_open(d);
    CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE;
    assert_int_equal(count_label(d, CKO_PRIVATE_KEY, label, &priv), 1);
    assert_int_equal(count_label(d, CKO_PUBLIC_KEY, label, pubh), 1);
    uint8_t value[512];
    CK_ATTRIBUTE v = {secret, value, sizeof value};
    assert_int_equal(d->f->C_GetAttributeValue(d->s, priv, &v, 1), CKR_ATTRIBUTE_SENSITIVE);
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, never = CK_FALSE, token = CK_FALSE,
             private_ = CK_FALSE, sign = CK_FALSE, decrypt = CK_TRUE, derive = CK_TRUE;
    uint8_t id[64];
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sensitive, sizeof sensitive},
        {CKA_EXTRACTABLE, &extractable, sizeof extractable},
        {CKA_NEVER_EXTRACTABLE, &never, sizeof never},
        {CKA_TOKEN, &token, sizeof token},
        {CKA_PRIVATE, &private_, sizeof private_},
        {CKA_SIGN, &sign, sizeof sign},
        {CKA_DECRYPT, &decrypt, sizeof decrypt},
        {CKA_DERIVE, &derive, sizeof derive},
        {CKA_ID, id, sizeof id},
    };
    assert_int_equal(d->f->C_GetAttributeValue(d->s, priv, a, sizeof a / sizeof a[0]), CKR_OK);
    assert_true(sensitive);
    assert_false(extractable);
    assert_true(never);
    assert_true(token);
    assert_true(private_);
    assert_true(sign);
    assert_false(decrypt);
    assert_false(derive);
    assert_int_equal(a[8].ulValueLen, strlen(label));
    assert_memory_equal(id, label, strlen(label));
    /* sign only for good: nothing can be changed, and (CK_INVALID_HANDLE:
     * no check, a token without CKA_ALLOWED_MECHANISMS) one mechanism */
    CK_BBOOL modifiable = CK_TRUE;
    CK_MECHANISM_TYPE mechs[4];
    CK_ATTRIBUTE m[] = {{CKA_MODIFIABLE, &modifiable, sizeof modifiable},
                        {CKA_ALLOWED_MECHANISMS, mechs, sizeof mechs}};
    assert_int_equal(d->f->C_GetAttributeValue(d->s, priv, m, 2), CKR_OK);
    assert_false(modifiable);
    if (allowed != CK_INVALID_HANDLE) {
        assert_int_equal(m[1].ulValueLen, sizeof mechs[0]);
        assert_int_equal(mechs[0], allowed);
    }
    static const CK_ATTRIBUTE_TYPE widen[] = {CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE};
    for (size_t i = 0; i < sizeof widen / sizeof widen[0]; i++) {
        CK_ATTRIBUTE w = {widen[i], &(CK_BBOOL){CK_TRUE}, sizeof(CK_BBOOL)};
        assert_int_not_equal(d->f->C_SetAttributeValue(d->s, priv, &w, 1), CKR_OK);
    }
    assert_int_equal(d->f->C_GetAttributeValue(d->s, priv, a, sizeof a / sizeof a[0]), CKR_OK);
    assert_false(decrypt);
    assert_false(derive);
    CK_BBOOL verify = CK_FALSE;
    uint8_t pub_id[64];
    CK_ATTRIBUTE b[] = {
        {CKA_TOKEN, &token, sizeof token},
        {CKA_VERIFY, &verify, sizeof verify},
        {CKA_ID, pub_id, sizeof pub_id},
    };
    token = CK_FALSE;
    assert_int_equal(d->f->C_GetAttributeValue(d->s, *pubh, b, 3), CKR_OK);
    assert_true(token);
    assert_true(verify);
    assert_int_equal(b[2].ulValueLen, strlen(label));
    assert_memory_equal(pub_id, label, strlen(label));
}

static void test_generate_identity_on_token(void **state)
{
    (void)state;
    NEED_TOKEN();
    static const char label[] = "gen-device";
    ec_keystore ks;
    ec_keystore_pkcs11_params p = gen_params(label);
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_false(ec_keystore_has_device_key(&ks));
    mbedtls_pk_context key, pub;
    mbedtls_pk_init(&key);
    mbedtls_pk_init(&pub);
    assert_int_equal(ks.ops->identity_public(ks.ctx, label, &pub), EC_ERR_NOT_FOUND);
    ts_log_begin();
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, label, &key), EC_OK);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=identity_key_created backend=pkcs11 key_label=gen-device "
                                "type=ec-p256"));
    free(log);
    assert_true(ec_keystore_has_device_key(&ks));
    /* the key handed back signs on the token; identity_public is its public half */
    assert_int_equal(ks.ops->identity_public(ks.ctx, label, &pub), EC_OK);
    uint8_t hash[32], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t sig_len = 0;
    assert_int_equal(ec_rng_bytes(hash, sizeof hash), EC_OK);
    assert_int_equal(
        mbedtls_pk_sign(&key, MBEDTLS_MD_SHA256, hash, 32, sig, &sig_len, ec_rng_mbedtls, NULL), 0);
    assert_int_equal(mbedtls_pk_verify(&pub, MBEDTLS_MD_SHA256, hash, 32, sig, sig_len), 0);
    hash[0] ^= 1;
    assert_int_not_equal(mbedtls_pk_verify(&pub, MBEDTLS_MD_SHA256, hash, 32, sig, sig_len), 0);
    /* a certificate for the new key passes the pair check */
    uint8_t cert[1024];
    size_t cert_len = token_self_signed(&ks, &pub, cert, sizeof cert);
    char why[160];
    assert_int_equal(ec_token_key_check_pair(&ks, cert, cert_len, why, sizeof why), EC_OK);
    mbedtls_pk_free(&key);
    ec_keystore_close(&ks);

    /* from outside */
    direct d;
    CK_OBJECT_HANDLE pubh = CK_INVALID_HANDLE;
    check_generated_pair(&d, label, CKA_VALUE, CKM_ECDSA, &pubh);
    /* the token signs with no other mechanism: not a hash-and-sign one */
    CK_OBJECT_HANDLE privh = CK_INVALID_HANDLE;
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, label, &privh), 1);
    CK_MECHANISM other = {CKM_ECDSA_SHA256, NULL, 0};
    assert_int_not_equal(d.f->C_SignInit(d.s, &other, privh), CKR_OK);
    direct_close(&d);

    /* it stays on the token: a later open finds it as the device key */
    p.key_optional = false;
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_true(ec_keystore_has_device_key(&ks));
    assert_int_equal(ec_token_key_check_pair(&ks, cert, cert_len, why, sizeof why), EC_OK);
    ec_keystore_close(&ks);
    mbedtls_pk_free(&pub);
}

/* A label that is taken (a key made elsewhere, or by an earlier init) is
 * never given a second key, of either type: EC_ERR_EXISTS, the token as it
 * was. */
static void test_generate_identity_refusals(void **state)
{
    (void)state;
    NEED_TOKEN();
    uint8_t before[67], after[67];
    ec_point_of(KEY_LABEL, before);
    ec_keystore ks;
    ec_keystore_pkcs11_params p = gen_params(KEY_LABEL);
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, KEY_LABEL, &key),
                     EC_ERR_EXISTS);
    assert_int_equal(mbedtls_pk_get_type(&key), MBEDTLS_PK_NONE);
    /* a label with only a public key is taken too */
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, "pub-only", &key),
                     EC_ERR_EXISTS);
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_RSA_3072, KEY_LABEL, &key),
                     EC_ERR_EXISTS);
    /* the store holds KEY_LABEL's key: no key under another label replaces it */
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, "gen-second", &key),
                     EC_ERR_EXISTS);
    assert_true(ec_keystore_has_device_key(&ks));
    /* a public key of a kind the device key cannot be is refused, not read */
    mbedtls_pk_context pub;
    mbedtls_pk_init(&pub);
    ts_log_begin();
    assert_int_equal(ks.ops->identity_public(ks.ctx, "p384", &pub), EC_ERR_CRYPTO);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=pkcs11_object_refused label=p384 reason=\"it is not an EC "
                                "P-256 public key\""));
    free(log);
    assert_int_equal(mbedtls_pk_get_type(&pub), MBEDTLS_PK_NONE);
    ts_log_begin();
    assert_int_equal(ks.ops->identity_public(ks.ctx, "rsa-1024", &pub), EC_ERR_CRYPTO);
    log = ts_log_end();
    assert_non_null(strstr(log, "event=pkcs11_object_refused label=rsa-1024 reason=\"the RSA key "
                                "is not 2048 to 4096 bits\""));
    free(log);
    ec_keystore_close(&ks);
    ec_point_of(KEY_LABEL, after);
    assert_memory_equal(before, after, sizeof before);
    direct d;
    direct_open(&d);
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, KEY_LABEL, NULL), 1);
    assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, KEY_LABEL, NULL), 1);
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, "pub-only", NULL), 0);
    assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, "pub-only", NULL), 1);
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, "gen-second", NULL), 0);
    direct_close(&d);
}

/* The generated key is checked before use: a key pair the token made
 * extractable (seam: the template asks for it) is refused and destroyed, so
 * nothing is left under the label and the next try works. */
static void test_generate_identity_checks_the_new_key(void **state)
{
    (void)state;
    NEED_TOKEN();
    ec_keystore ks;
    ec_keystore_pkcs11_params p = gen_params("gen-checked");
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    ec_fault_reset();
    ec_fault_arm("pkcs11.keygen_extractable", 0, 1);
    ts_log_begin();
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, "gen-checked", &key),
                     EC_ERR_CRYPTO);
    char *log = ts_log_end();
    ec_fault_reset();
    assert_non_null(strstr(log, "event=pkcs11_object_refused label=gen-checked reason=\"it is "
                                "extractable or not sensitive"));
    assert_null(strstr(log, "identity_key_created"));
    free(log);
    assert_false(ec_keystore_has_device_key(&ks));
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, "gen-checked", &key),
                     EC_OK);
    mbedtls_pk_free(&key);
    ec_keystore_close(&ks);
    direct d;
    direct_open(&d);
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, "gen-checked", NULL), 1);
    assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, "gen-checked", NULL), 1);
    direct_close(&d);
}

/* generate_identity (EC) for `label` with the fault seam `seam` armed once:
 * its status must be `want` (the store holds the key only when EC_OK); the
 * log it wrote (freed by the caller). */
static char *generate_armed(const char *label, const char *seam, ec_status want)
{
    ec_keystore ks;
    ec_keystore_pkcs11_params p = gen_params(label);
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    ec_fault_reset();
    ec_fault_arm(seam, 0, 1);
    ts_log_begin();
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, label, &key), want);
    char *log = ts_log_end();
    assert_int_equal(ec_fault_hits(seam), 1);
    ec_fault_reset();
    assert_int_equal(ec_keystore_has_device_key(&ks), want == EC_OK);
    mbedtls_pk_free(&key);
    ec_keystore_close(&ks);
    return log;
}

/* Another init made a pair under the label right after ours and keeps it
 * (seam; from our side the same as a racer that was alone when it looked):
 * ours steps back and destroys only its own, theirs stays. */
static void test_generate_identity_race_keeps_theirs(void **state)
{
    (void)state;
    NEED_TOKEN();
    static const char label[] = "gen-race-a";
    char *log = generate_armed(label, "pkcs11.keygen_race", EC_ERR_EXISTS);
    assert_non_null(strstr(log, "event=pkcs11_key_race_lost key_label=gen-race-a reason=\"another "
                                "process made a key under this label at the same time; ours is "
                                "destroyed, theirs is kept\""));
    assert_null(strstr(log, "identity_key_created"));
    free(log);
    direct d;
    direct_open(&d);
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, label, NULL), 1);
    assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, label, NULL), 1);
    direct_close(&d);
}

/* Two processes run init for one label at once, and both look after both
 * pairs exist (seam: each waits for the other's): exactly one wins and
 * keeps its pair, the other steps back; one pair is left. */
static void test_generate_identity_concurrent_inits_leave_one(void **state)
{
    (void)state;
    NEED_TOKEN();
    static const char label[] = "gen-race-b";
    /* they open the store one after the other, and generate only when both
     * have (SoftHSM can misread a token that another process is opening) */
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pids[2] = {-1, -1};
    for (int i = 0; i < 2; i++) {
        int ready[2];
        assert_int_equal(pipe(ready), 0);
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(ready[0]);
            close(go[1]);
            ec_fault_reset();
            ec_fault_arm("pkcs11.keygen_barrier", 0, 1);
            ec_keystore ks;
            ec_keystore_pkcs11_params p = gen_params(label);
            /* secure memory is wiped in a child: a PIN of its own */
            ec_secret *child_pin = NULL;
            mbedtls_pk_context key;
            mbedtls_pk_init(&key);
            int code = 3;
            char c = 0;
            if (ec_secret_new(&child_pin, PIN, strlen(PIN)) == EC_OK &&
                (p.pin = child_pin, ec_keystore_pkcs11_open(&ks, &p)) == EC_OK) {
                if (write(ready[1], "r", 1) == 1 && read(go[0], &c, 1) == 1) {
                    ec_status st =
                        ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, label, &key);
                    code = st == EC_OK ? 0 : st == EC_ERR_EXISTS ? 1 : 2;
                }
                mbedtls_pk_free(&key);
                ec_keystore_close(&ks);
            }
            ec_secret_free(&child_pin);
            _exit(code);
        }
        close(ready[1]);
        char c = 0;
        bool opened = read(ready[0], &c, 1) == 1; /* EOF: it failed, its exit code tells */
        close(ready[0]);
        if (!opened)
            break;
    }
    close(go[0]);
    void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN);
    (void)!write(go[1], "gg", 2);
    signal(SIGPIPE, old_pipe);
    close(go[1]);
    int codes[2] = {-1, -1};
    for (int i = 0; i < 2; i++) {
        int status = 0;
        if (pids[i] > 0 && waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status))
            codes[i] = WEXITSTATUS(status);
    }
    if (!((codes[0] == 0 && codes[1] == 1) || (codes[0] == 1 && codes[1] == 0)))
        fail_msg("the two inits ended %d and %d (want one 0, one 1)", codes[0], codes[1]);
    direct d;
    direct_open(&d);
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, label, NULL), 1);
    assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, label, NULL), 1);
    direct_close(&d);
    /* the survivor is a usable device key */
    ec_keystore ks;
    ec_keystore_pkcs11_params p = gen_params(label);
    p.key_optional = false;
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_true(ec_keystore_has_device_key(&ks));
    ec_keystore_close(&ks);
}

/* A token that does not take CKA_ALLOWED_MECHANISMS (seam): the key is made
 * without it, with a warning, and is still sign only and unmodifiable. */
static void test_generate_identity_without_allowed_mechanisms(void **state)
{
    (void)state;
    NEED_TOKEN();
    static const char label[] = "gen-no-mechs";
    char *log = generate_armed(label, "pkcs11.no_allowed_mechanisms", EC_OK);
    assert_non_null(strstr(log, "event=pkcs11_allowed_mechanisms_unsupported "
                                "key_label=gen-no-mechs reason=\"the token does not take "
                                "CKA_ALLOWED_MECHANISMS; the key is made without it\""));
    free(log);
    direct d;
    CK_OBJECT_HANDLE pubh = CK_INVALID_HANDLE;
    check_generated_pair(&d, label, CKA_VALUE, CK_INVALID_HANDLE, &pubh);
    direct_close(&d);
}

/* RSA 3072 on the token: CKM_RSA_PKCS_KEY_PAIR_GEN, e = 65537, the same
 * protection; the pk context signs PKCS#1 v1.5 through C_Sign(CKM_RSA_PKCS)
 * for each SHA-2 digest TLS 1.2 may ask for, and a certificate made with it
 * passes the pair check. */
static void test_generate_identity_rsa_on_token(void **state)
{
    (void)state;
    NEED_TOKEN();
    /* SoftHSM's prime search for 3072 bits takes minutes under valgrind */
    const char *valgrind = getenv("EC_UNDER_VALGRIND");
    if (valgrind != NULL && strcmp(valgrind, "1") == 0)
        skip();
    static const char label[] = "gen-rsa";
    ec_keystore ks;
    ec_keystore_pkcs11_params p = gen_params(label);
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    mbedtls_pk_context key, pub;
    mbedtls_pk_init(&key);
    mbedtls_pk_init(&pub);
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_RSA_3072, label, &key), EC_OK);
    assert_int_equal(ec_keystore_device_key_type(&ks), EC_KEY_TYPE_RSA_3072);
    assert_int_equal(ks.ops->identity_public(ks.ctx, label, &pub), EC_OK);
    assert_int_equal(mbedtls_pk_get_type(&pub), MBEDTLS_PK_RSA);
    assert_int_equal(mbedtls_pk_get_bitlen(&pub), 3072);
    assert_int_equal(mbedtls_pk_get_bitlen(&key), 3072);
    mbedtls_mpi e;
    mbedtls_mpi_init(&e);
    assert_int_equal(mbedtls_rsa_export(mbedtls_pk_rsa(pub), NULL, NULL, NULL, NULL, &e), 0);
    assert_int_equal(mbedtls_mpi_cmp_int(&e, 65537), 0);
    mbedtls_mpi_free(&e);
    /* each SHA-1/SHA-2 function TLS may ask for: the signature verifies
     * under it, and the block inside (the public operation undoes the
     * signature) is the DigestInfo RFC 8017 9.2 note 1 gives for it */
    static const uint8_t sha1_prefix[] = {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e,
                                          0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14};
    /* SHA-2: OID 2.16.840.1.101.3.4.2.<id> */
    static const struct {
        mbedtls_md_type_t md;
        uint8_t id;
    } mds[] = {{MBEDTLS_MD_SHA1, 0},
               {MBEDTLS_MD_SHA224, 4},
               {MBEDTLS_MD_SHA256, 1},
               {MBEDTLS_MD_SHA384, 2},
               {MBEDTLS_MD_SHA512, 3}};
    uint8_t hash[64], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE], em[384];
    size_t sig_len = 0;
    for (size_t i = 0; i < sizeof mds / sizeof mds[0]; i++) {
        size_t hash_len = mbedtls_md_get_size(mbedtls_md_info_from_type(mds[i].md));
        const uint8_t sha2_prefix[] = {0x30,
                                       (uint8_t)(0x11 + hash_len),
                                       0x30,
                                       0x0d,
                                       0x06,
                                       0x09,
                                       0x60,
                                       0x86,
                                       0x48,
                                       0x01,
                                       0x65,
                                       0x03,
                                       0x04,
                                       0x02,
                                       mds[i].id,
                                       0x05,
                                       0x00,
                                       0x04,
                                       (uint8_t)hash_len};
        const uint8_t *prefix = mds[i].id == 0 ? sha1_prefix : sha2_prefix;
        size_t prefix_len = mds[i].id == 0 ? sizeof sha1_prefix : sizeof sha2_prefix;
        assert_int_equal(ec_rng_bytes(hash, hash_len), EC_OK);
        assert_int_equal(
            mbedtls_pk_sign(&key, mds[i].md, hash, hash_len, sig, &sig_len, ec_rng_mbedtls, NULL),
            0);
        assert_int_equal(sig_len, 384);
        assert_int_equal(mbedtls_pk_verify(&pub, mds[i].md, hash, hash_len, sig, sig_len), 0);
        assert_int_equal(mbedtls_rsa_public(mbedtls_pk_rsa(pub), sig, em), 0);
        size_t tail = prefix_len + hash_len;
        assert_int_equal(em[384 - tail - 1], 0x00);
        assert_memory_equal(em + 384 - tail, prefix, prefix_len);
        assert_memory_equal(em + 384 - hash_len, hash, hash_len);
    }
    /* a function it cannot name is refused, not signed as another of the
     * same length (RIPEMD-160 is 20 bytes, as SHA-1); so is a digest of the
     * wrong length, and a signature buffer shorter than the modulus */
    assert_int_not_equal(
        mbedtls_pk_sign(&key, MBEDTLS_MD_RIPEMD160, hash, 20, sig, &sig_len, ec_rng_mbedtls, NULL),
        0);
    assert_int_not_equal(
        mbedtls_pk_sign(&key, MBEDTLS_MD_NONE, hash, 32, sig, &sig_len, ec_rng_mbedtls, NULL), 0);
    assert_int_not_equal(
        mbedtls_pk_sign(&key, MBEDTLS_MD_SHA256, hash, 16, sig, &sig_len, ec_rng_mbedtls, NULL), 0);
    assert_int_not_equal(
        mbedtls_pk_sign(&key, MBEDTLS_MD_SHA256, hash, 33, sig, &sig_len, ec_rng_mbedtls, NULL), 0);
    uint8_t info[19 + 32] = {0x30, 0x31};
    assert_int_equal(ks.ops->sign_digest(ks.ctx, info, sizeof info, sig, 383, &sig_len),
                     EC_ERR_INVALID);
    uint8_t cert[2048];
    size_t cert_len = token_self_signed(&ks, &pub, cert, sizeof cert);
    char why[160];
    assert_int_equal(ec_token_key_check_pair(&ks, cert, cert_len, why, sizeof why), EC_OK);
    mbedtls_pk_free(&key);
    ec_keystore_close(&ks);

    /* from outside: protected as the EC key is, and 3072 bits */
    direct d;
    CK_OBJECT_HANDLE pubh = CK_INVALID_HANDLE;
    check_generated_pair(&d, label, CKA_PRIVATE_EXPONENT, CKM_RSA_PKCS, &pubh);
    /* raw RSA (CKM_RSA_X_509), which is decryption by another name, and
     * decryption itself are refused with the PIN at hand */
    CK_OBJECT_HANDLE privh = CK_INVALID_HANDLE;
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, label, &privh), 1);
    CK_MECHANISM raw = {CKM_RSA_X_509, NULL, 0}, dec = {CKM_RSA_PKCS, NULL, 0};
    uint8_t block[384] = {0}, out[384];
    CK_ULONG out_len = sizeof out;
    block[383] = 2;
    if (d.f->C_SignInit(d.s, &raw, privh) == CKR_OK)
        assert_int_not_equal(d.f->C_Sign(d.s, block, sizeof block, out, &out_len), CKR_OK);
    assert_int_not_equal(d.f->C_DecryptInit(d.s, &dec, privh), CKR_OK);
    CK_ULONG bits = 0;
    CK_ATTRIBUTE b = {CKA_MODULUS_BITS, &bits, sizeof bits};
    assert_int_equal(d.f->C_GetAttributeValue(d.s, pubh, &b, 1), CKR_OK);
    assert_int_equal(bits, 3072);
    direct_close(&d);

    /* reopened, the store finds the RSA key; an EC certificate is not its */
    p.key_optional = false;
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_int_equal(ec_keystore_device_key_type(&ks), EC_KEY_TYPE_RSA_3072);
    assert_int_equal(ec_token_key_check_pair(&ks, cert, cert_len, why, sizeof why), EC_OK);
    ec_keystore_close(&ks);
    mbedtls_pk_context ec_pub;
    mbedtls_pk_init(&ec_pub);
    token_public_key(&ec_pub);
    ec_keystore other;
    p = gen_params(KEY_LABEL);
    assert_int_equal(ec_keystore_pkcs11_open(&other, &p), EC_OK);
    uint8_t ec_cert[1024];
    size_t ec_cert_len = token_self_signed(&other, &ec_pub, ec_cert, sizeof ec_cert);
    ec_keystore_close(&other);
    p = gen_params(label);
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_int_equal(ec_token_key_check_pair(&ks, ec_cert, ec_cert_len, why, sizeof why),
                     EC_ERR_CRYPTO);
    assert_string_equal(why, "the device certificate's key is not RSA (the token key is)");
    ec_keystore_close(&ks);
    mbedtls_pk_free(&ec_pub);
    mbedtls_pk_free(&pub);
}

/* ---- provision on the token (firmware/provision.c over this store) ---------- */

typedef struct {
    ec_config cfg;
    ec_keystore ks;
    ec_audit *audit;
    char *out; /* what the function printed */
    size_t out_len;
    char why[EC_PROVISION_WHY_BYTES];
} prov;

/* A pkcs11 config whose device key is `label` on the unit token, and the
 * store open for it (the key optional, as provision opens it). */
static void prov_open(prov *v, const char *label)
{
    memset(v, 0, sizeof *v);
    ec_config_init(&v->cfg);
    v->cfg.device.keystore = EC_KEYSTORE_PKCS11;
    snprintf(v->cfg.device.id, sizeof v->cfg.device.id, "unit-p11");
    snprintf(v->cfg.pkcs11.token_label, sizeof v->cfg.pkcs11.token_label, TOKEN);
    snprintf(v->cfg.pkcs11.key_label, sizeof v->cfg.pkcs11.key_label, "%s", label);
    snprintf(v->cfg.tls.client_cert, EC_CFG_PATH_MAX, "%s/%s.pem", dir, label);
    snprintf(v->cfg.tls.client_ca_file, EC_CFG_PATH_MAX, "%s/%s-ca.der", dir, label);
    snprintf(v->cfg.source_path, EC_CFG_PATH_MAX, "%s/edgecap.conf", dir);
    assert_int_equal(ec_audit_open(&v->audit, "", NULL), EC_OK);
    ec_keystore_pkcs11_params p = gen_params(label);
    assert_int_equal(ec_keystore_pkcs11_open(&v->ks, &p), EC_OK);
}

static void prov_close(prov *v)
{
    ec_keystore_close(&v->ks);
    ec_audit_close(&v->audit);
    ec_config_free(&v->cfg);
}

static ec_status prov_init(prov *v)
{
    ec_provision_init_params pp = {
        .cfg = &v->cfg, .keystore = &v->ks, .audit = v->audit, .key_type = EC_KEY_TYPE_EC_P256};
    FILE *fp = fopen("/dev/null", "w");
    ec_status st = ec_provision_init(&pp, fp, v->why, sizeof v->why);
    fclose(fp);
    return st;
}

/* show's output in v->out (freed by the caller). */
static ec_status prov_show(prov *v)
{
    FILE *fp = open_memstream(&v->out, &v->out_len);
    ec_status st = ec_provision_show(&v->cfg, &v->ks, fp);
    fclose(fp);
    return st;
}

static ec_status prov_install(prov *v, const char *cert)
{
    FILE *fp = fopen("/dev/null", "w");
    ec_status st =
        ec_provision_install_cert(&v->cfg, &v->ks, v->audit, cert, fp, v->why, sizeof v->why);
    fclose(fp);
    return st;
}

static void write_bytes(const char *path, const uint8_t *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

/* [pkcs11] without key_label: init is a configuration error (78 in main),
 * nothing is made. */
static void test_provision_init_needs_key_label(void **state)
{
    (void)state;
    NEED_TOKEN();
    prov v;
    prov_open(&v, "");
    assert_int_equal(prov_init(&v), EC_ERR_CONFIG);
    assert_string_equal(v.why, "the pkcs11 key store makes the device key on the token: set "
                               "[pkcs11] key_label (and remove [tls] client_key)");
    prov_close(&v);
}

/* A key whose CSR could not be made was never certified: init destroys it
 * again (seams: signing the CSR, writing it), so init can simply be run
 * again; when the token will not destroy it, the message says so. */
static void test_provision_init_discards_uncertified_key(void **state)
{
    (void)state;
    NEED_TOKEN();
    static const char *const seams[] = {"provision.csr_sign", "provision.write"};
    static const char *const whys[] = {
        "cannot sign the CSR with the new key label \"prov-csr\" on token \"edgecap-unit\", "
        "which was destroyed again (never certified): run init again",
        "; the new key label \"prov-csr\" on token \"edgecap-unit\" was destroyed again (never "
        "certified): run init again"};
    direct d;
    for (size_t i = 0; i < 2; i++) {
        prov v;
        prov_open(&v, "prov-csr");
        ec_fault_reset();
        ec_fault_arm(seams[i], 0, 1);
        ts_log_begin();
        assert_int_not_equal(prov_init(&v), EC_OK);
        char *log = ts_log_end();
        assert_int_equal(ec_fault_hits(seams[i]), 1);
        ec_fault_reset();
        if (strstr(v.why, whys[i]) == NULL)
            fail_msg("%s: %s", seams[i], v.why);
        assert_non_null(strstr(log, "event=identity_key_discarded backend=pkcs11 "
                                    "key_label=prov-csr"));
        free(log);
        assert_false(ec_keystore_has_device_key(&v.ks));
        prov_close(&v);
        direct_open(&d);
        assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, "prov-csr", NULL), 0);
        assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, "prov-csr", NULL), 0);
        direct_close(&d);
    }
    prov v;
    prov_open(&v, "prov-csr");
    assert_int_equal(prov_init(&v), EC_OK);
    prov_close(&v);
    /* the token refuses to destroy it: said, logged, left */
    prov_open(&v, "prov-stuck");
    ec_fault_arm("provision.csr_sign", 0, 1);
    ec_fault_arm("pkcs11.destroy", 0, 0);
    ts_log_begin();
    assert_int_not_equal(prov_init(&v), EC_OK);
    char *log = ts_log_end();
    ec_fault_reset();
    assert_non_null(strstr(v.why, "which was created and could not be destroyed: remove it to "
                                  "try again"));
    assert_non_null(strstr(log, "event=pkcs11_failed operation=\"destroy the new private key "
                                "(C_DestroyObject)\" key_label=prov-stuck "
                                "pkcs11_error=CKR_DEVICE_ERROR"));
    free(log);
    prov_close(&v);
    direct_open(&d);
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, "prov-stuck", NULL), 1);
    direct_close(&d);
}

/* Deletes any public key object under `label`; with `foreign`, writes the
 * public key of KEY_LABEL in its place. */
static void replace_public(const char *label, bool foreign)
{
    uint8_t point[67];
    if (foreign)
        ec_point_of(KEY_LABEL, point);
    direct d;
    direct_open(&d);
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    if (count_label(&d, CKO_PUBLIC_KEY, label, &h) == 1)
        assert_int_equal(d.f->C_DestroyObject(d.s, h), CKR_OK);
    if (foreign) {
        CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
        CK_KEY_TYPE type = CKK_EC;
        CK_BBOOL yes = CK_TRUE;
        static const uint8_t p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
        CK_ATTRIBUTE t[] = {
            {CKA_CLASS, &cls, sizeof cls},
            {CKA_KEY_TYPE, &type, sizeof type},
            {CKA_TOKEN, &yes, sizeof yes},
            {CKA_VERIFY, &yes, sizeof yes},
            {CKA_LABEL, (void *)label, strlen(label)},
            {CKA_EC_PARAMS, (void *)p256, sizeof p256},
            {CKA_EC_POINT, point, sizeof point},
        };
        assert_int_equal(d.f->C_CreateObject(d.s, t, sizeof t / sizeof t[0], &h), CKR_OK);
    }
    direct_close(&d);
}

/* A certificate (self-signed, DER, also its own CA file) for the token key
 * `label`'s public key `pub`, at v's client_ca_file and `path`. */
static void cert_for(prov *v, const char *label, const mbedtls_pk_context *pub, const char *path)
{
    ec_keystore ks;
    ec_keystore_pkcs11_params p = gen_params(label);
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    uint8_t cert[1024];
    size_t n = token_self_signed(&ks, pub, cert, sizeof cert);
    ec_keystore_close(&ks);
    write_bytes(path, cert, n);
    write_bytes(v->cfg.tls.client_ca_file, cert, n);
}

/* show and install-cert go by the private key: a private key without its
 * public object is the device key (show says so, as init does), and a
 * certificate it signs for installs; a foreign public key written under the
 * label is refused, and a certificate for it is not installed. */
static void test_provision_trusts_the_private_key(void **state)
{
    (void)state;
    NEED_TOKEN();
    static const char label[] = "prov-pub";
    prov v;
    prov_open(&v, label);
    assert_int_equal(prov_init(&v), EC_OK);
    mbedtls_pk_context own, foreign;
    mbedtls_pk_init(&own);
    mbedtls_pk_init(&foreign);
    assert_int_equal(v.ks.ops->identity_public(v.ks.ctx, label, &own), EC_OK);
    assert_int_equal(v.ks.ops->identity_public(v.ks.ctx, KEY_LABEL, &foreign), EC_OK);
    prov_close(&v);
    char *own_cert = ts_strf("%s/prov-own.der", dir),
         *foreign_cert = ts_strf("%s/prov-foreign.der", dir);

    /* no public object: show and init agree that the key is there */
    replace_public(label, false);
    prov_open(&v, label);
    assert_true(ec_keystore_has_device_key(&v.ks));
    assert_int_equal(prov_show(&v), EC_ERR_NOT_FOUND); /* no certificate yet */
    if (strstr(v.out, "key: the device key label \"prov-pub\" on token \"edgecap-unit\" has no "
                      "public key object on the token, so its public key cannot be shown (the "
                      "private key is there; init does not replace it)\n") == NULL)
        fail_msg("show: %s", v.out);
    free(v.out);
    assert_int_equal(prov_init(&v), EC_ERR_EXISTS);
    /* a certificate the private key signs for installs, and show matches it */
    cert_for(&v, label, &own, own_cert);
    assert_int_equal(prov_install(&v, own_cert), EC_OK);
    assert_int_equal(prov_show(&v), EC_OK);
    assert_non_null(strstr(v.out, "key: label \"prov-pub\" on token \"edgecap-unit\" (ec-p256) "
                                  "matches the certificate\n"));
    free(v.out);
    /* one for another key does not */
    cert_for(&v, KEY_LABEL, &foreign, foreign_cert);
    assert_int_equal(prov_install(&v, foreign_cert), EC_ERR_CRYPTO);
    assert_string_equal(v.why, "the device key label \"prov-pub\" on token \"edgecap-unit\" has "
                               "no public key object and the certificate is for another key (the "
                               "token's key does not belong to the public key)");
    prov_close(&v);

    /* a foreign public key under the label: refused by show and install-cert */
    replace_public(label, true);
    prov_open(&v, label);
    assert_int_equal(prov_show(&v), EC_ERR_CRYPTO);
    if (strstr(v.out, "key: the public key object at label \"prov-pub\" on token "
                      "\"edgecap-unit\" is not the device key's: the token's key does not belong "
                      "to the public key (the private key decides; delete the foreign public key "
                      "object)\n") == NULL)
        fail_msg("show: %s", v.out);
    free(v.out);
    assert_int_equal(prov_install(&v, foreign_cert), EC_ERR_CRYPTO);
    assert_non_null(strstr(v.why, "is not the device key's"));
    prov_close(&v);
    free(own_cert);
    free(foreign_cert);
    mbedtls_pk_free(&own);
    mbedtls_pk_free(&foreign);
}

/* DER INTEGERs are signed: a half with its top bit set gets a 0x00 in front,
 * leading zero bytes are dropped. */
/* Decommissioning (`edgecap wipe`): destroy_identity removes every key object
 * under the label, whoever made it (a refusal is EC_ERR_IO, the objects
 * stay); destroy removes the KEK; an open with kek_existing mints none. */
static void test_wipe_destroys_device_key_and_kek(void **state)
{
    (void)state;
    NEED_TOKEN();
    static const char label[] = "wipe-device", kek[] = "kek-wipe";
    ec_keystore ks;
    ec_keystore_pkcs11_params p = gen_params(label);
    p.kek_label = kek;
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    assert_int_equal(ks.ops->generate_identity(ks.ctx, EC_KEY_TYPE_EC_P256, label, &key), EC_OK);
    mbedtls_pk_free(&key);
    ec_keystore_close(&ks);

    /* a later open (the wipe's) holds it as the device key; the token refuses once */
    p.key_optional = true;
    p.kek_existing = true;
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    assert_true(ec_keystore_has_device_key(&ks));
    ec_fault_arm("pkcs11.destroy", 0, 1);
    ts_log_begin();
    assert_int_equal(ks.ops->destroy_identity(ks.ctx, label), EC_ERR_IO);
    char *log = ts_log_end();
    assert_non_null(strstr(log, "event=pkcs11_failed operation=\"destroy the device's private key "
                                "(C_DestroyObject)\" key_label=wipe-device "
                                "pkcs11_error=CKR_DEVICE_ERROR"));
    free(log);
    ec_fault_reset();
    assert_true(ec_keystore_has_device_key(&ks));
    assert_int_equal(ks.ops->destroy_identity(ks.ctx, label), EC_OK);
    assert_false(ec_keystore_has_device_key(&ks));
    assert_int_equal(ks.ops->destroy_identity(ks.ctx, label), EC_ERR_NOT_FOUND);
    uint8_t dk[EC_DATA_KEY_BYTES] = {1}, wrapped[EC_WRAPPED_KEY_BYTES], id[EC_KEK_ID_BYTES];
    assert_int_equal(ks.ops->wrap(ks.ctx, dk, dk, 4, wrapped), EC_OK);
    assert_int_equal(ks.ops->destroy(ks.ctx), EC_OK);
    assert_int_not_equal(ks.ops->unwrap(ks.ctx, wrapped, dk, 4, dk), EC_OK);
    assert_int_equal(ks.ops->destroy(ks.ctx), EC_ERR_NOT_FOUND);
    ec_keystore_close(&ks);

    /* nothing under either label on the token; a second wipe's open mints no KEK */
    p.key_label = "";
    assert_int_equal(ec_keystore_pkcs11_open(&ks, &p), EC_OK);
    ks.ops->kek_id(ks.ctx, id);
    for (size_t i = 0; i < sizeof id; i++)
        assert_int_equal(id[i], 0);
    assert_int_equal(ks.ops->destroy(ks.ctx), EC_ERR_NOT_FOUND);
    ec_keystore_close(&ks);
    direct d;
    direct_open(&d);
    assert_int_equal(count_label(&d, CKO_PRIVATE_KEY, label, NULL), 0);
    assert_int_equal(count_label(&d, CKO_PUBLIC_KEY, label, NULL), 0);
    assert_int_equal(count_label(&d, CKO_SECRET_KEY, kek, NULL), 0);
    direct_close(&d);
}

static void test_sig_to_der(void **state)
{
    (void)state;
    uint8_t raw[64], der[80];
    size_t len = 0;
    memset(raw, 0, sizeof raw);
    raw[0] = 0x80; /* r = 0x80 00 .. 00 01 */
    raw[31] = 0x01;
    raw[63] = 0x05; /* s = 5 */
    assert_int_equal(ec_token_key_sig_to_der(raw, 32, der, sizeof der, &len), EC_OK);
    static const uint8_t want_head[] = {0x30, 38, 0x02, 33, 0x00, 0x80};
    assert_int_equal(len, 40);
    assert_memory_equal(der, want_head, sizeof want_head);
    static const uint8_t want_tail[] = {0x01, 0x02, 0x01, 0x05};
    assert_memory_equal(der + len - 4, want_tail, sizeof want_tail);
    assert_int_equal(ec_token_key_sig_to_der(raw, 32, der, 39, &len), EC_ERR_CRYPTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kek_created_on_token_non_extractable),
        cmocka_unit_test(test_wrap_unwrap_and_tamper),
        cmocka_unit_test(test_same_layout_as_file_store),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_kek_creation_race_leaves_one),
        cmocka_unit_test(test_device_key_signs_on_token),
        cmocka_unit_test(test_generate_identity_on_token),
        cmocka_unit_test(test_generate_identity_refusals),
        cmocka_unit_test(test_generate_identity_checks_the_new_key),
        cmocka_unit_test(test_generate_identity_without_allowed_mechanisms),
        cmocka_unit_test(test_generate_identity_race_keeps_theirs),
        cmocka_unit_test(test_generate_identity_concurrent_inits_leave_one),
        cmocka_unit_test(test_generate_identity_rsa_on_token),
        cmocka_unit_test(test_wipe_destroys_device_key_and_kek),
        cmocka_unit_test(test_sig_to_der),
        cmocka_unit_test(test_provision_init_needs_key_label),
        cmocka_unit_test(test_provision_init_discards_uncertified_key),
        cmocka_unit_test(test_provision_trusts_the_private_key),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
