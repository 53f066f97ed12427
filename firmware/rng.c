/* CTR_DRBG behind a mutex, state in secure memory; see include/edgecap/rng.h. */
#include "edgecap/rng.h"

#include <pthread.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

#include "edgecap/fault.h"
#include "edgecap/secmem.h"

typedef struct {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} rng_state;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static rng_state *state;
/* Secure memory is MADV_WIPEONFORK: a forked child finds the state zeroed
 * (and must never share the parent's stream anyway), so it seeds anew. */
static pid_t state_pid;

static const unsigned char personalisation[] = "edgecap rng v1";

ec_status ec_rng_init(void)
{
    ec_status st = EC_OK;
    pthread_mutex_lock(&lock);
    if (state != NULL && state_pid == getpid())
        goto out;
    state = NULL; /* a parent's wiped state: its mapping is the parent's to free */
    rng_state *s = ec_secmem_alloc(sizeof *s);
    if (s == NULL) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    mbedtls_entropy_init(&s->entropy);
    mbedtls_ctr_drbg_init(&s->drbg);
    if (EC_FAULT("rng.seed") ||
        mbedtls_ctr_drbg_seed(&s->drbg, mbedtls_entropy_func, &s->entropy, personalisation,
                              sizeof personalisation - 1) != 0) {
        mbedtls_ctr_drbg_free(&s->drbg);
        mbedtls_entropy_free(&s->entropy);
        ec_secmem_free(s);
        st = EC_ERR_CRYPTO;
        goto out;
    }
    mbedtls_ctr_drbg_set_prediction_resistance(&s->drbg, MBEDTLS_CTR_DRBG_PR_OFF);
    state = s;
    state_pid = getpid();
out:
    pthread_mutex_unlock(&lock);
    return st;
}

ec_status ec_rng_bytes(void *out, size_t len)
{
    if ((state == NULL || state_pid != getpid()) && ec_rng_init() != EC_OK)
        return EC_ERR_CRYPTO;
    ec_status st = EC_OK;
    unsigned char *p = out;
    pthread_mutex_lock(&lock);
    while (len > 0) {
        size_t n = len < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len : MBEDTLS_CTR_DRBG_MAX_REQUEST;
        if (EC_FAULT("rng.bytes") || mbedtls_ctr_drbg_random(&state->drbg, p, n) != 0) {
            st = EC_ERR_CRYPTO;
            break;
        }
        p += n;
        len -= n;
    }
    pthread_mutex_unlock(&lock);
    return st;
}

int ec_rng_mbedtls(void *ctx, unsigned char *out, size_t len)
{
    (void)ctx;
    return ec_rng_bytes(out, len) == EC_OK ? 0 : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
}

void ec_rng_free(void)
{
    pthread_mutex_lock(&lock);
    if (state != NULL) {
        mbedtls_ctr_drbg_free(&state->drbg);
        mbedtls_entropy_free(&state->entropy);
        ec_secmem_free(state);
        state = NULL;
    }
    pthread_mutex_unlock(&lock);
}
