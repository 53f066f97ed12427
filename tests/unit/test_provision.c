/*
 * Device identity provisioning: the file key store generates the identity
 * key once (0600, O_EXCL, removed again when writing fails); init writes a
 * CSR signed by that key for CN=<device id>, and checks the CSR's place
 * before it makes a key; install-cert installs only a certificate that holds
 * the device key, is valid now, allows clientAuth and digitalSignature and
 * chains to the device CA, and every refusal or failed write (fault
 * injection) leaves the old certificate byte for byte as it was.
 * Certificates are made here with mbedtls_x509write_crt from keys the key
 * store generates in a scratch directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/oid.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>

#include "edgecap/audit.h"
#include "edgecap/fault.h"
#include "edgecap/keystore.h"
#include "edgecap/provision.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "support.h"

typedef struct {
    char *dir;
    ec_keystore ks;
    ec_config cfg;
    ec_audit *audit;
    FILE *out; /* what the functions print */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = ts_mkdtemp();
    ec_fault_reset();
    char *ksdir = ts_strf("%s/keys", f->dir);
    assert_int_equal(ec_keystore_file_open(&f->ks, ksdir), EC_OK);
    free(ksdir);
    ec_config_init(&f->cfg);
    snprintf(f->cfg.device.id, sizeof f->cfg.device.id, "unit-7");
    snprintf(f->cfg.tls.client_key, EC_CFG_PATH_MAX, "%s/client.key", f->dir);
    snprintf(f->cfg.tls.client_cert, EC_CFG_PATH_MAX, "%s/client.pem", f->dir);
    snprintf(f->cfg.tls.client_ca_file, EC_CFG_PATH_MAX, "%s/device-ca.pem", f->dir);
    snprintf(f->cfg.tls.ca_file, EC_CFG_PATH_MAX, "%s/server-ca.pem", f->dir);
    snprintf(f->cfg.source_path, EC_CFG_PATH_MAX, "%s/edgecap.conf", f->dir);
    char *audit = ts_strf("%s/audit.log", f->dir);
    assert_int_equal(ec_audit_open(&f->audit, audit, NULL), EC_OK);
    free(audit);
    f->out = fopen("/dev/null", "w");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ec_audit_close(&f->audit);
    ec_keystore_close(&f->ks);
    ec_config_free(&f->cfg);
    fclose(f->out);
    ts_rmtree(f->dir);
    free(f->dir);
    free(f);
    ec_fault_reset();
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    char *buf = calloc(1, 1 << 16);
    *len = fread(buf, 1, (1 << 16) - 1, fp);
    fclose(fp);
    return buf;
}

/* A new EC key from the key store at dir/name, also set up in `pk`. */
static void new_key(fixture *f, const char *name, mbedtls_pk_context *pk)
{
    char *path = ts_strf("%s/%s", f->dir, name);
    mbedtls_pk_init(pk);
    assert_int_equal(f->ks.ops->generate_identity(f->ks.ctx, EC_KEY_TYPE_EC_P256, path, pk), EC_OK);
    free(path);
}

enum { EKU_NONE, EKU_CLIENT, EKU_SERVER };

typedef struct {
    int from_days, to_days; /* validity, days from now */
    bool ca;
    int eku;
    unsigned key_usage; /* 0: none */
} cert_spec;

static void utc(int days, char out[16])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

/* Writes a PEM certificate for `subject_key` signed by `issuer_key`. */
static void make_cert(const char *path, mbedtls_pk_context *subject_key, const char *subject,
                      mbedtls_pk_context *issuer_key, const char *issuer, const cert_spec *s)
{
    static unsigned serial_n = 1;
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    mbedtls_mpi_lset(&serial, (mbedtls_mpi_sint)(1000 + serial_n++));
    char from[16], to[16];
    utc(s->from_days, from);
    utc(s->to_days, to);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, subject_key);
    mbedtls_x509write_crt_set_issuer_key(&w, issuer_key);
    assert_int_equal(mbedtls_x509write_crt_set_subject_name(&w, subject), 0);
    assert_int_equal(mbedtls_x509write_crt_set_issuer_name(&w, issuer), 0);
    assert_int_equal(mbedtls_x509write_crt_set_serial(&w, &serial), 0);
    assert_int_equal(mbedtls_x509write_crt_set_validity(&w, from, to), 0);
    assert_int_equal(mbedtls_x509write_crt_set_basic_constraints(&w, s->ca, -1), 0);
    if (s->key_usage != 0)
        assert_int_equal(mbedtls_x509write_crt_set_key_usage(&w, s->key_usage), 0);
    if (s->eku != EKU_NONE) {
        /* SEQUENCE { OID id-kp-serverAuth | id-kp-clientAuth } */
        unsigned char eku[] = {0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06,
                               0x01, 0x05, 0x05, 0x07, 0x03, s->eku == EKU_CLIENT ? 0x02 : 0x01};
        assert_int_equal(mbedtls_x509write_crt_set_extension(
                             &w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                             MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, eku, sizeof eku),
                         0);
    }
    unsigned char pem[4096];
    assert_int_equal(mbedtls_x509write_crt_pem(&w, pem, sizeof pem, ec_rng_mbedtls, NULL), 0);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs((const char *)pem, fp);
    fclose(fp);
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
}

static const cert_spec CA = {
    .from_days = -1, .to_days = 60, .ca = true, .key_usage = MBEDTLS_X509_KU_KEY_CERT_SIGN};
static const cert_spec LEAF = {.from_days = -1,
                               .to_days = 30,
                               .eku = EKU_CLIENT,
                               .key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE};

static void test_generate_never_replaces(void **state)
{
    fixture *f = *state;
    mbedtls_pk_context a, b;
    mbedtls_pk_init(&b);
    new_key(f, "client.key", &a);
    struct stat sb;
    assert_int_equal(stat(f->cfg.tls.client_key, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    size_t len1 = 0, len2 = 0;
    char *before = slurp(f->cfg.tls.client_key, &len1);
    /* what was written is the generated key itself (PEM, EC), not a copy
     * of some other key: it parses and its public half is `a`'s */
    mbedtls_pk_context parsed;
    mbedtls_pk_init(&parsed);
    assert_int_equal(
        mbedtls_pk_parse_key(&parsed, (const unsigned char *)before, len1 + 1, NULL, 0), 0);
    assert_int_equal(mbedtls_pk_get_type(&parsed), MBEDTLS_PK_ECKEY);
    char pin_parsed[EC_PIN_BYTES], pin_new[EC_PIN_BYTES];
    assert_int_equal(ec_provision_spki_pin(&parsed, pin_parsed), EC_OK);
    assert_int_equal(ec_provision_spki_pin(&a, pin_new), EC_OK);
    assert_string_equal(pin_parsed, pin_new);
    mbedtls_pk_free(&parsed);
    assert_int_equal(
        f->ks.ops->generate_identity(f->ks.ctx, EC_KEY_TYPE_EC_P256, f->cfg.tls.client_key, &b),
        EC_ERR_EXISTS);
    char *after = slurp(f->cfg.tls.client_key, &len2);
    assert_int_equal(len1, len2);
    assert_memory_equal(before, after, len1);
    /* what the store reads back is the generated key's public half */
    mbedtls_pk_context pub;
    mbedtls_pk_init(&pub);
    assert_int_equal(f->ks.ops->identity_public(f->ks.ctx, f->cfg.tls.client_key, &pub), EC_OK);
    char pin_a[EC_PIN_BYTES], pin_pub[EC_PIN_BYTES];
    assert_int_equal(ec_provision_spki_pin(&a, pin_a), EC_OK);
    assert_int_equal(ec_provision_spki_pin(&pub, pin_pub), EC_OK);
    assert_string_equal(pin_a, pin_pub);
    assert_int_equal(strlen(pin_a), 8 + 44);
    assert_int_equal(strncmp(pin_a, "sha256//", 8), 0);
    char type[32];
    ec_provision_key_type_name(&pub, type, sizeof type);
    assert_string_equal(type, "ec-p256");
    mbedtls_pk_free(&pub);
    free(before);
    free(after);
    mbedtls_pk_free(&a);
    mbedtls_pk_free(&b);
}

static void test_generate_failed_write_leaves_no_key(void **state)
{
    fixture *f = *state;
    mbedtls_pk_context k;
    mbedtls_pk_init(&k);
    ec_fault_arm("keystore.identity_write", 0, 1);
    assert_int_equal(
        f->ks.ops->generate_identity(f->ks.ctx, EC_KEY_TYPE_EC_P256, f->cfg.tls.client_key, &k),
        EC_ERR_IO);
    assert_int_equal(access(f->cfg.tls.client_key, F_OK), -1);
    mbedtls_pk_free(&k);
    /* and the next try makes one */
    new_key(f, "client.key", &k);
    mbedtls_pk_free(&k);
}

static void test_init_writes_csr(void **state)
{
    fixture *f = *state;
    ec_provision_init_params p = {
        .cfg = &f->cfg, .keystore = &f->ks, .audit = f->audit, .key_type = EC_KEY_TYPE_EC_P256};
    char why[EC_PROVISION_WHY_BYTES];
    assert_int_equal(ec_provision_init(&p, f->out, why, sizeof why), EC_OK);
    char *csr_path = ts_strf("%s/client.csr", f->dir);
    mbedtls_x509_csr csr;
    mbedtls_x509_csr_init(&csr);
    assert_int_equal(mbedtls_x509_csr_parse_file(&csr, csr_path), 0);
    char subject[256];
    assert_true(mbedtls_x509_dn_gets(subject, sizeof subject, &csr.subject) > 0);
    assert_string_equal(subject, "O=edgecap, CN=unit-7");
    /* signed by the key it carries, and that is the stored key */
    unsigned char hash[32];
    assert_int_equal(
        mbedtls_md(mbedtls_md_info_from_type(csr.sig_md), csr.cri.p, csr.cri.len, hash), 0);
    assert_int_equal(mbedtls_pk_verify(&csr.pk, csr.sig_md, hash, 0, csr.sig.p, csr.sig.len), 0);
    mbedtls_pk_context pub;
    mbedtls_pk_init(&pub);
    assert_int_equal(f->ks.ops->identity_public(f->ks.ctx, f->cfg.tls.client_key, &pub), EC_OK);
    char pin_csr[EC_PIN_BYTES], pin_key[EC_PIN_BYTES];
    ec_provision_spki_pin(&csr.pk, pin_csr);
    ec_provision_spki_pin(&pub, pin_key);
    assert_string_equal(pin_csr, pin_key);
    /* twice: refused, with the reason */
    assert_int_equal(ec_provision_init(&p, f->out, why, sizeof why), EC_ERR_EXISTS);
    assert_non_null(strstr(why, "a device key already exists at"));
    mbedtls_pk_free(&pub);
    mbedtls_x509_csr_free(&csr);
    free(csr_path);
}

static void test_init_checks_csr_place_first(void **state)
{
    fixture *f = *state;
    char *csr = ts_strf("%s/no-such-dir/device.csr", f->dir);
    ec_provision_init_params p = {.cfg = &f->cfg,
                                  .keystore = &f->ks,
                                  .audit = f->audit,
                                  .key_type = EC_KEY_TYPE_EC_P256,
                                  .csr_path = csr};
    char why[EC_PROVISION_WHY_BYTES];
    assert_int_equal(ec_provision_init(&p, f->out, why, sizeof why), EC_ERR_IO);
    assert_non_null(strstr(why, "cannot write the CSR"));
    assert_int_equal(access(f->cfg.tls.client_key, F_OK), -1); /* no key made */
    free(csr);
}

/* The device key, a device CA, another CA, another key, and the installed
 * certificate `old` that every refusal must leave alone. */
typedef struct {
    mbedtls_pk_context dev, ca, other_ca, other;
    char *old;
    size_t old_len;
} pki;

static void pki_make(fixture *f, pki *k)
{
    new_key(f, "client.key", &k->dev);
    new_key(f, "ca.key", &k->ca);
    new_key(f, "other-ca.key", &k->other_ca);
    new_key(f, "other.key", &k->other);
    make_cert(f->cfg.tls.client_ca_file, &k->ca, "CN=unit device CA", &k->ca, "CN=unit device CA",
              &CA);
    make_cert(f->cfg.tls.ca_file, &k->other_ca, "CN=unit server CA", &k->other_ca,
              "CN=unit server CA", &CA);
    make_cert(f->cfg.tls.client_cert, &k->dev, "O=edgecap,CN=unit-7", &k->ca, "CN=unit device CA",
              &LEAF);
    k->old = slurp(f->cfg.tls.client_cert, &k->old_len);
}

static void pki_free(pki *k)
{
    mbedtls_pk_free(&k->dev);
    mbedtls_pk_free(&k->ca);
    mbedtls_pk_free(&k->other_ca);
    mbedtls_pk_free(&k->other);
    free(k->old);
}

static void assert_unchanged(fixture *f, const pki *k)
{
    size_t len = 0;
    char *now = slurp(f->cfg.tls.client_cert, &len);
    assert_int_equal(len, k->old_len);
    assert_memory_equal(now, k->old, len);
    free(now);
    char *tmp = ts_strf("%s.%ld.tmp", f->cfg.tls.client_cert, (long)getpid());
    assert_int_equal(access(tmp, F_OK), -1);
    free(tmp);
}

typedef enum { BY_CA, BY_OTHER_CA, BY_SELF } signer;

static const struct {
    const char *name;
    bool other_key;
    signer by;
    cert_spec spec;
    const char *file_text; /* instead of a certificate */
    ec_status want;
    const char *fragment;
} refusals[] = {
    {"another key", true, BY_CA, LEAF, NULL, EC_ERR_CRYPTO, "the certificate is for another key"},
    {"expired",
     false,
     BY_CA,
     {.from_days = -30,
      .to_days = -1,
      .eku = EKU_CLIENT,
      .key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE},
     NULL,
     EC_ERR_CRYPTO,
     "the certificate expired on "},
    {"not yet valid",
     false,
     BY_CA,
     {.from_days = 2,
      .to_days = 30,
      .eku = EKU_CLIENT,
      .key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE},
     NULL,
     EC_ERR_CRYPTO,
     "the certificate is not valid before "},
    {"serverAuth only",
     false,
     BY_CA,
     {.from_days = -1,
      .to_days = 30,
      .eku = EKU_SERVER,
      .key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE},
     NULL,
     EC_ERR_CRYPTO,
     "does not include TLS client authentication (clientAuth)"},
    {"key usage without digitalSignature",
     false,
     BY_CA,
     {.from_days = -1,
      .to_days = 30,
      .eku = EKU_CLIENT,
      .key_usage = MBEDTLS_X509_KU_KEY_ENCIPHERMENT},
     NULL,
     EC_ERR_CRYPTO,
     "key usage does not include digitalSignature"},
    {"another CA", false, BY_OTHER_CA, LEAF, NULL, EC_ERR_CRYPTO,
     "does not chain to the device CA in [tls] client_ca_file ("},
    {"self-signed", false, BY_SELF, LEAF, NULL, EC_ERR_CRYPTO,
     "does not chain to the device CA in [tls] client_ca_file ("},
    {"garbage", false, BY_CA, LEAF, "-----BEGIN CERTIFICATE-----\nnot base64\n", EC_ERR_CRYPTO,
     "is not a PEM or DER certificate"},
    {"empty file", false, BY_CA, LEAF, "", EC_ERR_CRYPTO, "is not a PEM or DER certificate"},
};

static void test_install_refusals(void **state)
{
    fixture *f = *state;
    pki k;
    pki_make(f, &k);
    char why[EC_PROVISION_WHY_BYTES];
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        print_message("# %s\n", refusals[i].name);
        char *path = ts_strf("%s/candidate-%zu.pem", f->dir, i);
        if (refusals[i].file_text != NULL) {
            FILE *fp = fopen(path, "w");
            fputs(refusals[i].file_text, fp);
            fclose(fp);
        } else {
            mbedtls_pk_context *subj = refusals[i].other_key ? &k.other : &k.dev;
            mbedtls_pk_context *iss = refusals[i].by == BY_CA         ? &k.ca
                                      : refusals[i].by == BY_OTHER_CA ? &k.other_ca
                                                                      : subj;
            const char *iss_name = refusals[i].by == BY_CA         ? "CN=unit device CA"
                                   : refusals[i].by == BY_OTHER_CA ? "CN=unit server CA"
                                                                   : "O=edgecap,CN=unit-7";
            make_cert(path, subj, "O=edgecap,CN=unit-7", iss, iss_name, &refusals[i].spec);
        }
        assert_int_equal(
            ec_provision_install_cert(&f->cfg, &f->ks, f->audit, path, f->out, why, sizeof why),
            refusals[i].want);
        if (strstr(why, refusals[i].fragment) == NULL)
            fail_msg("%s: \"%s\" lacks \"%s\"", refusals[i].name, why, refusals[i].fragment);
        assert_unchanged(f, &k);
        free(path);
    }
    pki_free(&k);
}

static void test_install_without_client_ca_uses_ca_file(void **state)
{
    fixture *f = *state;
    pki k;
    pki_make(f, &k);
    f->cfg.tls.client_ca_file[0] = '\0';
    char *path = ts_strf("%s/new.pem", f->dir);
    make_cert(path, &k.dev, "O=edgecap,CN=unit-7", &k.ca, "CN=unit device CA", &LEAF);
    char why[EC_PROVISION_WHY_BYTES];
    assert_int_equal(
        ec_provision_install_cert(&f->cfg, &f->ks, f->audit, path, f->out, why, sizeof why),
        EC_ERR_CRYPTO);
    assert_non_null(strstr(why, "does not chain to the device CA in [tls] ca_file ("));
    assert_unchanged(f, &k);
    free(path);
    pki_free(&k);
}

static void test_install_failed_write_keeps_old(void **state)
{
    fixture *f = *state;
    pki k;
    pki_make(f, &k);
    char *path = ts_strf("%s/new.pem", f->dir);
    make_cert(path, &k.dev, "O=edgecap,CN=unit-7", &k.ca, "CN=unit device CA", &LEAF);
    char why[EC_PROVISION_WHY_BYTES];
    static const char *const points[] = {"provision.write", "provision.fsync", "provision.rename"};
    for (size_t i = 0; i < 3; i++) {
        ec_fault_reset();
        ec_fault_arm(points[i], 0, 1);
        assert_int_equal(
            ec_provision_install_cert(&f->cfg, &f->ks, f->audit, path, f->out, why, sizeof why),
            EC_ERR_IO);
        assert_non_null(strstr(why, "cannot write "));
        assert_unchanged(f, &k);
    }
    ec_fault_reset();
    /* then it installs, and show finds it valid and matching */
    assert_int_equal(
        ec_provision_install_cert(&f->cfg, &f->ks, f->audit, path, f->out, why, sizeof why), EC_OK);
    struct stat sb;
    assert_int_equal(stat(f->cfg.tls.client_cert, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0644);
    mbedtls_x509_crt a, b;
    mbedtls_x509_crt_init(&a);
    mbedtls_x509_crt_init(&b);
    assert_int_equal(mbedtls_x509_crt_parse_file(&a, path), 0);
    assert_int_equal(mbedtls_x509_crt_parse_file(&b, f->cfg.tls.client_cert), 0);
    assert_int_equal(a.raw.len, b.raw.len);
    assert_memory_equal(a.raw.p, b.raw.p, a.raw.len);
    assert_int_equal(ec_provision_show(&f->cfg, &f->ks, f->out), EC_OK);
    mbedtls_x509_crt_free(&a);
    mbedtls_x509_crt_free(&b);
    free(path);
    pki_free(&k);
}

static void test_show_reports_problems(void **state)
{
    fixture *f = *state;
    mbedtls_pk_context dev;
    new_key(f, "client.key", &dev);
    assert_int_equal(ec_provision_show(&f->cfg, &f->ks, f->out), EC_ERR_NOT_FOUND);
    mbedtls_pk_context other;
    new_key(f, "other.key", &other);
    make_cert(f->cfg.tls.client_cert, &other, "CN=x", &other, "CN=x", &LEAF);
    assert_int_equal(ec_provision_show(&f->cfg, &f->ks, f->out), EC_ERR_CRYPTO);
    cert_spec expired = LEAF;
    expired.from_days = -10;
    expired.to_days = -2;
    make_cert(f->cfg.tls.client_cert, &dev, "CN=x", &dev, "CN=x", &expired);
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    assert_int_equal(ec_provision_show(&f->cfg, &f->ks, mem), EC_ERR_CRYPTO);
    fclose(mem);
    assert_non_null(strstr(buf, "(EXPIRED)"));
    assert_non_null(strstr(buf, "matches the certificate"));
    free(buf);
    mbedtls_pk_free(&dev);
    mbedtls_pk_free(&other);
}

int main(void)
{
    ec_secmem_init(false);
    ec_rng_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_generate_never_replaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generate_failed_write_leaves_no_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_writes_csr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_checks_csr_place_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_without_client_ca_uses_ca_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_install_failed_write_keeps_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_show_reports_problems, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    ec_rng_free();
    return rc;
}
