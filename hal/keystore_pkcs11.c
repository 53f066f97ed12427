/*
 * PKCS#11 key store (see include/edgecap/keystore.h): the KEK and the
 * device's private key live in a token as non-extractable objects; this file
 * only holds handles. The module is dlopen'ed from the configured path (no
 * libp11, no p11-kit proxy), written against the OASIS types of p11-kit's
 * pkcs11.h. One logged-in session serves the whole process; a mutex
 * serialises its use, since a session runs one operation at a time and the
 * capture and upload threads both wrap and unwrap.
 */
#include "edgecap/keystore.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#include <mbedtls/asn1.h>
#include <mbedtls/ecp.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>

#include "edgecap/fault.h"
#include "edgecap/log.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/token_key.h"

#define TOKEN_LABEL_BYTES 32
#define KEK_CKA_ID_BYTES 16
#define RSA_BITS_MIN 2048
#define RSA_BITS_MAX 4096
#define RSA_GENERATE_BITS 3072
/* DER of the P-256 curve OID (1.2.840.10045.3.1.7), as CKA_EC_PARAMS holds it. */
static const uint8_t p256_params[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

typedef struct {
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    bool finalize; /* we initialised the module, so we finalise it */
    CK_SESSION_HANDLE session;
    bool session_open;
    bool logged_in;
    pthread_mutex_t lock;
    CK_OBJECT_HANDLE kek;
    CK_OBJECT_HANDLE key;      /* CK_INVALID_HANDLE: no device key */
    ec_key_type key_type;      /* of `key` */
    CK_ULONG key_bytes;        /* RSA: the modulus's length, which is the signature's */
    CK_OBJECT_HANDLE made_pub; /* the public half generate_identity made, or invalid */
    uint8_t id[EC_KEK_ID_BYTES];
    /* This store as an ec_keystore, for a pk context that signs through it
     * (generate_identity hands one out). */
    ec_keystore self;
    /* An unwrapped data key passes through here (this struct is secure memory). */
    uint8_t scratch[EC_DATA_KEY_BYTES + EC_WRAP_TAG_BYTES];
} p11_ks;

/* A short name for the return values a user can meet; the number otherwise. */
static const char *rv_text(CK_RV rv, char *buf, size_t len)
{
    static const struct {
        CK_RV rv;
        const char *text;
    } names[] = {
        {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
        {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
        {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"},
        {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
        {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
        {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
        {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
        {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
        {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
        {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
        {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"},
        {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
        {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
        {CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID"},
        {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
        {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
        {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
        {CKR_DOMAIN_PARAMS_INVALID, "CKR_DOMAIN_PARAMS_INVALID"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (names[i].rv == rv)
            return names[i].text;
    }
    snprintf(buf, len, "CKR 0x%lx", (unsigned long)rv);
    return buf;
}

static void log_rv(const char *event, const char *what, CK_RV rv)
{
    char buf[32];
    ec_log(EC_LOG_ERROR, event, EC_LOG_STR("operation", what),
           EC_LOG_STR("pkcs11_error", rv_text(rv, buf, sizeof buf)));
}

/* ---- KEK operations ------------------------------------------------------ */

static CK_RV gcm_run(p11_ks *k, bool encrypt, const uint8_t *nonce, const uint8_t *aad,
                     size_t aad_len, const uint8_t *in, CK_ULONG in_len, uint8_t *out,
                     CK_ULONG *out_len)
{
    CK_GCM_PARAMS gcm = {.pIv = (CK_BYTE_PTR)nonce,
                         .ulIvLen = EC_WRAP_NONCE_BYTES,
                         .ulIvBits = EC_WRAP_NONCE_BYTES * 8,
                         .pAAD = (CK_BYTE_PTR)aad,
                         .ulAADLen = aad_len,
                         .ulTagBits = EC_WRAP_TAG_BYTES * 8};
    CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof gcm};
    CK_RV rv = encrypt ? k->f->C_EncryptInit(k->session, &mech, k->kek)
                       : k->f->C_DecryptInit(k->session, &mech, k->kek);
    if (rv != CKR_OK)
        return rv;
    return encrypt ? k->f->C_Encrypt(k->session, (CK_BYTE_PTR)in, in_len, out, out_len)
                   : k->f->C_Decrypt(k->session, (CK_BYTE_PTR)in, in_len, out, out_len);
}

/*
 * Whether a failed decryption was a failed authentication (EC_ERR_CRYPTO: the
 * caller quarantines the segment) rather than a failing token (EC_ERR_IO:
 * retried later). SoftHSM2 reports a wrong tag as CKR_GENERAL_ERROR, which a
 * broken token can return too, so the token is asked to wrap and unwrap a
 * throw-away key: when that works, the token is fine and the data was bad.
 * Called with the lock held.
 */
static ec_status decrypt_status(p11_ks *k, CK_RV rv)
{
    if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE)
        return EC_ERR_CRYPTO;
    uint8_t probe[EC_DATA_KEY_BYTES] = {0}, nonce[EC_WRAP_NONCE_BYTES] = {0};
    uint8_t sealed[EC_DATA_KEY_BYTES + EC_WRAP_TAG_BYTES];
    CK_ULONG n = sizeof sealed, m = sizeof k->scratch;
    if (ec_rng_bytes(nonce, sizeof nonce) == EC_OK &&
        gcm_run(k, true, nonce, probe, 1, probe, sizeof probe, sealed, &n) == CKR_OK &&
        gcm_run(k, false, nonce, probe, 1, sealed, n, k->scratch, &m) == CKR_OK &&
        m == EC_DATA_KEY_BYTES)
        return EC_ERR_CRYPTO;
    log_rv("pkcs11_failed", "unwrap (C_Decrypt, CKM_AES_GCM)", rv);
    return EC_ERR_IO;
}

static ec_status p11_wrap(void *ctx, const uint8_t *key, const uint8_t *aad, size_t aad_len,
                          uint8_t *out)
{
    p11_ks *k = ctx;
    ec_status st = ec_rng_bytes(out, EC_WRAP_NONCE_BYTES);
    if (st != EC_OK)
        return st;
    CK_ULONG n = EC_DATA_KEY_BYTES + EC_WRAP_TAG_BYTES;
    pthread_mutex_lock(&k->lock);
    CK_RV rv =
        gcm_run(k, true, out, aad, aad_len, key, EC_DATA_KEY_BYTES, out + EC_WRAP_NONCE_BYTES, &n);
    pthread_mutex_unlock(&k->lock);
    if (rv != CKR_OK || n != EC_DATA_KEY_BYTES + EC_WRAP_TAG_BYTES) {
        log_rv("pkcs11_failed", "wrap (C_Encrypt, CKM_AES_GCM)", rv);
        return EC_ERR_IO;
    }
    return EC_OK;
}

static ec_status p11_unwrap(void *ctx, const uint8_t *in, const uint8_t *aad, size_t aad_len,
                            uint8_t *key)
{
    p11_ks *k = ctx;
    CK_ULONG n = sizeof k->scratch;
    ec_status st = EC_OK;
    pthread_mutex_lock(&k->lock);
    CK_RV rv = gcm_run(k, false, in, aad, aad_len, in + EC_WRAP_NONCE_BYTES,
                       EC_DATA_KEY_BYTES + EC_WRAP_TAG_BYTES, k->scratch, &n);
    if (rv != CKR_OK)
        st = decrypt_status(k, rv);
    else if (n != EC_DATA_KEY_BYTES)
        st = EC_ERR_CRYPTO;
    else
        memcpy(key, k->scratch, EC_DATA_KEY_BYTES);
    mbedtls_platform_zeroize(k->scratch, sizeof k->scratch);
    pthread_mutex_unlock(&k->lock);
    return st;
}

static void p11_kek_id(void *ctx, uint8_t *out)
{
    const p11_ks *k = ctx;
    memcpy(out, k->id, EC_KEK_ID_BYTES);
}

/* ECDSA: `hash` is the digest (20 to 64 bytes). RSA: `hash` is the DER
 * DigestInfo the caller built (firmware/token_key.c, from the digest's
 * function), which CKM_RSA_PKCS pads and signs; it must leave room for the
 * padding. */
static ec_status p11_sign_digest(void *ctx, const uint8_t *hash, size_t hash_len, uint8_t *sig,
                                 size_t sig_cap, size_t *sig_len)
{
    p11_ks *k = ctx;
    bool rsa = k->key_type == EC_KEY_TYPE_RSA_3072;
    size_t want = rsa ? k->key_bytes : 64;
    if (k->key == CK_INVALID_HANDLE || hash_len < 20 || sig_cap < want ||
        (rsa ? hash_len + 11 > k->key_bytes : hash_len > 64))
        return EC_ERR_INVALID;
    CK_MECHANISM mech = {rsa ? CKM_RSA_PKCS : CKM_ECDSA, NULL, 0};
    CK_ULONG n = sig_cap;
    pthread_mutex_lock(&k->lock);
    CK_RV rv = k->f->C_SignInit(k->session, &mech, k->key);
    if (rv == CKR_OK)
        rv = k->f->C_Sign(k->session, (CK_BYTE_PTR)hash, hash_len, sig, &n);
    pthread_mutex_unlock(&k->lock);
    if (rv != CKR_OK || n != want) {
        log_rv("pkcs11_failed", rsa ? "sign (C_Sign, CKM_RSA_PKCS)" : "sign (C_Sign, CKM_ECDSA)",
               rv);
        return EC_ERR_CRYPTO;
    }
    *sig_len = n;
    return EC_OK;
}

static void p11_free(p11_ks *k)
{
    if (k == NULL)
        return;
    if (k->f != NULL) {
        if (k->logged_in)
            k->f->C_Logout(k->session);
        if (k->session_open)
            k->f->C_CloseSession(k->session);
        if (k->finalize)
            k->f->C_Finalize(NULL);
    }
    if (k->dl != NULL)
        dlclose(k->dl);
    pthread_mutex_destroy(&k->lock);
    ec_secmem_free(k);
}

static void p11_close(void *ctx)
{
    p11_free(ctx);
}

static ec_status p11_generate_identity(void *ctx, ec_key_type type, const char *ref,
                                       mbedtls_pk_context *key);
static ec_status p11_identity_public(void *ctx, const char *ref, mbedtls_pk_context *pub);
static ec_status p11_discard_identity(void *ctx, const char *ref);
static ec_status p11_destroy(void *ctx);
static ec_status p11_destroy_identity(void *ctx, const char *ref);

static const ec_keystore_ops p11_ops = {
    .name = "pkcs11",
    .wrap = p11_wrap,
    .unwrap = p11_unwrap,
    .kek_id = p11_kek_id,
    .close = p11_close,
    .sign_digest = p11_sign_digest,
    .generate_identity = p11_generate_identity,
    .identity_public = p11_identity_public,
    .discard_identity = p11_discard_identity,
    .destroy = p11_destroy,
    .destroy_identity = p11_destroy_identity,
};

bool ec_keystore_has_device_key(const ec_keystore *ks)
{
    return ks != NULL && ks->ops != NULL && ks->ops->sign_digest != NULL &&
           ((const p11_ks *)ks->ctx)->key != CK_INVALID_HANDLE;
}

ec_key_type ec_keystore_device_key_type(const ec_keystore *ks)
{
    return ec_keystore_has_device_key(ks) ? ((const p11_ks *)ks->ctx)->key_type
                                          : EC_KEY_TYPE_EC_P256;
}

/* ---- opening ------------------------------------------------------------- */

static ec_status load_module(p11_ks *k, const char *path)
{
    k->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (k->dl == NULL) {
        const char *why = dlerror();
        ec_log(EC_LOG_ERROR, "pkcs11_module_unloadable", EC_LOG_STR("module", path),
               EC_LOG_STR("reason", why != NULL ? why : "dlopen failed"));
        return EC_ERR_NOT_FOUND;
    }
    CK_C_GetFunctionList get = NULL;
    /* POSIX's way from a data pointer to a function pointer */
    *(void **)&get = dlsym(k->dl, "C_GetFunctionList");
    if (get == NULL || get(&k->f) != CKR_OK || k->f == NULL) {
        ec_log(EC_LOG_ERROR, "pkcs11_module_unloadable", EC_LOG_STR("module", path),
               EC_LOG_STR("reason", "not a PKCS#11 module (no C_GetFunctionList)"));
        k->f = NULL;
        return EC_ERR_NOT_FOUND;
    }
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_RV rv = k->f->C_Initialize(&args);
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return EC_OK; /* another user in this process finalises it */
    if (rv != CKR_OK) {
        log_rv("pkcs11_failed", "C_Initialize", rv);
        return EC_ERR_IO;
    }
    k->finalize = true;
    return EC_OK;
}

/* The token label is blank-padded to 32 bytes, not NUL-terminated. */
static bool label_is(const CK_UTF8CHAR *padded, const char *label)
{
    size_t n = strlen(label);
    if (n > TOKEN_LABEL_BYTES || memcmp(padded, label, n) != 0)
        return false;
    for (size_t i = n; i < TOKEN_LABEL_BYTES; i++) {
        if (padded[i] != ' ')
            return false;
    }
    return true;
}

static ec_status open_token(p11_ks *k, const char *token_label)
{
    CK_ULONG n = 0;
    CK_SLOT_ID slots[64];
    CK_RV rv = k->f->C_GetSlotList(CK_TRUE, NULL, &n);
    if (rv == CKR_OK) {
        if (n > sizeof slots / sizeof slots[0])
            n = sizeof slots / sizeof slots[0];
        rv = k->f->C_GetSlotList(CK_TRUE, slots, &n);
    }
    if (rv != CKR_OK) {
        log_rv("pkcs11_failed", "C_GetSlotList", rv);
        return EC_ERR_IO;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO info;
        if (k->f->C_GetTokenInfo(slots[i], &info) != CKR_OK || !label_is(info.label, token_label))
            continue;
        rv = k->f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                 &k->session);
        if (rv != CKR_OK) {
            log_rv("pkcs11_failed", "C_OpenSession", rv);
            return EC_ERR_IO;
        }
        k->session_open = true;
        return EC_OK;
    }
    ec_log(EC_LOG_ERROR, "pkcs11_token_not_found", EC_LOG_STR("token_label", token_label),
           EC_LOG_UINT("tokens_present", n));
    return EC_ERR_NOT_FOUND;
}

static ec_status login(p11_ks *k, const ec_secret *pin)
{
    CK_RV rv = k->f->C_Login(k->session, CKU_USER, (CK_UTF8CHAR_PTR)ec_secret_bytes(pin),
                             ec_secret_len(pin));
    if (rv == CKR_USER_ALREADY_LOGGED_IN)
        return EC_OK; /* logged in by another session of this process */
    if (rv != CKR_OK) {
        char buf[32];
        ec_log(EC_LOG_ERROR, "pkcs11_login_refused",
               EC_LOG_STR("reason", rv == CKR_PIN_INCORRECT ? "the token refused the PIN"
                                                            : "the token refused the login"),
               EC_LOG_STR("pkcs11_error", rv_text(rv, buf, sizeof buf)));
        return rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_LEN_RANGE ||
                       rv == CKR_PIN_EXPIRED
                   ? EC_ERR_AUTH
                   : EC_ERR_IO;
    }
    k->logged_in = true;
    return EC_OK;
}

/* Up to `cap` objects of `cls` with `label`, in found[0..*n). */
static ec_status list_label_n(p11_ks *k, CK_OBJECT_CLASS cls, const char *label,
                              CK_OBJECT_HANDLE *found, CK_ULONG cap, CK_ULONG *n)
{
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    *n = 0;
    CK_RV rv = k->f->C_FindObjectsInit(k->session, tmpl, 2);
    if (rv == CKR_OK) {
        rv = k->f->C_FindObjects(k->session, found, cap, n);
        k->f->C_FindObjectsFinal(k->session);
    }
    if (rv != CKR_OK) {
        log_rv("pkcs11_failed", "C_FindObjects", rv);
        return EC_ERR_IO;
    }
    return EC_OK;
}

/* Up to two objects of `cls` with `label`, in found[0..*n). */
static ec_status list_label(p11_ks *k, CK_OBJECT_CLASS cls, const char *label,
                            CK_OBJECT_HANDLE found[2], CK_ULONG *n)
{
    return list_label_n(k, cls, label, found, 2, n);
}

/* A pause of 1 to 64 ms (random), for processes racing on the token. */
static void race_pause(void)
{
    uint8_t r = 0;
    (void)ec_rng_bytes(&r, 1);
    struct timespec pause = {.tv_nsec = (long)(1 + r % 64) * 1000000L};
    nanosleep(&pause, NULL);
}

/* The one object of `cls` with `label`: EC_ERR_NOT_FOUND for none,
 * EC_ERR_CRYPTO (ambiguous) for more. */
static ec_status find_one(p11_ks *k, CK_OBJECT_CLASS cls, const char *label, CK_OBJECT_HANDLE *out)
{
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 0;
    ec_status st = list_label(k, cls, label, found, &n);
    if (st != EC_OK)
        return st;
    if (n == 0)
        return EC_ERR_NOT_FOUND;
    if (n > 1) {
        ec_log(EC_LOG_ERROR, "pkcs11_object_ambiguous", EC_LOG_STR("label", label),
               EC_LOG_STR("reason", "more than one object has this label"));
        return EC_ERR_CRYPTO;
    }
    *out = found[0];
    return EC_OK;
}

/* Refuses an object a key could be read out of. */
static ec_status check_protected(p11_ks *k, CK_OBJECT_HANDLE obj, const char *label,
                                 CK_KEY_TYPE want_type, const char *want)
{
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, token = CK_FALSE;
    CK_KEY_TYPE type = (CK_KEY_TYPE)-1;
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sensitive, sizeof sensitive},
        {CKA_EXTRACTABLE, &extractable, sizeof extractable},
        {CKA_TOKEN, &token, sizeof token},
        {CKA_KEY_TYPE, &type, sizeof type},
    };
    CK_RV rv = k->f->C_GetAttributeValue(k->session, obj, a, 4);
    const char *why = NULL;
    if (rv != CKR_OK)
        why = "its attributes cannot be read";
    else if (type != want_type)
        why = want;
    else if (!sensitive || extractable)
        why = "it is extractable or not sensitive (CKA_SENSITIVE must be true, CKA_EXTRACTABLE "
              "false)";
    else if (!token)
        why = "it is not a token object";
    if (why == NULL)
        return EC_OK;
    ec_log(EC_LOG_ERROR, "pkcs11_object_refused", EC_LOG_STR("label", label),
           EC_LOG_STR("reason", why));
    return EC_ERR_CRYPTO;
}

/* Refuses a device key that can do more than sign: one that decrypts,
 * unwraps or derives would let anyone with the PIN use it for that (a raw
 * RSA "signature" is a decryption). */
static ec_status check_sign_only(p11_ks *k, CK_OBJECT_HANDLE obj, const char *label)
{
    CK_BBOOL decrypt = CK_FALSE, unwrap = CK_FALSE, derive = CK_FALSE;
    CK_ATTRIBUTE a[] = {
        {CKA_DECRYPT, &decrypt, sizeof decrypt},
        {CKA_UNWRAP, &unwrap, sizeof unwrap},
        {CKA_DERIVE, &derive, sizeof derive},
    };
    /* an attribute the token does not have for this key counts as false */
    CK_RV rv = k->f->C_GetAttributeValue(k->session, obj, a, 3);
    const char *why = NULL;
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
        why = "its attributes cannot be read";
    else if ((a[0].ulValueLen == sizeof decrypt && decrypt) ||
             (a[1].ulValueLen == sizeof unwrap && unwrap) ||
             (a[2].ulValueLen == sizeof derive && derive))
        why = "it can decrypt, unwrap or derive (a device key only signs: CKA_DECRYPT, "
              "CKA_UNWRAP and CKA_DERIVE must be false)";
    if (why == NULL)
        return EC_OK;
    ec_log(EC_LOG_ERROR, "pkcs11_object_refused", EC_LOG_STR("label", label),
           EC_LOG_STR("reason", why));
    return EC_ERR_CRYPTO;
}

static ec_status create_kek(p11_ks *k, const char *label, CK_OBJECT_HANDLE *out)
{
    uint8_t id[KEK_CKA_ID_BYTES];
    ec_status st = ec_rng_bytes(id, sizeof id);
    if (st != EC_OK)
        return st;
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = EC_DATA_KEY_BYTES;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},     {CKA_KEY_TYPE, &type, sizeof type},
        {CKA_VALUE_LEN, &len, sizeof len}, {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},   {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no}, {CKA_MODIFIABLE, &no, sizeof no},
        {CKA_ENCRYPT, &yes, sizeof yes},   {CKA_DECRYPT, &yes, sizeof yes},
        {CKA_WRAP, &no, sizeof no},        {CKA_UNWRAP, &no, sizeof no},
        {CKA_SIGN, &no, sizeof no},        {CKA_VERIFY, &no, sizeof no},
        {CKA_DERIVE, &no, sizeof no},      {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, id, sizeof id},
    };
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CK_RV rv = k->f->C_GenerateKey(k->session, &mech, tmpl, sizeof tmpl / sizeof tmpl[0], out);
    if (rv != CKR_OK) {
        log_rv("pkcs11_failed", "create the KEK (C_GenerateKey, CKM_AES_KEY_GEN)", rv);
        return EC_ERR_IO;
    }
    return EC_OK;
}

/*
 * The KEK under `label`, created when absent. Two processes starting at once
 * could each create one (a token has no create-if-absent): a creator that
 * then finds another KEK under the label destroys its own, which nothing has
 * used yet, and looks again after a random pause, so at most one KEK
 * survives and every process uses it.
 */
static ec_status find_or_create_kek(p11_ks *k, const char *label)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        ec_status st = find_one(k, CKO_SECRET_KEY, label, &k->kek);
        if (st != EC_ERR_NOT_FOUND)
            return st;
        CK_OBJECT_HANDLE mine = CK_INVALID_HANDLE, found[2];
        CK_ULONG n = 0;
        if ((st = create_kek(k, label, &mine)) != EC_OK)
            return st;
        /* tests: another process creates its KEK right after ours */
        CK_OBJECT_HANDLE theirs;
        if (EC_FAULT("pkcs11.kek_race") && create_kek(k, label, &theirs) != EC_OK)
            return EC_ERR_IO;
        if ((st = list_label(k, CKO_SECRET_KEY, label, found, &n)) != EC_OK)
            return st;
        if (n == 1 && found[0] == mine) {
            k->kek = mine;
            ec_log(EC_LOG_INFO, "kek_created", EC_LOG_STR("backend", "pkcs11"),
                   EC_LOG_STR("label", label));
            return EC_OK;
        }
        CK_RV rv = k->f->C_DestroyObject(k->session, mine);
        if (rv != CKR_OK)
            log_rv("pkcs11_failed", "destroy our extra KEK (C_DestroyObject)", rv);
        race_pause();
    }
    ec_log(EC_LOG_ERROR, "pkcs11_failed", EC_LOG_STR("operation", "create the KEK"),
           EC_LOG_STR("reason", "other processes kept creating one at the same time"));
    return EC_ERR_IO;
}

/* The KEK id: SHA-256 over a domain label and the KEK's CKA_ID (or, for a KEK
 * made elsewhere without one, its label); public attributes only. */
static ec_status derive_kek_id(p11_ks *k, const char *label)
{
    uint8_t cka_id[256];
    CK_ATTRIBUTE a = {CKA_ID, cka_id, sizeof cka_id};
    CK_RV rv = k->f->C_GetAttributeValue(k->session, k->kek, &a, 1);
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID) {
        log_rv("pkcs11_failed", "read the KEK's CKA_ID", rv);
        return EC_ERR_IO;
    }
    static const char domain[] = "edgecap pkcs11 kek id v1";
    const uint8_t *src = cka_id;
    size_t n = rv == CKR_OK ? a.ulValueLen : 0;
    uint8_t tag = 'I';
    if (n == 0 || n > sizeof cka_id) {
        src = (const uint8_t *)label;
        n = strlen(label);
        tag = 'L';
    }
    uint8_t digest[32];
    mbedtls_sha256_context sha;
    mbedtls_sha256_init(&sha);
    mbedtls_sha256_starts_ret(&sha, 0);
    mbedtls_sha256_update_ret(&sha, (const unsigned char *)domain, sizeof domain - 1);
    mbedtls_sha256_update_ret(&sha, &tag, 1);
    mbedtls_sha256_update_ret(&sha, src, n);
    mbedtls_sha256_finish_ret(&sha, digest);
    mbedtls_sha256_free(&sha);
    memcpy(k->id, digest, EC_KEK_ID_BYTES);
    return EC_OK;
}

/* Whether an attribute the token returned (length `len`, read into a
 * buffer of `cap` bytes) fits that buffer: a length beyond it (or
 * CK_UNAVAILABLE_INFORMATION) is not trusted. */
static bool fits(CK_ULONG len, size_t cap)
{
    return len <= cap;
}

/* Whether CKA_EC_PARAMS `params` (`len` bytes) names P-256. */
static bool is_p256(const uint8_t *params, CK_ULONG len)
{
    return len == sizeof p256_params && memcmp(params, p256_params, sizeof p256_params) == 0;
}

/* The modulus of RSA key `obj` (private or public: it is a public
 * attribute) in `buf`, without leading zero bytes, when it is 2048 to 4096
 * bits (counted in bits, not bytes): its first byte at *start, its length
 * in *len. */
static bool read_modulus(p11_ks *k, CK_OBJECT_HANDLE obj, uint8_t buf[RSA_BITS_MAX / 8 + 1],
                         const uint8_t **start, size_t *len)
{
    CK_ATTRIBUTE a = {CKA_MODULUS, buf, RSA_BITS_MAX / 8 + 1};
    if (k->f->C_GetAttributeValue(k->session, obj, &a, 1) != CKR_OK ||
        !fits(a.ulValueLen, RSA_BITS_MAX / 8 + 1))
        return false;
    size_t n = a.ulValueLen;
    const uint8_t *p = buf;
    while (n > 0 && *p == 0)
        p++, n--;
    size_t bits = n == 0 ? 0 : 8 * (n - 1);
    for (uint8_t top = n == 0 ? 0 : *p; top != 0; top >>= 1)
        bits++;
    *start = p;
    *len = n;
    return bits >= RSA_BITS_MIN && bits <= RSA_BITS_MAX;
}

static const char rsa_size_reason[] = "the RSA key is not 2048 to 4096 bits";

/* An RSA device key: 2048 to 4096 bits (its signature's length is kept). */
static ec_status check_rsa_key(p11_ks *k, CK_OBJECT_HANDLE obj, const char *label)
{
    uint8_t modulus[RSA_BITS_MAX / 8 + 1];
    const uint8_t *start = NULL;
    size_t n = 0;
    if (!read_modulus(k, obj, modulus, &start, &n)) {
        ec_log(EC_LOG_ERROR, "pkcs11_object_refused", EC_LOG_STR("label", label),
               EC_LOG_STR("reason", rsa_size_reason));
        return EC_ERR_CRYPTO;
    }
    k->key_bytes = n;
    return EC_OK;
}

static ec_status open_device_key(p11_ks *k, const char *label, bool optional)
{
    ec_status st = find_one(k, CKO_PRIVATE_KEY, label, &k->key);
    if (st == EC_ERR_NOT_FOUND && optional) {
        k->key = CK_INVALID_HANDLE;
        return EC_OK;
    }
    if (st == EC_ERR_NOT_FOUND)
        ec_log(EC_LOG_ERROR, "pkcs11_key_not_found", EC_LOG_STR("key_label", label),
               EC_LOG_STR("reason", "no private key with this label on the token"));
    CK_KEY_TYPE type = (CK_KEY_TYPE)-1;
    CK_ATTRIBUTE t = {CKA_KEY_TYPE, &type, sizeof type};
    if (st == EC_OK && k->f->C_GetAttributeValue(k->session, k->key, &t, 1) == CKR_OK &&
        type == CKK_RSA) {
        k->key_type = EC_KEY_TYPE_RSA_3072;
        st = check_protected(k, k->key, label, CKK_RSA, "it is not an RSA key");
        if (st == EC_OK)
            st = check_sign_only(k, k->key, label);
        if (st == EC_OK)
            st = check_rsa_key(k, k->key, label);
        if (st != EC_OK)
            k->key = CK_INVALID_HANDLE;
        return st;
    }
    k->key_type = EC_KEY_TYPE_EC_P256;
    if (st == EC_OK)
        st = check_protected(k, k->key, label, CKK_EC,
                             "it is not an EC or RSA key (EC P-256 or RSA expected)");
    if (st == EC_OK)
        st = check_sign_only(k, k->key, label);
    uint8_t params[32];
    CK_ATTRIBUTE a = {CKA_EC_PARAMS, params, sizeof params};
    if (st == EC_OK && (k->f->C_GetAttributeValue(k->session, k->key, &a, 1) != CKR_OK ||
                        !is_p256(params, a.ulValueLen))) {
        ec_log(EC_LOG_ERROR, "pkcs11_object_refused", EC_LOG_STR("label", label),
               EC_LOG_STR("reason", "the key is not on the P-256 curve"));
        st = EC_ERR_CRYPTO;
    }
    if (st != EC_OK)
        k->key = CK_INVALID_HANDLE;
    return st;
}

ec_status ec_keystore_pkcs11_open(ec_keystore *ks, const ec_keystore_pkcs11_params *p)
{
    ks->ops = NULL;
    ks->ctx = NULL;
    if (p->module == NULL || p->token_label == NULL || p->pin == NULL || p->kek_label == NULL ||
        p->kek_label[0] == '\0')
        return EC_ERR_INVALID;
    p11_ks *k = ec_secmem_alloc(sizeof *k);
    if (k == NULL)
        return EC_ERR_NOMEM;
    k->kek = CK_INVALID_HANDLE;
    k->key = CK_INVALID_HANDLE;
    k->made_pub = CK_INVALID_HANDLE;
    if (pthread_mutex_init(&k->lock, NULL) != 0) {
        ec_secmem_free(k);
        return EC_ERR_NOMEM;
    }
    ec_status st = load_module(k, p->module);
    if (st == EC_OK)
        st = open_token(k, p->token_label);
    if (st == EC_OK)
        st = login(k, p->pin);
    bool no_kek = false;
    if (st == EC_OK && p->kek_existing) {
        st = find_one(k, CKO_SECRET_KEY, p->kek_label, &k->kek);
        no_kek = st == EC_ERR_NOT_FOUND;
        if (no_kek) /* a wipe: nothing to destroy, nothing minted */
            st = EC_OK, k->kek = CK_INVALID_HANDLE;
    } else if (st == EC_OK) {
        st = find_or_create_kek(k, p->kek_label);
    }
    if (st == EC_OK && !no_kek)
        st = check_protected(k, k->kek, p->kek_label, CKK_AES, "it is not an AES key");
    if (st == EC_OK && !no_kek) {
        CK_ULONG len = 0;
        CK_ATTRIBUTE a = {CKA_VALUE_LEN, &len, sizeof len};
        if (k->f->C_GetAttributeValue(k->session, k->kek, &a, 1) != CKR_OK ||
            len != EC_DATA_KEY_BYTES) {
            ec_log(EC_LOG_ERROR, "pkcs11_object_refused", EC_LOG_STR("label", p->kek_label),
                   EC_LOG_STR("reason", "the KEK is not AES-256"));
            st = EC_ERR_CRYPTO;
        }
    }
    if (st == EC_OK && !no_kek)
        st = derive_kek_id(k, p->kek_label);
    if (st == EC_OK && p->key_label != NULL && p->key_label[0] != '\0')
        st = open_device_key(k, p->key_label, p->key_optional);
    if (st != EC_OK) {
        p11_free(k);
        return st;
    }
    k->self.ops = &p11_ops;
    k->self.ctx = k;
    ks->ops = &p11_ops;
    ks->ctx = k;
    return EC_OK;
}

/* ---- the device identity key pair ------------------------------------------- */

/* Empties `pub` again and logs why the public key object `label` was refused. */
static ec_status refuse_public(mbedtls_pk_context *pub, const char *label, const char *why)
{
    mbedtls_pk_free(pub);
    mbedtls_pk_init(pub);
    ec_log(EC_LOG_ERROR, "pkcs11_object_refused", EC_LOG_STR("label", label),
           EC_LOG_STR("reason", why));
    return EC_ERR_CRYPTO;
}

/* Sets up `pub` (initialised, empty) with the P-256 public key `obj`
 * (CKA_EC_POINT: a DER OCTET STRING around the uncompressed point; some
 * tokens give the bare point). */
static ec_status read_ec_public(p11_ks *k, CK_OBJECT_HANDLE obj, const char *label,
                                mbedtls_pk_context *pub)
{
    uint8_t params[32], point[80];
    CK_KEY_TYPE type = (CK_KEY_TYPE)-1;
    CK_ATTRIBUTE a[] = {
        {CKA_KEY_TYPE, &type, sizeof type},
        {CKA_EC_PARAMS, params, sizeof params},
    };
    CK_ATTRIBUTE q = {CKA_EC_POINT, point, sizeof point};
    const char *why = NULL;
    unsigned char *p = point;
    size_t len = 0;
    /* the curve first: another curve's point need not fit the buffer */
    if (k->f->C_GetAttributeValue(k->session, obj, a, 2) != CKR_OK || type != CKK_EC ||
        !is_p256(params, a[1].ulValueLen))
        why = "it is not an EC P-256 public key";
    else if (k->f->C_GetAttributeValue(k->session, obj, &q, 1) != CKR_OK ||
             !fits(q.ulValueLen, sizeof point))
        why = "its CKA_EC_POINT cannot be read";
    else if (mbedtls_asn1_get_tag(&p, point + q.ulValueLen, &len, MBEDTLS_ASN1_OCTET_STRING) != 0 ||
             p + len != point + q.ulValueLen)
        p = point, len = q.ulValueLen; /* not wrapped */
    mbedtls_ecp_keypair *ec = NULL;
    if (why == NULL && (mbedtls_pk_setup(pub, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0 ||
                        (ec = mbedtls_pk_ec(*pub)) == NULL ||
                        mbedtls_ecp_group_load(&ec->grp, MBEDTLS_ECP_DP_SECP256R1) != 0 ||
                        mbedtls_ecp_point_read_binary(&ec->grp, &ec->Q, p, len) != 0 ||
                        mbedtls_ecp_check_pubkey(&ec->grp, &ec->Q) != 0))
        why = "its CKA_EC_POINT is not a point on P-256";
    return why == NULL ? EC_OK : refuse_public(pub, label, why);
}

/* Sets up `pub` (initialised, empty) with the RSA public key `obj`. */
static ec_status read_rsa_public(p11_ks *k, CK_OBJECT_HANDLE obj, const char *label,
                                 mbedtls_pk_context *pub)
{
    uint8_t modulus[RSA_BITS_MAX / 8 + 1], exponent[8];
    const uint8_t *n = NULL;
    size_t n_len = 0;
    CK_ATTRIBUTE e = {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent};
    mbedtls_rsa_context *rsa = NULL;
    if (read_modulus(k, obj, modulus, &n, &n_len) &&
        k->f->C_GetAttributeValue(k->session, obj, &e, 1) == CKR_OK &&
        fits(e.ulValueLen, sizeof exponent) &&
        mbedtls_pk_setup(pub, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)) == 0 &&
        (rsa = mbedtls_pk_rsa(*pub)) != NULL &&
        mbedtls_rsa_import_raw(rsa, n, n_len, NULL, 0, NULL, 0, NULL, 0, exponent, e.ulValueLen) ==
            0 &&
        mbedtls_rsa_complete(rsa) == 0 && mbedtls_rsa_check_pubkey(rsa) == 0)
        return EC_OK;
    return refuse_public(pub, label, rsa_size_reason);
}

/* The public key object `obj`, EC P-256 or RSA. */
static ec_status read_public(p11_ks *k, CK_OBJECT_HANDLE obj, const char *label,
                             mbedtls_pk_context *pub)
{
    CK_KEY_TYPE type = (CK_KEY_TYPE)-1;
    CK_ATTRIBUTE a = {CKA_KEY_TYPE, &type, sizeof type};
    if (k->f->C_GetAttributeValue(k->session, obj, &a, 1) == CKR_OK && type == CKK_RSA)
        return read_rsa_public(k, obj, label, pub);
    return read_ec_public(k, obj, label, pub);
}

static ec_status p11_identity_public(void *ctx, const char *ref, mbedtls_pk_context *pub)
{
    p11_ks *k = ctx;
    CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
    pthread_mutex_lock(&k->lock);
    ec_status st = find_one(k, CKO_PUBLIC_KEY, ref, &obj);
    if (st == EC_OK)
        st = read_public(k, obj, ref, pub);
    pthread_mutex_unlock(&k->lock);
    return st;
}

/* Whether any key (private or public) has `label`: init never adds a
 * second key under a label, which would make the device key ambiguous. */
static ec_status label_taken(p11_ks *k, const char *label, bool *taken)
{
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    *taken = false;
    for (size_t i = 0; i < sizeof classes / sizeof classes[0] && !*taken; i++) {
        CK_OBJECT_HANDLE found[2];
        CK_ULONG n = 0;
        ec_status st = list_label(k, classes[i], label, found, &n);
        if (st != EC_OK)
            return st;
        *taken = n > 0;
    }
    return EC_OK;
}

/* C_GenerateKeyPair for `type` under `label`; called with the lock held. */
static CK_RV generate_pair(p11_ks *k, ec_key_type type, const char *label, CK_OBJECT_HANDLE *pub,
                           CK_OBJECT_HANDLE *priv)
{
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG label_len = strlen(label), bits = RSA_GENERATE_BITS;
    static const uint8_t f4[] = {0x01, 0x00, 0x01}; /* 65537 */
    bool rsa = type == EC_KEY_TYPE_RSA_3072;
    /* tests: a key pair a buggy backend would leave readable */
    CK_BBOOL extractable = EC_FAULT("pkcs11.keygen_extractable") ? CK_TRUE : CK_FALSE;
    /* the attributes both types take, then room for the type's own */
    CK_ATTRIBUTE pub_tmpl[9] = {
        {CKA_TOKEN, &yes, sizeof yes},      {CKA_PRIVATE, &no, sizeof no},
        {CKA_VERIFY, &yes, sizeof yes},     {CKA_ENCRYPT, &no, sizeof no},
        {CKA_WRAP, &no, sizeof no},         {CKA_LABEL, (void *)label, label_len},
        {CKA_ID, (void *)label, label_len},
    };
    /* sign only, for good: no attribute can be changed afterwards, and the
     * token refuses any mechanism but the one signing needs (raw RSA, say) */
    CK_MECHANISM_TYPE allowed = rsa ? CKM_RSA_PKCS : CKM_ECDSA;
    CK_ATTRIBUTE priv_tmpl[12] = {
        {CKA_TOKEN, &yes, sizeof yes},      {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes},  {CKA_EXTRACTABLE, &extractable, sizeof extractable},
        {CKA_SIGN, &yes, sizeof yes},       {CKA_DECRYPT, &no, sizeof no},
        {CKA_UNWRAP, &no, sizeof no},       {CKA_LABEL, (void *)label, label_len},
        {CKA_ID, (void *)label, label_len}, {CKA_MODIFIABLE, &no, sizeof no},
    };
    CK_ULONG pub_n = 7, priv_n = 10;
    if (rsa) {
        pub_tmpl[pub_n++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof bits};
        pub_tmpl[pub_n++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, (void *)f4, sizeof f4};
    } else {
        pub_tmpl[pub_n++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)p256_params, sizeof p256_params};
        priv_tmpl[priv_n++] = (CK_ATTRIBUTE){CKA_DERIVE, &no, sizeof no};
    }
    CK_MECHANISM mech = {rsa ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN, NULL, 0};
    priv_tmpl[priv_n] = (CK_ATTRIBUTE){CKA_ALLOWED_MECHANISMS, &allowed, sizeof allowed};
    /* tests: a token that does not know CKA_ALLOWED_MECHANISMS */
    CK_RV rv = EC_FAULT("pkcs11.no_allowed_mechanisms")
                   ? CKR_ATTRIBUTE_TYPE_INVALID
                   : k->f->C_GenerateKeyPair(k->session, &mech, pub_tmpl, pub_n, priv_tmpl,
                                             priv_n + 1, pub, priv);
    if (rv != CKR_ATTRIBUTE_TYPE_INVALID)
        return rv;
    /* older tokens: the key is still sign only (CKA_DECRYPT etc. false and
     * not modifiable), the token just does not limit the mechanism */
    ec_log(EC_LOG_WARN, "pkcs11_allowed_mechanisms_unsupported", EC_LOG_STR("key_label", label),
           EC_LOG_STR("reason", "the token does not take CKA_ALLOWED_MECHANISMS; the key is made "
                                "without it"));
    return k->f->C_GenerateKeyPair(k->session, &mech, pub_tmpl, pub_n, priv_tmpl, priv_n, pub,
                                   priv);
}

/* C_DestroyObject of `obj` (seam pkcs11.destroy); a refusal is logged with
 * `operation`. Called with the lock held. */
static ec_status destroy_object(p11_ks *k, CK_OBJECT_HANDLE obj, const char *label,
                                const char *operation)
{
    CK_RV rv =
        EC_FAULT("pkcs11.destroy") ? CKR_DEVICE_ERROR : k->f->C_DestroyObject(k->session, obj);
    if (rv == CKR_OK)
        return EC_OK;
    char buf[32];
    ec_log(EC_LOG_ERROR, "pkcs11_failed", EC_LOG_STR("operation", operation),
           EC_LOG_STR("key_label", label),
           EC_LOG_STR("pkcs11_error", rv_text(rv, buf, sizeof buf)));
    return EC_ERR_IO;
}

/* Destroys a key pair this store made; a failure is logged (the objects
 * are then left on the token). Called with the lock held. */
static ec_status destroy_pair(p11_ks *k, CK_OBJECT_HANDLE priv, CK_OBJECT_HANDLE pub,
                              const char *label)
{
    ec_status st = EC_OK;
    const CK_OBJECT_HANDLE objs[] = {priv, pub};
    for (size_t i = 0; i < 2; i++) {
        if (objs[i] != CK_INVALID_HANDLE &&
            destroy_object(k, objs[i], label,
                           i == 0 ? "destroy the new private key (C_DestroyObject)"
                                  : "destroy the new public key (C_DestroyObject)") != EC_OK)
            st = EC_ERR_IO;
    }
    return st;
}

#define RACE_MAX 8
#define RACE_LOOKS 5

/* The public value of the public key `obj` (CKA_EC_POINT or CKA_MODULUS),
 * which every process can read: 0 bytes when it cannot be read. */
static CK_ULONG public_value(p11_ks *k, CK_OBJECT_HANDLE obj, uint8_t *buf, CK_ULONG cap)
{
    static const CK_ATTRIBUTE_TYPE types[] = {CKA_EC_POINT, CKA_MODULUS};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        CK_ATTRIBUTE a = {types[i], buf, cap};
        if (k->f->C_GetAttributeValue(k->session, obj, &a, 1) == CKR_OK && a.ulValueLen <= cap)
            return a.ulValueLen;
    }
    return 0;
}

/*
 * Whether our new pair (public half `pub`) is the one under `label`, when
 * other processes may have made one at the same time (a token has no
 * create-if-absent). Alone under the label: ours. Otherwise every racer
 * orders the pairs the same way (by public value, readable by all): all but
 * the first step back at once; the first waits for them to, and steps back
 * too when another pair stays (a racer that was alone when it looked has
 * already taken its key). Losing is EC_ERR_EXISTS; the caller then
 * destroys only its own pair. Called with the lock held.
 */
static ec_status race_check(p11_ks *k, const char *label, CK_OBJECT_HANDLE pub)
{
    CK_OBJECT_HANDLE found[RACE_MAX];
    uint8_t mine[RSA_BITS_MAX / 8 + 1], theirs[RSA_BITS_MAX / 8 + 1];
    CK_ULONG mine_len = public_value(k, pub, mine, sizeof mine);
    for (int look = 0; look < RACE_LOOKS; look++) {
        CK_ULONG n = 0;
        ec_status st = list_label_n(k, CKO_PUBLIC_KEY, label, found, RACE_MAX, &n);
        if (st != EC_OK)
            return st;
        if (n == 1 && found[0] == pub)
            return EC_OK;
        bool first = look == 0 && mine_len > 0;
        for (CK_ULONG i = 0; i < n && first; i++) {
            if (found[i] == pub)
                continue;
            CK_ULONG len = public_value(k, found[i], theirs, sizeof theirs);
            first = len > mine_len || (len == mine_len && memcmp(mine, theirs, len) < 0);
        }
        if (look == 0 && !first)
            break;
        race_pause();
    }
    ec_log(EC_LOG_WARN, "pkcs11_key_race_lost", EC_LOG_STR("key_label", label),
           EC_LOG_STR("reason", "another process made a key under this label at the same time; "
                                "ours is destroyed, theirs is kept"));
    return EC_ERR_EXISTS;
}

/* Tests (seam pkcs11.keygen_barrier): waits, at most 5 s, until two
 * private keys carry `label`, so two processes decide at the same time. */
static void race_barrier(p11_ks *k, const char *label)
{
    for (int i = 0; i < 500; i++) {
        CK_OBJECT_HANDLE found[2];
        CK_ULONG n = 0;
        if (list_label(k, CKO_PRIVATE_KEY, label, found, &n) != EC_OK || n >= 2)
            return;
        struct timespec pause = {.tv_nsec = 10 * 1000000L};
        nanosleep(&pause, NULL);
    }
}

static ec_status p11_generate_identity(void *ctx, ec_key_type type, const char *ref,
                                       mbedtls_pk_context *key)
{
    p11_ks *k = ctx;
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
    mbedtls_pk_context pub_pk;
    mbedtls_pk_init(&pub_pk);
    bool taken = false;
    ec_status st = EC_ERR_UNSUPPORTED;
    if (type != EC_KEY_TYPE_EC_P256 && type != EC_KEY_TYPE_RSA_3072)
        return st;
    bool rsa = type == EC_KEY_TYPE_RSA_3072;
    if (ref == NULL || ref[0] == '\0')
        return EC_ERR_INVALID;
    pthread_mutex_lock(&k->lock);
    /* the store holds a device key (under another label): never replaced */
    if (k->key != CK_INVALID_HANDLE) {
        st = EC_ERR_EXISTS;
        goto out;
    }
    if ((st = label_taken(k, ref, &taken)) != EC_OK)
        goto out;
    if (taken) {
        st = EC_ERR_EXISTS;
        goto out;
    }
    CK_RV rv = generate_pair(k, type, ref, &pub, &priv);
    if (rv != CKR_OK) {
        log_rv("pkcs11_failed",
               rsa ? "generate the device key (C_GenerateKeyPair, CKM_RSA_PKCS_KEY_PAIR_GEN)"
                   : "generate the device key (C_GenerateKeyPair, CKM_EC_KEY_PAIR_GEN)",
               rv);
        pub = priv = CK_INVALID_HANDLE;
        st = EC_ERR_IO;
        goto out;
    }
    /* tests: two processes, each waits here until both have made a pair */
    if (EC_FAULT("pkcs11.keygen_barrier"))
        race_barrier(k, ref);
    /* tests: another process makes its pair right after ours, and keeps it */
    CK_OBJECT_HANDLE their_pub, their_priv;
    if (EC_FAULT("pkcs11.keygen_race") &&
        generate_pair(k, type, ref, &their_pub, &their_priv) != CKR_OK) {
        st = EC_ERR_IO;
        goto out;
    }
    if ((st = race_check(k, ref, pub)) != EC_OK)
        goto out;
    if ((st = check_protected(k, priv, ref, rsa ? CKK_RSA : CKK_EC,
                              rsa ? "it is not an RSA key" : "it is not an EC key")) != EC_OK ||
        (st = check_sign_only(k, priv, ref)) != EC_OK ||
        (rsa && (st = check_rsa_key(k, priv, ref)) != EC_OK) ||
        (st = read_public(k, pub, ref, &pub_pk)) != EC_OK)
        goto out;
    k->key = priv;
    k->key_type = type;
    k->made_pub = pub;
    st = ec_token_key_setup(key, &k->self, &pub_pk);
out:
    if (st != EC_OK && priv != CK_INVALID_HANDLE) {
        /* ours, made above: a refused or half-made key must not block the next try */
        destroy_pair(k, priv, pub, ref);
        k->key = k->made_pub = CK_INVALID_HANDLE;
    }
    pthread_mutex_unlock(&k->lock);
    if (st == EC_OK)
        ec_log(EC_LOG_INFO, "identity_key_created", EC_LOG_STR("backend", "pkcs11"),
               EC_LOG_STR("key_label", ref), EC_LOG_STR("type", rsa ? "rsa-3072" : "ec-p256"));
    mbedtls_pk_free(&pub_pk);
    return st;
}

static ec_status p11_discard_identity(void *ctx, const char *ref)
{
    p11_ks *k = ctx;
    ec_status st = EC_ERR_NOT_FOUND;
    pthread_mutex_lock(&k->lock);
    if (k->made_pub != CK_INVALID_HANDLE && k->key != CK_INVALID_HANDLE) {
        st = destroy_pair(k, k->key, k->made_pub, ref);
        k->key = k->made_pub = CK_INVALID_HANDLE;
    }
    pthread_mutex_unlock(&k->lock);
    if (st == EC_OK)
        ec_log(EC_LOG_INFO, "identity_key_discarded", EC_LOG_STR("backend", "pkcs11"),
               EC_LOG_STR("key_label", ref),
               EC_LOG_STR("reason", "never certified: its CSR could not be made"));
    return st;
}

/* ---- decommissioning (`edgecap wipe`) ---------------------------------------- */

/* The KEK object is destroyed on the token; wrap and unwrap fail from then on. */
static ec_status p11_destroy(void *ctx)
{
    p11_ks *k = ctx;
    ec_status st = EC_ERR_NOT_FOUND;
    pthread_mutex_lock(&k->lock);
    if (k->kek != CK_INVALID_HANDLE) {
        st = destroy_object(k, k->kek, "(the KEK)", "destroy the KEK (C_DestroyObject)");
        if (st == EC_OK)
            k->kek = CK_INVALID_HANDLE;
    }
    pthread_mutex_unlock(&k->lock);
    if (st == EC_OK)
        ec_log(EC_LOG_INFO, "kek_destroyed", EC_LOG_STR("backend", "pkcs11"));
    return st;
}

#define DESTROY_MAX 8

/* Every private and public key object under `ref`, whoever made it. */
static ec_status p11_destroy_identity(void *ctx, const char *ref)
{
    p11_ks *k = ctx;
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    ec_status st = EC_OK;
    size_t destroyed = 0;
    if (ref == NULL || ref[0] == '\0')
        return EC_ERR_INVALID;
    pthread_mutex_lock(&k->lock);
    for (size_t c = 0; c < 2 && st == EC_OK; c++) {
        CK_OBJECT_HANDLE found[DESTROY_MAX];
        CK_ULONG n = 0;
        st = list_label_n(k, classes[c], ref, found, DESTROY_MAX, &n);
        for (CK_ULONG i = 0; i < n && st == EC_OK; i++) {
            st = destroy_object(k, found[i], ref,
                                c == 0 ? "destroy the device's private key (C_DestroyObject)"
                                       : "destroy the device's public key (C_DestroyObject)");
            destroyed += st == EC_OK;
            if (st == EC_OK && found[i] == k->key)
                k->key = CK_INVALID_HANDLE;
            if (st == EC_OK && found[i] == k->made_pub)
                k->made_pub = CK_INVALID_HANDLE;
        }
    }
    pthread_mutex_unlock(&k->lock);
    if (st == EC_OK && destroyed == 0)
        st = EC_ERR_NOT_FOUND;
    if (st == EC_OK)
        ec_log(EC_LOG_INFO, "identity_key_destroyed", EC_LOG_STR("backend", "pkcs11"),
               EC_LOG_STR("key_label", ref), EC_LOG_UINT("objects", destroyed));
    return st;
}
