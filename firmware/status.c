/* Error codes to short phrases; see include/edgecap/status.h. */
#include "edgecap/status.h"

const char *ec_strerror(ec_status status)
{
    switch (status) {
    case EC_OK:
        return "ok";
    case EC_ERR_NOMEM:
        return "out of memory";
    case EC_ERR_INVALID:
        return "invalid argument";
    case EC_ERR_CONFIG:
        return "invalid configuration";
    case EC_ERR_IO:
        return "input/output error";
    case EC_ERR_PERM:
        return "unsafe file owner or mode";
    case EC_ERR_MLOCK:
        return "memory could not be locked";
    case EC_ERR_CRYPTO:
        return "cryptographic failure";
    case EC_ERR_NOT_FOUND:
        return "not found";
    case EC_ERR_UNSUPPORTED:
        return "not supported";
    case EC_ERR_INTERNAL:
        return "internal error";
    case EC_ERR_FULL:
        return "spool full";
    case EC_ERR_BUSY:
        return "in use by another process";
    case EC_ERR_NETWORK:
        return "network failure";
    case EC_ERR_TLS:
        return "TLS handshake refused";
    case EC_ERR_POLICY:
        return "refused by transport policy";
    case EC_ERR_PROTOCOL:
        return "unexpected server answer";
    case EC_ERR_AUTH:
        return "credentials refused";
    case EC_ERR_EXISTS:
        return "already exists";
    }
    return "unknown error";
}
