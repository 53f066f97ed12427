/*
 * Test tool, never shipped on a device: prints one client assertion made by
 * firmware/jwt with the device credentials at CERT and KEY (PEM or DER, read
 * the way the daemon reads them), so that tests/system/jwt_interop.sh can
 * hand it to another JWT implementation.
 *
 *   jwt_assert PS256|ES256 CERT KEY CLIENT_ID AUDIENCE NOW_S LIFETIME_S
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

int main(int argc, char **argv)
{
    if (argc != 8 || (strcmp(argv[1], "PS256") != 0 && strcmp(argv[1], "ES256") != 0)) {
        fprintf(stderr, "usage: jwt_assert PS256|ES256 CERT KEY CLIENT_ID AUDIENCE NOW_S "
                        "LIFETIME_S\n");
        return EX_USAGE;
    }
    ec_jwt_alg alg = strcmp(argv[1], "PS256") == 0 ? EC_JWT_PS256 : EC_JWT_ES256;
    ec_secmem_init(false);
    uint8_t *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0;
    ec_status st =
        ec_keystore_file_client_credentials(argv[2], argv[3], &cert, &cert_len, &key, &key_len);
    if (st != EC_OK) {
        fprintf(stderr, "jwt_assert: reading the credentials: %s\n", ec_strerror(st));
        return EX_NOINPUT;
    }
    int rc = 0;
    ec_jwt_signer_der der = {0};
    char why[256];
    char *jws = NULL;
    size_t jws_len = 0;
    st = ec_jwt_signer_from_der(&der, alg, key, key_len, cert, cert_len, why, sizeof why);
    if (st != EC_OK) {
        fprintf(stderr, "jwt_assert: %s: %s\n", ec_strerror(st), why);
        rc = EX_DATAERR;
        goto out;
    }
    ec_jwt_signer signer = ec_jwt_signer_der_get(&der);
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
    ec_rng_free();
    return rc;
}
