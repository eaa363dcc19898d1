/*
 * tools/hostprof.c: a sampling profiler of the host's CPU time, loaded with LD_PRELOAD
 * into any chimera command (a diagnosis tool, not part of the library):
 *
 *   cc -O2 -shared -fPIC tools/hostprof.c -o hostprof.so
 *   HOSTPROF_OUT=/tmp/host LD_PRELOAD=$PWD/hostprof.so chimera plan ...   (writes /tmp/host.PID)
 *   python3 tools/hostprof_report.py /tmp/host.PID path/to/chimera
 *
 * Why: chimera-1b's CUDA step issues some GEMMs hundreds of microseconds late (the profile's
 * host column), so the question is where the host thread spends its time, inside chimera or
 * inside the CUDA driver and cuBLASLt. Every HOSTPROF_US microseconds of process CPU time
 * (default 500; of wall-clock time with HOSTPROF_CLOCK=real) a SIGPROF handler stores the interrupted thread's call stack (glibc
 * backtrace(), warmed up at load so that the handler does not load the unwinder) in a
 * preallocated table; at exit the file HOSTPROF_OUT.PID gets the samples, one line each (thread id, then hex return
 * addresses), then a copy of /proc/self/maps to map addresses to libraries and offsets.
 * The table is process-wide state by necessity (a signal handler has no other way to reach
 * it); it lives in this preloaded tool only.
 */
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HP_DEPTH 24
#define HP_MAX 400000

typedef struct hp_sample {
    int n, tid;
    void *pc[HP_DEPTH];
} hp_sample;

static hp_sample *hp_samples;
static timer_t hp_timer;
static volatile sig_atomic_t hp_count;

/* HOSTPROF_CLOCK=real: sample wall-clock time (SIGALRM), so that a thread blocked in a wait
 * (a sync, a full launch queue) is seen where it waits; default: CPU time (SIGPROF). */
static int hp_real(void) {
    const char *c = getenv("HOSTPROF_CLOCK");
    return c && strcmp(c, "real") == 0;
}

static void hp_on_signal(int sig) {
    (void)sig;
    int i = hp_count;
    if (i >= HP_MAX) return;
    hp_count = i + 1;
    hp_samples[i].tid = (int)syscall(SYS_gettid);
    hp_samples[i].n = backtrace(hp_samples[i].pc, HP_DEPTH);
}

/* Write the samples and the address map to HOSTPROF_OUT. */
static void hp_write(void) {
    timer_delete(hp_timer);
    /* one file per process (a wrapper such as timeout is profiled too): NAME.PID */
    char path[4096];
    snprintf(path, sizeof path, "%s.%d", getenv("HOSTPROF_OUT") ? getenv("HOSTPROF_OUT") : "hostprof",
             (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) return;
    int n = hp_count;
    fprintf(f, "# hostprof %d samples, %s us each\n", n,
            getenv("HOSTPROF_US") ? getenv("HOSTPROF_US") : "500");
    for (int i = 0; i < n; i++) {
        fprintf(f, "%d", hp_samples[i].tid);
        for (int k = 0; k < hp_samples[i].n; k++) fprintf(f, " %p", hp_samples[i].pc[k]);
        fputc('\n', f);
    }
    fputs("# maps\n", f);
    FILE *m = fopen("/proc/self/maps", "r");
    if (m) {
        char line[4096];
        while (fgets(line, sizeof line, m)) fputs(line, f);
        fclose(m);
    }
    fclose(f);
    if (n) fprintf(stderr, "hostprof: %d samples written to %s\n", n, path);
}

__attribute__((constructor)) static void hp_start(void) {
    hp_samples = calloc(HP_MAX, sizeof *hp_samples);
    if (!hp_samples) return;
    void *warm[4];
    backtrace(warm, 4); /* loads libgcc's unwinder now, not inside the handler */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hp_on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(hp_real() ? SIGALRM : SIGPROF, &sa, NULL);
    long us = getenv("HOSTPROF_US") ? atol(getenv("HOSTPROF_US")) : 500;
    if (us < 50) us = 50;
    /* a POSIX timer, not setitimer: an interval timer survives exec and would kill the new
       image (default action) before its own copy of this library installs the handler */
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = hp_real() ? SIGALRM : SIGPROF;
    if (timer_create(hp_real() ? CLOCK_MONOTONIC : CLOCK_PROCESS_CPUTIME_ID, &ev, &hp_timer) != 0)
        return;
    struct itimerspec it = {{us / 1000000, us % 1000000 * 1000}, {us / 1000000, us % 1000000 * 1000}};
    timer_settime(hp_timer, 0, &it, NULL);
    atexit(hp_write);
}
