/*
 * peak.c: the device's peak matmul throughput, the denominator of MFU
 * (chimera/trainer.h).
 *
 * GPUs are looked up by device name in a table of dense (no sparsity)
 * vendor peaks: bf16 tensor-core and plain f32. Anything else (the cpu,
 * lavapipe, an unknown card) is measured: a few square GEMMs through
 * chm_matmul on the backend itself, best time taken. A figure is only ever
 * one of those two; when neither is available the peak is 0 and callers
 * show no MFU.
 */
#include "chimera/trainer.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Known cards: a name fragment (most specific first) and dense peaks in TFLOP/s. */
static const struct {
    const char *match;
    const char *label;
    double bf16, f32;
} cards[] = {
    {"gh200", "NVIDIA GH200", 989.4, 66.9},
    {"h200", "NVIDIA H200", 989.4, 66.9},
    {"h100 pcie", "NVIDIA H100 PCIe", 756.0, 51.2},
    {"h100 nvl", "NVIDIA H100 NVL", 835.0, 60.0},
    {"h100", "NVIDIA H100 SXM", 989.4, 66.9},
    {"h800", "NVIDIA H800", 989.4, 66.9},
    {"a100", "NVIDIA A100", 312.0, 19.5},
    {"a800", "NVIDIA A800", 312.0, 19.5},
    {"l40s", "NVIDIA L40S", 362.1, 91.6},
    {"l40", "NVIDIA L40", 181.0, 90.5},
    {"l4", "NVIDIA L4", 121.0, 30.3},
    {"a10g", "NVIDIA A10G", 70.0, 31.2},
    {"a10", "NVIDIA A10", 125.0, 31.2},
    {"rtx 4090", "NVIDIA RTX 4090", 165.2, 82.6},
    {"rtx 3090", "NVIDIA RTX 3090", 71.0, 35.6},
    {"rtx a6000", "NVIDIA RTX A6000", 154.8, 38.7},
    {"mi300x", "AMD MI300X", 1307.4, 163.4},
    {"mi250x", "AMD MI250X", 383.0, 47.9},
};

/* Lower-case copy of s into out. */
static void lower(const char *s, char *out, size_t n) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) out[i] = (char)tolower((unsigned char)s[i]);
    out[i] = '\0';
}

static bool from_table(const chm_backend *be, chm_dtype dt, chm_device_peak *out) {
    if (be->caps & CHM_CAP_HOST_MEMORY) return false; /* the cpu: measure */
    char name[sizeof be->device];
    lower(be->device, name, sizeof name);
    for (size_t i = 0; i < sizeof cards / sizeof cards[0]; i++) {
        if (!strstr(name, cards[i].match)) continue;
        bool half = dt == CHM_BF16 || dt == CHM_F16;
        out->tflops = half ? cards[i].bf16 : cards[i].f32;
        snprintf(out->source, sizeof out->source, "%s %s dense peak (table)", cards[i].label,
                 half ? "bf16" : "f32");
        return true;
    }
    return false;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best TFLOP/s of n^3 GEMMs in f32 on be: a warm-up, then reps until ~0.25 s; 0 on failure. */
static double measure(chm_backend *be, int64_t n) {
    chm_buffer *buf = NULL;
    size_t one = (size_t)(n * n) * 4;
    if (chm_buffer_alloc(be, 3 * one, &buf) != CHM_OK) return 0;
    chm_tensor a = chm_tensor_2d(buf, 0, CHM_F32, n, n), b = chm_tensor_2d(buf, one, CHM_F32, n, n);
    chm_tensor c = chm_tensor_2d(buf, 2 * one, CHM_F32, n, n);
    double best = 0, spent = 0;
    bool ok = chm_fill(be, &a, 0.5) == CHM_OK && chm_fill(be, &b, 0.25) == CHM_OK;
    for (int rep = 0; ok && rep < 12 && spent < 0.25; rep++) {
        double t0 = now_s();
        ok = chm_matmul(be, &c, &a, &b, NULL, false, false, 1.0, 0.0) == CHM_OK &&
             chm_sync(be) == CHM_OK;
        double dt = now_s() - t0;
        if (rep > 0) spent += dt; /* rep 0 warms up (threads, caches, pipelines) */
        if (ok && rep > 0 && dt > 0 && 2.0 * (double)(n * n * n) / dt > best)
            best = 2.0 * (double)(n * n * n) / dt;
    }
    chm_buffer_free(buf);
    return ok ? best / 1e12 : 0;
}

void chm_device_peak_find(chm_backend *be, chm_dtype dt, chm_device_peak *out) {
    memset(out, 0, sizeof *out);
    if (from_table(be, dt, out)) return;
    int64_t n = (be->caps & CHM_CAP_HOST_MEMORY) ? 1024 : 2048;
    double tf = measure(be, n);
    if (tf > 0) {
        out->tflops = tf;
        snprintf(out->source, sizeof out->source, "f32 GEMM %lld^3 measured on %s", (long long)n,
                 be->name);
    } else {
        snprintf(out->source, sizeof out->source, "unknown (%s has no matmul to measure)", be->name);
    }
}
