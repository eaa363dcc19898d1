/*
 * tools/cupti_gaps.c: where the GPU idles during a training step (a diagnosis tool, not part
 * of the library). A CUPTI injection library: the CUDA driver loads it into any chimera
 * command and it records the device start and end of every kernel, memcpy and memset, and
 * the host's waits on the device, then prints at exit how much of each step the device was
 * busy, the gaps between its work by size, and the largest gaps with what ran around them.
 *
 *   cmake --build build --target cupti_gaps     (where CUDA's CUPTI is: build/libcupti_gaps.so)
 *   CUDA_INJECTION64_PATH=$PWD/build/libcupti_gaps.so chimera plan --config training_dolma ...
 *
 * A step runs from the end of one AdamW group to the end of the next (as tools/gpu_kernels.sh
 * counts it), so a command needs at least two optimizer steps. Every complete step gets a
 * line, and one of them (CHM_GAPS_STEP, counted from 1; default the last) the gaps by size and
 * the largest gaps. Environment: CHM_GAPS_TOP (rows of largest gaps, default 15),
 * CHM_GAPS_OUT (a file instead of stderr).
 *
 * Why: Nsight Systems is not on the GPU machine, and Nsight Compute times kernels one at a
 * time, so neither says whether the device waits on the host between kernels (launch
 * overhead, downloads mid-step): the question behind CUDA graphs. The records live in
 * process-wide state by necessity (CUPTI's callbacks take no user pointer); it lives in this
 * injected tool only.
 */
#define _GNU_SOURCE
#include <cupti.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libstdc++'s demangler (C++ ABI; declared here so that this stays a C file) */
char *__cxa_demangle(const char *mangled, char *out, size_t *len, int *status);

enum { GAP_KERNEL, GAP_COPY, GAP_SET };

typedef struct gap_rec {
    uint64_t start, end;
    int name;       /* index into gap.names (kernels), -1 otherwise */
    int kind;       /* GAP_KERNEL, GAP_COPY, GAP_SET */
    int copy_kind;  /* copies: CUpti_ActivityMemcpyKind */
    uint64_t bytes; /* copies and sets */
} gap_rec;

typedef struct gap_sync {
    uint64_t start, end; /* host clock, in CUPTI's common timebase */
} gap_sync;

static struct {
    gap_rec *rec;
    size_t n, cap;
    gap_sync *sync;
    size_t ns, caps;
    char **names;
    size_t nnames, capnames;
    unsigned *hash; /* open addressing over name indices + 1 (0: empty) */
    size_t hcap;
    int lost; /* records CUPTI dropped */
} gap;

#define GAP_BUF (8u << 20)

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    void *q = realloc(p, c * elem);
    if (!q) {
        fprintf(stderr, "cupti_gaps: out of memory at %zu records; stopping the trace\n", need);
        return NULL;
    }
    *cap = c;
    return q;
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The index of kernel name s, interned (CUPTI's strings need not outlive the buffer). */
static int name_id(const char *s) {
    if (!s) s = "?";
    if (2 * (gap.nnames + 1) > gap.hcap) { /* rehash at half full */
        size_t nc = gap.hcap ? 2 * gap.hcap : 1024;
        unsigned *nh = calloc(nc, sizeof *nh);
        if (!nh) return -1;
        for (size_t i = 0; i < gap.nnames; i++) {
            size_t j = name_hash(gap.names[i]) & (nc - 1);
            while (nh[j]) j = (j + 1) & (nc - 1);
            nh[j] = (unsigned)i + 1;
        }
        free(gap.hash);
        gap.hash = nh;
        gap.hcap = nc;
    }
    size_t j = name_hash(s) & (gap.hcap - 1);
    while (gap.hash[j]) {
        if (!strcmp(gap.names[gap.hash[j] - 1], s)) return (int)gap.hash[j] - 1;
        j = (j + 1) & (gap.hcap - 1);
    }
    char **nn = grow(gap.names, &gap.capnames, gap.nnames + 1, sizeof *nn);
    if (!nn) return -1;
    gap.names = nn;
    if (!(gap.names[gap.nnames] = strdup(s))) return -1;
    gap.hash[j] = (unsigned)++gap.nnames;
    return (int)gap.nnames - 1;
}

static void add_rec(uint64_t start, uint64_t end, int name, int kind, int copy_kind,
                    uint64_t bytes) {
    gap_rec *r = grow(gap.rec, &gap.cap, gap.n + 1, sizeof *r);
    if (!r) return;
    gap.rec = r;
    gap.rec[gap.n++] = (gap_rec){start, end, name, kind, copy_kind, bytes};
}

static void CUPTIAPI buf_requested(uint8_t **buf, size_t *size, size_t *max_records) {
    *buf = aligned_alloc(8, GAP_BUF);
    *size = *buf ? GAP_BUF : 0;
    *max_records = 0;
}

static void CUPTIAPI buf_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size,
                                   size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *a = NULL;
    while (cuptiActivityGetNextRecord(buf, valid, &a) == CUPTI_SUCCESS) {
        if (a->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL ||
            a->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)a;
            add_rec(k->start, k->end, name_id(k->name), GAP_KERNEL, 0, 0);
        } else if (a->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)a;
            add_rec(m->start, m->end, -1, GAP_COPY, m->copyKind, m->bytes);
        } else if (a->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
            const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)a;
            add_rec(m->start, m->end, -1, GAP_SET, 0, m->bytes);
        } else if (a->kind == CUPTI_ACTIVITY_KIND_SYNCHRONIZATION) {
            const CUpti_ActivitySynchronization2 *s = (const CUpti_ActivitySynchronization2 *)a;
            gap_sync *q = grow(gap.sync, &gap.caps, gap.ns + 1, sizeof *q);
            if (q) {
                gap.sync = q;
                gap.sync[gap.ns++] = (gap_sync){s->start, s->end};
            }
        }
    }
    size_t dropped = 0;
    if (cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped) == CUPTI_SUCCESS && dropped)
        gap.lost += (int)dropped;
    free(buf);
}

static void CUPTIAPI on_resource(void *user, CUpti_CallbackDomain dom, CUpti_CallbackId id,
                                 const void *data) {
    (void)user, (void)data;
    if (dom == CUPTI_CB_DOMAIN_RESOURCE && id == CUPTI_CBID_RESOURCE_CONTEXT_DESTROY_STARTING)
        cuptiActivityFlushAll(1);
}

static int by_start(const void *a, const void *b) {
    const gap_rec *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* A short, demangled kernel name (no argument list, no template arguments past 60 chars). */
static void short_name(const gap_rec *r, char *out, size_t n) {
    if (r->kind != GAP_KERNEL || r->name < 0) {
        const char *k = r->copy_kind == CUPTI_ACTIVITY_MEMCPY_KIND_HTOD   ? " HtoD"
                        : r->copy_kind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOH ? " DtoH"
                        : r->copy_kind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOD ? " DtoD"
                                                                          : "";
        snprintf(out, n, "[%s%s %llu B]", r->kind == GAP_COPY ? "memcpy" : "memset",
                 r->kind == GAP_COPY ? k : "", (unsigned long long)r->bytes);
        return;
    }
    const char *m = gap.names[r->name];
    int st = -1;
    char *d = __cxa_demangle(m, NULL, NULL, &st);
    const char *s = st == 0 && d ? d : m;
    if (!strncmp(s, "void ", 5)) s += 5;
    const char *anon = strstr(s, "(anonymous namespace)::");
    if (anon == s) s += strlen("(anonymous namespace)::");
    size_t len = strcspn(s, "(");
    if (len > n - 1) len = n - 1;
    memcpy(out, s, len);
    out[len] = 0;
    free(d);
}

static int is_adamw(const gap_rec *r) {
    return r->kind == GAP_KERNEL && r->name >= 0 && strstr(gap.names[r->name], "adamw");
}

typedef struct gap_bin {
    double lo_us;
    const char *label;
    int count;
    double us;
} gap_bin;

/* One step: the records after index w0 (the previous step's last AdamW launch, whose end
 * starts the step) up to w1 (this step's last AdamW launch), inclusive. */
static void report_step(FILE *f, size_t w0, size_t w1, int top) {
    gap_bin bins[] = {{0, "< 2 us", 0, 0},     {2, "2-5 us", 0, 0},
                      {5, "5-20 us", 0, 0},    {20, "20-100 us", 0, 0},
                      {100, "100-500 us", 0, 0}, {500, ">= 500 us", 0, 0}};
    int nb = (int)(sizeof bins / sizeof bins[0]);
    uint64_t t0 = gap.rec[w0].end, busy = 0, reach = t0, kern = 0;
    int nk = 0, ncopy = 0, ndtoh = 0, nset = 0;
    typedef struct {
        double us;
        size_t before, after;
    } big;
    big *bg = top > 0 ? calloc((size_t)top, sizeof *bg) : NULL;
    size_t last = w0; /* the record whose end is reach */
    uint64_t t1 = t0;
    for (size_t i = w0 + 1; i <= w1; i++) {
        const gap_rec *r = &gap.rec[i];
        if (r->kind == GAP_KERNEL) nk++, kern += r->end - r->start;
        if (r->kind == GAP_COPY) ncopy++, ndtoh += r->copy_kind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOH;
        if (r->kind == GAP_SET) nset++;
        if (r->start > reach) {
            double us = (double)(r->start - reach) / 1e3;
            int b = nb - 1;
            while (b > 0 && us < bins[b].lo_us) b--;
            bins[b].count++, bins[b].us += us;
            for (int k = 0; bg && k < top; k++) {
                if (us > bg[k].us) {
                    memmove(bg + k + 1, bg + k, (size_t)(top - k - 1) * sizeof *bg);
                    bg[k] = (big){us, last, i};
                    break;
                }
            }
            busy += r->end - r->start;
            reach = r->end, last = i;
        } else if (r->end > reach) {
            busy += r->end - reach;
            reach = r->end, last = i;
        }
        if (r->end > t1) t1 = r->end;
    }
    double span = (double)(t1 - t0) / 1e6, busy_ms = (double)busy / 1e6;
    fprintf(f, "step: %.3f ms (end of one AdamW group to the next), device busy %.3f ms (%.1f%%), "
               "idle %.3f ms; %d kernels (%.3f ms), %d copies (%d to the host), %d memsets\n",
            span, busy_ms, 100 * busy_ms / span, span - busy_ms, nk, (double)kern / 1e6, ncopy,
            ndtoh, nset);
    if (top < 0) return;
    fprintf(f, "  %-12s %7s %9s\n", "gap", "count", "ms");
    for (int b = 0; b < nb; b++)
        fprintf(f, "  %-12s %7d %9.3f\n", bins[b].label, bins[b].count, bins[b].us / 1e3);
    /* memsets by size and by the kernel after them (the first 40 characters of its name) */
    typedef struct {
        char name[44];
        uint64_t bytes;
        int count;
        double gap_us;
    } follow;
    follow fl[16];
    int nfl = 0;
    for (size_t i = w0 + 1; i < w1; i++) {
        const gap_rec *r = &gap.rec[i], *nx = &gap.rec[i + 1];
        if (r->kind != GAP_SET) continue;
        char nm[64];
        short_name(nx, nm, sizeof nm);
        nm[40] = 0;
        uint64_t by = r->bytes <= 64 ? r->bytes : 65; /* 65: "more" */
        int k = 0;
        while (k < nfl && (strcmp(fl[k].name, nm) || fl[k].bytes != by)) k++;
        if (k == nfl && nfl < 16) {
            snprintf(fl[k].name, sizeof fl[k].name, "%s", nm);
            fl[k].bytes = by, fl[k].count = 0, fl[k].gap_us = 0, nfl++;
        }
        if (k < nfl) {
            fl[k].count++;
            fl[k].gap_us += nx->start > r->start ? (double)(nx->start - r->start) / 1e3 : 0;
        }
    }
    fprintf(f, "  memsets by size and next kernel (first 16 kinds; us from the memset's start):\n");
    for (int k = 0; k < nfl; k++)
        fprintf(f, "  %5d x %s%3llu B  before %-40s %7.1f us each\n", fl[k].count,
                fl[k].bytes > 64 ? ">" : " ",
                (unsigned long long)(fl[k].bytes > 64 ? 64 : fl[k].bytes), fl[k].name,
                fl[k].gap_us / fl[k].count);
    fprintf(f, "  largest gaps (us; a host wait on the device ending in the gap is marked W):\n");
    for (int k = 0; bg && k < top && bg[k].us > 0; k++) {
        char a[64], b[64];
        short_name(&gap.rec[bg[k].before], a, sizeof a);
        short_name(&gap.rec[bg[k].after], b, sizeof b);
        uint64_t g0 = gap.rec[bg[k].before].end, g1 = gap.rec[bg[k].after].start;
        int waited = 0;
        for (size_t s = 0; s < gap.ns && !waited; s++)
            waited = gap.sync[s].end >= g0 && gap.sync[s].end <= g1;
        fprintf(f, "  %9.1f %c after %-50s before %s\n", bg[k].us, waited ? 'W' : ' ', a, b);
    }
    free(bg);
}

static void report(void) {
    cuptiActivityFlushAll(1);
    const char *path = getenv("CHM_GAPS_OUT");
    FILE *f = path && *path ? fopen(path, "w") : stderr;
    if (!f) f = stderr;
    int top = getenv("CHM_GAPS_TOP") ? atoi(getenv("CHM_GAPS_TOP")) : 15;
    if (top < 0) top = 0;
    if (top > 200) top = 200;
    qsort(gap.rec, gap.n, sizeof *gap.rec, by_start);
    fprintf(f, "\n== cupti_gaps: %zu device records, %zu host waits%s\n", gap.n, gap.ns,
            gap.lost ? " (CUPTI dropped some: the figures are incomplete)" : "");
    /* AdamW groups: a group ends where the next AdamW launch is more than 50 records away */
    size_t *ends = malloc((gap.n + 1) * sizeof *ends), ne = 0, prev = (size_t)-1;
    for (size_t i = 0; ends && i < gap.n; i++) {
        if (!is_adamw(&gap.rec[i])) continue;
        if (prev != (size_t)-1 && i > prev + 50) ends[ne++] = prev;
        prev = i;
    }
    if (ends && prev != (size_t)-1) ends[ne++] = prev;
    if (ne < 2) {
        fprintf(f, "fewer than two optimizer steps recorded: no complete step to report\n");
    } else {
        /* every step in one line, then the chosen one (CHM_GAPS_STEP, 1-based; default the
           last) in full */
        for (size_t s = 1; s < ne; s++) {
            fprintf(f, "%2zu ", s);
            report_step(f, ends[s - 1], ends[s], -1);
        }
        long want = getenv("CHM_GAPS_STEP") ? atol(getenv("CHM_GAPS_STEP")) : (long)ne - 1;
        if (want < 1 || want > (long)ne - 1) want = (long)ne - 1;
        fprintf(f, "step %ld in full:\n", want);
        report_step(f, ends[want - 1], ends[want], top);
    }
    free(ends);
    if (f != stderr) fclose(f);
}

/* Called by the CUDA driver when CUDA_INJECTION64_PATH names this library. */
int InitializeInjection(void) {
    CUpti_SubscriberHandle sub;
    if (cuptiActivityRegisterCallbacks(buf_requested, buf_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
        fprintf(stderr, "cupti_gaps: CUPTI refused the activity trace; nothing recorded\n");
        return 1;
    }
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_SYNCHRONIZATION);
    if (cuptiSubscribe(&sub, on_resource, NULL) == CUPTI_SUCCESS)
        cuptiEnableCallback(1, sub, CUPTI_CB_DOMAIN_RESOURCE,
                            CUPTI_CBID_RESOURCE_CONTEXT_DESTROY_STARTING);
    atexit(report);
    return 1;
}
