/*
 * shard_progress.c: progress of `chimera tokenize` on stderr. On a terminal, one
 * bar line redrawn five times a second (percentage, MB/s of input read, ETA);
 * otherwise (logs, pipes, tests) a plain line every ten seconds.
 */
#include "data/shard.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double chm_progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void chm_progress_start(chm_progress *p, int enabled, int64_t total) {
    p->enabled = enabled;
    p->tty = enabled && isatty(STDERR_FILENO);
    p->t0 = p->last = chm_progress_now();
    p->total = total;
    p->drawn = 0;
}

/* "h:mm:ss", or "?" when unknown. */
static void fmt_eta(double s, char out[32]) {
    if (s < 0 || s > 1e7) {
        snprintf(out, 32, "?");
        return;
    }
    long t = (long)(s + 0.5);
    snprintf(out, 32, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

/* 12345678 -> "12.3M". */
static void fmt_count(int64_t n, char out[16]) {
    if (n >= 1000000000) snprintf(out, 16, "%.2fG", (double)n / 1e9);
    else if (n >= 1000000) snprintf(out, 16, "%.1fM", (double)n / 1e6);
    else if (n >= 10000) snprintf(out, 16, "%.1fk", (double)n / 1e3);
    else snprintf(out, 16, "%lld", (long long)n);
}

void chm_progress_update(chm_progress *p, int64_t done, int64_t docs, int64_t tokens) {
    if (!p->enabled) return;
    double t = chm_progress_now();
    if (t - p->last < (p->tty ? 0.2 : 10.0)) return;
    p->last = t;
    double el = t - p->t0 > 1e-9 ? t - p->t0 : 1e-9;
    double frac = p->total > 0 ? (double)done / (double)p->total : 0;
    if (frac > 1) frac = 1;
    double eta = done > 0 && p->total > 0 ? (double)(p->total - done) * el / (double)done : -1;
    char e[32], d[16], k[16];
    fmt_eta(eta, e);
    fmt_count(docs, d);
    fmt_count(tokens, k);
    double mbs = (double)done / el / 1e6;
    if (p->tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %5.1f%% %7.1f MB/s ETA %s  %s docs %s tokens  ", bar, 100 * frac, mbs,
                e, d, k);
        p->drawn = 1;
    } else {
        fprintf(stderr, "tokenize: %5.1f%% of %.1f MB, %.1f MB/s, ETA %s, %s docs, %s tokens\n",
                100 * frac, (double)p->total / 1e6, mbs, e, d, k);
    }
    fflush(stderr);
}

void chm_progress_end(chm_progress *p) {
    if (p->drawn) fprintf(stderr, "\r%*s\r", 100, "");
    p->drawn = 0;
}
