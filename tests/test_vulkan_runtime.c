/*
 * test_vulkan_runtime.c: the vulkan backend's machinery, beyond single ops.
 *
 * Barrier tracking (long chains of dependent ops recorded without a sync,
 * write-after-read, independent ops needing no barrier), batches larger
 * than a command buffer, batches handed early to an idle device, transfers
 * larger than the staging ring, the memory pool returning to its starting
 * bytes after many alloc/free cycles (empty large blocks kept for reuse
 * within the pool's cache), grids larger than maxComputeWorkGroupCount.x, the fallbacks
 * behind CHIMERA_VULKAN_DISABLE, the on-disk pipeline cache (and a corrupt
 * one), ids out of range reported at sync, events and the profile report.
 * Every test ends by checking that the validation layer reported nothing.
 * Skipped when no Vulkan device is found.
 */
#include <libgen.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/vulkan/vulkan_backend.h"
#include "testutil.h"

/* The build folder (where the chimera binary is), for test files. */
static void build_dir(char *out, size_t n) {
    char bin[512];
    snprintf(bin, sizeof bin, "%s", CHIMERA_BINARY);
    snprintf(out, n, "%s", dirname(bin));
}

static chm_backend *vk_open(void) {
    if (!getenv("XDG_CACHE_HOME")) {
        char dir[512], cache[600];
        build_dir(dir, sizeof dir);
        snprintf(cache, sizeof cache, "%s/test-cache", dir);
        setenv("XDG_CACHE_HOME", cache, 1);
    }
    chm_backend_options o = {.device_index = -1, .quiet = true};
    chm_err err = {0};
    chm_backend *be = NULL;
    /* Straight to the backend: the registry's probe would make a second instance. */
    chm_status rc = chm_vulkan_open(&o, &be, &err);
    if (rc == CHM_ERR_UNSUPPORTED) cr_skip_test("no Vulkan device here: %s", err.msg);
    cr_assert_eq(rc, CHM_OK, "cannot open vulkan: %s", err.msg);
    return be;
}

static void vk_close(chm_backend *be) {
    chm_backend_close(be);
    cr_assert_eq(chm_vulkan_validation_messages(), 0,
                 "the validation layer reported %llu messages (printed on stderr)",
                 (unsigned long long)chm_vulkan_validation_messages());
}

static chm_vulkan_stats stats(const chm_backend *be) {
    chm_vulkan_stats s;
    chm_vulkan_get_stats(be, &s);
    return s;
}

/* Every element of t equals v exactly. */
static void assert_all(chm_backend *be, const tt_tensor *t, double v, const char *what) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_download(be, t, h);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(h[i], v, "%s: element %lld is %g, expected %g", what, (long long)i, h[i], v);
    free(h);
}

Test(vulkan, independent_ops_need_no_barrier) {
    chm_backend *vk = vk_open();
    tt_tensor x = tt_alloc(vk, CHM_F32, 1, (int64_t[]){50 * 37});
    cr_assert_eq(chm_sync(vk), CHM_OK);
    chm_vulkan_stats s0 = stats(vk);
    for (int k = 0; k < 50; k++) {
        chm_tensor part = chm_tensor_1d(x.buf, (size_t)k * 37 * 4, CHM_F32, 37);
        cr_assert_eq(chm_fill(vk, &part, 2.0), CHM_OK);
    }
    chm_vulkan_stats s1 = stats(vk);
    cr_assert_eq(s1.barriers, s0.barriers, "50 disjoint fills recorded %llu barriers",
                 (unsigned long long)(s1.barriers - s0.barriers));
    cr_assert_eq(s1.submits, s0.submits, "nothing is submitted before a sync");
    assert_all(vk, &x, 2.0, "disjoint fills");
    tt_free(&x);
    vk_close(vk);
}

Test(vulkan, chains_of_dependent_ops_without_sync) {
    chm_backend *vk = vk_open();
    int64_t n = 1000;
    tt_tensor x = tt_alloc(vk, CHM_F32, 1, &n), y = tt_alloc(vk, CHM_F32, 1, &n);
    tt_tensor a = tt_alloc(vk, CHM_F32, 1, &n), b = tt_alloc(vk, CHM_F32, 1, &n);
    cr_assert_eq(chm_fill(vk, &x.t, 1.0), CHM_OK);
    cr_assert_eq(chm_fill(vk, &y.t, 0.0), CHM_OK);
    chm_vulkan_stats s0 = stats(vk);
    /* 100 read-after-write links: y = y + x. */
    for (int k = 0; k < 100; k++) cr_assert_eq(chm_add(vk, &y.t, &y.t, &x.t), CHM_OK);
    chm_vulkan_stats s1 = stats(vk);
    /* a link across a batch boundary waits behind the full barrier each batch opens with
     * (batches go early to an idle device: a fast GPU takes several during the chain) */
    uint64_t links = s1.barriers - s0.barriers + s1.submits - s0.submits + s1.early_submits -
                     s0.early_submits;
    cr_assert(links >= 99, "a chain of 100 adds recorded %llu barriers and batch starts",
              (unsigned long long)links);
    /* Write-after-read: b = 2a reads a, then a is overwritten; b must see the old a. */
    for (int k = 0; k < 100; k++) {
        cr_assert_eq(chm_fill(vk, &a.t, (double)k), CHM_OK);
        cr_assert_eq(chm_scale(vk, &b.t, &a.t, 2.0), CHM_OK);
        cr_assert_eq(chm_fill(vk, &a.t, -1.0), CHM_OK);
        cr_assert_eq(chm_axpy(vk, &y.t, &b.t, 1.0), CHM_OK);
    }
    assert_all(vk, &y, 100.0 + 2.0 * 4950.0, "y after the chains");
    assert_all(vk, &a, -1.0, "a after the last fill");
    tt_free(&x), tt_free(&y), tt_free(&a), tt_free(&b);
    vk_close(vk);
}

/* x = 1 and y = 0, 37 elements each (recorded, not synced). */
static void ones_and_zeros(chm_backend *vk, tt_tensor *x, tt_tensor *y) {
    int64_t n = 37;
    *x = tt_alloc(vk, CHM_F32, 1, &n);
    *y = tt_alloc(vk, CHM_F32, 1, &n);
    cr_assert_eq(chm_fill(vk, &x->t, 1.0), CHM_OK);
    cr_assert_eq(chm_fill(vk, &y->t, 0.0), CHM_OK);
}

/*
 * A batch goes to the device before it is full when the device has nothing left to run (here:
 * right after a sync), so that it does not idle while the host records; nothing waits for it.
 */
Test(vulkan, batches_go_early_to_an_idle_device) {
    chm_backend *vk = vk_open();
    tt_tensor x, y;
    ones_and_zeros(vk, &x, &y);
    cr_assert_eq(chm_sync(vk), CHM_OK);
    chm_vulkan_stats s0 = stats(vk);
    for (int k = 0; k < 40; k++) cr_assert_eq(chm_add(vk, &y.t, &y.t, &x.t), CHM_OK);
    chm_vulkan_stats s1 = stats(vk);
    cr_assert(s1.early_submits > s0.early_submits, "40 dispatches after a sync stayed on the host");
    cr_assert_eq(s1.submits, s0.submits, "an early batch counts apart");
    assert_all(vk, &y, 40.0, "y after 40 adds");
    tt_free(&x), tt_free(&y);
    vk_close(vk);
}

/* More dispatches than one batch holds, several batches in flight at once. */
Test(vulkan, batches_larger_than_a_command_buffer) {
    chm_backend *vk = vk_open();
    tt_tensor x, y;
    ones_and_zeros(vk, &x, &y);
    chm_vulkan_stats s0 = stats(vk);
    for (int k = 0; k < 3500; k++) cr_assert_eq(chm_add(vk, &y.t, &y.t, &x.t), CHM_OK);
    chm_vulkan_stats s1 = stats(vk);
    uint64_t subs = s1.submits + s1.early_submits - s0.submits - s0.early_submits;
    cr_assert(subs >= 3, "3500 dispatches fit in %llu submissions?", (unsigned long long)subs);
    assert_all(vk, &y, 3500.0, "y after 3500 adds");
    tt_free(&x), tt_free(&y);
    vk_close(vk);
}

Test(vulkan, transfers_larger_than_the_staging_ring) {
    setenv("CHIMERA_VULKAN_STAGING_KB", "64", 1);
    chm_backend *vk = vk_open();
    int64_t n = 300001; /* 1.2 MB through a 64 KiB ring */
    tt_tensor x = tt_alloc(vk, CHM_F32, 1, &n);
    float *h = malloc((size_t)n * sizeof *h), *back = malloc((size_t)n * sizeof *back);
    for (int64_t i = 0; i < n; i++) h[i] = (float)i * 0.5f - 7.0f;
    cr_assert_eq(chm_upload(vk, &x.t, h), CHM_OK, "%s", vk->err.msg);
    cr_assert_eq(chm_scale(vk, &x.t, &x.t, 2.0), CHM_OK);
    cr_assert_eq(chm_download(vk, &x.t, back), CHM_OK, "%s", vk->err.msg);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(back[i], 2.0f * h[i], "element %lld: %g, expected %g", (long long)i, back[i],
                     2.0f * h[i]);
    /* A view at an odd offset, downloaded in chunks too. */
    chm_tensor v = chm_tensor_1d(x.buf, 4 * 12345, CHM_F32, 200001);
    cr_assert_eq(chm_download(vk, &v, back), CHM_OK);
    for (int64_t i = 0; i < 200001; i++) cr_assert_eq(back[i], 2.0f * h[i + 12345]);
    free(h), free(back);
    tt_free(&x);
    vk_close(vk);
}

Test(vulkan, alloc_free_cycles_return_the_pool_to_its_start) {
    setenv("CHIMERA_VULKAN_BLOCK_MB", "4", 1); /* small blocks: several of them, and dedicated ones */
    chm_backend *vk = vk_open();
    cr_assert_eq(chm_sync(vk), CHM_OK);
    chm_vulkan_stats s0 = stats(vk);
    tt_rng rng = tt_rng_make(7);
    chm_buffer *live[10] = {0};
    for (int k = 0; k < 600; k++) {
        int slot = (int)(tt_next(&rng) % 10);
        chm_buffer_free(live[slot]);
        size_t bytes = 4 + (size_t)(tt_next(&rng) % (3u << 20)) / 4 * 4;
        cr_assert_eq(chm_buffer_alloc(vk, bytes, &live[slot]), CHM_OK, "%s", vk->err.msg);
        /* Use the buffer's last 1000 bytes (a small dispatch: lavapipe is slow under ASan). */
        size_t used = bytes < 1000 ? bytes : 1000;
        chm_tensor t = chm_tensor_1d(live[slot], bytes - used, CHM_F32, (int64_t)(used / 4));
        cr_assert_eq(chm_fill(vk, &t, (double)k), CHM_OK);
        if (k % 97 == 0) cr_assert_eq(chm_sync(vk), CHM_OK);
    }
    for (int i = 0; i < 10; i++) chm_buffer_free(live[i]);
    cr_assert_eq(chm_sync(vk), CHM_OK);
    chm_vulkan_stats s1 = stats(vk);
    cr_assert_eq(s1.bytes_in_use, s0.bytes_in_use, "pool holds %llu bytes, started with %llu",
                 (unsigned long long)s1.bytes_in_use, (unsigned long long)s0.bytes_in_use);
    /* one spare shared block, and at most 8 blocks' worth of empty dedicated ones (the cache) */
    uint64_t mib = 1u << 20;
    cr_assert(s1.bytes_reserved <= s0.bytes_reserved + 9 * 4 * mib,
              "empty blocks are given back (%llu MiB held, %llu at the start)",
              (unsigned long long)(s1.bytes_reserved / mib),
              (unsigned long long)(s0.bytes_reserved / mib));
    cr_assert(s1.block_reuses > s0.block_reuses, "no large request reused a kept block");
    vk_close(vk);
}

/* A freed large (dedicated) buffer comes back for the next large request without a new block,
 * also before any sync, and its contents are written afresh. */
Test(vulkan, large_buffers_reuse_kept_blocks) {
    setenv("CHIMERA_VULKAN_BLOCK_MB", "4", 1); /* dedicated: over 2 MiB */
    chm_backend *vk = vk_open();
    chm_buffer *a = NULL, *b = NULL;
    cr_assert_eq(chm_buffer_alloc(vk, 3u << 20, &a), CHM_OK, "%s", vk->err.msg);
    chm_tensor ta = chm_tensor_1d(a, 0, CHM_F32, 1000);
    cr_assert_eq(chm_fill(vk, &ta, 1.0), CHM_OK);
    chm_vulkan_stats s0 = stats(vk);
    chm_buffer_free(a); /* its fill is still recorded, not run */
    cr_assert_eq(chm_buffer_alloc(vk, (5u << 20) / 2, &b), CHM_OK, "%s", vk->err.msg);
    chm_vulkan_stats s1 = stats(vk);
    cr_assert_eq(s1.block_allocs, s0.block_allocs, "a new block for a request the kept one holds");
    cr_assert_eq(s1.block_reuses, s0.block_reuses + 1);
    tt_tensor tb = {.t = chm_tensor_1d(b, 0, CHM_F32, 1000)};
    cr_assert_eq(chm_fill(vk, &tb.t, 2.0), CHM_OK); /* ordered after the first fill */
    assert_all(vk, &tb, 2.0, "the reused block");
    chm_buffer_free(b);
    cr_assert_eq(chm_sync(vk), CHM_OK);
    cr_assert_eq(stats(vk).bytes_in_use, s0.bytes_in_use - (3u << 20), "bytes handed out");
    vk_close(vk);
}

/* More workgroups than maxComputeWorkGroupCount.x are spread over y (limit shrunk to 1000). */
Test(vulkan, grids_wider_than_the_device_limit) {
    setenv("CHIMERA_VULKAN_MAX_GROUPS_X", "1000", 1);
    chm_backend *vk = vk_open();
    int64_t n = 3 * 1000 * 256 + 4321; /* more than 1000 groups at any workgroup size up to 256 */
    tt_tensor a = tt_alloc(vk, CHM_F32, 1, &n), b = tt_alloc(vk, CHM_F32, 1, &n);
    tt_poison(vk, &b);
    cr_assert_eq(chm_fill(vk, &a.t, 1.5), CHM_OK);
    cr_assert_eq(chm_scale(vk, &b.t, &a.t, 2.0), CHM_OK);
    assert_all(vk, &b, 3.0, "2 * 1.5 over a 2-D grid");
    tt_free(&a), tt_free(&b);
    vk_close(vk);
}

Test(vulkan, empty_tensors_are_no_ops) {
    chm_backend *vk = vk_open();
    tt_tensor e = tt_alloc(vk, CHM_F32, 2, (int64_t[]){0, 5}), out = tt_alloc(vk, CHM_F32, 1, (int64_t[]){5});
    tt_tensor s = tt_alloc(vk, CHM_F32, 1, (int64_t[]){1});
    cr_assert_eq(chm_fill(vk, &out.t, 1.0), CHM_OK);
    cr_assert_eq(chm_fill(vk, &e.t, 1.0), CHM_OK);
    cr_assert_eq(chm_add(vk, &e.t, &e.t, &e.t), CHM_OK);
    cr_assert_eq(chm_sum_rows(vk, &out.t, &e.t), CHM_OK);
    cr_assert_eq(chm_sum_squares(vk, &s.t, &e.t), CHM_OK);
    assert_all(vk, &out, 1.0, "sum_rows over no rows");
    assert_all(vk, &s, 0.0, "sum_squares of nothing");
    tt_free(&e), tt_free(&out), tt_free(&s);
    vk_close(vk);
}

/* The fallbacks: no push descriptors (descriptor pools), no subgroups, no 16-bit storage. */
Test(vulkan, fallbacks_behind_the_disable_switch) {
    setenv("CHIMERA_VULKAN_DISABLE", "push_descriptor,subgroup,16bit", 1);
    chm_backend *vk = vk_open(), *cpu = tt_open_cpu();
    cr_assert_eq(vk->caps & (CHM_CAP_BF16 | CHM_CAP_F16), 0);
    tt_tensor h = tt_alloc(vk, CHM_BF16, 1, (int64_t[]){4});
    cr_assert_eq(chm_fill(vk, &h.t, 1.0), CHM_ERR_UNSUPPORTED);
    cr_assert(strstr(vk->err.msg, "16-bit storage") != NULL, "%s", vk->err.msg);
    int64_t R = 70, C = 300;
    tt_rng rng = tt_rng_make(3);
    double *hx = tt_dalloc(R * C), *hw = tt_dalloc(C), *want = tt_dalloc(R * C), *got = tt_dalloc(R * C);
    tt_fill_uniform(&rng, hx, R * C, -2, 2);
    tt_fill_uniform(&rng, hw, C, 0.5, 1.5);
    chm_backend *bes[2] = {cpu, vk};
    double *res[2] = {want, got}, ss[2];
    for (int k = 0; k < 2; k++) {
        tt_tensor x = tt_alloc(bes[k], CHM_F32, 2, (int64_t[]){R, C});
        tt_tensor w = tt_alloc(bes[k], CHM_F32, 1, &C), o = tt_alloc(bes[k], CHM_F32, 2, (int64_t[]){R, C});
        tt_tensor r = tt_alloc(bes[k], CHM_F32, 1, &R), s = tt_alloc(bes[k], CHM_F32, 1, (int64_t[]){1});
        tt_upload(bes[k], &x, hx);
        tt_upload(bes[k], &w, hw);
        cr_assert_eq(chm_rmsnorm_fwd(bes[k], &o.t, &r.t, &x.t, &w.t, 1e-5), CHM_OK);
        cr_assert_eq(chm_sum_squares(bes[k], &s.t, &o.t), CHM_OK);
        tt_download(bes[k], &o, res[k]);
        tt_download(bes[k], &s, &ss[k]);
        tt_free(&x), tt_free(&w), tt_free(&o), tt_free(&r), tt_free(&s);
    }
    tt_assert_close("rmsnorm without subgroups or push descriptors", got, want, R * C, 1e-5, 1e-5);
    tt_assert_close("sum_squares without subgroups", &ss[1], &ss[0], 1, 0, 1e-5);
    /* Every frame's descriptor pool filled, reset and reused: a chain over 4 batches. */
    tt_tensor x = tt_alloc(vk, CHM_F32, 1, (int64_t[]){37}), y = tt_alloc(vk, CHM_F32, 1, (int64_t[]){37});
    cr_assert_eq(chm_fill(vk, &x.t, 1.0), CHM_OK);
    cr_assert_eq(chm_fill(vk, &y.t, 0.0), CHM_OK);
    for (int k = 0; k < 3500; k++) cr_assert_eq(chm_add(vk, &y.t, &y.t, &x.t), CHM_OK);
    double hy[37];
    tt_download(vk, &y, hy);
    for (int i = 0; i < 37; i++) cr_assert_eq(hy[i], 3500.0);
    tt_free(&x), tt_free(&y);
    free(hx), free(hw), free(want), free(got);
    tt_free(&h);
    chm_backend_close(cpu);
    vk_close(vk);
}

Test(vulkan, unknown_disable_names_and_devices_are_config_errors) {
    setenv("CHIMERA_VULKAN_DISABLE", "subgroup,warp_drive", 1);
    chm_err err = {0};
    chm_backend *be = NULL;
    chm_backend_options o = {.device_index = -1, .quiet = true};
    cr_assert_eq(chm_vulkan_open(&o, &be, &err), CHM_ERR_CONFIG);
    cr_assert(strstr(err.msg, "warp_drive") != NULL, "%s", err.msg);
    unsetenv("CHIMERA_VULKAN_DISABLE");
    o.device_index = 99;
    chm_status rc = chm_vulkan_open(&o, &be, &err);
    if (rc == CHM_ERR_UNSUPPORTED) cr_skip_test("no Vulkan device here: %s", err.msg);
    cr_assert_eq(rc, CHM_ERR_CONFIG, "%s", err.msg);
    cr_assert(strstr(err.msg, "99") != NULL, "%s", err.msg);
}

/* Run one add on a fresh backend (so that a pipeline is made) and close it. */
static void one_add(void) {
    chm_backend *vk = vk_open();
    tt_tensor x = tt_alloc(vk, CHM_F32, 1, (int64_t[]){100});
    cr_assert_eq(chm_fill(vk, &x.t, 1.0), CHM_OK);
    cr_assert_eq(chm_add(vk, &x.t, &x.t, &x.t), CHM_OK);
    assert_all(vk, &x, 2.0, "x + x");
    tt_free(&x);
    vk_close(vk);
}

Test(vulkan, pipeline_cache_is_saved_and_survives_corruption) {
    char dir[512], cache[600], file[700];
    build_dir(dir, sizeof dir);
    snprintf(cache, sizeof cache, "%s/test-cache-%ld", dir, (long)getpid());
    setenv("XDG_CACHE_HOME", cache, 1);
    one_add();
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls %s/chimera/vulkan-*.pipelines > %s/list 2>/dev/null", cache, cache);
    cr_assert_eq(system(cmd), 0, "no pipeline cache was written under %s", cache);
    snprintf(file, sizeof file, "%s/list", cache);
    FILE *f = fopen(file, "r");
    char path[700] = "";
    cr_assert(f && fgets(path, sizeof path, f));
    fclose(f);
    path[strcspn(path, "\n")] = '\0';
    f = fopen(path, "rb");
    char magic[8] = "";
    cr_assert(f && fread(magic, 1, 8, f) == 8);
    fclose(f);
    cr_assert_str_eq(magic, "CHMVKPC");
    /* Garbage in the file: ignored, and replaced by a good cache at the next close. */
    f = fopen(path, "wb");
    fputs("CHMVKPC\0 this is not a pipeline cache", f);
    fclose(f);
    one_add();
    f = fopen(path, "rb");
    struct stat st;
    cr_assert(f && stat(path, &st) == 0 && st.st_size > 64);
    fclose(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s", cache);
    cr_assert_eq(system(cmd), 0);
}

Test(vulkan, ids_out_of_range_are_reported_at_sync) {
    chm_backend *vk = vk_open();
    int64_t R = 5, V = 10, C = 3;
    tt_tensor ids = tt_alloc(vk, CHM_I32, 1, &R), table = tt_alloc(vk, CHM_F32, 2, (int64_t[]){V, C});
    tt_tensor out = tt_alloc(vk, CHM_F32, 2, (int64_t[]){R, C});
    tt_upload_i32(vk, &ids, (int32_t[]){0, 1, 99, 2, 3});
    cr_assert_eq(chm_fill(vk, &table.t, 1.0), CHM_OK);
    cr_assert_eq(chm_embedding_fwd(vk, &out.t, &ids.t, &table.t), CHM_OK);
    cr_assert_eq(chm_embedding_fwd(vk, &out.t, &ids.t, &table.t), CHM_OK); /* both may report */
    cr_assert_eq(chm_sync(vk), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(vk->err.msg, "embedding_fwd") && strstr(vk->err.msg, "ids[2] = 99") &&
                  strstr(vk->err.msg, "[0, 10)"),
              "%s", vk->err.msg);
    double h[15];
    tt_download(vk, &out, h);
    for (int i = 0; i < 15; i++) cr_assert_eq(h[i], i / 3 == 2 ? 0.0 : 1.0, "out element %d", i);
    cr_assert_eq(chm_sync(vk), CHM_OK, "the report is cleared once raised");
    tt_upload_i32(vk, &ids, (int32_t[]){0, -4, 1, 2, 3});
    cr_assert_eq(chm_embedding_bwd(vk, &table.t, &out.t, &ids.t), CHM_OK);
    cr_assert_eq(chm_sync(vk), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(vk->err.msg, "embedding_bwd") && strstr(vk->err.msg, "ids[1] = -4"), "%s",
              vk->err.msg);
    tt_free(&ids), tt_free(&table), tt_free(&out);
    vk_close(vk);
}

Test(vulkan, events_and_profile_report) {
    chm_backend *vk = vk_open();
    chm_vulkan_set_profile(vk, true);
    tt_tensor x = tt_alloc(vk, CHM_F32, 1, (int64_t[]){4096});
    chm_event *e0, *e1;
    cr_assert_eq(chm_event_create(vk, &e0), CHM_OK);
    cr_assert_eq(chm_event_create(vk, &e1), CHM_OK);
    cr_assert_eq(chm_fill(vk, &x.t, 0.0), CHM_OK);
    cr_assert_eq(chm_event_record(vk, e0), CHM_OK);
    for (int k = 0; k < 20; k++) cr_assert_eq(chm_add(vk, &x.t, &x.t, &x.t), CHM_OK);
    cr_assert_eq(chm_event_record(vk, e1), CHM_OK);
    double ms = -1;
    cr_assert_eq(chm_event_elapsed_ms(vk, e0, e1, &ms), CHM_OK, "%s", vk->err.msg);
    cr_assert(ms >= 0 && ms < 60e3, "elapsed %g ms", ms);
    char report[4096];
    cr_assert_eq(chm_vulkan_profile_report(vk, report, sizeof report), CHM_OK);
    cr_assert(strstr(report, "add ") != NULL && strstr(report, " 20 ") != NULL, "%s", report);
    chm_event_destroy(vk, e0);
    chm_event_destroy(vk, e1);
    tt_free(&x);
    vk_close(vk);
}
