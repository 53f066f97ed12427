/*
 * One error type for the whole daemon. Every fallible function returns an
 * ec_status: EC_OK (0) or a negative code. ec_strerror() turns a code into a
 * short, secret-free phrase for logs and CLI messages. Owned by no stage; every
 * module may use it.
 */
#ifndef EDGECAP_STATUS_H
#define EDGECAP_STATUS_H

typedef enum {
    EC_OK = 0,
    EC_ERR_NOMEM = -1,       /* an allocation (secure or not) failed */
    EC_ERR_INVALID = -2,     /* a caller passed an impossible argument */
    EC_ERR_CONFIG = -3,      /* the provisioning file is invalid */
    EC_ERR_IO = -4,          /* a read, write, fsync or rename failed */
    EC_ERR_PERM = -5,        /* a file's owner or mode is unsafe */
    EC_ERR_MLOCK = -6,       /* memory could not be locked and policy requires it */
    EC_ERR_CRYPTO = -7,      /* a cryptographic operation failed */
    EC_ERR_NOT_FOUND = -8,   /* a named thing does not exist */
    EC_ERR_UNSUPPORTED = -9, /* valid, but not available in this build/board */
    EC_ERR_INTERNAL = -10,   /* a bug: an invariant did not hold */
    EC_ERR_FULL = -11,       /* the spool quota is reached and policy refuses new audio */
    EC_ERR_BUSY = -12,       /* another process owns the resource (the spool) */
    EC_ERR_NETWORK = -13,    /* could not connect, reset, timed out (retryable) */
    EC_ERR_TLS = -14,        /* handshake refused: pin, CA, name, version, client cert */
    EC_ERR_POLICY = -15,     /* refused by our own policy: host, scheme, redirect */
    EC_ERR_PROTOCOL = -16,   /* the server answered, but not with what the contract says */
    EC_ERR_AUTH = -17,       /* the server refused our credentials (401/403, token refused) */
    EC_ERR_EXISTS = -18,     /* refused to replace something that must never be replaced */
} ec_status;

const char *ec_strerror(ec_status status);

#endif
