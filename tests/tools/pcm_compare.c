/*
 * Test tool: compares decoded audio with its source. Both are raw S16_LE
 * mono at the same rate. Prints the lengths, the best alignment within
 * +-MAX_LAG samples, the correlation and the SNR at that alignment, and exits
 * 0 when the correlation reaches MIN_CORR.
 *
 *   pcm_compare SOURCE.raw DECODED.raw MIN_CORR [MAX_LAG]
 *
 * A tool, not a test: tests/system/pipeline.sh, consent.sh and image.sh
 * assert its exit status (decoded blobs match what was captured).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static short *load(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    short *buf = malloc((size_t)bytes + 2);
    *n = fread(buf, 2, (size_t)bytes / 2, f);
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: pcm_compare SOURCE DECODED MIN_CORR [MAX_LAG]\n");
        return 64;
    }
    size_t ns = 0, nd = 0;
    short *s = load(argv[1], &ns), *d = load(argv[2], &nd);
    if (s == NULL || d == NULL) {
        fprintf(stderr, "pcm_compare: cannot read input\n");
        return 66;
    }
    double min_corr = atof(argv[3]);
    long max_lag = argc > 4 ? atol(argv[4]) : 480;
    size_t n = ns < nd ? ns : nd;
    double best = -2, best_snr = 0;
    long best_lag = 0;
    for (long lag = -max_lag; lag <= max_lag; lag++) {
        double sxy = 0, sxx = 0, syy = 0, err = 0;
        for (size_t i = (size_t)labs(lag); i + (size_t)labs(lag) < n; i++) {
            double x = s[i], y = d[(long)i + lag];
            sxy += x * y;
            sxx += x * x;
            syy += y * y;
            err += (x - y) * (x - y);
        }
        double c = sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : 0;
        if (c > best) {
            best = c;
            best_lag = lag;
            best_snr = err > 0 ? 10 * log10(sxx / err) : 99;
        }
    }
    printf("source_samples=%zu decoded_samples=%zu lag=%ld correlation=%.4f snr_db=%.1f\n", ns, nd,
           best_lag, best, best_snr);
    free(s);
    free(d);
    return best >= min_corr ? 0 : 1;
}
