/*
 * vk_harness.h: the harness the vulkan op tests share (tests/test_vulkan_*.c).
 *
 * An op is a list of arguments (inputs, outputs, accumulated gradients, ids)
 * and a function calling it. The same random inputs go to the cpu and vulkan
 * backends; outputs are poisoned first (NaN for floats, a sentinel for int32
 * outputs), accumulated outputs start at the same random values on both
 * sides; then every output is downloaded and compared (floats with f32
 * tolerances, worst element reported; int32 outputs exactly). An argument may
 * carry fixed contents (data / idata) instead of random ones, for inputs that
 * must have structure (a forward's indices, a mask), and may start `lead`
 * elements into its buffer (the model's unaligned row-block views).
 * vk_open skips the test when there is no Vulkan device; vk_close requires the
 * validation layer to have reported nothing (tools/test.sh runs the suite with
 * VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation).
 * Everything is static inline: each test file takes what it uses.
 */
#ifndef CHIMERA_VK_HARNESS_H
#define CHIMERA_VK_HARNESS_H

#include <libgen.h>
#include <stdio.h>

#include "backend/vulkan/vulkan_backend.h"
#include "testutil.h"

/* ---- opening and closing ---- */

/* Keep the on-disk pipeline cache in the build folder, not in $HOME. */
static inline void use_test_cache(void) {
    char bin[512];
    snprintf(bin, sizeof bin, "%s", CHIMERA_BINARY);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/test-cache", dirname(bin));
    setenv("XDG_CACHE_HOME", dir, 1);
}

static inline chm_backend *vk_open(void) {
    use_test_cache();
    chm_backend_options o = {.device_index = -1, .quiet = true};
    chm_err err = {0};
    chm_backend *be = NULL;
    /* Straight to the backend: the registry's probe would make a second instance. */
    chm_status rc = chm_vulkan_open(&o, &be, &err);
    if (rc == CHM_ERR_UNSUPPORTED) cr_skip_test("no Vulkan device here: %s", err.msg);
    cr_assert_eq(rc, CHM_OK, "cannot open vulkan: %s", err.msg);
    return be;
}

/* Close, then require a silent validation layer. */
static inline void vk_close(chm_backend *be) {
    chm_backend_close(be);
    cr_assert_eq(chm_vulkan_validation_messages(), 0,
                 "the validation layer reported %llu messages (printed on stderr)",
                 (unsigned long long)chm_vulkan_validation_messages());
}

/* ---- the harness ---- */

/* IN: f32 input; OUT: f32 output (NaN-poisoned); ACC: f32 accumulated output;
 * IDS: int32 input; OUT_IDS: int32 output (poisoned, compared exactly). */
typedef enum role { IN, OUT, ACC, IDS, OUT_IDS } role;

typedef struct arg {
    role role;
    int ndim;
    int64_t shape[4];
    double lo, hi;         /* random range (IDS: ids in [lo, hi)) */
    const double *data;    /* fixed contents of an IN or ACC argument, or NULL for random */
    const int32_t *idata;  /* fixed contents of an IDS argument, or NULL for random */
    int64_t lead;          /* the tensor starts this many elements into its buffer (views) */
} arg;

/* Calls the op on a backend with its tensors in argument order. */
typedef chm_status (*op_fn)(chm_backend *be, const chm_tensor *const *t, const void *ctx);

#define MAX_ARGS 12

typedef struct side {
    tt_tensor t[MAX_ARGS];
    const chm_tensor *p[MAX_ARGS];
} side;

static inline bool role_is_int(role r) { return r == IDS || r == OUT_IDS; }

static inline void side_alloc(chm_backend *be, side *s, int n, const arg *a) {
    cr_assert(n <= MAX_ARGS, "at most %d arguments", MAX_ARGS);
    for (int i = 0; i < n; i++) {
        chm_dtype dt = role_is_int(a[i].role) ? CHM_I32 : CHM_F32;
        chm_tensor want = chm_tensor_make(NULL, 0, dt, a[i].ndim, a[i].shape);
        int64_t whole = chm_tensor_numel(&want) + a[i].lead;
        s->t[i] = tt_alloc(be, dt, 1, &whole);
        s->t[i].t = chm_tensor_make(s->t[i].buf, (size_t)a[i].lead * chm_dtype_size(dt), dt,
                                    a[i].ndim, a[i].shape);
        s->p[i] = &s->t[i].t;
    }
}

/* Int32 contents: fixed, or uniform in [lo, hi). */
static inline void fill_ids(side *c, side *v, chm_backend *cpu, chm_backend *vk, int i,
                            const arg *a, int64_t m, tt_rng *rng) {
    int32_t *ids = malloc((size_t)(m ? m : 1) * sizeof *ids);
    for (int64_t k = 0; k < m; k++)
        ids[k] = a->idata ? a->idata[k] : (int32_t)floor(tt_uniform(rng, a->lo, a->hi));
    tt_upload_i32(cpu, &c->t[i], ids);
    tt_upload_i32(vk, &v->t[i], ids);
    free(ids);
}

/* The same contents on both sides; NaN (or a sentinel) in the outputs. */
static inline void fill_inputs(side *c, side *v, chm_backend *cpu, chm_backend *vk, int n,
                               const arg *a, tt_rng *rng) {
    for (int i = 0; i < n; i++) {
        int64_t m = chm_tensor_numel(&c->t[i].t);
        if (a[i].role == OUT) {
            tt_poison(cpu, &c->t[i]);
            tt_poison(vk, &v->t[i]);
        } else if (a[i].role == OUT_IDS) {
            cr_assert_eq(chm_fill(cpu, &c->t[i].t, -7777), CHM_OK);
            cr_assert_eq(chm_fill(vk, &v->t[i].t, -7777), CHM_OK, "%s", vk->err.msg);
        } else if (a[i].role == IDS) {
            fill_ids(c, v, cpu, vk, i, &a[i], m, rng);
        } else {
            double *h = tt_dalloc(m);
            if (a[i].data)
                memcpy(h, a[i].data, (size_t)m * sizeof *h);
            else
                tt_fill_uniform(rng, h, m, a[i].lo, a[i].hi);
            tt_upload(cpu, &c->t[i], h);
            tt_upload(vk, &v->t[i], h);
            free(h);
        }
    }
}

/* The two backends one test compares (opened once per test: opening costs ~0.1 s). */
typedef struct pair {
    chm_backend *cpu, *vk;
} pair;

static inline pair pair_open(void) {
    pair p = {tt_open_cpu(), vk_open()};
    return p;
}

static inline void pair_close(pair *p) {
    chm_backend_close(p->cpu);
    vk_close(p->vk);
}

/* Require two int32 outputs equal. */
static inline void compare_ids(const char *label, chm_backend *cpu, const tt_tensor *c,
                               chm_backend *vk, const tt_tensor *v) {
    int64_t m = chm_tensor_numel(&c->t);
    int32_t *want = malloc((size_t)(m ? m : 1) * sizeof *want);
    int32_t *got = malloc((size_t)(m ? m : 1) * sizeof *got);
    cr_assert_eq(chm_download(cpu, &c->t, want), CHM_OK);
    cr_assert_eq(chm_download(vk, &v->t, got), CHM_OK, "%s", vk->err.msg);
    for (int64_t k = 0; k < m; k++)
        cr_assert_eq(got[k], want[k], "%s: element %lld is %d, expected %d", label, (long long)k,
                     got[k], want[k]);
    free(want);
    free(got);
}

/* Compare one output of the two sides. */
static inline void compare_output(const char *what, pair *bp, side *c, side *v, int i,
                                  const arg *a, double atol, double rtol) {
    char label[200];
    char shape[64];
    snprintf(label, sizeof label, "%s, argument %d %s", what, i,
             chm_tensor_describe(&c->t[i].t, shape, sizeof shape));
    if (a[i].role == OUT_IDS) {
        compare_ids(label, bp->cpu, &c->t[i], bp->vk, &v->t[i]);
        return;
    }
    int64_t m = chm_tensor_numel(&c->t[i].t);
    double *want = tt_dalloc(m), *got = tt_dalloc(m);
    tt_download(bp->cpu, &c->t[i], want);
    tt_download(bp->vk, &v->t[i], got);
    tt_assert_close(label, got, want, m, atol, rtol);
    free(want);
    free(got);
}

/* Run the op on both backends and compare every output. */
static inline void check_op(pair *bp, const char *what, int n, const arg *a, op_fn fn,
                            const void *ctx, double atol, double rtol, uint64_t seed) {
    chm_backend *cpu = bp->cpu, *vk = bp->vk;
    tt_rng rng = tt_rng_make(seed);
    side c, v;
    side_alloc(cpu, &c, n, a);
    side_alloc(vk, &v, n, a);
    fill_inputs(&c, &v, cpu, vk, n, a, &rng);
    cr_assert_eq(fn(cpu, c.p, ctx), CHM_OK, "%s on cpu: %s", what, cpu->err.msg);
    cr_assert_eq(fn(vk, v.p, ctx), CHM_OK, "%s on vulkan: %s", what, vk->err.msg);
    cr_assert_eq(chm_sync(vk), CHM_OK, "%s: sync: %s", what, vk->err.msg);
    for (int i = 0; i < n; i++)
        if (a[i].role == OUT || a[i].role == ACC || a[i].role == OUT_IDS)
            compare_output(what, bp, &c, &v, i, a, atol, rtol);
    for (int i = 0; i < n; i++) {
        tt_free(&c.t[i]);
        tt_free(&v.t[i]);
    }
}

#define A1(role, d0, lo, hi) {role, 1, {d0, 1, 1, 1}, lo, hi, NULL, NULL, 0}
#define A2(role, d0, d1, lo, hi) {role, 2, {d0, d1, 1, 1}, lo, hi, NULL, NULL, 0}
#define A3(role, d0, d1, d2, lo, hi) {role, 3, {d0, d1, d2, 1}, lo, hi, NULL, NULL, 0}
#define A4(role, d0, d1, d2, d3, lo, hi) {role, 4, {d0, d1, d2, d3}, lo, hi, NULL, NULL, 0}

#endif
