/*
 * The encrypted spool: one sealed file per segment (format in seal.h) in a
 * 0700 directory, written as NAME.seg.part (mode 0600, fsync per chunk group)
 * and renamed to NAME.seg (then the directory fsynced) when the segment
 * closes. NAME is DEVICE-YYYYMMDDTHHMMSSZ-SEQUENCE (sequence 10 digits), the
 * stem of the blob name.
 *
 * The final chunk of every segment carries a 20-byte trailer instead of audio:
 * "ECT1" || u64 pcm_frames (at the segment's rate) || u64 payload_bytes (sum of
 * all earlier chunks' plaintext), so a reader can prove it saw everything.
 *
 * On open, .part files left by a crash are recovered up to their last whole
 * authenticated chunk and closed with a trailer; anything that fails
 * authentication (or whose name does not match its header) is moved to
 * quarantine/ with a log line and a counter, never silently dropped. A quota
 * in bytes applies when a segment starts and as it grows: drop-oldest removes
 * the oldest closed segments, refuse-new refuses (EC_ERR_FULL).
 *
 * Removal is crypto-shredding: the wrapped data key in the header is
 * overwritten and synced before the file is unlinked and the directory
 * synced. Within the owner process one writer (the pipeline thread); readers
 * may run beside it.
 */
#ifndef EDGECAP_SPOOL_H
#define EDGECAP_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgecap/audit.h"
#include "edgecap/keystore.h"
#include "edgecap/seal.h"
#include "edgecap/status.h"

#define EC_SPOOL_NAME_MAX 128
#define EC_SPOOL_TRAILER_BYTES 20

typedef struct ec_spool ec_spool;
typedef struct ec_spool_writer ec_spool_writer;

typedef struct {
    const char *dir;
    int64_t quota_bytes;
    int when_full; /* ec_spool_when_full (config.h) */
    const ec_keystore *keystore;
    /* An observer (spool ls, test tools): never takes the owner lock, never
     * recovers, quarantines, writes or removes. */
    bool read_only;
    /* Where sealed, quarantined and dropped segments are audited (may be
     * NULL); it must outlive the spool. */
    ec_audit *audit;
} ec_spool_params;

typedef struct {
    unsigned long closed;      /* segments committed */
    unsigned long recovered;   /* .part files closed after a crash */
    unsigned long quarantined; /* failed authentication or naming */
    unsigned long dropped;     /* removed by drop-oldest */
    unsigned long refused;     /* refused by refuse-new */
    unsigned long removed;     /* removed after acknowledgment */
    unsigned long shredded;    /* crypto-shredded by retention or wipe (ec_spool_shred) */
} ec_spool_stats;

typedef enum { EC_SEG_CLOSED = 0, EC_SEG_WRITING = 1 } ec_segment_state;

typedef struct {
    char name[EC_SPOOL_NAME_MAX];
    ec_segment_meta meta;
    uint64_t size_bytes;
    uint64_t pcm_frames; /* from the trailer; 0 while writing */
    int state;           /* ec_segment_state */
} ec_spool_entry;

/*
 * Opens (creating 0700 if missing) the spool. One process owns a spool at a
 * time (an exclusive flock on the directory, dropped by the kernel if the
 * owner dies): the owner recovers and quarantines at open. A second writer
 * gets EC_ERR_BUSY; a read_only observer opens beside the owner and sees a
 * segment being written as EC_SEG_WRITING. Owner-only calls return
 * EC_ERR_BUSY on an observer.
 */
ec_status ec_spool_open(ec_spool **out, const ec_spool_params *params);
void ec_spool_close(ec_spool **spool);

/*
 * The next segment sequence number: one more than any ever handed out for
 * this spool (kept in DIR/state, written atomically), so numbers stay
 * monotonic across restarts and after segments leave.
 */
ec_status ec_spool_next_sequence(ec_spool *spool, uint64_t *sequence);

/* Builds a segment's NAME from its metadata. */
void ec_spool_segment_name(const ec_segment_meta *meta, char *out, size_t out_len);

/* Starts a segment (applies the quota first). */
ec_status ec_spool_begin(ec_spool *spool, const ec_segment_meta *meta, ec_spool_writer **out);

/* Appends one unit of plaintext (an Ogg page); a unit is never split across
 * chunks. Sealed in chunks of up to 64 KiB. */
ec_status ec_spool_append(ec_spool_writer *w, const uint8_t *plain, size_t len);

/* Seals what is buffered and fsyncs the file: the crash-safe point. */
ec_status ec_spool_flush(ec_spool_writer *w);

/* Flushes, writes the trailer chunk, fsyncs, renames to NAME.seg, fsyncs the
 * directory. *w is freed (NULL) whatever the result. */
ec_status ec_spool_commit(ec_spool_writer **w, uint64_t pcm_frames);

/* Abandons a segment: its .part stays for recovery at the next open. */
void ec_spool_abort(ec_spool_writer **w);

/* Every segment, oldest (lowest sequence) first; *entries is malloc'd. */
ec_status ec_spool_list(ec_spool *spool, ec_spool_entry **entries, size_t *n);

/* Receives authenticated plaintext, chunk by chunk, in order. */
typedef ec_status (*ec_spool_chunk_fn)(void *user, const uint8_t *plain, size_t len);

/*
 * Authenticates and decrypts a closed segment chunk by chunk into `fn` (may be
 * NULL to verify only). Only authenticated bytes reach `fn`, but a segment is
 * proven whole only when this returns EC_OK (a truncation shows at the end).
 * EC_ERR_CRYPTO on any authentication or format failure; the caller decides
 * whether to quarantine. `entry` (may be NULL) receives meta and trailer.
 */
ec_status ec_spool_read(ec_spool *spool, const char *name, ec_spool_chunk_fn fn, void *user,
                        ec_spool_entry *entry);

/* Reads every closed segment; quarantines each that fails. *failed counts them. */
ec_status ec_spool_verify_all(ec_spool *spool, size_t *checked, size_t *failed);

/* Moves a segment to quarantine/, logs it with `reason`, counts it. */
ec_status ec_spool_quarantine(ec_spool *spool, const char *name, const char *reason);

/* Crypto-shreds and removes a closed segment (after acknowledgment). */
ec_status ec_spool_remove(ec_spool *spool, const char *name);

/*
 * Small files beside the segments (the Speech job state). NAME is a plain
 * file name (no '/', no leading dot, not .seg/.part/.tmp, not "state").
 * put: written atomically (NAME.tmp, fsync, rename, directory fsync), mode
 * 0600; owner only. get: at most max_len bytes into a malloc'd,
 * NUL-terminated buffer; EC_ERR_NOT_FOUND when absent, EC_ERR_PROTOCOL when
 * larger; observers may read.
 */
ec_status ec_spool_put_file(ec_spool *spool, const char *name, const uint8_t *data, size_t len);
ec_status ec_spool_get_file(ec_spool *spool, const char *name, size_t max_len, uint8_t **data,
                            size_t *len);

/*
 * Retention and wiping. Every file that holds (or held) sealed audio: closed
 * segments, .part files and whatever sits in quarantine/. The header fields
 * are read as they are, without authentication (a quarantined file may not
 * authenticate): a caller treats them as a claim, not a proof.
 */
typedef enum { EC_ITEM_SEALED = 0, EC_ITEM_PART = 1, EC_ITEM_QUARANTINED = 2 } ec_spool_item_kind;

typedef struct {
    char file[EC_SPOOL_NAME_MAX + 16]; /* its name in the spool or in quarantine/ */
    int kind;                          /* ec_spool_item_kind */
    bool have_header;                  /* a header with the magic was read */
    uint64_t sequence;                 /* from the header */
    int64_t start_utc_ms;              /* from the header */
    int64_t mtime_utc_ms;              /* the file's mtime (a copy can change it) */
    uint64_t size_bytes;
} ec_spool_item;

/* Every item, spool first then quarantine/; *items is malloc'd. Owner only. */
ec_status ec_spool_items(ec_spool *spool, ec_spool_item **items, size_t *n);

/*
 * Crypto-shreds one item: the wrapped data key (header bytes 28..87) is
 * overwritten with zeros in place and the file fsynced, then it is unlinked
 * and its directory fsynced. EC_ERR_BUSY while the segment is being written
 * or is claimed (being uploaded); EC_ERR_NOT_FOUND when it is already gone.
 * A file that is not a regular file is only unlinked. Owner only.
 */
ec_status ec_spool_shred(ec_spool *spool, const ec_spool_item *item);

/*
 * Overwrites a small file beside the segments (ec_spool_put_file's names,
 * e.g. the Speech job state, or the NAME.tmp ec_spool_put_file leaves when
 * it stops before its rename) with zeros, fsyncs, unlinks, fsyncs the
 * directory (ec_file_shred_at); *bytes receives its size. EC_ERR_NOT_FOUND
 * when absent.
 */
ec_status ec_spool_shred_file(ec_spool *spool, const char *name, uint64_t *bytes);

/*
 * The uploader claims a closed segment before it reads it and releases it
 * when done, so that retention never shreds a segment in flight (and an
 * upload never starts on one being shredded). EC_ERR_BUSY when another
 * claim holds it, EC_ERR_NOT_FOUND when it is gone.
 */
ec_status ec_spool_claim(ec_spool *spool, const char *name);
void ec_spool_release(ec_spool *spool, const char *name);

/* Bytes the spool's segments occupy (closed and being written). */
uint64_t ec_spool_used_bytes(ec_spool *spool);

void ec_spool_get_stats(ec_spool *spool, ec_spool_stats *stats);

#endif
