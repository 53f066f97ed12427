/*
 * Test tool, never shipped on a device: authenticates and decrypts one spooled
 * segment with the project's own reader and writes the Ogg Opus stream to
 * stdout, so system tests can hand it to opusinfo/opusdec.
 *
 *   spool_cat SPOOL_DIR KEYSTORE_DIR NAME
 *
 * Exit 0 when the whole segment authenticated, 65 when it did not.
 *
 * A tool, not a test: tests/system/pipeline.sh, upload.sh, consent.sh and
 * blob_entra.sh assert its exit status and compare its output.
 */
#include <stdio.h>
#include <sysexits.h>
#include <unistd.h>

#include "edgecap/keystore.h"
#include "edgecap/secmem.h"
#include "edgecap/spool.h"

static ec_status to_stdout(void *user, const uint8_t *plain, size_t len)
{
    (void)user;
    return fwrite(plain, 1, len, stdout) == len ? EC_OK : EC_ERR_IO;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: spool_cat SPOOL_DIR KEYSTORE_DIR NAME\n");
        return EX_USAGE;
    }
    ec_secmem_init(false);
    ec_keystore ks;
    if (ec_keystore_file_open(&ks, argv[2]) != EC_OK)
        return EX_NOINPUT;
    ec_spool_params p = {
        .dir = argv[1], .quota_bytes = INT64_MAX, .keystore = &ks, .read_only = true};
    ec_spool *s = NULL;
    if (ec_spool_open(&s, &p) != EC_OK)
        return EX_NOINPUT;
    ec_spool_entry e;
    ec_status st = ec_spool_read(s, argv[3], to_stdout, NULL, &e);
    fflush(stdout);
    if (st == EC_OK)
        fprintf(stderr, "spool_cat: %s seq=%llu frames=%llu\n", e.name,
                (unsigned long long)e.meta.sequence, (unsigned long long)e.pcm_frames);
    ec_spool_close(&s);
    ec_keystore_close(&ks);
    return st == EC_OK ? 0 : EX_DATAERR;
}
