/*
 * The encrypted spool (see include/edgecap/spool.h). Every path goes through
 * the spool directory's file descriptor (openat/renameat/unlinkat), so a
 * renamed or replaced directory cannot redirect writes. Plaintext is only
 * ever in the writer's and reader's secure buffers.
 */
#include "edgecap/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "edgecap/config.h"
#include "edgecap/fault.h"
#include "edgecap/file.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"

#include <mbedtls/platform_util.h>

#define CHUNK_TARGET_BYTES (64 * 1024)
#define SEG_SUFFIX ".seg"
#define PART_SUFFIX ".seg.part"
#define QUARANTINE_DIR "quarantine"
#define STATE_FILE "state"
#define TRAILER_MAGIC "ECT1"
/* Left free on the spool's file system for what else lives there (keys,
 * state, the audit log, transcripts): the spool never fills it further. */
#define DISK_RESERVE_BYTES (2u * 1024 * 1024)

struct ec_spool {
    char dir[EC_CFG_PATH_MAX];
    int dirfd;
    int qdirfd;
    int64_t quota_bytes;
    int when_full;
    const ec_keystore *ks;
    pthread_mutex_t lock;
    uint64_t used_bytes;
    uint64_t max_sequence_seen; /* + 1 = lowest sequence still free */
    bool any_sequence_seen;
    bool owner;      /* holds the directory lock: may write, recover, quarantine */
    ec_audit *audit; /* may be NULL */
    ec_spool_stats stats;
    /* NAMEs retention must not touch (under `lock`): the segment being
     * written, and those claimed by the uploader or being shredded */
    char writing[EC_SPOOL_NAME_MAX];
    char busy[4][EC_SPOOL_NAME_MAX];
};

struct ec_spool_writer {
    ec_spool *spool;
    int fd;
    char name[EC_SPOOL_NAME_MAX];
    ec_seal *seal;
    uint8_t *plain; /* secure, CHUNK_TARGET_BYTES or a larger single unit */
    size_t plain_cap;
    size_t plain_len;
    uint8_t *sealed; /* ciphertext staging, CHUNK_TARGET_BYTES + overhead */
    size_t sealed_cap;
    uint64_t payload_bytes;
    bool broken; /* a write failed: only abort is left */
};

/* ---- small helpers ------------------------------------------------------ */

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static ec_status write_all(int fd, const uint8_t *p, size_t len)
{
    return EC_FAULT("spool.write") ? EC_ERR_IO : ec_file_write_all(fd, p, len);
}

static ec_status pread_all(int fd, uint8_t *p, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return EC_ERR_IO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return EC_OK;
}

static ec_status sync_fd(int fd)
{
    if (EC_FAULT("spool.fsync") || fsync(fd) != 0)
        return EC_ERR_IO;
    return EC_OK;
}

void ec_spool_segment_name(const ec_segment_meta *meta, char *out, size_t out_len)
{
    time_t secs = (time_t)(meta->start_utc_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[24];
    strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(out, out_len, "%s-%s-%010" PRIu64, meta->device_id, when, meta->sequence);
}

/* NAME (with or without .seg) to the closed segment's file name; refuses
 * anything that is not a plain name in the spool directory. */
static ec_status segment_file(const char *name, char *out, size_t out_len)
{
    size_t n = strlen(name);
    if (n == 0 || name[0] == '.' || strchr(name, '/') != NULL || n >= EC_SPOOL_NAME_MAX + 4)
        return EC_ERR_INVALID;
    int w = snprintf(out, out_len, "%s%s", name, has_suffix(name, SEG_SUFFIX) ? "" : SEG_SUFFIX);
    return w > 0 && (size_t)w < out_len ? EC_OK : EC_ERR_INVALID;
}

/* The sequence number at the end of NAME[.seg[.part]]. */
static bool name_sequence(const char *name, uint64_t *seq)
{
    const char *dash = strrchr(name, '-');
    if (dash == NULL)
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(dash + 1, &end, 10);
    if (errno != 0 || end == dash + 1 || (*end != '\0' && *end != '.'))
        return false;
    *seq = v;
    return true;
}

static void note_sequence(ec_spool *s, const char *name)
{
    uint64_t seq;
    if (name_sequence(name, &seq) && (!s->any_sequence_seen || seq > s->max_sequence_seen)) {
        s->max_sequence_seen = seq;
        s->any_sequence_seen = true;
    }
}

/* ---- Ogg page scan (for the trailer of a recovered segment) ------------- */

typedef struct {
    int preskip;      /* from OpusHead, -1 until seen */
    uint64_t granule; /* highest page granule position seen */
    bool have_granule;
} ogg_scan;

/* Walks whole Ogg pages in one chunk's plaintext; stops at anything else. */
static void scan_ogg(ogg_scan *sc, const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (len - off >= 27 && memcmp(p + off, "OggS", 4) == 0) {
        size_t nseg = p[off + 26];
        if (len - off < 27 + nseg)
            return;
        size_t body = 0;
        for (size_t i = 0; i < nseg; i++)
            body += p[off + 27 + i];
        size_t start = off + 27 + nseg;
        if (len - start < body)
            return;
        uint64_t g = le64(p + off + 6);
        if (g != UINT64_MAX && (!sc->have_granule || g > sc->granule)) {
            sc->granule = g;
            sc->have_granule = true;
        }
        if (body >= 12 && memcmp(p + start, "OpusHead", 8) == 0)
            sc->preskip = p[start + 10] | p[start + 11] << 8;
        off = start + body;
    }
}

/* ---- open, scan, recover ------------------------------------------------ */

static ec_status open_dir(const char *path, int parentfd, int *out)
{
    if (mkdirat(parentfd, path, 0700) != 0 && errno != EEXIST)
        return EC_ERR_IO;
    int fd = openat(parentfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return EC_ERR_IO;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_uid != geteuid() || (sb.st_mode & 077) != 0) {
        ec_log(EC_LOG_ERROR, "spool_dir_unsafe", EC_LOG_STR("path", path),
               EC_LOG_STR("expected", "a directory owned by the running user, mode 0700"));
        close(fd);
        return EC_ERR_PERM;
    }
    *out = fd;
    return EC_OK;
}

static ec_status read_header(int fd, uint8_t *header, size_t *header_len)
{
    uint8_t first[12];
    if (pread_all(fd, first, sizeof first, 0) != EC_OK)
        return EC_ERR_CRYPTO;
    if (ec_seal_header_length(first, sizeof first, header_len) != EC_OK)
        return EC_ERR_CRYPTO;
    if (pread_all(fd, header, *header_len, 0) != EC_OK)
        return EC_ERR_CRYPTO;
    return EC_OK;
}

typedef struct {
    uint64_t payload_bytes;
    uint64_t good_end;   /* offset after the last authenticated chunk */
    uint64_t pcm_frames; /* from the trailer */
    bool complete;       /* a valid trailer chunk ended the file */
    bool torn_tail;      /* recovering: the walk ended in what a crash leaves */
    ogg_scan ogg;
} walk_result;

/* Whether every byte from `off` to `size` is zero (a crash can extend a file
 * with blocks that were never written). */
static bool tail_is_zero(int fd, uint64_t off, uint64_t size, uint8_t *buf, size_t buf_len)
{
    while (off < size) {
        size_t n = size - off < buf_len ? (size_t)(size - off) : buf_len;
        if (pread_all(fd, buf, n, (off_t)off) != EC_OK)
            return false;
        for (size_t i = 0; i < n; i++) {
            if (buf[i] != 0)
                return false;
        }
        off += n;
    }
    return true;
}

static bool trailer_ok(const uint8_t *plain, size_t len, const walk_result *res)
{
    return len == EC_SPOOL_TRAILER_BYTES && memcmp(plain, TRAILER_MAGIC, 4) == 0 &&
           get_u64(plain + 12) == res->payload_bytes;
}

/*
 * Walks a segment's chunks from the header on; `fn` receives each data
 * chunk's plaintext, and only after it authenticated.
 *
 * closed: the chunk that ends the file must be a final (trailer) chunk;
 * anything else is EC_ERR_CRYPTO.
 *
 * recovering (a .part): a final chunk at the end means the segment was
 * complete (a crash between trailer and rename); a chunk cut short by the end
 * of the file, or an all-zero rest of the file, is what a crash leaves
 * (torn_tail, EC_OK); a whole chunk that does not authenticate is
 * EC_ERR_CRYPTO: that is damage or tampering, for quarantine, not for cutting.
 */
static ec_status walk_chunks(int fd, uint64_t file_size, size_t header_len, ec_seal *seal,
                             bool closed, ec_spool_chunk_fn fn, void *user, walk_result *res)
{
    static const ec_seal_flag finals[] = {EC_SEAL_FINAL, EC_SEAL_FINAL_RECOVERED};
    ec_status st = EC_OK;
    /* sized for the usual chunk (the writer's target), grown for a larger one:
     * locking 2 MiB per read cost more than the reading */
    size_t cap = CHUNK_TARGET_BYTES;
    uint8_t *buf = ec_secmem_alloc(cap + EC_SEAL_CHUNK_OVERHEAD);
    uint8_t *plain = ec_secmem_alloc(cap);
    memset(res, 0, sizeof *res);
    res->ogg.preskip = -1;
    if (buf == NULL || plain == NULL) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    uint64_t off = header_len;
    res->good_end = off;
    while (off < file_size) {
        size_t len = 0;
        bool whole_present = file_size - off >= EC_SEAL_CHUNK_OVERHEAD;
        if (whole_present) {
            if (pread_all(fd, buf, EC_SEAL_LENGTH_BYTES, (off_t)off) != EC_OK) {
                st = EC_ERR_IO;
                break;
            }
            whole_present = ec_seal_chunk_plain_length(buf, &len) == EC_OK &&
                            file_size - off >= EC_SEAL_CHUNK_OVERHEAD + len;
        }
        if (!whole_present) {
            /* the file ends inside this chunk */
            if (closed)
                st = EC_ERR_CRYPTO;
            else
                res->torn_tail = true;
            break;
        }
        size_t whole = EC_SEAL_CHUNK_OVERHEAD + len;
        if (len > cap) {
            uint8_t *nb = ec_secmem_alloc(len + EC_SEAL_CHUNK_OVERHEAD);
            uint8_t *np = ec_secmem_alloc(len);
            if (nb == NULL || np == NULL) {
                ec_secmem_free(nb);
                ec_secmem_free(np);
                st = EC_ERR_NOMEM;
                break;
            }
            memcpy(nb, buf, EC_SEAL_LENGTH_BYTES);
            ec_secmem_free(buf);
            ec_secmem_free(plain);
            buf = nb;
            plain = np;
            cap = len;
        }
        if (pread_all(fd, buf + EC_SEAL_LENGTH_BYTES, whole - EC_SEAL_LENGTH_BYTES,
                      (off_t)(off + EC_SEAL_LENGTH_BYTES)) != EC_OK) {
            st = EC_ERR_IO;
            break;
        }
        bool at_end = off + whole == file_size;
        bool final = false;
        bool ok = false;
        if (!closed || !at_end)
            ok = ec_seal_unseal_chunk(seal, buf, whole, EC_SEAL_MORE, plain) == EC_OK;
        for (size_t f = 0; !ok && at_end && f < 2; f++) {
            ok = ec_seal_unseal_chunk(seal, buf, whole, finals[f], plain) == EC_OK;
            final = ok;
        }
        if (!ok) {
            if (!closed && tail_is_zero(fd, off, file_size, buf, cap))
                res->torn_tail = true;
            else
                st = EC_ERR_CRYPTO;
            break;
        }
        off += whole;
        if (final) {
            if (!trailer_ok(plain, len, res)) {
                st = EC_ERR_CRYPTO;
                break;
            }
            res->pcm_frames = get_u64(plain + 4);
            res->complete = true;
            res->good_end = off;
            break;
        }
        res->payload_bytes += len;
        res->good_end = off;
        if (!closed)
            scan_ogg(&res->ogg, plain, len);
        if (fn != NULL && (st = fn(user, plain, len)) != EC_OK)
            break;
    }
    if (st == EC_OK && closed && !res->complete)
        st = EC_ERR_CRYPTO; /* truncated: the trailer is missing */
out:
    ec_secmem_free(buf);
    ec_secmem_free(plain);
    return st;
}

static ec_status move_to_quarantine(ec_spool *s, const char *file, const char *reason)
{
    struct stat sb;
    uint64_t size =
        fstatat(s->dirfd, file, &sb, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)sb.st_size : 0;
    /* Never replace earlier evidence of the same name. */
    char target[EC_SPOOL_NAME_MAX + 16];
    snprintf(target, sizeof target, "%s", file);
    int rc = renameat2(s->dirfd, file, s->qdirfd, target, RENAME_NOREPLACE);
    for (int i = 1; rc != 0 && errno == EEXIST && i < 100; i++) {
        snprintf(target, sizeof target, "%s.%d", file, i);
        rc = renameat2(s->dirfd, file, s->qdirfd, target, RENAME_NOREPLACE);
    }
    if (rc != 0) {
        ec_log(EC_LOG_ERROR, "quarantine_failed", EC_LOG_STR("segment", file),
               EC_LOG_STR("reason", strerror(errno)));
        return EC_ERR_IO;
    }
    (void)sync_fd(s->qdirfd);
    (void)sync_fd(s->dirfd);
    pthread_mutex_lock(&s->lock);
    s->stats.quarantined++;
    s->used_bytes = s->used_bytes > size ? s->used_bytes - size : 0;
    unsigned long count = s->stats.quarantined;
    pthread_mutex_unlock(&s->lock);
    ec_log(EC_LOG_WARN, "segment_quarantined", EC_LOG_STR("segment", file),
           EC_LOG_STR("reason", reason), EC_LOG_UINT("quarantined_total", count));
    ec_audit(s->audit, "segment_quarantined", EC_LOG_STR("segment", file),
             EC_LOG_STR("moved_to", target), EC_LOG_STR("reason", reason),
             EC_LOG_UINT("bytes", size));
    return EC_OK;
}

/* Opens a segment file and its seal; checks the name against the header. */
static ec_status open_segment(ec_spool *s, const char *file, bool writable, int *fd_out,
                              ec_seal **seal, ec_segment_meta *meta, size_t *header_len,
                              uint64_t *size, const char **why)
{
    *why = "cannot open";
    /* O_NONBLOCK: a FIFO planted under a segment's name must not hang us. */
    int fd = openat(s->dirfd, file,
                    (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    struct stat sb;
    uint8_t header[EC_SEAL_HEADER_MAX];
    ec_status st = EC_ERR_IO;
    if (fstat(fd, &sb) != 0)
        goto fail;
    if (!S_ISREG(sb.st_mode)) {
        *why = "not a regular file";
        st = EC_ERR_CRYPTO;
        goto fail;
    }
    *size = (uint64_t)sb.st_size;
    *why = "header does not authenticate";
    st = read_header(fd, header, header_len);
    if (st == EC_OK)
        st = ec_seal_open(seal, s->ks, header, *header_len, meta);
    if (st != EC_OK)
        goto fail;
    char expect[EC_SPOOL_NAME_MAX];
    ec_spool_segment_name(meta, expect, sizeof expect);
    size_t n = strlen(expect);
    if (strncmp(file, expect, n) != 0 ||
        (strcmp(file + n, SEG_SUFFIX) != 0 && strcmp(file + n, PART_SUFFIX) != 0)) {
        *why = "file name does not match the sealed header";
        ec_seal_free(seal);
        st = EC_ERR_CRYPTO;
        goto fail;
    }
    *fd_out = fd;
    return EC_OK;
fail:
    close(fd);
    return st;
}

static ec_status shred_and_unlink(ec_spool *s, const char *file);

/* Seals the trailer as the last chunk at `off` and syncs. */
static ec_status write_trailer(int fd, ec_seal *seal, ec_seal_flag flag, uint64_t off,
                               uint64_t pcm_frames, uint64_t payload_bytes, uint64_t *written)
{
    uint8_t trailer[EC_SPOOL_TRAILER_BYTES];
    uint8_t out[EC_SPOOL_TRAILER_BYTES + EC_SEAL_CHUNK_OVERHEAD];
    memcpy(trailer, TRAILER_MAGIC, 4);
    put_u64(trailer + 4, pcm_frames);
    put_u64(trailer + 12, payload_bytes);
    ec_status st = ec_seal_chunk(seal, trailer, sizeof trailer, flag, out);
    if (st != EC_OK)
        return st;
    if (lseek(fd, (off_t)off, SEEK_SET) < 0)
        return EC_ERR_IO;
    st = write_all(fd, out, sizeof out);
    if (st == EC_OK)
        st = sync_fd(fd);
    *written = sizeof out;
    return st;
}

static ec_status finish_rename(ec_spool *s, const char *part, const char *closed)
{
    if (EC_FAULT("spool.rename") || renameat(s->dirfd, part, s->dirfd, closed) != 0)
        return EC_ERR_IO;
    return sync_fd(s->dirfd);
}

/*
 * Closes a .part left by a crash: keeps every chunk that authenticates up to
 * where the crash cut the file, seals a recovery trailer (its own nonce flag,
 * so a torn final chunk's nonce is never reused), renames. A .part that is
 * damaged rather than cut goes to quarantine whole; one without audio is
 * removed; on an I/O error it is left for the next start.
 */
static void recover_part(ec_spool *s, const char *part)
{
    int fd = -1;
    ec_seal *seal = NULL;
    ec_segment_meta meta;
    size_t header_len = 0;
    uint64_t size = 0;
    const char *why = NULL;
    char closed[EC_SPOOL_NAME_MAX + 8];
    snprintf(closed, sizeof closed, "%.*s", (int)(strlen(part) - strlen(".part")), part);
    ec_status st = open_segment(s, part, true, &fd, &seal, &meta, &header_len, &size, &why);
    if (st == EC_ERR_CRYPTO) {
        (void)move_to_quarantine(s, part, why);
        return;
    }
    if (st != EC_OK) {
        ec_log(EC_LOG_ERROR, "segment_recovery_failed", EC_LOG_STR("segment", part),
               EC_LOG_STATUS(st), EC_LOG_STR("effect", "left for the next start"));
        return;
    }
    walk_result res;
    st = walk_chunks(fd, size, header_len, seal, false, NULL, NULL, &res);
    if (st == EC_ERR_CRYPTO) {
        close(fd);
        fd = -1;
        (void)move_to_quarantine(s, part, "a whole chunk does not authenticate");
        goto out;
    }
    if (st != EC_OK) {
        ec_log(EC_LOG_ERROR, "segment_recovery_failed", EC_LOG_STR("segment", part),
               EC_LOG_STATUS(st), EC_LOG_STR("effect", "left for the next start"));
        goto out;
    }
    if (res.complete) {
        /* closed before the crash, not yet renamed: make it durable, rename */
        if (sync_fd(fd) != EC_OK || finish_rename(s, part, closed) != EC_OK)
            goto failed;
        pthread_mutex_lock(&s->lock);
        s->stats.recovered++;
        pthread_mutex_unlock(&s->lock);
        ec_log(EC_LOG_WARN, "segment_recovered", EC_LOG_STR("segment", closed),
               EC_LOG_UINT("kept_bytes", res.payload_bytes), EC_LOG_UINT("cut_bytes", 0),
               EC_LOG_UINT("pcm_frames", res.pcm_frames));
        ec_audit(s->audit, "segment_recovered", EC_LOG_STR("segment", closed),
                 EC_LOG_UINT("payload_bytes", res.payload_bytes), EC_LOG_UINT("cut_bytes", 0),
                 EC_LOG_UINT("pcm_frames", res.pcm_frames));
        goto out;
    }
    uint64_t frames = 0;
    if (res.ogg.have_granule && res.ogg.preskip >= 0 && res.ogg.granule > (uint64_t)res.ogg.preskip)
        frames = (res.ogg.granule - (uint64_t)res.ogg.preskip) * meta.sample_rate_hz / 48000;
    if (res.payload_bytes == 0 || frames == 0) {
        /* a header, or Ogg headers without one audio page: no audio to keep */
        close(fd);
        fd = -1;
        if (shred_and_unlink(s, part) == EC_OK)
            ec_log(EC_LOG_INFO, "segment_empty_removed", EC_LOG_STR("segment", part));
        goto out;
    }
    uint64_t trailer_bytes = 0;
    if (ftruncate(fd, (off_t)res.good_end) != 0 ||
        write_trailer(fd, seal, EC_SEAL_FINAL_RECOVERED, res.good_end, frames, res.payload_bytes,
                      &trailer_bytes) != EC_OK ||
        finish_rename(s, part, closed) != EC_OK)
        goto failed;
    pthread_mutex_lock(&s->lock);
    s->stats.recovered++;
    s->used_bytes = s->used_bytes > size ? s->used_bytes - size : 0;
    s->used_bytes += res.good_end + trailer_bytes;
    pthread_mutex_unlock(&s->lock);
    ec_log(EC_LOG_WARN, "segment_recovered", EC_LOG_STR("segment", closed),
           EC_LOG_UINT("kept_bytes", res.payload_bytes),
           EC_LOG_UINT("cut_bytes", size - res.good_end), EC_LOG_UINT("pcm_frames", frames));
    ec_audit(s->audit, "segment_recovered", EC_LOG_STR("segment", closed),
             EC_LOG_UINT("payload_bytes", res.payload_bytes),
             EC_LOG_UINT("cut_bytes", size - res.good_end), EC_LOG_UINT("pcm_frames", frames));
    goto out;
failed:
    ec_log(EC_LOG_ERROR, "segment_recovery_failed", EC_LOG_STR("segment", part),
           EC_LOG_STR("reason", strerror(errno)), EC_LOG_STR("effect", "left for the next start"));
out:
    ec_seal_free(&seal);
    if (fd >= 0)
        close(fd);
}

/* Lists file names in the spool directory with `suffix`, sorted. */
static ec_status list_names(ec_spool *s, const char *suffix, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    /* a description of its own: a dup would share the directory position
     * with other threads listing at the same time */
    int fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return EC_ERR_IO;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return EC_ERR_IO;
    }
    rewinddir(d);
    size_t cap = 0;
    ec_status st = EC_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!has_suffix(de->d_name, suffix) || strlen(de->d_name) >= EC_SPOOL_NAME_MAX + 8)
            continue;
        if (strcmp(suffix, SEG_SUFFIX) == 0 && has_suffix(de->d_name, PART_SUFFIX))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(*names, cap * sizeof **names);
            if (grown == NULL) {
                st = EC_ERR_NOMEM;
                break;
            }
            *names = grown;
        }
        (*names)[*n] = strdup(de->d_name);
        if ((*names)[*n] == NULL) {
            st = EC_ERR_NOMEM;
            break;
        }
        (*n)++;
    }
    closedir(d);
    return st;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int by_sequence(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    uint64_t sx = 0, sy = 0;
    bool okx = name_sequence(x, &sx), oky = name_sequence(y, &sy);
    if (okx != oky)
        return okx ? -1 : 1;
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return strcmp(x, y);
}

static ec_status read_state(ec_spool *s)
{
    int fd = openat(s->dirfd, STATE_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? EC_OK : EC_ERR_IO;
    char buf[64] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unsigned long long next = 0;
    if (n <= 0 || sscanf(buf, "next_sequence=%llu", &next) != 1) {
        ec_log(EC_LOG_ERROR, "spool_state_invalid", EC_LOG_STR("dir", s->dir));
        return EC_ERR_IO;
    }
    if (next > 0 && (!s->any_sequence_seen || next - 1 > s->max_sequence_seen)) {
        s->max_sequence_seen = next - 1;
        s->any_sequence_seen = true;
    }
    return EC_OK;
}

/* NAME.tmp, written and fsynced, renamed over NAME, directory fsynced. */
static ec_status write_atomic(ec_spool *s, const char *name, const uint8_t *data, size_t len)
{
    char tmp[EC_SPOOL_NAME_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return EC_ERR_IO;
    ec_status st = write_all(fd, data, len);
    if (st == EC_OK)
        st = sync_fd(fd);
    close(fd);
    if (st == EC_OK && (EC_FAULT("spool.put_file") || renameat(s->dirfd, tmp, s->dirfd, name) != 0))
        st = EC_ERR_IO;
    if (st == EC_OK)
        st = sync_fd(s->dirfd);
    if (st != EC_OK)
        (void)unlinkat(s->dirfd, tmp, 0);
    return st;
}

static ec_status write_state(ec_spool *s, uint64_t next)
{
    char buf[64];
    int len = snprintf(buf, sizeof buf, "next_sequence=%" PRIu64 "\n", next);
    return write_atomic(s, STATE_FILE, (const uint8_t *)buf, (size_t)len);
}

static bool aux_name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n < EC_SPOOL_NAME_MAX && strchr(name, '/') == NULL && name[0] != '.' &&
           strcmp(name, STATE_FILE) != 0 && !has_suffix(name, SEG_SUFFIX) &&
           !has_suffix(name, PART_SUFFIX) && !has_suffix(name, ".tmp");
}

ec_status ec_spool_put_file(ec_spool *s, const char *name, const uint8_t *data, size_t len)
{
    if (!aux_name_ok(name))
        return EC_ERR_INVALID;
    if (!s->owner)
        return EC_ERR_BUSY;
    pthread_mutex_lock(&s->lock);
    ec_status st = write_atomic(s, name, data, len);
    pthread_mutex_unlock(&s->lock);
    return st;
}

ec_status ec_spool_get_file(ec_spool *s, const char *name, size_t max_len, uint8_t **data,
                            size_t *len)
{
    *data = NULL;
    *len = 0;
    if (!aux_name_ok(name))
        return EC_ERR_INVALID;
    int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    struct stat sb;
    ec_status st = EC_OK;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        st = EC_ERR_IO;
    else if ((uint64_t)sb.st_size > max_len)
        st = EC_ERR_PROTOCOL;
    uint8_t *buf = st == EC_OK ? malloc((size_t)sb.st_size + 1) : NULL;
    if (st == EC_OK && buf == NULL)
        st = EC_ERR_NOMEM;
    size_t got = 0;
    while (st == EC_OK && got < (size_t)sb.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)sb.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            st = EC_ERR_IO;
        else
            got += (size_t)n;
    }
    close(fd);
    if (st != EC_OK) {
        free(buf);
        return st;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return EC_OK;
}

static void warn_if_disk_smaller(const ec_spool *s);

ec_status ec_spool_open(ec_spool **out, const ec_spool_params *p)
{
    *out = NULL;
    if (p->keystore == NULL || p->keystore->ops == NULL || p->dir == NULL ||
        strlen(p->dir) >= EC_CFG_PATH_MAX)
        return EC_ERR_INVALID;
    ec_spool *s = calloc(1, sizeof *s);
    if (s == NULL)
        return EC_ERR_NOMEM;
    pthread_mutex_init(&s->lock, NULL);
    snprintf(s->dir, sizeof s->dir, "%s", p->dir);
    s->dirfd = s->qdirfd = -1;
    s->quota_bytes = p->quota_bytes;
    s->when_full = p->when_full;
    s->ks = p->keystore;
    s->audit = p->audit;
    char **names = NULL, **parts = NULL;
    size_t n = 0, n_parts = 0;
    ec_status st = open_dir(p->dir, AT_FDCWD, &s->dirfd);
    if (st == EC_OK)
        st = open_dir(QUARANTINE_DIR, s->dirfd, &s->qdirfd);
    if (st != EC_OK)
        goto fail;

    /* One owner at a time: only the process holding the lock writes,
     * recovers or quarantines (a second one would "recover" the owner's open
     * segment under its feet). The kernel drops the lock if the owner dies. */
    if (flock(s->dirfd, LOCK_EX | LOCK_NB) == 0) {
        s->owner = true;
    } else if (errno != EWOULDBLOCK) {
        st = EC_ERR_IO;
        goto fail;
    } else if (!p->read_only) {
        ec_log(EC_LOG_ERROR, "spool_busy", EC_LOG_STR("dir", p->dir),
               EC_LOG_STR("reason", "another edgecap process owns this spool"));
        st = EC_ERR_BUSY;
        goto fail;
    }
    if (p->read_only && s->owner) {
        /* an observer never modifies: give the lock back */
        flock(s->dirfd, LOCK_UN);
        s->owner = false;
    }

    /* Sizes and sequence numbers of everything present, quarantine included. */
    if ((st = list_names(s, SEG_SUFFIX, &names, &n)) != EC_OK ||
        (st = list_names(s, PART_SUFFIX, &parts, &n_parts)) != EC_OK)
        goto fail;
    for (size_t i = 0; i < n + n_parts; i++) {
        const char *name = i < n ? names[i] : parts[i - n];
        struct stat sb;
        note_sequence(s, name);
        if (fstatat(s->dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0)
            s->used_bytes += (uint64_t)sb.st_size;
    }
    DIR *qd = NULL;
    int qfd = openat(s->qdirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (qfd >= 0 && (qd = fdopendir(qfd)) != NULL) {
        struct dirent *de;
        while ((de = readdir(qd)) != NULL)
            note_sequence(s, de->d_name);
        closedir(qd);
    } else if (qfd >= 0) {
        close(qfd);
    }
    if ((st = read_state(s)) != EC_OK)
        goto fail;

    if (s->owner) {
        /* Closed segments: the header must authenticate under our KEK. */
        for (size_t i = 0; i < n; i++) {
            int fd = -1;
            ec_seal *seal = NULL;
            ec_segment_meta meta;
            size_t hl;
            uint64_t size;
            const char *why;
            ec_status rc = open_segment(s, names[i], false, &fd, &seal, &meta, &hl, &size, &why);
            if (rc == EC_OK) {
                ec_seal_free(&seal);
                close(fd);
            } else if (rc == EC_ERR_CRYPTO) {
                (void)move_to_quarantine(s, names[i], why);
            }
        }
        for (size_t i = 0; i < n_parts; i++)
            recover_part(s, parts[i]);
        warn_if_disk_smaller(s);
    }
    free_names(names, n);
    free_names(parts, n_parts);
    *out = s;
    return EC_OK;
fail:
    free_names(names, n);
    free_names(parts, n_parts);
    ec_spool_close(&s);
    return st;
}

void ec_spool_close(ec_spool **spool)
{
    if (spool == NULL || *spool == NULL)
        return;
    ec_spool *s = *spool;
    if (s->dirfd >= 0)
        close(s->dirfd);
    if (s->qdirfd >= 0)
        close(s->qdirfd);
    pthread_mutex_destroy(&s->lock);
    free(s);
    *spool = NULL;
}

ec_status ec_spool_next_sequence(ec_spool *s, uint64_t *sequence)
{
    if (!s->owner)
        return EC_ERR_BUSY;
    pthread_mutex_lock(&s->lock);
    uint64_t next = s->any_sequence_seen ? s->max_sequence_seen + 1 : 0;
    ec_status st = write_state(s, next + 1);
    if (st == EC_OK) {
        s->max_sequence_seen = next;
        s->any_sequence_seen = true;
        *sequence = next;
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* ---- quota -------------------------------------------------------------- */

/* Oldest closed segment's name, if any. */
static bool oldest_closed(ec_spool *s, char *out, size_t out_len, const char *except)
{
    char **names = NULL;
    size_t n = 0;
    bool found = false;
    if (list_names(s, SEG_SUFFIX, &names, &n) == EC_OK && n > 0) {
        qsort(names, n, sizeof *names, by_sequence);
        for (size_t i = 0; i < n && !found; i++) {
            if (except != NULL && strncmp(names[i], except, strlen(except)) == 0)
                continue;
            snprintf(out, out_len, "%s", names[i]);
            found = true;
        }
    }
    free_names(names, n);
    return found;
}

/* The bytes an unprivileged writer may still put on the spool's file
 * system; false when the file system does not say. The "spool.disk_full"
 * fault point reports none (tests). */
static bool disk_free(const ec_spool *s, uint64_t *free_bytes)
{
    if (EC_FAULT("spool.disk_full")) {
        *free_bytes = 0;
        return true;
    }
    struct statvfs v;
    if (fstatvfs(s->dirfd, &v) != 0 || v.f_frsize == 0)
        return false;
    *free_bytes = (uint64_t)v.f_bavail * v.f_frsize;
    return true;
}

/* Said once at open: the quota cannot be reached on this file system (a
 * data partition smaller than the quota), so the disk is the limit. */
static void warn_if_disk_smaller(const ec_spool *s)
{
    uint64_t free_bytes;
    if (!disk_free(s, &free_bytes))
        return;
    uint64_t room =
        s->used_bytes + (free_bytes > DISK_RESERVE_BYTES ? free_bytes - DISK_RESERVE_BYTES : 0);
    if (room >= (uint64_t)s->quota_bytes)
        return;
    ec_log(
        EC_LOG_WARN, "spool_quota_above_disk", EC_LOG_UINT("quota_bytes", s->quota_bytes),
        EC_LOG_UINT("room_bytes", room), EC_LOG_STR("dir", s->dir),
        EC_LOG_STR("effect",
                   s->when_full == EC_WHEN_FULL_REFUSE_NEW
                       ? "the disk is the limit: new audio is refused when it is full"
                       : "the disk is the limit: the oldest segments are dropped when it is full"));
}

/* Makes room for `incoming` more bytes, or says it cannot: within the quota,
 * and on the disk with DISK_RESERVE_BYTES to spare (a data partition
 * smaller than the quota fills before it; then the disk is the limit and the
 * same policy applies). */
static ec_status apply_quota(ec_spool *s, uint64_t incoming, const char *writing)
{
    /* Dropping for the disk stops when drops free nothing (the victim still
     * open elsewhere, or something else filling the file system): it must
     * not empty the spool for space it cannot win. */
    uint64_t last_free = UINT64_MAX;
    int no_gain = 0;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        bool over = s->used_bytes + incoming > (uint64_t)s->quota_bytes;
        pthread_mutex_unlock(&s->lock);
        uint64_t free_bytes = 0;
        bool known = disk_free(s, &free_bytes);
        bool disk = !over && known && free_bytes < incoming + DISK_RESERVE_BYTES;
        if (!over && !disk)
            return EC_OK;
        if (disk) {
            no_gain = last_free != UINT64_MAX && free_bytes <= last_free ? no_gain + 1 : 0;
            last_free = free_bytes;
        }
        const char *reason = disk ? "disk full (drop-oldest)" : "spool quota (drop-oldest)";
        char victim[EC_SPOOL_NAME_MAX + 8];
        if (s->when_full == EC_WHEN_FULL_REFUSE_NEW || no_gain >= 2 ||
            !oldest_closed(s, victim, sizeof victim, writing)) {
            pthread_mutex_lock(&s->lock);
            s->stats.refused++;
            unsigned long refused = s->stats.refused;
            pthread_mutex_unlock(&s->lock);
            ec_log(EC_LOG_WARN, "spool_full", EC_LOG_STR("limit", disk ? "disk" : "quota"),
                   EC_LOG_UINT("quota_bytes", s->quota_bytes),
                   EC_LOG_UINT("disk_free_bytes", free_bytes),
                   EC_LOG_STR("policy", s->when_full == EC_WHEN_FULL_REFUSE_NEW ? "refuse-new"
                                                                                : "drop-oldest"),
                   EC_LOG_UINT("refused_total", refused));
            return EC_ERR_FULL;
        }
        ec_status st = shred_and_unlink(s, victim);
        if (st == EC_ERR_NOT_FOUND)
            continue; /* uploaded or purged meanwhile: room was made anyway */
        if (st != EC_OK)
            return st;
        pthread_mutex_lock(&s->lock);
        s->stats.dropped++;
        pthread_mutex_unlock(&s->lock);
        ec_log(EC_LOG_WARN, "segment_dropped", EC_LOG_STR("segment", victim),
               EC_LOG_STR("reason", reason));
        ec_audit(s->audit, "segment_dropped", EC_LOG_STR("segment", victim),
                 EC_LOG_STR("reason", reason));
    }
}

/* ---- writing ------------------------------------------------------------ */

ec_status ec_spool_begin(ec_spool *s, const ec_segment_meta *meta, ec_spool_writer **out)
{
    *out = NULL;
    if (!s->owner)
        return EC_ERR_BUSY;
    ec_spool_writer *w = calloc(1, sizeof *w);
    if (w == NULL)
        return EC_ERR_NOMEM;
    w->spool = s;
    w->fd = -1;
    ec_spool_segment_name(meta, w->name, sizeof w->name);
    uint8_t header[EC_SEAL_HEADER_MAX];
    size_t header_len = 0;
    char part[EC_SPOOL_NAME_MAX + 16];
    snprintf(part, sizeof part, "%s" PART_SUFFIX, w->name);
    ec_status st = apply_quota(s, EC_SEAL_HEADER_MAX, NULL);
    if (st != EC_OK)
        goto fail;
    w->plain_cap = CHUNK_TARGET_BYTES;
    w->plain = ec_secmem_alloc(w->plain_cap);
    w->sealed_cap = CHUNK_TARGET_BYTES + EC_SEAL_CHUNK_OVERHEAD;
    w->sealed = malloc(w->sealed_cap);
    if (w->plain == NULL || w->sealed == NULL) {
        st = EC_ERR_NOMEM;
        goto fail;
    }
    if ((st = ec_seal_create(&w->seal, s->ks, meta, header, &header_len)) != EC_OK)
        goto fail;
    w->fd = openat(s->dirfd, part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (w->fd < 0) {
        ec_log(EC_LOG_ERROR, "segment_create_failed", EC_LOG_STR("segment", part),
               EC_LOG_STR("reason", strerror(errno)));
        st = EC_ERR_IO;
        goto fail;
    }
    if ((st = write_all(w->fd, header, header_len)) != EC_OK || (st = sync_fd(w->fd)) != EC_OK ||
        (st = sync_fd(s->dirfd)) != EC_OK)
        goto fail;
    pthread_mutex_lock(&s->lock);
    s->used_bytes += header_len;
    snprintf(s->writing, sizeof s->writing, "%s", w->name);
    pthread_mutex_unlock(&s->lock);
    *out = w;
    return EC_OK;
fail:
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
        unlinkat(s->dirfd, part, 0);
    }
    ec_seal_free(&w->seal);
    ec_secmem_free(w->plain);
    free(w->sealed);
    free(w);
    return st;
}

/* Seals the buffered plaintext as one chunk and writes it. */
static ec_status seal_buffered(ec_spool_writer *w)
{
    if (w->plain_len == 0)
        return EC_OK;
    ec_spool *s = w->spool;
    size_t need = w->plain_len + EC_SEAL_CHUNK_OVERHEAD;
    ec_status st = apply_quota(s, need, w->name);
    if (st != EC_OK)
        return st;
    if (need > w->sealed_cap) {
        uint8_t *grown = realloc(w->sealed, need);
        if (grown == NULL)
            return EC_ERR_NOMEM;
        w->sealed = grown;
        w->sealed_cap = need;
    }
    st = ec_seal_chunk(w->seal, w->plain, w->plain_len, false, w->sealed);
    if (st == EC_OK)
        st = write_all(w->fd, w->sealed, need);
    if (st != EC_OK) {
        w->broken = true;
        return st;
    }
    pthread_mutex_lock(&s->lock);
    s->used_bytes += need;
    pthread_mutex_unlock(&s->lock);
    w->payload_bytes += w->plain_len;
    mbedtls_platform_zeroize(w->plain, w->plain_len);
    w->plain_len = 0;
    return EC_OK;
}

ec_status ec_spool_append(ec_spool_writer *w, const uint8_t *plain, size_t len)
{
    if (w == NULL || w->broken || len > EC_SEAL_CHUNK_MAX)
        return EC_ERR_INVALID;
    if (w->plain_len + len > w->plain_cap) {
        ec_status st = seal_buffered(w);
        if (st != EC_OK)
            return st;
    }
    if (len > w->plain_cap) {
        /* one unit larger than the target: it gets a buffer of its own */
        uint8_t *big = ec_secmem_alloc(len);
        if (big == NULL)
            return EC_ERR_NOMEM;
        ec_secmem_free(w->plain);
        w->plain = big;
        w->plain_cap = len;
    }
    memcpy(w->plain + w->plain_len, plain, len);
    w->plain_len += len;
    return EC_OK;
}

ec_status ec_spool_flush(ec_spool_writer *w)
{
    if (w == NULL || w->broken)
        return EC_ERR_INVALID;
    ec_status st = seal_buffered(w);
    if (st == EC_OK)
        st = sync_fd(w->fd);
    /* A full spool refused the buffered unit before anything was written:
     * the file is intact and can still be closed. */
    if (st != EC_OK && st != EC_ERR_FULL)
        w->broken = true;
    return st;
}

static void writer_free(ec_spool_writer *w)
{
    pthread_mutex_lock(&w->spool->lock);
    if (strcmp(w->spool->writing, w->name) == 0)
        w->spool->writing[0] = '\0';
    pthread_mutex_unlock(&w->spool->lock);
    if (w->fd >= 0)
        close(w->fd);
    ec_seal_free(&w->seal);
    ec_secmem_free(w->plain);
    free(w->sealed);
    free(w);
}

ec_status ec_spool_commit(ec_spool_writer **wp, uint64_t pcm_frames)
{
    if (wp == NULL || *wp == NULL)
        return EC_ERR_INVALID;
    ec_spool_writer *w = *wp;
    *wp = NULL;
    ec_spool *s = w->spool;
    ec_status st = w->broken ? EC_ERR_IO : ec_spool_flush(w);
    if (st == EC_ERR_FULL) {
        /* Keep what is sealed; the unit the quota refused is dropped (the
         * refusal was counted and logged). */
        mbedtls_platform_zeroize(w->plain, w->plain_len);
        w->plain_len = 0;
        st = sync_fd(w->fd);
    }
    char part[EC_SPOOL_NAME_MAX + 16], closed[EC_SPOOL_NAME_MAX + 8];
    snprintf(part, sizeof part, "%s" PART_SUFFIX, w->name);
    snprintf(closed, sizeof closed, "%s" SEG_SUFFIX, w->name);
    off_t end = lseek(w->fd, 0, SEEK_CUR);
    uint64_t trailer_bytes = 0;
    if (st == EC_OK && end < 0)
        st = EC_ERR_IO;
    if (st == EC_OK)
        st = write_trailer(w->fd, w->seal, EC_SEAL_FINAL, (uint64_t)end, pcm_frames,
                           w->payload_bytes, &trailer_bytes);
    if (st == EC_OK)
        st = finish_rename(s, part, closed);
    if (st == EC_OK) {
        pthread_mutex_lock(&s->lock);
        s->used_bytes += trailer_bytes;
        s->stats.closed++;
        pthread_mutex_unlock(&s->lock);
        ec_log(EC_LOG_INFO, "segment_sealed", EC_LOG_STR("segment", closed),
               EC_LOG_UINT("payload_bytes", w->payload_bytes),
               EC_LOG_UINT("pcm_frames", pcm_frames));
        ec_audit(s->audit, "segment_sealed", EC_LOG_STR("segment", closed),
                 EC_LOG_UINT("payload_bytes", w->payload_bytes),
                 EC_LOG_UINT("pcm_frames", pcm_frames),
                 EC_LOG_UINT("bytes", (uint64_t)end + trailer_bytes));
    } else {
        /* The .part stays: the next open recovers it up to its last whole chunk. */
        ec_log(EC_LOG_ERROR, "segment_commit_failed", EC_LOG_STR("segment", part),
               EC_LOG_STATUS(st));
    }
    writer_free(w);
    return st;
}

void ec_spool_abort(ec_spool_writer **wp)
{
    if (wp == NULL || *wp == NULL)
        return;
    writer_free(*wp);
    *wp = NULL;
}

/* ---- reading, listing, verifying ---------------------------------------- */

ec_status ec_spool_read(ec_spool *s, const char *name, ec_spool_chunk_fn fn, void *user,
                        ec_spool_entry *entry)
{
    char file[EC_SPOOL_NAME_MAX + 8];
    if (segment_file(name, file, sizeof file) != EC_OK)
        return EC_ERR_INVALID;
    int fd = -1;
    ec_seal *seal = NULL;
    ec_segment_meta meta;
    size_t header_len;
    uint64_t size;
    const char *why;
    ec_status st = open_segment(s, file, false, &fd, &seal, &meta, &header_len, &size, &why);
    if (st != EC_OK)
        return st;
    walk_result res;
    st = walk_chunks(fd, size, header_len, seal, true, fn, user, &res);
    if (entry != NULL) {
        memset(entry, 0, sizeof *entry);
        snprintf(entry->name, sizeof entry->name, "%.*s", (int)(strlen(file) - 4), file);
        entry->meta = meta;
        entry->size_bytes = size;
        entry->pcm_frames = res.pcm_frames;
        entry->state = EC_SEG_CLOSED;
    }
    ec_seal_free(&seal);
    close(fd);
    return st;
}

/*
 * What a listing needs of a closed segment: its header and its trailer. The
 * chunk lengths are walked to find the final chunk, which alone is
 * authenticated (its counter and the header hash bind it to this file: a
 * changed length anywhere moves it and it fails; the segment is then listed
 * without frames). The audio itself is authenticated when it is read.
 */
static ec_status peek_entry(ec_spool *s, const char *file, ec_spool_entry *entry)
{
    int fd = -1;
    ec_seal *seal = NULL;
    ec_segment_meta meta;
    size_t header_len;
    uint64_t size;
    const char *why;
    ec_status st = open_segment(s, file, false, &fd, &seal, &meta, &header_len, &size, &why);
    if (st != EC_OK)
        return st;
    uint64_t off = header_len, payload = 0;
    uint32_t index = 0;
    uint8_t chunk[EC_SPOOL_TRAILER_BYTES + EC_SEAL_CHUNK_OVERHEAD];
    uint8_t plain[EC_SPOOL_TRAILER_BYTES];
    /* listed even when the trailer fails (no frames then): whoever reads it
     * next finds out and quarantines it */
    memset(entry, 0, sizeof *entry);
    snprintf(entry->name, sizeof entry->name, "%.*s", (int)(strlen(file) - 4), file);
    entry->meta = meta;
    entry->size_bytes = size;
    entry->state = EC_SEG_CLOSED;
    while (size - off >= EC_SEAL_CHUNK_OVERHEAD) {
        size_t len;
        if (pread_all(fd, chunk, EC_SEAL_LENGTH_BYTES, (off_t)off) != EC_OK ||
            ec_seal_chunk_plain_length(chunk, &len) != EC_OK ||
            size - off < EC_SEAL_CHUNK_OVERHEAD + len)
            break;
        if (off + EC_SEAL_CHUNK_OVERHEAD + len == size) {
            if (len == EC_SPOOL_TRAILER_BYTES &&
                pread_all(fd, chunk, sizeof chunk, (off_t)off) == EC_OK &&
                ec_seal_seek(seal, index) == EC_OK &&
                (ec_seal_unseal_chunk(seal, chunk, sizeof chunk, EC_SEAL_FINAL, plain) == EC_OK ||
                 ec_seal_unseal_chunk(seal, chunk, sizeof chunk, EC_SEAL_FINAL_RECOVERED, plain) ==
                     EC_OK) &&
                memcmp(plain, TRAILER_MAGIC, 4) == 0 && get_u64(plain + 12) == payload)
                entry->pcm_frames = get_u64(plain + 4);
            break;
        }
        payload += len;
        off += EC_SEAL_CHUNK_OVERHEAD + len;
        index++;
    }
    ec_seal_free(&seal);
    close(fd);
    return st;
}

ec_status ec_spool_list(ec_spool *s, ec_spool_entry **entries, size_t *n)
{
    *entries = NULL;
    *n = 0;
    char **closed = NULL, **parts = NULL;
    size_t nc = 0, np = 0;
    ec_status st = list_names(s, SEG_SUFFIX, &closed, &nc);
    if (st == EC_OK)
        st = list_names(s, PART_SUFFIX, &parts, &np);
    ec_spool_entry *out = st == EC_OK ? calloc(nc + np + 1, sizeof *out) : NULL;
    if (st == EC_OK && out == NULL)
        st = EC_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; st == EC_OK && i < nc; i++) {
        if (peek_entry(s, closed[i], &out[k]) == EC_OK)
            k++;
    }
    for (size_t i = 0; st == EC_OK && i < np; i++) {
        int fd = -1;
        ec_seal *seal = NULL;
        size_t hl;
        uint64_t size;
        const char *why;
        if (open_segment(s, parts[i], false, &fd, &seal, &out[k].meta, &hl, &size, &why) == EC_OK) {
            snprintf(out[k].name, sizeof out[k].name, "%.*s",
                     (int)(strlen(parts[i]) - strlen(PART_SUFFIX)), parts[i]);
            out[k].size_bytes = size;
            out[k].state = EC_SEG_WRITING;
            ec_seal_free(&seal);
            close(fd);
            k++;
        }
    }
    free_names(closed, nc);
    free_names(parts, np);
    if (st != EC_OK) {
        free(out);
        return st;
    }
    /* oldest first */
    for (size_t i = 1; i < k; i++) {
        ec_spool_entry tmp = out[i];
        size_t j = i;
        while (j > 0 && out[j - 1].meta.sequence > tmp.meta.sequence) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = tmp;
    }
    *entries = out;
    *n = k;
    return EC_OK;
}

ec_status ec_spool_quarantine(ec_spool *s, const char *name, const char *reason)
{
    char file[EC_SPOOL_NAME_MAX + 8];
    if (segment_file(name, file, sizeof file) != EC_OK)
        return EC_ERR_INVALID;
    if (!s->owner)
        return EC_ERR_BUSY;
    return move_to_quarantine(s, file, reason);
}

ec_status ec_spool_verify_all(ec_spool *s, size_t *checked, size_t *failed)
{
    *checked = 0;
    *failed = 0;
    char **names = NULL;
    size_t n = 0;
    ec_status st = list_names(s, SEG_SUFFIX, &names, &n);
    if (st != EC_OK)
        return st;
    qsort(names, n, sizeof *names, by_sequence);
    for (size_t i = 0; i < n; i++) {
        ec_status rc = ec_spool_read(s, names[i], NULL, NULL, NULL);
        (*checked)++;
        if (rc == EC_ERR_CRYPTO) {
            (*failed)++;
            if (s->owner)
                (void)move_to_quarantine(s, names[i], "does not authenticate");
            else
                ec_log(EC_LOG_WARN, "segment_unauthentic", EC_LOG_STR("segment", names[i]),
                       EC_LOG_STR("effect", "left in place: another process owns the spool"));
        } else if (rc != EC_OK) {
            (*failed)++;
        }
    }
    free_names(names, n);
    return EC_OK;
}

/* Where the wrapped data key sits in a segment header (seal.h). */
#define WRAPPED_KEY_OFFSET 28

/*
 * Crypto-shreds `file` in directory `dirfd`: the wrapped data key is
 * overwritten with zeros and the file fsynced (from here on nothing can open
 * its chunks, even where flash keeps old blocks), then it is unlinked and the
 * directory fsynced. Anything but a regular file is only unlinked. *size
 * receives the file's size, *unlinked whether it is gone.
 */
static ec_status shred_at(int dirfd, const char *file, uint64_t *size, bool *unlinked)
{
    struct stat sb;
    *size = 0;
    *unlinked = false;
    if (fstatat(dirfd, file, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
    ec_status st = EC_OK;
    if (S_ISREG(sb.st_mode)) {
        int fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
            return errno == ENOENT ? EC_ERR_NOT_FOUND : EC_ERR_IO;
        uint8_t zeros[EC_WRAPPED_KEY_BYTES] = {0};
        /* a file cut inside its header may hold part of the wrapped key */
        off_t end = sb.st_size < WRAPPED_KEY_OFFSET + (off_t)sizeof zeros
                        ? sb.st_size
                        : WRAPPED_KEY_OFFSET + (off_t)sizeof zeros;
        size_t n = end > WRAPPED_KEY_OFFSET ? (size_t)(end - WRAPPED_KEY_OFFSET) : 0;
        if ((n > 0 && pwrite(fd, zeros, n, WRAPPED_KEY_OFFSET) != (ssize_t)n) || fsync(fd) != 0)
            st = EC_ERR_IO;
        close(fd);
        *size = (uint64_t)sb.st_size;
    }
    /* a test stops here to look at what flash would keep */
    if (st == EC_OK && EC_FAULT("spool.shred_unlink"))
        st = EC_ERR_IO;
    if (st == EC_OK && unlinkat(dirfd, file, 0) != 0)
        st = EC_ERR_IO;
    if (st == EC_OK) {
        *unlinked = true;
        st = sync_fd(dirfd);
    }
    return st;
}

/* Crypto-shreds a segment of the spool and takes it off the byte count. */
static ec_status shred_and_unlink(ec_spool *s, const char *file)
{
    uint64_t size = 0;
    bool unlinked = false;
    ec_status st = shred_at(s->dirfd, file, &size, &unlinked);
    if (!unlinked)
        return st;
    pthread_mutex_lock(&s->lock);
    s->used_bytes = s->used_bytes > size ? s->used_bytes - size : 0;
    pthread_mutex_unlock(&s->lock);
    return st;
}

ec_status ec_spool_remove(ec_spool *s, const char *name)
{
    char file[EC_SPOOL_NAME_MAX + 8];
    if (segment_file(name, file, sizeof file) != EC_OK)
        return EC_ERR_INVALID;
    if (!s->owner)
        return EC_ERR_BUSY;
    ec_status st = shred_and_unlink(s, file);
    if (st == EC_OK) {
        pthread_mutex_lock(&s->lock);
        s->stats.removed++;
        pthread_mutex_unlock(&s->lock);
    }
    return st;
}

/* ---- retention: items, shredding, claims ---------------------------------- */

/* NAME of a segment file (NAME.seg or NAME.seg.part) into `out`. */
static void stem_of(const char *file, char *out, size_t out_len)
{
    size_t n = strlen(file);
    if (has_suffix(file, PART_SUFFIX))
        n -= strlen(PART_SUFFIX);
    else if (has_suffix(file, SEG_SUFFIX))
        n -= strlen(SEG_SUFFIX);
    snprintf(out, out_len, "%.*s", (int)n, file);
}

/* Called with `lock` held. */
static bool busy_locked(ec_spool *s, const char *name)
{
    if (s->writing[0] != '\0' && strcmp(s->writing, name) == 0)
        return true;
    for (size_t i = 0; i < sizeof s->busy / sizeof s->busy[0]; i++) {
        if (s->busy[i][0] != '\0' && strcmp(s->busy[i], name) == 0)
            return true;
    }
    return false;
}

/* Marks NAME busy: EC_ERR_BUSY when it already is (or no slot is free). */
static ec_status mark_busy(ec_spool *s, const char *name)
{
    ec_status st = EC_ERR_BUSY;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; !busy_locked(s, name) && i < sizeof s->busy / sizeof s->busy[0]; i++) {
        if (s->busy[i][0] == '\0') {
            snprintf(s->busy[i], sizeof s->busy[i], "%s", name);
            st = EC_OK;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

ec_status ec_spool_claim(ec_spool *s, const char *name)
{
    char file[EC_SPOOL_NAME_MAX + 8], stem[EC_SPOOL_NAME_MAX];
    if (segment_file(name, file, sizeof file) != EC_OK)
        return EC_ERR_INVALID;
    stem_of(file, stem, sizeof stem);
    ec_status st = mark_busy(s, stem);
    struct stat sb;
    if (st == EC_OK && fstatat(s->dirfd, file, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
        ec_spool_release(s, name);
        st = EC_ERR_NOT_FOUND;
    }
    return st;
}

void ec_spool_release(ec_spool *s, const char *name)
{
    char stem[EC_SPOOL_NAME_MAX];
    stem_of(name, stem, sizeof stem);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < sizeof s->busy / sizeof s->busy[0]; i++) {
        if (strcmp(s->busy[i], stem) == 0) {
            s->busy[i][0] = '\0';
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* Size, mtime and the header's claims (magic, sequence, start) of one file. */
static void read_item(int dirfd, const char *file, int kind, ec_spool_item *it)
{
    memset(it, 0, sizeof *it);
    snprintf(it->file, sizeof it->file, "%s", file);
    it->kind = kind;
    struct stat sb;
    if (fstatat(dirfd, file, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        return;
    it->size_bytes = (uint64_t)sb.st_size;
    it->mtime_utc_ms = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
    if (!S_ISREG(sb.st_mode))
        return;
    int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return;
    uint8_t h[EC_SEAL_HEADER_FIXED_BYTES];
    if (pread_all(fd, h, sizeof h, 0) == EC_OK &&
        memcmp(h, EC_SEAL_MAGIC, EC_SEAL_MAGIC_BYTES) == 0) {
        it->have_header = true;
        it->sequence = get_u64(h + 96);
        it->start_utc_ms = (int64_t)get_u64(h + 104);
    }
    close(fd);
}

static ec_status add_item(ec_spool_item **items, size_t *n, size_t *cap)
{
    if (*n < *cap)
        return EC_OK;
    size_t grown_cap = *cap ? *cap * 2 : 16;
    ec_spool_item *grown = realloc(*items, grown_cap * sizeof **items);
    if (grown == NULL)
        return EC_ERR_NOMEM;
    *items = grown;
    *cap = grown_cap;
    return EC_OK;
}

ec_status ec_spool_items(ec_spool *s, ec_spool_item **items, size_t *n)
{
    *items = NULL;
    *n = 0;
    if (!s->owner)
        return EC_ERR_BUSY;
    static const char *const suffixes[] = {SEG_SUFFIX, PART_SUFFIX};
    size_t cap = 0;
    ec_status st = EC_OK;
    for (int k = 0; st == EC_OK && k < 2; k++) {
        char **names = NULL;
        size_t count = 0;
        st = list_names(s, suffixes[k], &names, &count);
        if (count > 1)
            qsort(names, count, sizeof *names, by_sequence);
        for (size_t i = 0; st == EC_OK && i < count; i++) {
            if ((st = add_item(items, n, &cap)) == EC_OK)
                read_item(s->dirfd, names[i], k == 0 ? EC_ITEM_SEALED : EC_ITEM_PART,
                          &(*items)[(*n)++]);
        }
        free_names(names, count);
    }
    int qfd = st == EC_OK ? openat(s->qdirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    DIR *qd = qfd >= 0 ? fdopendir(qfd) : NULL;
    if (st == EC_OK && qd == NULL)
        st = EC_ERR_IO;
    struct dirent *de;
    while (st == EC_OK && (de = readdir(qd)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            strlen(de->d_name) >= sizeof(*items)->file)
            continue;
        if ((st = add_item(items, n, &cap)) == EC_OK)
            read_item(s->qdirfd, de->d_name, EC_ITEM_QUARANTINED, &(*items)[(*n)++]);
    }
    if (qd != NULL)
        closedir(qd);
    else if (qfd >= 0)
        close(qfd);
    if (st != EC_OK) {
        free(*items);
        *items = NULL;
        *n = 0;
    }
    return st;
}

ec_status ec_spool_shred(ec_spool *s, const ec_spool_item *item)
{
    if (!s->owner)
        return EC_ERR_BUSY;
    const char *file = item->file;
    if (file[0] == '\0' || file[0] == '.' || strchr(file, '/') != NULL)
        return EC_ERR_INVALID;
    bool quarantined = item->kind == EC_ITEM_QUARANTINED;
    char stem[EC_SPOOL_NAME_MAX];
    stem_of(file, stem, sizeof stem);
    /* quarantine/ holds nothing the writer or the uploader uses */
    ec_status st = quarantined ? EC_OK : mark_busy(s, stem);
    if (st != EC_OK)
        return st;
    if (quarantined) {
        uint64_t size = 0;
        bool unlinked = false;
        st = shred_at(s->qdirfd, file, &size, &unlinked);
    } else {
        st = shred_and_unlink(s, file);
        ec_spool_release(s, stem);
    }
    if (st == EC_OK) {
        pthread_mutex_lock(&s->lock);
        s->stats.shredded++;
        pthread_mutex_unlock(&s->lock);
    }
    return st;
}

/* An aux name, or the NAME.tmp that ec_spool_put_file writes before its rename. */
static bool aux_or_tmp_name_ok(const char *name)
{
    char base[EC_SPOOL_NAME_MAX];
    size_t n = strlen(name);
    if (aux_name_ok(name))
        return true;
    if (!has_suffix(name, ".tmp") || n - 4 >= sizeof base)
        return false;
    memcpy(base, name, n - 4);
    base[n - 4] = '\0';
    return aux_name_ok(base);
}

ec_status ec_spool_shred_file(ec_spool *s, const char *name, uint64_t *bytes)
{
    *bytes = 0;
    if (!aux_or_tmp_name_ok(name))
        return EC_ERR_INVALID;
    if (!s->owner)
        return EC_ERR_BUSY;
    return ec_file_shred_at(s->dirfd, name, bytes);
}

uint64_t ec_spool_used_bytes(ec_spool *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->used_bytes;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void ec_spool_get_stats(ec_spool *s, ec_spool_stats *stats)
{
    pthread_mutex_lock(&s->lock);
    *stats = s->stats;
    pthread_mutex_unlock(&s->lock);
}
