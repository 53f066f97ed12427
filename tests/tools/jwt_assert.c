/*
 * Test tool, never shipped on a device: prints one client assertion made by
 * firmware/jwt with the device credentials at CERT and KEY (PEM or DER, read
 * the way the daemon reads them), so that tests/system/jwt_interop.sh can
 * hand it to another JWT implementation.
 *
 *   jwt_assert PS256|ES256 CERT KEY CLIENT_ID AUDIENCE NOW_S LIFETIME_S
 *
 * KEY "pkcs11" signs with the device key in a PKCS#11 token instead, the way
 * the daemon does with [pkcs11] key_label: the module, token label, key label
 * and a file holding the PIN come from EC_P11_MODULE, EC_P11_TOKEN,
 * EC_P11_KEY_LABEL and EC_P11_PIN_FILE.
 *
 * Exit 0 with the assertion on stdout; 65 with the reason on stderr when the
 * key or certificate does not suit; 66 when they cannot be read; 70 when
 * signing fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "edgecap/jwt.h"
#include "edgecap/keystore.h"
#include "edgecap/rng.h"
#include "edgecap/secmem.h"
#include "edgecap/token_key.h"

/* The token key store the environment names (see above). */
static ec_status open_token(ec_keystore *ks)
{
    const char *module = getenv("EC_P11_MODULE"), *token = getenv("EC_P11_TOKEN"),
               *label = getenv("EC_P11_KEY_LABEL"), *pin_file = getenv("EC_P11_PIN_FILE");
    if (module == NULL || token == NULL || label == NULL || pin_file == NULL)
        return EC_ERR_INVALID;
    char buf[256];
    FILE *f = fopen(pin_file, "r");
    if (f == NULL)
        return EC_ERR_NOT_FOUND;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    ec_secret *pin = NULL;
    ec_status st = ec_secret_new(&pin, buf, n);
    memset(buf, 0, sizeof buf);
    if (st != EC_OK)
        return st;
    ec_keystore_pkcs11_params p = {.module = module,
                                   .token_label = token,
                                   .pin = pin,
                                   .kek_label = "edgecap-kek",
                                   .key_label = label};
    st = ec_keystore_pkcs11_open(ks, &p);
    ec_secret_free(&pin);
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 8 || (strcmp(argv[1], "PS256") != 0 && strcmp(argv[1], "ES256") != 0)) {
        fprintf(stderr, "usage: jwt_assert PS256|ES256 CERT KEY CLIENT_ID AUDIENCE NOW_S "
                        "LIFETIME_S\n");
        return EX_USAGE;
    }
    ec_jwt_alg alg = strcmp(argv[1], "PS256") == 0 ? EC_JWT_PS256 : EC_JWT_ES256;
    ec_secmem_init(false);
    ec_rng_init();
    bool token = strcmp(argv[3], "pkcs11") == 0;
    ec_keystore ks = {0};
    uint8_t *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0;
    ec_status st = token ? open_token(&ks) : EC_OK;
    if (st == EC_OK)
        st = token ? ec_keystore_file_certificate(argv[2], &cert, &cert_len)
                   : ec_keystore_file_client_credentials(argv[2], argv[3], &cert, &cert_len, &key,
                                                         &key_len);
    if (st != EC_OK) {
        fprintf(stderr, "jwt_assert: reading the credentials: %s\n", ec_strerror(st));
        ec_keystore_close(&ks);
        return EX_NOINPUT;
    }
    int rc = 0;
    ec_jwt_signer_der der = {0};
    ec_jwt_signer signer;
    char why[256];
    char *jws = NULL;
    size_t jws_len = 0;
    if (token) {
        st = ec_token_key_check_pair(&ks, cert, cert_len, why, sizeof why);
        if (st == EC_OK)
            st = ec_jwt_signer_keystore(&signer, alg, &ks, why, sizeof why);
    } else {
        st = ec_jwt_signer_from_der(&der, alg, key, key_len, cert, cert_len, why, sizeof why);
        signer = ec_jwt_signer_der_get(&der);
    }
    if (st != EC_OK) {
        fprintf(stderr, "jwt_assert: %s: %s\n", ec_strerror(st), why);
        rc = EX_DATAERR;
        goto out;
    }
    ec_jwt_assertion_params p = {.alg = alg,
                                 .cert_der = cert,
                                 .cert_len = cert_len,
                                 .client_id = argv[4],
                                 .audience = argv[5],
                                 .now_s = strtoll(argv[6], NULL, 10),
                                 .lifetime_s = atoi(argv[7])};
    st = ec_jwt_client_assertion(&p, &signer, &jws, &jws_len, NULL);
    if (st != EC_OK) {
        fprintf(stderr, "jwt_assert: signing: %s\n", ec_strerror(st));
        rc = EX_SOFTWARE;
        goto out;
    }
    if (fwrite(jws, 1, jws_len, stdout) != jws_len || putchar('\n') == EOF)
        rc = EX_IOERR;
out:
    ec_secmem_free(jws);
    ec_jwt_signer_der_free(&der);
    ec_secmem_free(cert);
    ec_secmem_free(key);
    ec_keystore_close(&ks);
    ec_rng_free();
    return rc;
}
