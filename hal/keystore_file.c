/*
 * File key store (see include/edgecap/keystore.h): the KEK is 32 random bytes
 * in `dir`/kek, mode 0600, created atomically on first use (temporary file,
 * fsync, link, fsync of the directory) so that two starts cannot race to two
 * different KEKs. While open the KEK sits in secure memory.
 */
#include "edgecap/keystore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/base64.h>
#include <mbedtls/ecp.h>
#include <mbedtls/gcm.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/sha256.h>

#include "edgecap/fault.h"
#include "edgecap/file.h"
#include "edgecap/log.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"

#define KEK_FILE "kek"

typedef struct {
    uint8_t kek[EC_DATA_KEY_BYTES];
    uint8_t id[EC_KEK_ID_BYTES];
    bool destroyed;
    char dir[4096];
} file_ks;

static ec_status gcm_run(const uint8_t *key, int mode, const uint8_t *nonce, const uint8_t *aad,
                         size_t aad_len, const uint8_t *in, uint8_t *out, uint8_t *tag)
{
    mbedtls_gcm_context gcm;
    mbedtls_gcm_init(&gcm);
    int rc = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256);
    if (rc == 0 && mode == MBEDTLS_GCM_ENCRYPT)
        rc = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, EC_DATA_KEY_BYTES, nonce,
                                       EC_WRAP_NONCE_BYTES, aad, aad_len, in, out,
                                       EC_WRAP_TAG_BYTES, tag);
    else if (rc == 0)
        rc = mbedtls_gcm_auth_decrypt(&gcm, EC_DATA_KEY_BYTES, nonce, EC_WRAP_NONCE_BYTES, aad,
                                      aad_len, tag, EC_WRAP_TAG_BYTES, in, out);
    mbedtls_gcm_free(&gcm);
    return rc == 0 ? EC_OK : EC_ERR_CRYPTO;
}

static ec_status file_wrap(void *ctx, const uint8_t *key, const uint8_t *aad, size_t aad_len,
                           uint8_t *out)
{
    const file_ks *ks = ctx;
    if (ks->destroyed)
        return EC_ERR_CRYPTO;
    ec_status st = ec_rng_bytes(out, EC_WRAP_NONCE_BYTES);
    if (st != EC_OK)
        return st;
    return gcm_run(ks->kek, MBEDTLS_GCM_ENCRYPT, out, aad, aad_len, key, out + EC_WRAP_NONCE_BYTES,
                   out + EC_WRAP_NONCE_BYTES + EC_DATA_KEY_BYTES);
}

static ec_status file_unwrap(void *ctx, const uint8_t *in, const uint8_t *aad, size_t aad_len,
                             uint8_t *key)
{
    const file_ks *ks = ctx;
    if (ks->destroyed)
        return EC_ERR_CRYPTO;
    /* mbedtls_gcm_auth_decrypt takes the tag as const. */
    return gcm_run(ks->kek, MBEDTLS_GCM_DECRYPT, in, aad, aad_len, in + EC_WRAP_NONCE_BYTES, key,
                   (uint8_t *)(in + EC_WRAP_NONCE_BYTES + EC_DATA_KEY_BYTES));
}

static void file_kek_id(void *ctx, uint8_t *out)
{
    const file_ks *ks = ctx;
    memcpy(out, ks->id, EC_KEK_ID_BYTES);
}

static void file_close(void *ctx)
{
    ec_secmem_free(ctx); /* wipes the KEK */
}

/* Zeros over a key file's bytes, fsync, unlink. */
static ec_status zero_and_unlink(const char *path)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    uint8_t zeros[EC_DATA_KEY_BYTES] = {0};
    bool ok = pwrite(fd, zeros, sizeof zeros, 0) == (ssize_t)sizeof zeros && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || EC_FAULT("keystore.destroy") || unlink(path) != 0)
        return EC_ERR_IO;
    return EC_OK;
}

/* The KEK file and any .kek.PID.tmp a crash left in create_kek (it holds a
 * KEK too) are zeroed and unlinked, then the directory fsynced; the copy in
 * memory is wiped. */
static ec_status file_destroy(void *ctx)
{
    file_ks *ks = ctx;
    char path[4096 + 300];
    snprintf(path, sizeof path, "%s/%s", ks->dir, KEK_FILE);
    mbedtls_platform_zeroize(ks->kek, sizeof ks->kek);
    ks->destroyed = true;
    ec_status st = zero_and_unlink(path);
    if (st != EC_OK)
        return st;
    ec_log(EC_LOG_INFO, "kek_destroyed", EC_LOG_STR("path", path));
    DIR *d = opendir(ks->dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (strncmp(de->d_name, ".kek.", 5) != 0 || n < 9 ||
            strcmp(de->d_name + n - 4, ".tmp") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", ks->dir, de->d_name);
        ec_status rc = zero_and_unlink(path);
        if (rc != EC_OK && rc != EC_ERR_NOT_FOUND)
            st = rc;
        ec_log(EC_LOG_INFO, "kek_destroyed", EC_LOG_STR("path", path), EC_LOG_STATUS(rc));
    }
    if (d != NULL)
        closedir(d);
    if (st == EC_OK)
        st = ec_file_fsync_dir(ks->dir);
    return st;
}
static ec_status file_generate_identity(void *ctx, ec_key_type type, const char *ref,
                                        mbedtls_pk_context *key);
static ec_status file_identity_public(void *ctx, const char *ref, mbedtls_pk_context *pub);

static const ec_keystore_ops file_ops = {
    .name = "file",
    .wrap = file_wrap,
    .unwrap = file_unwrap,
    .kek_id = file_kek_id,
    .close = file_close,
    .destroy = file_destroy,
    .generate_identity = file_generate_identity,
    .identity_public = file_identity_public,
};

static ec_status read_exact(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return EC_ERR_IO;
        got += (size_t)n;
    }
    uint8_t extra;
    return read(fd, &extra, 1) == 0 ? EC_OK : EC_ERR_IO;
}

static ec_status load_kek(const char *path, uint8_t *kek)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    struct stat sb;
    ec_status st = EC_OK;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = EC_ERR_IO;
    } else if (sb.st_uid != geteuid() || (sb.st_mode & 077) != 0) {
        ec_log(EC_LOG_ERROR, "kek_unsafe", EC_LOG_STR("path", path), EC_LOG_UINT("uid", sb.st_uid),
               EC_LOG_UINT("mode", sb.st_mode & 07777),
               EC_LOG_STR("expected", "owned by the running user, mode 0600"));
        st = EC_ERR_PERM;
    } else if (sb.st_size != EC_DATA_KEY_BYTES || read_exact(fd, kek, EC_DATA_KEY_BYTES) != EC_OK) {
        ec_log(EC_LOG_ERROR, "kek_unreadable", EC_LOG_STR("path", path),
               EC_LOG_INT("size", (long long)sb.st_size));
        st = EC_ERR_IO;
    }
    close(fd);
    return st;
}

/* Writes a new KEK to a temporary file and links it into place; losing the
 * race to another process is fine: its KEK is loaded instead. */
static ec_status create_kek(const char *dir, const char *path, uint8_t *kek)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.kek.%ld.tmp", dir, (long)getpid()) >= sizeof tmp)
        return EC_ERR_INVALID;
    ec_status st = ec_rng_bytes(kek, EC_DATA_KEY_BYTES);
    if (st != EC_OK)
        return st;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return EC_ERR_IO;
    bool ok = !EC_FAULT("keystore.write") &&
              write(fd, kek, EC_DATA_KEY_BYTES) == EC_DATA_KEY_BYTES && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (ok && link(tmp, path) != 0) {
        ok = false;
        if (errno == EEXIST) {
            unlink(tmp);
            return load_kek(path, kek);
        }
    }
    unlink(tmp);
    if (!ok)
        return EC_ERR_IO;
    ec_log(EC_LOG_INFO, "kek_created", EC_LOG_STR("path", path));
    return ec_file_fsync_dir(dir);
}

static ec_status open_file_store(ec_keystore *ks, const char *dir, bool create)
{
    ks->ops = NULL;
    ks->ctx = NULL;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, KEK_FILE) >= sizeof path)
        return EC_ERR_INVALID;
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return EC_ERR_IO;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    if (!S_ISDIR(sb.st_mode))
        return EC_ERR_IO;
    if (sb.st_uid != geteuid() || (sb.st_mode & 022) != 0) {
        ec_log(EC_LOG_ERROR, "keystore_dir_unsafe", EC_LOG_STR("path", dir),
               EC_LOG_STR("expected", "owned by the running user, not group/world-writable"));
        return EC_ERR_PERM;
    }
    file_ks *k = ec_secmem_alloc(sizeof *k);
    if (k == NULL)
        return EC_ERR_NOMEM;
    snprintf(k->dir, sizeof k->dir, "%s", dir);
    ec_status st = load_kek(path, k->kek);
    if (st == EC_ERR_NOT_FOUND && create)
        st = create_kek(dir, path, k->kek);
    if (st != EC_OK) {
        ec_secmem_free(k);
        return st;
    }
    /* The id is a hash of the KEK under a label: public, stable, not the key. */
    static const char label[] = "edgecap kek id v1";
    mbedtls_sha256_context sha;
    uint8_t digest[32];
    mbedtls_sha256_init(&sha);
    mbedtls_sha256_starts_ret(&sha, 0);
    mbedtls_sha256_update_ret(&sha, (const unsigned char *)label, sizeof label - 1);
    mbedtls_sha256_update_ret(&sha, k->kek, EC_DATA_KEY_BYTES);
    mbedtls_sha256_finish_ret(&sha, digest);
    mbedtls_sha256_free(&sha);
    memcpy(k->id, digest, EC_KEK_ID_BYTES);
    ks->ops = &file_ops;
    ks->ctx = k;
    return EC_OK;
}

ec_status ec_keystore_file_open(ec_keystore *ks, const char *dir)
{
    return open_file_store(ks, dir, true);
}

ec_status ec_keystore_file_open_existing(ec_keystore *ks, const char *dir)
{
    return open_file_store(ks, dir, false);
}

void ec_keystore_close(ec_keystore *ks)
{
    if (ks == NULL || ks->ops == NULL)
        return;
    ks->ops->close(ks->ctx);
    ks->ops = NULL;
    ks->ctx = NULL;
}

/* Reads a whole file into secure memory (+1 NUL for PEM parsers); when
 * `private`, the file must be ours and closed to group and others. */
static ec_status read_file_secure(const char *path, bool private, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        ec_log(EC_LOG_ERROR, "credential_unreadable", EC_LOG_STR("path", path),
               EC_LOG_STR("reason", strerror(errno)));
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    }
    struct stat sb;
    ec_status st = EC_OK;
    *out = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0 || sb.st_size > 64 * 1024) {
        st = EC_ERR_IO;
    } else if (sb.st_uid != geteuid() || (sb.st_mode & (private ? 077 : 022)) != 0) {
        ec_log(EC_LOG_ERROR, "credential_unsafe", EC_LOG_STR("path", path),
               EC_LOG_STR("expected", private ? "owned by the running user, mode 0600"
                                              : "owned by the running user, not writable "
                                                "by group or others"));
        st = EC_ERR_PERM;
    } else if ((*out = ec_secmem_alloc((size_t)sb.st_size + 1)) == NULL) {
        st = EC_ERR_NOMEM;
    } else if (read_exact(fd, *out, (size_t)sb.st_size) != EC_OK) {
        st = EC_ERR_IO;
    }
    close(fd);
    if (st != EC_OK) {
        ec_secmem_free(*out);
        *out = NULL;
        return st;
    }
    (*out)[sb.st_size] = '\0';
    *len = (size_t)sb.st_size;
    return EC_OK;
}

/* PEM parsers want the terminating NUL counted; DER must not have it. */
static size_t parse_len(const uint8_t *buf, size_t len)
{
    return strstr((const char *)buf, "-----BEGIN") != NULL ? len + 1 : len;
}

ec_status ec_keystore_file_client_credentials(const char *cert_path, const char *key_path,
                                              uint8_t **cert_der, size_t *cert_len,
                                              uint8_t **key_der, size_t *key_len)
{
    uint8_t *cert_file = NULL, *key_file = NULL, *key_buf = NULL;
    size_t cert_file_len = 0, key_file_len = 0;
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pk);
    *cert_der = *key_der = NULL;
    ec_status st = read_file_secure(cert_path, false, &cert_file, &cert_file_len);
    if (st == EC_OK)
        st = read_file_secure(key_path, true, &key_file, &key_file_len);
    if (st != EC_OK)
        goto out;
    if (mbedtls_x509_crt_parse(&crt, cert_file, parse_len(cert_file, cert_file_len)) != 0 ||
        mbedtls_pk_parse_key(&pk, key_file, parse_len(key_file, key_file_len), NULL, 0) != 0) {
        ec_log(EC_LOG_ERROR, "credential_invalid", EC_LOG_STR("cert", cert_path),
               EC_LOG_STR("key", key_path),
               EC_LOG_STR("reason", "not a PEM/DER certificate and private key"));
        st = EC_ERR_CRYPTO;
        goto out;
    }
    if (mbedtls_pk_check_pair(&crt.pk, &pk) != 0) {
        ec_log(EC_LOG_ERROR, "credential_invalid", EC_LOG_STR("cert", cert_path),
               EC_LOG_STR("reason", "the private key does not belong to the certificate"));
        st = EC_ERR_CRYPTO;
        goto out;
    }
    *cert_der = ec_secmem_dup(crt.raw.p, crt.raw.len);
    *cert_len = crt.raw.len;
    size_t cap = 8192;
    key_buf = ec_secmem_alloc(cap);
    if (*cert_der == NULL || key_buf == NULL) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    /* mbedtls writes DER at the end of the buffer */
    int n = mbedtls_pk_write_key_der(&pk, key_buf, cap);
    if (n <= 0 || (*key_der = ec_secmem_dup(key_buf + cap - (size_t)n, (size_t)n)) == NULL) {
        st = n <= 0 ? EC_ERR_CRYPTO : EC_ERR_NOMEM;
        goto out;
    }
    *key_len = (size_t)n;
out:
    if (st != EC_OK) {
        ec_secmem_free(*cert_der);
        *cert_der = NULL;
    }
    mbedtls_pk_free(&pk);
    mbedtls_x509_crt_free(&crt);
    ec_secmem_free(cert_file);
    ec_secmem_free(key_file);
    ec_secmem_free(key_buf);
    return st;
}

ec_status ec_keystore_file_certificate(const char *cert_path, uint8_t **cert_der, size_t *cert_len)
{
    uint8_t *cert_file = NULL;
    size_t cert_file_len = 0;
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    *cert_der = NULL;
    ec_status st = read_file_secure(cert_path, false, &cert_file, &cert_file_len);
    if (st != EC_OK)
        goto out;
    if (mbedtls_x509_crt_parse(&crt, cert_file, parse_len(cert_file, cert_file_len)) != 0) {
        ec_log(EC_LOG_ERROR, "credential_invalid", EC_LOG_STR("cert", cert_path),
               EC_LOG_STR("reason", "not a PEM/DER certificate"));
        st = EC_ERR_CRYPTO;
    } else if ((*cert_der = ec_secmem_dup(crt.raw.p, crt.raw.len)) == NULL) {
        st = EC_ERR_NOMEM;
    } else {
        *cert_len = crt.raw.len;
    }
out:
    mbedtls_x509_crt_free(&crt);
    ec_secmem_free(cert_file);
    return st;
}

/* ---- the device identity key: a PEM file, 0600 ---------------------------- */

/* Largest private key DER written here (RSA 3072 PKCS#1 is about 1.8 KB). */
#define KEY_DER_MAX 4096

/* The private key as PEM (SEC1 for EC, PKCS#1 for RSA, as mbedTLS writes
 * DER), assembled here so that every intermediate copy (DER, base64) is in
 * secure memory; mbedtls_pk_write_key_pem would stage it on the stack and
 * the heap. `*pem` is secure memory, `*pem_len` without a NUL. */
static ec_status key_pem(mbedtls_pk_context *key, uint8_t **pem, size_t *pem_len)
{
    const char *label =
        mbedtls_pk_get_type(key) == MBEDTLS_PK_RSA ? "RSA PRIVATE KEY" : "EC PRIVATE KEY";
    uint8_t *der = ec_secmem_alloc(KEY_DER_MAX);
    uint8_t *b64 = ec_secmem_alloc(KEY_DER_MAX * 2);
    uint8_t *out = ec_secmem_alloc(KEY_DER_MAX * 3);
    ec_status st = EC_ERR_NOMEM;
    *pem = NULL;
    if (der == NULL || b64 == NULL || out == NULL)
        goto out;
    st = EC_ERR_CRYPTO;
    int n = mbedtls_pk_write_key_der(key, der, KEY_DER_MAX);
    size_t b64_len = 0;
    if (n <= 0 || mbedtls_base64_encode(b64, KEY_DER_MAX * 2, &b64_len,
                                        der + KEY_DER_MAX - (size_t)n, (size_t)n) != 0)
        goto out;
    size_t len = (size_t)snprintf((char *)out, KEY_DER_MAX * 3, "-----BEGIN %s-----\n", label);
    for (size_t i = 0; i < b64_len; i += 64) {
        size_t line = b64_len - i < 64 ? b64_len - i : 64;
        memcpy(out + len, b64 + i, line);
        len += line;
        out[len++] = '\n';
    }
    len += (size_t)snprintf((char *)out + len, KEY_DER_MAX * 3 - len, "-----END %s-----\n", label);
    *pem = out;
    *pem_len = len;
    out = NULL;
    st = EC_OK;
out:
    ec_secmem_free(der);
    ec_secmem_free(b64);
    ec_secmem_free(out);
    return st;
}

static ec_status generate_key(ec_key_type type, mbedtls_pk_context *key)
{
    int rc;
    if (type == EC_KEY_TYPE_RSA_3072) {
        rc = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA));
        if (rc == 0)
            rc = mbedtls_rsa_gen_key(mbedtls_pk_rsa(*key), ec_rng_mbedtls, NULL, 3072, 65537);
    } else if (type == EC_KEY_TYPE_EC_P256) {
        rc = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
        if (rc == 0)
            rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), ec_rng_mbedtls,
                                     NULL);
    } else {
        return EC_ERR_INVALID;
    }
    return rc == 0 ? EC_OK : EC_ERR_CRYPTO;
}

static ec_status file_generate_identity(void *ctx, ec_key_type type, const char *ref,
                                        mbedtls_pk_context *key)
{
    (void)ctx;
    uint8_t *pem = NULL;
    size_t pem_len = 0;
    /* Claimed first (O_EXCL): an existing key is never replaced, and two
     * runs cannot both write one. */
    int fd = open(ref, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return EC_ERR_EXISTS;
        ec_log(EC_LOG_ERROR, "identity_key_create_failed", EC_LOG_STR("path", ref),
               EC_LOG_STR("reason", strerror(errno)));
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    }
    ec_status st = fchmod(fd, 0600) == 0 ? EC_OK : EC_ERR_IO; /* whatever the umask */
    if (st == EC_OK)
        st = generate_key(type, key);
    if (st == EC_OK)
        st = key_pem(key, &pem, &pem_len);
    if (st == EC_OK && (EC_FAULT("keystore.identity_write") ||
                        ec_file_write_all(fd, pem, pem_len) != EC_OK || fsync(fd) != 0))
        st = EC_ERR_IO;
    if (close(fd) != 0 && st == EC_OK)
        st = EC_ERR_IO;
    if (st == EC_OK)
        st = ec_file_fsync_parent(ref);
    if (st != EC_OK) {
        /* ours, created above: a half-made key must not block the next try */
        unlink(ref);
        mbedtls_pk_free(key);
        mbedtls_pk_init(key);
        ec_log(EC_LOG_ERROR, "identity_key_create_failed", EC_LOG_STR("path", ref),
               EC_LOG_STATUS(st));
    } else {
        ec_log(EC_LOG_INFO, "identity_key_created", EC_LOG_STR("path", ref),
               EC_LOG_STR("type", type == EC_KEY_TYPE_RSA_3072 ? "rsa-3072" : "ec-p256"));
    }
    ec_secmem_free(pem);
    return st;
}

static ec_status file_identity_public(void *ctx, const char *ref, mbedtls_pk_context *pub)
{
    (void)ctx;
    uint8_t *file = NULL;
    size_t len = 0;
    unsigned char der[2048];
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    ec_status st = read_file_secure(ref, true, &file, &len);
    if (st != EC_OK)
        goto out;
    st = EC_ERR_CRYPTO;
    if (mbedtls_pk_parse_key(&key, file, parse_len(file, len), NULL, 0) != 0) {
        ec_log(EC_LOG_ERROR, "credential_invalid", EC_LOG_STR("key", ref),
               EC_LOG_STR("reason", "not a PEM/DER private key"));
        goto out;
    }
    /* the public half only: DER written at the end of the buffer */
    int n = mbedtls_pk_write_pubkey_der(&key, der, sizeof der);
    if (n > 0 && mbedtls_pk_parse_public_key(pub, der + sizeof der - (size_t)n, (size_t)n) == 0)
        st = EC_OK;
out:
    mbedtls_pk_free(&key);
    ec_secmem_free(file);
    return st;
}
