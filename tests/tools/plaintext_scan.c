/*
 * Test tool: looks for plaintext audio in files. Scans every regular file
 * under each DIR (recursively, not following links) for the Ogg/Opus/RIFF
 * magic strings and for any 64-byte run of SOURCE.raw that is not silence,
 * sampled every 997 bytes. Prints each hit and exits 1 if there is any.
 *
 *   plaintext_scan SOURCE.raw DIR...
 *
 * A tool, not a test: tests/system/pipeline.sh asserts its exit status (no
 * plaintext audio in the spool, key store or temporary dirs).
 */

#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUN 64

static unsigned char *source;
static size_t source_len;
static size_t hits, files;

static bool is_silence(const unsigned char *p)
{
    for (size_t i = 0; i < RUN; i += 2) {
        int v = (short)(p[i] | p[i + 1] << 8);
        if (v > 64 || v < -64)
            return false;
    }
    return true;
}

static int scan(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag != FTW_F || !S_ISREG(sb->st_mode))
        return 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    unsigned char *buf = malloc((size_t)sb->st_size + 1);
    size_t n = fread(buf, 1, (size_t)sb->st_size, f);
    fclose(f);
    files++;
    static const char *const magic[] = {"OggS", "OpusHead", "OpusTags", "RIFF"};
    for (size_t m = 0; m < 4; m++) {
        if (memmem(buf, n, magic[m], strlen(magic[m])) != NULL) {
            printf("HIT %s: %s\n", path, magic[m]);
            hits++;
        }
    }
    for (size_t off = 0; off + RUN <= source_len; off += 997) {
        if (is_silence(source + off))
            continue;
        if (memmem(buf, n, source + off, RUN) != NULL) {
            printf("HIT %s: source PCM at source offset %zu\n", path, off);
            hits++;
            break;
        }
    }
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: plaintext_scan SOURCE.raw DIR...\n");
        return 64;
    }
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL)
        return 66;
    fseek(f, 0, SEEK_END);
    source_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    source = malloc(source_len);
    source_len = fread(source, 1, source_len, f);
    fclose(f);
    for (int i = 2; i < argc; i++)
        nftw(argv[i], scan, 16, FTW_PHYS);
    printf("scanned %zu files, %zu hits\n", files, hits);
    return hits == 0 ? 0 : 1;
}
