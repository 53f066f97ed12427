/*
 * Device identity provisioning (see include/edgecap/provision.h): key pair
 * through the key store, CSR, the installed certificate's report, and the
 * checked, atomic installation of a signed certificate.
 */
#include "edgecap/provision.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/base64.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>

#include "edgecap/fault.h"
#include "edgecap/file.h"
#include "edgecap/log.h"
#include "edgecap/rng.h"
#include "edgecap/token_key.h"

#define CSR_PEM_MAX 8192
#define CERT_PEM_MAX (64 * 1024)
#define TMP_PATH_MAX (EC_CFG_PATH_MAX + 32)

ec_status ec_provision_spki_pin(mbedtls_pk_context *pk, char out[EC_PIN_BYTES])
{
    unsigned char spki[2048], digest[32], b64[64];
    size_t n = 0;
    /* DER is written at the end of the buffer */
    int len = mbedtls_pk_write_pubkey_der(pk, spki, sizeof spki);
    if (len <= 0 ||
        mbedtls_sha256_ret(spki + sizeof spki - (size_t)len, (size_t)len, digest, 0) != 0 ||
        mbedtls_base64_encode(b64, sizeof b64, &n, digest, sizeof digest) != 0) {
        out[0] = '\0';
        return EC_ERR_CRYPTO;
    }
    snprintf(out, EC_PIN_BYTES, "sha256//%.*s", (int)n, b64);
    return EC_OK;
}

void ec_provision_key_type_name(const mbedtls_pk_context *pk, char *out, size_t out_len)
{
    mbedtls_pk_type_t t = mbedtls_pk_get_type(pk);
    if (t == MBEDTLS_PK_RSA) {
        snprintf(out, out_len, "rsa-%zu", mbedtls_pk_get_bitlen(pk));
    } else if (t == MBEDTLS_PK_ECKEY || t == MBEDTLS_PK_ECKEY_DH || t == MBEDTLS_PK_ECDSA) {
        mbedtls_ecp_group_id id = mbedtls_pk_ec(*pk)->grp.id;
        const mbedtls_ecp_curve_info *info = mbedtls_ecp_curve_info_from_grp_id(id);
        if (id == MBEDTLS_ECP_DP_SECP256R1)
            snprintf(out, out_len, "ec-p256");
        else
            snprintf(out, out_len, "ec-%s", info != NULL ? info->name : "unknown");
    } else {
        snprintf(out, out_len, "unknown");
    }
}

ec_status ec_provision_parse_key_type(const char *name, ec_key_type *type)
{
    if (strcmp(name, "ec-p256") == 0)
        *type = EC_KEY_TYPE_EC_P256;
    else if (strcmp(name, "rsa-3072") == 0)
        *type = EC_KEY_TYPE_RSA_3072;
    else
        return EC_ERR_INVALID;
    return EC_OK;
}

/* ---- atomic replacement: temporary file in the same directory ------------ */

/* Creates `path`.PID.tmp (mode 0644, O_EXCL) beside `path`: -1 with errno. */
static int tmp_open(const char *path, char tmp[TMP_PATH_MAX])
{
    if ((size_t)snprintf(tmp, TMP_PATH_MAX, "%s.%ld.tmp", path, (long)getpid()) >= TMP_PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    unlink(tmp); /* a leftover of a crashed run with our pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
    if (fd >= 0 && fchmod(fd, 0644) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    return fd;
}

/* Writes `data` to the open temporary file, fsyncs, closes it (always) and
 * renames it over `path`, then fsyncs the directory. On failure the
 * temporary file is removed and `path` is untouched. */
static ec_status tmp_commit(int fd, const char *tmp, const char *path, const void *data, size_t len)
{
    errno = 0;
    ec_status st = EC_FAULT("provision.write") ? EC_ERR_IO : ec_file_write_all(fd, data, len);
    if (st == EC_OK && (EC_FAULT("provision.fsync") || fsync(fd) != 0))
        st = EC_ERR_IO;
    if (close(fd) != 0 && st == EC_OK)
        st = EC_ERR_IO;
    if (st == EC_OK && (EC_FAULT("provision.rename") || rename(tmp, path) != 0))
        st = EC_ERR_IO;
    if (st != EC_OK) {
        int e = errno != 0 ? errno : EIO;
        unlink(tmp);
        errno = e;
        return st;
    }
    /* renamed: the new file is in place and cannot be taken back; a failed
     * directory fsync only means it might not survive a power cut */
    if (ec_file_fsync_parent(path) != EC_OK)
        ec_log(EC_LOG_WARN, "dir_fsync_failed", EC_LOG_STR("path", path),
               EC_LOG_STR("reason", strerror(errno)));
    return EC_OK;
}

/* ---- where the device key is ------------------------------------------------ */

/* On the token ([pkcs11] key_label) or in the file [tls] client_key. */
static bool key_on_token(const ec_config *cfg)
{
    return cfg->device.keystore == EC_KEYSTORE_PKCS11 && cfg->pkcs11.key_label[0] != '\0';
}

/* What the key store calls the key: its label on the token, or its path. */
static const char *key_ref(const ec_config *cfg)
{
    return key_on_token(cfg) ? cfg->pkcs11.key_label : cfg->tls.client_key;
}

#define KEY_WHERE_BYTES (EC_CFG_PATH_MAX + 128)

/* The key's place for people: the path, or label "L" on token "T". */
static const char *key_where(const ec_config *cfg, char out[KEY_WHERE_BYTES])
{
    if (key_on_token(cfg))
        snprintf(out, KEY_WHERE_BYTES, "label \"%s\" on token \"%s\"", cfg->pkcs11.key_label,
                 cfg->pkcs11.token_label);
    else
        snprintf(out, KEY_WHERE_BYTES, "%s", cfg->tls.client_key);
    return out;
}

/* ---- init ---------------------------------------------------------------- */

/* `path` with its extension (one of `exts`, 4 characters each) replaced by
 * .csr, or with .csr added. */
static void csr_default_path(const char *path, const char *const *exts, char *out, size_t out_len)
{
    size_t n = strlen(path);
    for (; *exts != NULL; exts++) {
        if (n > 4 && strcmp(path + n - 4, *exts) == 0) {
            snprintf(out, out_len, "%.*s.csr", (int)(n - 4), path);
            return;
        }
    }
    snprintf(out, out_len, "%s.csr", path);
}

static void kek_hex(ec_keystore *ks, char out[2 * EC_KEK_ID_BYTES + 1])
{
    uint8_t id[EC_KEK_ID_BYTES];
    ks->ops->kek_id(ks->ctx, id);
    ec_hex_encode(id, sizeof id, out);
}

/* A new key whose CSR could not be made was never certified: the key store
 * destroys it where it can, so init can simply be run again. What became of
 * it, for the message. */
static const char *discard_new_key(const ec_config *cfg, ec_keystore *ks)
{
    if (ks->ops->discard_identity == NULL)
        return "was created: remove it to try again";
    if (ks->ops->discard_identity(ks->ctx, key_ref(cfg)) == EC_OK)
        return "was destroyed again (never certified): run init again";
    return "was created and could not be destroyed: remove it to try again";
}

ec_status ec_provision_init(const ec_provision_init_params *p, FILE *out, char *why, size_t why_len)
{
    const ec_config *cfg = p->cfg;
    ec_keystore *ks = p->keystore;
    mbedtls_pk_context key;
    mbedtls_x509write_csr req;
    mbedtls_pk_init(&key);
    mbedtls_x509write_csr_init(&req);
    char csr_path[EC_CFG_PATH_MAX + 8], tmp[TMP_PATH_MAX] = "";
    char subject[EC_CFG_NAME_MAX], pin[EC_PIN_BYTES], type[32], kek[2 * EC_KEK_ID_BYTES + 1];
    char where[KEY_WHERE_BYTES];
    static unsigned char csr_pem[CSR_PEM_MAX];
    int fd = -1;
    ec_status st = EC_ERR_UNSUPPORTED;
    static const char *const key_exts[] = {".key", NULL}, *const cert_exts[] = {".pem", ".crt",
                                                                                NULL};
    why[0] = '\0';
    key_where(cfg, where);
    if (ks->ops->generate_identity == NULL) {
        snprintf(why, why_len, "the %s key store cannot generate a key pair", ks->ops->name);
        goto out;
    }
    if (cfg->device.keystore == EC_KEYSTORE_PKCS11 && !key_on_token(cfg)) {
        snprintf(why, why_len,
                 "the pkcs11 key store makes the device key on the token: set [pkcs11] "
                 "key_label (and remove [tls] client_key)");
        st = EC_ERR_CONFIG;
        goto out;
    }
    if (p->csr_path != NULL)
        snprintf(csr_path, sizeof csr_path, "%s", p->csr_path);
    else if (key_on_token(cfg)) /* beside the certificate it is for */
        csr_default_path(cfg->tls.client_cert, cert_exts, csr_path, sizeof csr_path);
    else
        csr_default_path(cfg->tls.client_key, key_exts, csr_path, sizeof csr_path);
    /* the CSR's place first: a key must not be left without its CSR */
    if ((fd = tmp_open(csr_path, tmp)) < 0) {
        snprintf(why, why_len, "cannot write the CSR %s: %s", csr_path, strerror(errno));
        tmp[0] = '\0';
        st = EC_ERR_IO;
        goto out;
    }
    st = ks->ops->generate_identity(ks->ctx, p->key_type, key_ref(cfg), &key);
    if (st == EC_ERR_EXISTS) {
        snprintf(why, why_len,
                 "a device key already exists at %s; it is left as it is (init never replaces a "
                 "key)",
                 where);
        goto out;
    }
    if (st != EC_OK) {
        snprintf(why, why_len, "cannot create the device key %s: %s", where, ec_strerror(st));
        goto out;
    }
    snprintf(subject, sizeof subject, "O=edgecap,CN=%s", cfg->device.id);
    mbedtls_x509write_csr_set_md_alg(&req, MBEDTLS_MD_SHA256);
    mbedtls_x509write_csr_set_key(&req, &key);
    st = EC_ERR_CRYPTO;
    if (EC_FAULT("provision.csr_sign") ||
        mbedtls_x509write_csr_set_subject_name(&req, subject) != 0 ||
        mbedtls_x509write_csr_set_key_usage(&req, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0 ||
        mbedtls_x509write_csr_pem(&req, csr_pem, sizeof csr_pem, ec_rng_mbedtls, NULL) != 0 ||
        ec_provision_spki_pin(&key, pin) != EC_OK) {
        snprintf(why, why_len, "cannot sign the CSR with the new key %s, which %s", where,
                 discard_new_key(cfg, ks));
        goto out;
    }
    st = tmp_commit(fd, tmp, csr_path, csr_pem, strlen((const char *)csr_pem));
    fd = -1;
    tmp[0] = '\0';
    if (st != EC_OK) {
        int e = errno;
        snprintf(why, why_len, "cannot write the CSR %s: %s; the new key %s %s", csr_path,
                 strerror(e), where, discard_new_key(cfg, ks));
        goto out;
    }
    ec_provision_key_type_name(&key, type, sizeof type);
    kek_hex(ks, kek);
    if (key_on_token(cfg))
        fprintf(out, "device key: %s (%s, generated on the token, not extractable, key store %s)\n",
                where, type, ks->ops->name);
    else
        fprintf(out, "device key: %s (%s, mode 0600, key store %s)\n", where, type, ks->ops->name);
    fprintf(out, "csr: %s (subject O=edgecap, CN=%s)\n", csr_path, cfg->device.id);
    fprintf(out, "pin: %s\n", pin);
    fprintf(out, "kek id: %s\n", kek);
    fprintf(out,
            "next: have the CSR signed by the device CA, then run edgecap provision "
            "install-cert --config %s CERT.pem\n",
            cfg->source_path);
    ec_audit(p->audit, "provision_init", EC_LOG_STR("device", cfg->device.id),
             EC_LOG_STR("key_type", type), EC_LOG_STR("key", where), EC_LOG_STR("csr", csr_path),
             EC_LOG_STR("pin", pin), EC_LOG_STR("kek_id", kek));
    st = EC_OK;
out:
    if (fd >= 0)
        close(fd);
    if (tmp[0] != '\0')
        unlink(tmp);
    mbedtls_x509write_csr_free(&req);
    mbedtls_pk_free(&key);
    return st;
}

/* ---- certificate facts ---------------------------------------------------- */

static time_t x509_time(const mbedtls_x509_time *t)
{
    struct tm tm = {.tm_year = t->year - 1900,
                    .tm_mon = t->mon - 1,
                    .tm_mday = t->day,
                    .tm_hour = t->hour,
                    .tm_min = t->min,
                    .tm_sec = t->sec};
    return timegm(&tm);
}

static void x509_time_text(const mbedtls_x509_time *t, char *out, size_t out_len)
{
    snprintf(out, out_len, "%04d-%02d-%02dT%02d:%02d:%02dZ", t->year, t->mon, t->day, t->hour,
             t->min, t->sec);
}

/* Whether two keys have the same public key (their SPKI DER). */
static bool same_public_key(mbedtls_pk_context *a, mbedtls_pk_context *b)
{
    unsigned char da[2048], db[2048];
    int na = mbedtls_pk_write_pubkey_der(a, da, sizeof da);
    int nb = mbedtls_pk_write_pubkey_der(b, db, sizeof db);
    return na > 0 && na == nb &&
           memcmp(da + sizeof da - (size_t)na, db + sizeof db - (size_t)nb, (size_t)na) == 0;
}

typedef struct {
    char subject[256], issuer[256], serial[128], not_before[32], not_after[32];
    char pin[EC_PIN_BYTES];
} cert_facts;

static void cert_describe(mbedtls_x509_crt *crt, cert_facts *f)
{
    if (mbedtls_x509_dn_gets(f->subject, sizeof f->subject, &crt->subject) < 0)
        snprintf(f->subject, sizeof f->subject, "?");
    if (mbedtls_x509_dn_gets(f->issuer, sizeof f->issuer, &crt->issuer) < 0)
        snprintf(f->issuer, sizeof f->issuer, "?");
    if (mbedtls_x509_serial_gets(f->serial, sizeof f->serial, &crt->serial) < 0)
        snprintf(f->serial, sizeof f->serial, "?");
    x509_time_text(&crt->valid_from, f->not_before, sizeof f->not_before);
    x509_time_text(&crt->valid_to, f->not_after, sizeof f->not_after);
    if (ec_provision_spki_pin(&crt->pk, f->pin) != EC_OK)
        snprintf(f->pin, sizeof f->pin, "?");
}

/* `dst` (initialised, empty) as a copy of `src`'s public key. */
static ec_status copy_public(mbedtls_pk_context *src, mbedtls_pk_context *dst)
{
    unsigned char der[2048];
    int n = mbedtls_pk_write_pubkey_der(src, der, sizeof der);
    if (n <= 0 || mbedtls_pk_parse_public_key(dst, der + sizeof der - (size_t)n, (size_t)n) != 0)
        return EC_ERR_CRYPTO;
    return EC_OK;
}

/*
 * The device key's public half through the key store; `why` on failure. On
 * a token the public key object is only trusted once the private key has
 * signed for it (a foreign public key written under the label would
 * otherwise pass); a private key without a public object is still the
 * device key (init refuses to make another), and `cert_pk` (NULL: none)
 * stands in for the missing object when the token key signs for it.
 */
static ec_status device_public_key(const ec_config *cfg, ec_keystore *ks,
                                   mbedtls_pk_context *cert_pk, mbedtls_pk_context *pub, char *why,
                                   size_t why_len)
{
    if (ks->ops->identity_public == NULL) {
        snprintf(why, why_len, "the %s key store cannot read the device key", ks->ops->name);
        return EC_ERR_UNSUPPORTED;
    }
    char where[KEY_WHERE_BYTES], reason[EC_PROVISION_WHY_BYTES];
    key_where(cfg, where);
    ec_status st = ks->ops->identity_public(ks->ctx, key_ref(cfg), pub);
    bool token = key_on_token(cfg), priv = token && ec_keystore_has_device_key(ks);
    if (token && !priv && st == EC_OK) {
        snprintf(why, why_len,
                 "no private key at %s, only a public key object (init does not reuse a taken "
                 "label: delete it or set another [pkcs11] key_label)",
                 where);
        st = EC_ERR_CRYPTO;
    } else if (priv && st == EC_ERR_NOT_FOUND && cert_pk != NULL) {
        st = copy_public(cert_pk, pub);
        if (st == EC_OK && ec_token_key_check_public(ks, pub, reason, sizeof reason) != EC_OK) {
            snprintf(why, why_len,
                     "the device key %s has no public key object and the certificate is for "
                     "another key (%s)",
                     where, reason);
            st = EC_ERR_CRYPTO;
        }
    } else if (priv && st == EC_ERR_NOT_FOUND) {
        snprintf(why, why_len,
                 "the device key %s has no public key object on the token, so its public key "
                 "cannot be shown (the private key is there; init does not replace it)",
                 where);
        st = EC_ERR_CRYPTO;
    } else if (priv && st == EC_OK &&
               ec_token_key_check_public(ks, pub, reason, sizeof reason) != EC_OK) {
        snprintf(why, why_len,
                 "the public key object at %s is not the device key's: %s (the private key "
                 "decides; delete the foreign public key object)",
                 where, reason);
        st = EC_ERR_CRYPTO;
    } else if (st == EC_ERR_NOT_FOUND) {
        snprintf(why, why_len, "no device key at %s (run edgecap provision init first)", where);
    } else if (st != EC_OK) {
        snprintf(why, why_len, "cannot read the device key %s: %s", where, ec_strerror(st));
    }
    if (st != EC_OK) {
        mbedtls_pk_free(pub);
        mbedtls_pk_init(pub);
    }
    return st;
}

ec_status ec_provision_show(const ec_config *cfg, ec_keystore *ks, FILE *out)
{
    mbedtls_x509_crt crt;
    mbedtls_pk_context pub;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pub);
    char why[EC_PROVISION_WHY_BYTES], type[32], kek[2 * EC_KEK_ID_BYTES + 1];
    char where[KEY_WHERE_BYTES];
    key_where(cfg, where);
    cert_facts f;
    ec_status st = EC_OK;
    struct stat sb;
    bool have_cert = false;
    fprintf(out, "certificate: %s\n", cfg->tls.client_cert);
    if (stat(cfg->tls.client_cert, &sb) != 0 && errno == ENOENT) {
        fprintf(out, "  none installed (edgecap provision install-cert installs one)\n");
        st = EC_ERR_NOT_FOUND;
    } else if (mbedtls_x509_crt_parse_file(&crt, cfg->tls.client_cert) != 0) {
        fprintf(out, "  unreadable: not a PEM or DER certificate\n");
        st = EC_ERR_CRYPTO;
    } else {
        have_cert = true;
        cert_describe(&crt, &f);
        time_t now = time(NULL), from = x509_time(&crt.valid_from), to = x509_time(&crt.valid_to);
        fprintf(out, "  subject: %s\n  issuer: %s\n  serial: %s\n", f.subject, f.issuer, f.serial);
        fprintf(out, "  not before: %s%s\n", f.not_before, now < from ? " (NOT YET VALID)" : "");
        if (now > to)
            fprintf(out, "  not after: %s (EXPIRED)\n", f.not_after);
        else
            fprintf(out, "  not after: %s (expires in %lld days)\n", f.not_after,
                    (long long)((to - now) / 86400));
        fprintf(out, "  pin: %s\n", f.pin);
        if (now < from || now > to)
            st = EC_ERR_CRYPTO;
    }
    ec_status kst = device_public_key(cfg, ks, have_cert ? &crt.pk : NULL, &pub, why, sizeof why);
    if (kst != EC_OK) {
        fprintf(out, "key: %s\n", why);
        if (st == EC_OK)
            st = EC_ERR_CRYPTO;
    } else {
        ec_provision_key_type_name(&pub, type, sizeof type);
        char pin[EC_PIN_BYTES];
        (void)ec_provision_spki_pin(&pub, pin);
        if (!have_cert) {
            fprintf(out, "key: %s (%s), pin %s\n", where, type, pin);
        } else if (same_public_key(&crt.pk, &pub)) {
            fprintf(out, "key: %s (%s) matches the certificate\n", where, type);
        } else {
            fprintf(out, "key: %s (%s) does NOT match the certificate (key pin %s)\n", where, type,
                    pin);
            if (st == EC_OK)
                st = EC_ERR_CRYPTO;
        }
    }
    kek_hex(ks, kek);
    fprintf(out, "kek id: %s (key store %s)\n", kek, ks->ops->name);
    mbedtls_pk_free(&pub);
    mbedtls_x509_crt_free(&crt);
    return st;
}

/* ---- install-cert --------------------------------------------------------- */

/* The checks, in the order a person would want to hear about them. */
static ec_status check_cert(const ec_config *cfg, mbedtls_x509_crt *crt, mbedtls_pk_context *pub,
                            char *why, size_t why_len)
{
    cert_facts f;
    cert_describe(crt, &f);
    if (!same_public_key(&crt->pk, pub)) {
        char pin[EC_PIN_BYTES], where[KEY_WHERE_BYTES];
        (void)ec_provision_spki_pin(pub, pin);
        key_where(cfg, where);
        snprintf(why, why_len,
                 "the certificate is for another key (its pin %s, the device key %s has %s)", f.pin,
                 where, pin);
        return EC_ERR_CRYPTO;
    }
    time_t now = time(NULL);
    if (now > x509_time(&crt->valid_to)) {
        snprintf(why, why_len, "the certificate expired on %s", f.not_after);
        return EC_ERR_CRYPTO;
    }
    if (now < x509_time(&crt->valid_from)) {
        snprintf(why, why_len, "the certificate is not valid before %s", f.not_before);
        return EC_ERR_CRYPTO;
    }
    /* both pass when the certificate has no such extension */
    if (mbedtls_x509_crt_check_extended_key_usage(crt, MBEDTLS_OID_CLIENT_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0) {
        snprintf(why, why_len,
                 "the certificate's extended key usage does not include TLS client "
                 "authentication (clientAuth)");
        return EC_ERR_CRYPTO;
    }
    if (mbedtls_x509_crt_check_key_usage(crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0) {
        snprintf(why, why_len, "the certificate's key usage does not include digitalSignature");
        return EC_ERR_CRYPTO;
    }
    const char *ca_key = cfg->tls.client_ca_file[0] != '\0' ? "client_ca_file" : "ca_file";
    const char *ca_path =
        cfg->tls.client_ca_file[0] != '\0' ? cfg->tls.client_ca_file : cfg->tls.ca_file;
    mbedtls_x509_crt ca;
    mbedtls_x509_crt_init(&ca);
    ec_status st = EC_OK;
    uint32_t flags = 0;
    if (mbedtls_x509_crt_parse_file(&ca, ca_path) < 0 || ca.version == 0) {
        snprintf(why, why_len, "cannot read the device CA [tls] %s (%s)", ca_key, ca_path);
        st = EC_ERR_CONFIG;
    } else if (mbedtls_x509_crt_verify(crt, &ca, NULL, NULL, &flags, NULL, NULL) != 0) {
        if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
            snprintf(why, why_len,
                     "the certificate does not chain to the device CA in [tls] %s (%s); its "
                     "issuer is %s",
                     ca_key, ca_path, f.issuer);
        } else {
            char info[256];
            int n = mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
            while (n > 0 && info[n - 1] == '\n')
                info[--n] = '\0';
            for (char *c = info; *c != '\0'; c++)
                if (*c == '\n')
                    *c = ';';
            snprintf(why, why_len, "the certificate chain to [tls] %s (%s) does not verify: %s",
                     ca_key, ca_path, info);
        }
        st = EC_ERR_CRYPTO;
    }
    mbedtls_x509_crt_free(&ca);
    return st;
}

ec_status ec_provision_install_cert(const ec_config *cfg, ec_keystore *ks, ec_audit *audit,
                                    const char *cert_path, FILE *out, char *why, size_t why_len)
{
    mbedtls_x509_crt crt;
    mbedtls_pk_context pub;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pub);
    static unsigned char pem[CERT_PEM_MAX];
    char tmp[TMP_PATH_MAX];
    size_t pem_len = 0;
    cert_facts f;
    ec_status st = EC_ERR_CRYPTO;
    why[0] = '\0';
    int rc = mbedtls_x509_crt_parse_file(&crt, cert_path);
    if (rc == MBEDTLS_ERR_PK_FILE_IO_ERROR) {
        snprintf(why, why_len, "cannot read %s: %s", cert_path, strerror(errno));
        st = EC_ERR_NOT_FOUND;
        goto out;
    }
    if (rc != 0) {
        snprintf(why, why_len, "%s is not a PEM or DER certificate", cert_path);
        goto out;
    }
    if ((st = device_public_key(cfg, ks, &crt.pk, &pub, why, why_len)) != EC_OK ||
        (st = check_cert(cfg, &crt, &pub, why, why_len)) != EC_OK)
        goto out;
    /* what was checked is what is installed: the parsed certificates as PEM */
    for (mbedtls_x509_crt *c = &crt; c != NULL && c->version != 0; c = c->next) {
        size_t n = 0;
        if (mbedtls_pem_write_buffer("-----BEGIN CERTIFICATE-----\n", "-----END CERTIFICATE-----\n",
                                     c->raw.p, c->raw.len, pem + pem_len, sizeof pem - pem_len,
                                     &n) != 0) {
            snprintf(why, why_len, "%s is too large", cert_path);
            st = EC_ERR_INVALID;
            goto out;
        }
        pem_len += n - 1; /* n counts the NUL */
    }
    int fd = tmp_open(cfg->tls.client_cert, tmp);
    st = fd < 0 ? EC_ERR_IO : tmp_commit(fd, tmp, cfg->tls.client_cert, pem, pem_len);
    if (st != EC_OK) {
        snprintf(why, why_len, "cannot write %s: %s", cfg->tls.client_cert, strerror(errno));
        goto out;
    }
    cert_describe(&crt, &f);
    fprintf(out, "installed %s as %s\n", cert_path, cfg->tls.client_cert);
    fprintf(out, "  subject: %s\n  issuer: %s\n  serial: %s\n  not after: %s\n  pin: %s\n",
            f.subject, f.issuer, f.serial, f.not_after, f.pin);
    fprintf(out, "a running daemon uses it after edgecap reload --config %s\n", cfg->source_path);
    ec_audit(audit, "cert_installed", EC_LOG_STR("device", cfg->device.id),
             EC_LOG_STR("path", cfg->tls.client_cert), EC_LOG_STR("subject", f.subject),
             EC_LOG_STR("issuer", f.issuer), EC_LOG_STR("serial", f.serial),
             EC_LOG_STR("not_after", f.not_after), EC_LOG_STR("pin", f.pin));
out:
    if (st != EC_OK)
        ec_audit(audit, "cert_install_refused", EC_LOG_STR("device", cfg->device.id),
                 EC_LOG_STR("path", cfg->tls.client_cert), EC_LOG_STR("reason", why));
    mbedtls_pk_free(&pub);
    mbedtls_x509_crt_free(&crt);
    return st;
}
