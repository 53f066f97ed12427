/*
 * systemd credentials: a secret handed to the unit with LoadCredential= or
 * LoadCredentialEncrypted= and read from $CREDENTIALS_DIRECTORY/NAME, so the
 * provisioning file can name it ([auth] sas_token_credential = NAME) instead
 * of holding it. systemd decrypts an encrypted credential before the daemon
 * starts and keeps the plaintext on a private, read-only (where it can,
 * non-swappable) file system; here it goes straight into secure memory.
 *
 * Called by firmware/config while a provisioning file is loaded (at start and
 * at every reload). Never logs or quotes a credential's content.
 */
#ifndef EDGECAP_CREDENTIAL_H
#define EDGECAP_CREDENTIAL_H

#include <stdbool.h>
#include <stddef.h>

#include "edgecap/secret.h"
#include "edgecap/status.h"

/* What a credential name may be: a stricter subset of systemd's credential
 * IDs (which must be valid file names), so a name never walks out of the
 * directory and reads the same in a unit file and in the provisioning file. */
#define EC_CREDENTIAL_NAME_MAX 64
#define EC_CREDENTIAL_NAME_RULE "1-64 of A-Z a-z 0-9 . _ -, not starting with a dot"

bool ec_credential_name_valid(const char *name);

/*
 * Reads credential `name` into a new secret (*out), trailing blanks and line
 * ends removed. It must be a regular file owned by the running user or by
 * root (systemd grants access by ownership or by an ACL), not writable by
 * group or others, not empty, at most `max_bytes` and free of NUL bytes.
 * On failure *out is NULL and `why` says what is wrong (never the content):
 * EC_ERR_INVALID (name), EC_ERR_NOT_FOUND ($CREDENTIALS_DIRECTORY unset or
 * not absolute, or no such credential), EC_ERR_PERM (owner or mode),
 * EC_ERR_IO (not a regular file, unreadable, empty, too long, not text),
 * EC_ERR_NOMEM.
 */
ec_status ec_credential_read(const char *name, size_t max_bytes, ec_secret **out, char *why,
                             size_t why_len);

#endif
