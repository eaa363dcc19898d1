/*
 * profile.c: per-op device times (see profile.h). Output, one row per op:
 *   op, calls, total ms, share of the profiled time, mean us per call.
 * A last column, host us, is the host's time per call between consecutive op
 * ends: issuing the op and the model's work before it, or waiting (a
 * download, or a launch into a full queue when the host is ahead). Where the
 * device waits for the host, an op's device row exceeds its own run time by
 * about its host row: it was issued late (chimera-1b's Mamba input projection
 * on an H100: 400 us rows, 99 us of GEMM, 320-480 us host).
 * Where the backend can ask an event without waiting (event_done: cuda), a
 * "late" column gives the share of calls issued after the device had finished
 * the previous op: the device sat idle waiting for the host there.
 * CHIMERA_PROFILE=sync (shapes too) waits for the device after every op, so
 * that each row is the op's own time plus one launch: run it next to a plain
 * profile to tell an op's run time from the idle gaps and queueing around it.
 */
#include "profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROFILE_EVENTS 2048
#define PROFILE_OPS 192
#define PROFILE_LABELS 128 /* GEMM shapes under CHIMERA_PROFILE=shapes */
#define PROFILE_LABEL_LEN 64

typedef struct op_stat {
    const char *op;
    double ms;
    double host_ms; /* host time (see the file comment) */
    long calls;
    long late;    /* calls issued after the device had run out of work */
    double flops; /* per call; 0 when unknown */
} op_stat;

typedef struct gemm_label {
    char text[PROFILE_LABEL_LEN];
    double flops;
} gemm_label;

struct chm_profile {
    chm_event *start;                /* the end of the previous window */
    chm_event *ev[PROFILE_EVENTS];   /* this window's events, in stream order */
    const char *op[PROFILE_EVENTS];
    double host[PROFILE_EVENTS];     /* host seconds since the previous op's end, per event */
    bool late[PROFILE_EVENTS];       /* the previous op had ended on the device at issue */
    double last_host;                /* host clock at the previous op's end */
    int n;
    op_stat stat[PROFILE_OPS];
    int n_stat;
    double total_ms;
    bool broken;                     /* an event call failed: stop profiling, say so at the end */
    bool started;                    /* the first op has ended: times count from there */
    bool shapes;                     /* CHIMERA_PROFILE=shapes: a row per GEMM shape */
    bool sync;                       /* CHIMERA_PROFILE=sync: wait after every op */
    bool has_late;                   /* the backend answers event_done */
    bool restarted;                  /* chm_profile_restart dropped the warm-up */
    gemm_label label[PROFILE_LABELS];
    int n_label;
};

void chm_profile_open(chm_backend *be) {
    const char *v = getenv("CHIMERA_PROFILE");
    be->profile = NULL;
    if (!v || !*v || !strcmp(v, "0")) return;
    chm_profile *p = calloc(1, sizeof *p);
    if (!p) return;
    bool ok = be->ops->event_create(be, &p->start) == CHM_OK;
    for (int i = 0; ok && i < PROFILE_EVENTS; i++) ok = be->ops->event_create(be, &p->ev[i]) == CHM_OK;
    if (!ok) {
        fprintf(stderr, "chimera: profile: cannot create events on %s: %s (not profiling)\n",
                be->name, be->err.msg);
        be->profile = p;
        chm_profile_close(be);
        return;
    }
    p->sync = !strcmp(v, "sync");
    p->shapes = p->sync || !strcmp(v, "shapes");
    p->has_late = be->ops->event_done != NULL && !p->sync;
    be->profile = p;
}

const char *chm_profile_gemm_label(chm_backend *be, const char *op, int64_t M, int64_t N, int64_t K,
                                   int64_t batch, bool trans_a, bool trans_b) {
    chm_profile *p = be->profile;
    if (!p || !p->shapes) return op;
    char text[PROFILE_LABEL_LEN], bat[24] = "";
    if (batch > 1) snprintf(bat, sizeof bat, " x%lld", (long long)batch);
    char dim[3][24];
    const int64_t d[3] = {M, N, K};
    bool varies = false;
    for (int i = 0; i < 3; i++) { /* a size that varies (experts' live rows) shows as "n" */
        if (d[i] > 256 && d[i] % 64) varies = true, snprintf(dim[i], sizeof dim[i], "n");
        else snprintf(dim[i], sizeof dim[i], "%lld", (long long)d[i]);
    }
    snprintf(text, sizeof text, "%s %sx%sx%s%s%s%s", op, dim[0], dim[1], dim[2], bat,
             trans_a ? " tA" : "", trans_b ? " tB" : "");
    for (int i = 0; i < p->n_label; i++)
        if (!strcmp(p->label[i].text, text)) return p->label[i].text;
    if (p->n_label == PROFILE_LABELS) return op; /* the rest share the op's row */
    gemm_label *l = &p->label[p->n_label++];
    memcpy(l->text, text, sizeof text);
    l->flops = varies ? 0 : 2.0 * (double)M * (double)N * (double)K * (double)(batch > 1 ? batch : 1);
    return l->text;
}

/* Flops per call of a row: known for the interned GEMM labels only. */
static double flops_of(const chm_profile *p, const char *op) {
    for (int i = 0; i < p->n_label; i++)
        if (p->label[i].text == op) return p->label[i].flops;
    return 0;
}

static op_stat *stat_of(chm_profile *p, const char *op) {
    for (int i = 0; i < p->n_stat; i++)
        if (p->stat[i].op == op || !strcmp(p->stat[i].op, op)) return &p->stat[i];
    if (p->n_stat == PROFILE_OPS) return NULL;
    p->stat[p->n_stat] = (op_stat){op, 0, 0, 0, 0, flops_of(p, op)};
    return &p->stat[p->n_stat++];
}

/* Host monotonic clock, seconds. */
static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wait for the window's events, add their times up, and start a new window at the last one. */
static void flush(chm_backend *be, chm_profile *p) {
    if (p->n == 0 || p->broken) return;
    if (be->ops->sync(be) != CHM_OK) p->broken = true;
    for (int i = 0; i < p->n && !p->broken; i++) {
        double ms = 0;
        if (be->ops->event_elapsed_ms(be, i ? p->ev[i - 1] : p->start, p->ev[i], &ms) != CHM_OK) {
            p->broken = true;
            break;
        }
        op_stat *s = stat_of(p, p->op[i]);
        if (s) s->ms += ms, s->host_ms += 1e3 * p->host[i], s->calls++, s->late += p->late[i];
        p->total_ms += ms;
    }
    chm_event *last = p->ev[p->n - 1];
    p->ev[p->n - 1] = p->start;
    p->start = last;
    p->n = 0;
}

void chm_profile_after(chm_backend *be, const char *op) {
    chm_profile *p = be->profile;
    if (!p || p->broken) return;
    double now = mono_s(), host_s = now - p->last_host;
    p->last_host = now;
    if (!p->started) {
        /* The first op's time would include all the host work since the backend opened
         * (model set-up, data): start the clock at its end instead. */
        p->started = true;
        if (be->ops->event_record(be, p->start) != CHM_OK) p->broken = true;
        return;
    }
    if (p->n == PROFILE_EVENTS) flush(be, p);
    /* asked before this op's event: had the device already finished everything before it? */
    bool late = p->has_late && be->ops->event_done(be, p->n ? p->ev[p->n - 1] : p->start);
    if (be->ops->event_record(be, p->ev[p->n]) != CHM_OK) {
        p->broken = true;
        return;
    }
    p->host[p->n] = host_s;
    p->late[p->n] = late;
    p->op[p->n++] = op;
    if (p->sync) {
        flush(be, p);
        p->last_host = mono_s(); /* the wait is not the next op's host time */
    }
}

void chm_profile_restart(chm_backend *be) {
    chm_profile *p = be->profile;
    if (!p || p->broken) return;
    flush(be, p); /* the window ends at the last op; the next op's time counts from there */
    p->n_stat = 0;
    p->total_ms = 0;
    p->restarted = true;
    p->last_host = mono_s();
}

static int by_time(const void *a, const void *b) {
    double x = ((const op_stat *)a)->ms, y = ((const op_stat *)b)->ms;
    return (x < y) - (x > y);
}

static void print_table(const chm_backend *be, chm_profile *p) {
    qsort(p->stat, (size_t)p->n_stat, sizeof *p->stat, by_time);
    double host = 0;
    for (int i = 0; i < p->n_stat; i++) host += p->stat[i].host_ms;
    fprintf(stderr,
            "\nprofile of %s (%s)%s: %.1f ms in %d ops (time between consecutive op ends), "
            "host %.1f ms\n",
            be->name, be->device, p->restarted ? " after warm-up" : "", p->total_ms, p->n_stat,
            host);
    int w = p->n_label ? 44 : 22;
    fprintf(stderr, "  %-*s %9s %11s %7s %11s %9s%s%s\n", w, "op", "calls", "total ms", "share",
            "mean us", "host us", p->has_late ? "  late" : "", p->n_label ? "   TFLOP/s" : "");
    for (int i = 0; i < p->n_stat; i++) {
        const op_stat *s = &p->stat[i];
        double us = s->calls ? 1e3 * s->ms / (double)s->calls : 0.0;
        double hus = s->calls ? 1e3 * s->host_ms / (double)s->calls : 0.0;
        fprintf(stderr, "  %-*s %9ld %11.2f %6.1f%% %11.1f %9.1f", w, s->op, s->calls, s->ms,
                p->total_ms > 0 ? 100 * s->ms / p->total_ms : 0.0, us, hus);
        if (p->has_late) fprintf(stderr, " %4.0f%%", s->calls ? 100.0 * (double)s->late / (double)s->calls : 0.0);
        if (s->flops > 0 && us > 0) fprintf(stderr, " %9.1f", s->flops / (us * 1e6));
        fputc('\n', stderr);
    }
}

void chm_profile_close(chm_backend *be) {
    chm_profile *p = be->profile;
    if (!p) return;
    flush(be, p);
    if (p->broken) fprintf(stderr, "chimera: profile of %s stopped early: an event call failed\n", be->name);
    if (p->n_stat) print_table(be, p);
    for (int i = 0; i < PROFILE_EVENTS; i++)
        if (p->ev[i]) be->ops->event_destroy(be, p->ev[i]);
    if (p->start) be->ops->event_destroy(be, p->start);
    free(p);
    be->profile = NULL;
}
