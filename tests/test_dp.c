/*
 * test_dp.c: data-parallel training (chimera/comm.h, the trainer's data
 * parallelism, the ZeRO-1 optimizer shard).
 *
 * In-process: the single-process group (no-op collectives, argument checks
 * with named messages, chm_comm_block's tiling), the rendezvous file (a
 * forked reader gets the writer's bytes; a missing writer times out with a
 * message naming the file), and the sharded optimizer (two shards' steps
 * equal one unsharded step bit for bit, each holding only its moments).
 *
 * Under `mpirun -np N --allow-run-as-root --oversubscribe` (skipped, saying
 * so, when the build has no MPI or there is no mpirun), running the real
 * binary on configs/test.yaml shrunk to milliseconds per step (MoE off: its
 * capacity and balance loss are per micro batch, so they differ between
 * 2 x b and 1 x 2b by design):
 *  - 2 ranks at micro batch b give the same losses, weights and moments as
 *    1 rank at 2b (f32 rounding; the worst relative error is logged);
 *  - a checkpoint of 2 ranks resumes on 1 and one of 1 on 2, and the
 *    continued losses equal the uninterrupted run's;
 *  - the gradient all-reduce in buckets started during the backward
 *    (train.comm_bucket_mb tiny: several per step, MPI_Iallreduce in 100-
 *    element chunks) gives bit-identical losses, weights and moments to one
 *    all-reduce after the backward (0), at grad_accum 2 (only the last micro
 *    batch starts buckets), tied and untied; host-staged (the vulkan path)
 *    it falls back to one all-reduce, with the same result;
 *  - bf16 mixed precision (fp32 master weights gathered, bf16 gradients
 *    summed) on 2 ranks stays within 1e-3 of 1 rank at twice the batch;
 *  - a rank that dies (CHIMERA_DEBUG_DIE_RANK) ends the job: mpirun exits
 *    non-zero within seconds and says which rank died;
 *  - `chimera train --comm-check`: every MPI collective (the nonblocking
 *    all-reduce of the buckets included) against a host reference, on 2
 *    ranks, and on 3 ranks with 7-element chunks (uneven blocks, empty
 *    blocks, the chunk loop) staged through downloads and uploads
 *    (CHIMERA_COMM_STAGE=1: the vulkan backend's path);
 *  - --rank/--world-size on the cpu backend is refused with a hint.
 * On a machine with two or more GPUs and a cuda build the NCCL path runs the
 * same way; elsewhere these tests are skipped. dp/nccl_two_gpus_mpirun: the
 * comm check, 2 ranks vs 1 rank at twice the batch (f32), bf16 mixed
 * precision on 2 ranks. dp/nccl_two_gpus_by_hand (no MPI): the comm check and
 * the same comparison in a group started with --rank/--world-size and a
 * rendezvous file, and a group whose rank 1 dies (rank 0's watchdog ends it).
 * There, point the environment variable CHIMERA_BINARY at the packed binary
 * ($PWD/.gpu/bin/chimera) and run .gpu/bin/chimera_tests on the dp suite.
 */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chimera/checkpoint.h"
#include "chimera/comm.h"
#include "chimera/optim.h"
#include "comm/comm_internal.h"
#include "testutil.h"
#include "train_fixture.h"

#define TEST_CACHE_HOME "/tmp/chimera-tests-cache"
/* Root in containers, more ranks than cores, no pinning (test jobs run side by side). */
#define MPIRUN "timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -np "

/* A model of milliseconds per step: every block kind but MoE (see the top of the file). */
static const char *DP_ARGS =
    "--set model.d_model=16 --set model.n_layers=2 --set model.pattern=MA --set model.heads=2 "
    "--set model.kv_heads=1 --set model.mamba.d_state=4 --set model.moe.experts=0 "
    "--set model.ffn.hidden=32 --set model.mod.layers=[1] --set train.seq_len=16 "
    "--set train.warmup=2 --set train.eval_batches=2 --set train.steps=6 --set train.log_every=1 "
    "--set train.save_every=3 --set train.eval_every=3 --backend cpu --peak-tflops 1 --quiet";

/* ---- running the binary --------------------------------------------------------------------- */

/* The chimera binary: $CHIMERA_BINARY (a packed binary on the GPU machine), else the build's. */
static const char *bin(void) {
    const char *b = getenv("CHIMERA_BINARY");
    return b && *b ? b : CHIMERA_BINARY;
}

/* Run a shell command in dir with the test cache and one OpenMP thread per process; stdout
 * and stderr into dir/out.txt and dir/err.txt. The exit status (-1 when killed). */
static int sh(const char *dir, const char *cmd) {
    char full[8192];
    /* Open MPI's own allocations are not ours to report: no leak check under ASan; and no
     * cross-memory attach between ranks, which containers often forbid */
    snprintf(full, sizeof full,
             "cd %s && export XDG_CACHE_HOME=" TEST_CACHE_HOME " OMP_NUM_THREADS=1 "
             "ASAN_OPTIONS=detect_leaks=0 OMPI_MCA_btl_vader_single_copy_mechanism=none && "
             "(%s) >out.txt 2>err.txt",
             dir, cmd);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    return b;
}

/* mpirun and an MPI build, or skip the test saying which is missing. */
static void need_mpirun(void) {
#ifndef CHIMERA_HAVE_MPI
    cr_skip_test("this build has no MPI (apt-get install libopenmpi-dev openmpi-bin, rebuild)");
#endif
    if (system("command -v mpirun >/dev/null 2>&1") != 0)
        cr_skip_test("no mpirun on PATH (apt-get install openmpi-bin)");
}

/* `chimera train` on `ranks` processes (1: without mpirun) in dir with extra args and the
 * environment assignments env ("" none); asserts success. */
static void train_env(const char *dir, const char *env, int ranks, const char *extra) {
    char cmd[4096];
    if (ranks > 1)
        snprintf(cmd, sizeof cmd, "%s " MPIRUN "%d %s train %s %s", env, ranks, bin(), DP_ARGS,
                 extra);
    else
        snprintf(cmd, sizeof cmd, "%s %s train %s %s", env, bin(), DP_ARGS, extra);
    int rc = sh(dir, cmd);
    cr_assert_eq(rc, 0, "`%s` exited %d: %s", cmd, rc, slurp(dir, "err.txt"));
}

static void train(const char *dir, int ranks, const char *extra) {
    train_env(dir, "", ranks, extra);
}

/* The loss of every "train" event of run/metrics.jsonl, by step (1-based; NAN when absent). */
static void losses(const char *dir, const char *run, double *loss, int steps) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, run);
    for (int i = 0; i <= steps; i++) loss[i] = NAN;
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    char line[1 << 14];
    while (fgets(line, sizeof line, f)) {
        json_t *e = json_loads(line, 0, NULL);
        cr_assert_not_null(e, "%s: not JSON: %s", path, line);
        if (!strcmp(json_string_value(json_object_get(e, "event")), "train")) {
            json_int_t s = json_integer_value(json_object_get(e, "step"));
            if (s >= 1 && s <= steps) loss[s] = json_number_value(json_object_get(e, "loss"));
        }
        json_decref(e);
    }
    fclose(f);
}

/* Every loss of steps [from, to] of run a equal to run b's within rel. */
static void same_losses(const double *a, const double *b, int from, int to, double rel,
                        const char *what) {
    for (int s = from; s <= to; s++)
        cr_assert(isfinite(a[s]) && fabs(a[s] - b[s]) <= rel * fabs(b[s]),
                  "%s: step %d loss %.9g vs %.9g", what, s, a[s], b[s]);
}

/* The worst relative L2 error over the tensors of two safetensors files (same names and
 * shapes asserted); f32 or f64 data. */
static double worst_rel(const char *pa, const char *pb) {
    chm_safetensors *a, *b;
    chm_err err = {0};
    cr_assert_eq(chm_safetensors_open(pa, &a, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_safetensors_open(pb, &b, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_safetensors_count(a), chm_safetensors_count(b));
    double worst = 0;
    for (int i = 0; i < chm_safetensors_count(a); i++) {
        const chm_st_tensor *x = chm_safetensors_get(a, i);
        const chm_st_tensor *y = chm_safetensors_find(b, x->name);
        cr_assert(y && y->nbytes == x->nbytes && y->dtype == x->dtype, "%s: %s differs", pb,
                  x->name);
        size_t ds = chm_dtype_size(x->dtype), n = (size_t)x->nbytes / ds;
        double *u = malloc(2 * n * sizeof *u + 1);
        for (size_t k = 0; k < n; k++) {
            float f, g;
            if (x->dtype == CHM_F64) {
                memcpy(&u[k], (const char *)x->data + k * 8, 8);
                memcpy(&u[n + k], (const char *)y->data + k * 8, 8);
            } else {
                memcpy(&f, (const char *)x->data + k * 4, 4);
                memcpy(&g, (const char *)y->data + k * 4, 4);
                u[k] = f, u[n + k] = g;
            }
        }
        double r = tt_rel_l2(u, u + n, (int64_t)n);
        if (r > worst) worst = r;
        free(u);
    }
    chm_safetensors_close(a);
    chm_safetensors_close(b);
    return worst;
}

/* run A: 1 rank at micro batch 4; run B: 2 ranks at 2 (the same global batch), 6 steps,
 * checkpoints at 3 and 6. */
static char *two_runs(void) {
    char *dir = make_tmpdir_named("chm-dp-");
    train(dir, 1, "--out A --set train.micro_batch=4");
    train(dir, 2, "--out B --set train.micro_batch=2");
    return dir;
}

/* ---- the process group, in this process ----------------------------------------------------- */

Test(dp, single_process_group) {
    chm_comm *c;
    chm_err err = {0};
    cr_assert_eq(chm_comm_open(NULL, &c, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_comm_size(c), 1);
    cr_assert_eq(chm_comm_rank(c), 0);
    cr_assert_eq(chm_comm_device_index(c, "cuda"), -1);
    chm_backend *be = tt_open_cpu();
    int64_t shape[] = {5};
    tt_tensor x = tt_alloc(be, CHM_F32, 1, shape);
    double v[5] = {1, -2, 3, 0.5, 7}, got[5];
    tt_upload(be, &x, v);
    /* before attach: refused, naming the collective */
    chm_status rc = chm_comm_all_reduce(c, &x.t, &err);
    cr_assert(rc == CHM_ERR_INVALID_ARG && strstr(err.msg, "all_reduce") &&
                  strstr(err.msg, "attach"),
              "%s", err.msg);
    cr_assert_eq(chm_comm_attach(c, be, NULL, &err), CHM_OK, "%s", err.msg);
    cr_assert(strstr(chm_comm_describe(c), "single"));
    cr_assert_eq(chm_comm_all_reduce(c, &x.t, &err), CHM_OK);
    cr_assert_eq(chm_comm_reduce_scatter(c, &x.t, &err), CHM_OK);
    cr_assert_eq(chm_comm_all_gather(c, &x.t, &err), CHM_OK);
    cr_assert_eq(chm_comm_broadcast(c, &x.t, 0, &err), CHM_OK);
    cr_assert_eq(chm_comm_barrier(c, &err), CHM_OK);
    double h[2] = {4, 5};
    cr_assert_eq(chm_comm_sum_host(c, h, 2, &err), CHM_OK);
    cr_assert(h[0] == 4 && h[1] == 5);
    tt_download(be, &x, got);
    cr_assert_arr_eq(got, v, sizeof v, "a group of one leaves tensors alone");
    /* bad arguments: root outside the group, an unbound tensor */
    rc = chm_comm_broadcast(c, &x.t, 1, &err);
    cr_assert(rc == CHM_ERR_INVALID_ARG && strstr(err.msg, "broadcast") && strstr(err.msg, "root"),
              "%s", err.msg);
    chm_tensor unbound = chm_tensor_1d(NULL, 0, CHM_F32, 3);
    rc = chm_comm_all_gather(c, &unbound, &err);
    cr_assert(rc != CHM_OK && strstr(err.msg, "all_gather"), "%s", err.msg);
    chm_comm_detach(c);
    chm_comm_close(c);
    tt_free(&x);
    chm_backend_close(be);
}

Test(dp, explicit_rank_checked) {
    chm_comm *c;
    chm_err err = {0};
    chm_comm_options o = {.world_size = 2, .rank = 2};
    chm_status rc = chm_comm_open(&o, &c, &err);
    cr_assert(rc == CHM_ERR_INVALID_ARG && strstr(err.msg, "--rank 2") &&
                  strstr(err.msg, "--world-size 2"),
              "%s", err.msg);
    /* a hand-started group of cpu processes has no transport: refused with the way out */
    o.rank = 0;
    cr_assert_eq(chm_comm_open(&o, &c, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_comm_size(c), 2);
    chm_backend *be = tt_open_cpu();
    rc = chm_comm_attach(c, be, "/tmp/unused", &err);
    cr_assert(rc == CHM_ERR_UNSUPPORTED && strstr(err.msg, "mpirun -np 2"), "%s", err.msg);
    chm_comm_close(c);
    chm_backend_close(be);
}

Test(dp, blocks_tile_the_tensor) {
    const int64_t ns[] = {0, 1, 7, 63, 64, 65, 1000, 4096, 100003};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int w = 1; w <= 5; w++) {
            int64_t next = 0, b, k, k0 = -1;
            for (int r = 0; r < w; r++) {
                chm_comm_block(ns[i], w, r, &b, &k);
                cr_assert(b == next && k >= 0,
                          "n %lld world %d rank %d: block at %lld, expected %lld", (long long)ns[i],
                          w, r, (long long)b, (long long)next);
                cr_assert(b % CHM_COMM_BLOCK_ALIGN == 0 || k == 0, "block start aligned");
                if (r == 0) k0 = k;
                cr_assert(k <= k0, "later blocks are never larger");
                next = b + k;
            }
            cr_assert_eq(next, ns[i], "the blocks cover all %lld elements", (long long)ns[i]);
        }
}

Test(dp, rendezvous_file) {
    char *dir = make_tmpdir_named("chm-rdv-"), path[4200];
    snprintf(path, sizeof path, "%s/sub/id", dir);
    unsigned char id[128], got[128];
    for (int i = 0; i < 128; i++) id[i] = (unsigned char)(i * 37 + 11);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) { /* rank 1 waits for the file */
        chm_err e = {0};
        memset(got, 0, sizeof got);
        if (chm_comm_rendezvous(path, 1, 2, got, sizeof got, 30, &e) != CHM_OK) _exit(2);
        _exit(memcmp(got, id, sizeof id) != 0 ? 3 : 0);
    }
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL); /* let the reader wait first */
    chm_err err = {0};
    cr_assert_eq(chm_comm_rendezvous(path, 0, 2, id, sizeof id, 30, &err), CHM_OK, "%s", err.msg);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rank 1 did not read rank 0's bytes (%d)", st);
    chm_comm_rendezvous_done(path, 0);
    cr_assert(access(path, F_OK) != 0, "rank 0 removes the file once everyone is connected");
    /* no rank 0: the reader gives up with a message naming the file; another world size's
     * file is not taken */
    chm_status rc = chm_comm_rendezvous(path, 1, 2, got, sizeof got, 0.3, &err);
    cr_assert(rc == CHM_ERR_IO && strstr(err.msg, path) && strstr(err.msg, "rank 0"), "%s",
              err.msg);
    cr_assert_eq(chm_comm_rendezvous(path, 0, 3, id, sizeof id, 30, &err), CHM_OK, "%s", err.msg);
    rc = chm_comm_rendezvous(path, 1, 2, got, sizeof got, 0.3, &err);
    cr_assert_eq(rc, CHM_ERR_IO, "a file for world 3 is not world 2's");
    remove_tmpdir(dir);
}

/* ---- the ZeRO-1 optimizer shard ---------------------------------------------------------------
 */

/* Host copy of a whole flat buffer view. */
static float *grab(chm_backend *be, const chm_tensor *v) {
    float *h = malloc(chm_tensor_nbytes(v) + 4);
    cr_assert_eq(chm_download(be, v, h), CHM_OK, "%s", be->err.msg);
    return h;
}

Test(dp, zero1_shards_equal_one_optimizer) {
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_backend *be = tt_open_cpu();
    chm_model_options mo = {.dtype = CHM_F32, .batch = 2, .seq_len = cfg.train.seq_len};
    chm_model *m;
    chm_err err = {0};
    cr_assert_eq(chm_model_create(&cfg.model, be, &mo, &m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_init_params(m, 5, &err), CHM_OK, "%s", err.msg);
    int64_t T = cfg.train.seq_len, nid = 2 * (T + 1);
    int32_t *ids = malloc((size_t)nid * sizeof *ids);
    tt_rng r = tt_rng_make(41);
    for (int64_t i = 0; i < nid; i++) ids[i] = (int32_t)(tt_next(&r) % (uint64_t)cfg.model.vocab);
    cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK);
    cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, NULL, &err), CHM_OK, "%s", err.msg);
    chm_tensor pv;
    int64_t first;
    ck_param_span(m, false, &pv, &first);
    int64_t E = chm_tensor_numel(&pv);
    float *p0 = grab(be, &pv);
    /* one optimizer over everything, two steps */
    chm_optim *whole, *sh[2];
    cr_assert_eq(chm_optim_create(m, &cfg.train, NULL, &whole, &err), CHM_OK, "%s", err.msg);
    for (int s = 0; s < 2; s++) cr_assert_eq(chm_optim_step(whole, 1e-2, 0.7, &err), CHM_OK);
    float *pw = grab(be, &pv);
    chm_tensor wm, wv;
    chm_optim_moment_buffers(whole, &wm, &wv);
    float *mw = grab(be, &wm);
    /* two shards from the same start, each updating its block */
    cr_assert_eq(chm_upload(be, &pv, p0), CHM_OK);
    for (int k = 0; k < 2; k++) {
        chm_optim_options o = {.shard = true};
        chm_comm_block(E, 2, k, &o.shard_begin, &o.shard_count);
        cr_assert_eq(chm_optim_create(m, &cfg.train, &o, &sh[k], &err), CHM_OK, "%s", err.msg);
        int64_t b, n, tot;
        chm_optim_shard(sh[k], &b, &n, &tot);
        cr_assert(b == o.shard_begin && n == o.shard_count && tot == E);
    }
    cr_assert_eq(chm_optim_bytes(sh[0]) + chm_optim_bytes(sh[1]), chm_optim_bytes(whole),
                 "the shards hold the moments once between them");
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 2; k++) cr_assert_eq(chm_optim_step(sh[k], 1e-2, 0.7, &err), CHM_OK);
    float *ps = grab(be, &pv);
    cr_assert(!memcmp(ps, pw, (size_t)E * sizeof *ps), "sharded steps differ from one optimizer's");
    for (int k = 0; k < 2; k++) {
        int64_t b, n;
        chm_optim_shard(sh[k], &b, &n, NULL);
        chm_tensor sm, sv;
        chm_optim_moment_buffers(sh[k], &sm, &sv);
        cr_assert_eq(chm_tensor_numel(&sm), n);
        float *ms = grab(be, &sm);
        cr_assert(!memcmp(ms, mw + b, (size_t)n * sizeof *ms), "shard %d's exp_avg", k);
        free(ms);
    }
    /* a parameter not wholly in a shard has no per-parameter moment view there */
    int64_t b1, n1;
    chm_optim_shard(sh[1], &b1, &n1, NULL);
    for (int i = 0; i < chm_model_param_count(m); i++) {
        const chm_model_param *p = chm_model_param_get(m, i);
        int64_t at = p->offset - first;
        chm_tensor em, ev;
        chm_optim_moments(sh[1], p, &em, &ev);
        bool inside = at >= b1 && at + p->numel <= b1 + n1;
        cr_assert_eq(em.buf != NULL, inside, "%s: view bound %d, inside %d", p->name,
                     em.buf != NULL, inside);
    }
    /* a shard outside the buffer is refused */
    chm_optim_options bad = {.shard = true, .shard_begin = E - 1, .shard_count = 2};
    chm_optim *o3;
    chm_status rc = chm_optim_create(m, &cfg.train, &bad, &o3, &err);
    cr_assert(rc == CHM_ERR_INVALID_ARG && strstr(err.msg, "shard"), "%s", err.msg);
    chm_optim_free(whole), chm_optim_free(sh[0]), chm_optim_free(sh[1]);
    free(p0), free(pw), free(ps), free(mw), free(ids);
    chm_model_free(m);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

/* ---- under mpirun ------------------------------------------------------------------------------
 */

Test(dp, two_ranks_equal_one_rank_at_twice_the_batch) {
    need_mpirun();
    char *dir = two_runs(), pa[4200], pb[4200];
    double la[7], lb[7];
    losses(dir, "A", la, 6);
    losses(dir, "B", lb, 6);
    same_losses(lb, la, 1, 6, 1e-5, "2 ranks x 2 vs 1 rank x 4");
    double worst = 0;
    const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int f = 0; f < 2; f++) {
        snprintf(pa, sizeof pa, "%s/A/step-00000006/%s", dir, files[f]);
        snprintf(pb, sizeof pb, "%s/B/step-00000006/%s", dir, files[f]);
        double w = worst_rel(pb, pa);
        cr_log_info("2 ranks vs 1 rank, %s: worst relative L2 error %.3g", files[f], w);
        cr_assert(w < 1e-5, "%s: relative error %g over 1e-5", files[f], w);
        if (w > worst) worst = w;
    }
    char *out = slurp(dir, "out.txt");
    cr_assert(strstr(out, "data parallel: mpi") && strstr(out, "2 ranks") && strstr(out, "ZeRO-1"),
              "the header names the world size: %s", out);
    free(out);
    remove_tmpdir(dir);
}

/* The number of gradient all-reduces of the first step of a run (its first "comm" event). */
static int grad_all_reduces(const char *dir, const char *run) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", dir, run);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    char line[1 << 14];
    int n = -1;
    while (n < 0 && fgets(line, sizeof line, f)) {
        json_t *e = json_loads(line, 0, NULL);
        if (e && !strcmp(json_string_value(json_object_get(e, "event")), "comm")) {
            n = (int)json_integer_value(json_object_get(e, "grad_all_reduces"));
            cr_assert(json_is_number(json_object_get(e, "comm_exposed_ms_per_step")), "%s", line);
        }
        json_decref(e);
    }
    fclose(f);
    return n;
}

/* Run a (buckets of 2 KiB: several per step; MPI calls of 100 elements) against run b (one
 * all-reduce after the backward) on 2 ranks at grad_accum 2: bit for bit the same. */
static void buckets_vs_one(const char *dir, const char *a, const char *b, const char *model) {
    char extra[1024], pa[4200], pb[4200];
    const char *common = "--set train.micro_batch=2 --set train.grad_accum=2 --set train.steps=3 "
                         "--set train.save_every=0 --set train.eval_every=0";
    snprintf(extra, sizeof extra, "%s %s --out %s --set train.comm_bucket_mb=0.002", common,
             model, a);
    train_env(dir, "CHIMERA_COMM_CHUNK=100", 2, extra);
    char *out = slurp(dir, "out.txt");
    cr_assert(strstr(out, "buckets of 0.002 MiB"), "%s", out);
    free(out);
    snprintf(extra, sizeof extra, "%s %s --out %s --set train.comm_bucket_mb=0", common, model, b);
    train(dir, 2, extra);
    out = slurp(dir, "out.txt");
    cr_assert(strstr(out, "one after the backward (train.comm_bucket_mb 0)"), "%s", out);
    free(out);
    double la[4], lb[4];
    losses(dir, a, la, 3);
    losses(dir, b, lb, 3);
    same_losses(la, lb, 1, 3, 0, "buckets vs one all-reduce");
    int na = grad_all_reduces(dir, a), nb = grad_all_reduces(dir, b);
    cr_assert(na > 3 && nb == 1, "all-reduces per step: %d with buckets, %d without", na, nb);
    const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int f = 0; f < 2; f++) {
        snprintf(pa, sizeof pa, "%s/%s/step-00000003/%s", dir, a, files[f]);
        snprintf(pb, sizeof pb, "%s/%s/step-00000003/%s", dir, b, files[f]);
        double w = worst_rel(pa, pb);
        cr_assert(w == 0, "%s %s: buckets change the result (relative error %g)", model, files[f],
                  w);
    }
    cr_log_info("%s: %d bucketed all-reduces per step, bit-identical to one", model, na);
}

Test(dp, buckets_equal_one_all_reduce) {
    need_mpirun();
    char *dir = make_tmpdir_named("chm-dp-");
    buckets_vs_one(dir, "T", "T0", "--set model.tie_embeddings=true");
    buckets_vs_one(dir, "U", "U0", "--set model.tie_embeddings=false");
    /* host-staged (the vulkan path): the buckets fall back to one all-reduce, same result */
    train_env(dir, "CHIMERA_COMM_STAGE=1", 2,
              "--set train.micro_batch=2 --set train.grad_accum=2 --set train.steps=3 --set "
              "train.save_every=0 --set train.eval_every=0 --set model.tie_embeddings=false "
              "--out S --set train.comm_bucket_mb=0.002");
    char *out = slurp(dir, "out.txt");
    cr_assert(strstr(out, "one after the backward (this transport does not overlap)"), "%s", out);
    free(out);
    double ls[4], lu[4];
    losses(dir, "S", ls, 3);
    losses(dir, "U0", lu, 3);
    same_losses(ls, lu, 1, 3, 0, "staged vs in place");
    cr_assert_eq(grad_all_reduces(dir, "S"), 1);
    remove_tmpdir(dir);
}

Test(dp, resume_on_another_rank_count) {
    need_mpirun();
    char *dir = two_runs(), pa[4200], pb[4200];
    double la[7], lc[7], ld[7];
    losses(dir, "A", la, 6);
    train(dir, 1, "--out C --resume B/step-00000003 --set train.micro_batch=4"); /* 2 -> 1 */
    train(dir, 2, "--out D --resume A/step-00000003 --set train.micro_batch=2"); /* 1 -> 2 */
    losses(dir, "C", lc, 6);
    losses(dir, "D", ld, 6);
    same_losses(lc, la, 4, 6, 1e-5, "saved on 2 ranks, resumed on 1");
    same_losses(ld, la, 4, 6, 1e-5, "saved on 1 rank, resumed on 2");
    cr_assert(isnan(lc[1]) && isnan(ld[3]), "the resumed runs start at step 4");
    const char *runs[] = {"C", "D"};
    for (int r = 0; r < 2; r++) {
        snprintf(pa, sizeof pa, "%s/A/step-00000006/model.safetensors", dir);
        snprintf(pb, sizeof pb, "%s/%s/step-00000006/model.safetensors", dir, runs[r]);
        double w = worst_rel(pb, pa);
        cr_log_info("resumed run %s vs uninterrupted: worst relative L2 error %.3g", runs[r], w);
        cr_assert(w < 1e-5, "run %s: weights off by %g", runs[r], w);
    }
    remove_tmpdir(dir);
}

Test(dp, bf16_mixed_precision_two_ranks) {
    need_mpirun();
    char *dir = make_tmpdir_named("chm-dp-");
    train(dir, 1, "--out A --set train.micro_batch=4 --set precision=bf16");
    train(dir, 2, "--out B --set train.micro_batch=2 --set precision=bf16");
    double la[7], lb[7];
    losses(dir, "A", la, 6);
    losses(dir, "B", lb, 6);
    /* bf16 gradients are summed in bf16 across the ranks: close, not equal */
    same_losses(lb, la, 1, 6, 1e-3, "bf16: 2 ranks x 2 vs 1 rank x 4");
    char *out = slurp(dir, "out.txt");
    cr_assert(strstr(out, "bf16 mixed precision"), "%s", out);
    free(out);
    /* The ranks gather the bf16 compute copy after each step and the f32 master blocks only
     * for a checkpoint: a checkpoint holding another rank's stale masters would put the
     * resumed run (and the saved weights) steps behind. */
    train(dir, 2, "--out E --resume B/step-00000003 --set train.micro_batch=2 --set "
                  "precision=bf16");
    double le[7];
    losses(dir, "E", le, 6);
    same_losses(le, lb, 4, 6, 1e-6, "bf16 on 2 ranks: resumed at step 3 vs uninterrupted");
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/A/step-00000006/model.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/B/step-00000006/model.safetensors", dir);
    double wab = worst_rel(pb, pa);
    snprintf(pa, sizeof pa, "%s/E/step-00000006/model.safetensors", dir);
    double web = worst_rel(pa, pb);
    cr_log_info("bf16 weights at step 6: 2 ranks vs 1 rank %.3g, resumed vs uninterrupted %.3g",
                wab, web);
    cr_assert(wab < 3e-2, "bf16: 2 ranks' weights off 1 rank's by %g", wab);
    cr_assert(web < 1e-6, "bf16: the resumed run's weights off by %g", web);
    remove_tmpdir(dir);
}

Test(dp, dead_rank_ends_the_job) {
    need_mpirun();
    char *dir = make_tmpdir_named("chm-dp-"), cmd[4096];
    snprintf(cmd, sizeof cmd,
             "CHIMERA_DEBUG_DIE_RANK=1 CHIMERA_DEBUG_DIE_STEP=2 " MPIRUN "2 %s train %s --out R "
             "--set train.micro_batch=2 --set train.steps=1000000",
             bin(), DP_ARGS);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = sh(dir, cmd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    char *err = slurp(dir, "err.txt");
    cr_assert(rc != 0 && rc != 124, "mpirun exited %d (124: it hung until the timeout): %s", rc,
              err);
    cr_assert(secs < 60, "the job took %.0f s to end", secs);
    cr_assert(strstr(err, "rank 1 of 2 dies at step 2"), "%s", err);
    cr_assert(strstr(err, "rank 1") && (strstr(err, "signal 9") || strstr(err, "Killed")),
              "mpirun says which rank died: %s", err);
    cr_log_info("a dead rank ended the job in %.1f s (mpirun exit %d)", secs, rc);
    free(err);
    remove_tmpdir(dir);
}

Test(dp, comm_check_mpi) {
    need_mpirun();
    char *dir = make_tmpdir_named("chm-dp-"), cmd[4096];
    snprintf(cmd, sizeof cmd, MPIRUN "2 %s train --backend cpu --comm-check", bin());
    int rc = sh(dir, cmd);
    char *out = slurp(dir, "out.txt");
    cr_assert(rc == 0 && strstr(out, "every collective agrees") && !strstr(out, "WRONG"),
              "exit %d: %s%s", rc, out, slurp(dir, "err.txt"));
    cr_assert(strstr(out, "mpi (") && strstr(out, "reduce_scatter   f32") &&
                  strstr(out, "all_reduce_start bf16") && strstr(out, "bf16"),
              "%s", out);
    free(out);
    /* 3 ranks, 7-element MPI calls: uneven and empty blocks, many chunks; staged through
     * downloads and uploads as on the vulkan backend */
    snprintf(cmd, sizeof cmd,
             "CHIMERA_COMM_CHUNK=7 CHIMERA_COMM_STAGE=1 " MPIRUN "3 %s train --backend cpu "
             "--comm-check",
             bin());
    rc = sh(dir, cmd);
    out = slurp(dir, "out.txt");
    cr_assert(rc == 0 && strstr(out, "every collective agrees") && strstr(out, "3 ranks") &&
                  strstr(out, "downloads and uploads"),
              "exit %d: %s%s", rc, out, slurp(dir, "err.txt"));
    free(out);
    remove_tmpdir(dir);
}

Test(dp, hand_started_cpu_group_refused) {
    char *dir = make_tmpdir_named("chm-dp-"), cmd[4096];
    snprintf(cmd, sizeof cmd, "%s train %s --rank 0 --world-size 2 --out R", bin(), DP_ARGS);
    int rc = sh(dir, cmd);
    char *err = slurp(dir, "err.txt");
    cr_assert(rc == 2 && strstr(err, "mpirun -np 2") && strstr(err, "cuda"), "exit %d: %s", rc,
              err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s train --rank 3 --world-size 2", bin());
    rc = sh(dir, cmd);
    err = slurp(dir, "err.txt");
    cr_assert(rc == 2 && strstr(err, "--rank 3"), "exit %d: %s", rc, err);
    free(err);
    remove_tmpdir(dir);
}

/* ---- NCCL on two GPUs (skipped elsewhere) --------------------------------------------------- */

#ifdef CHIMERA_HAVE_CUDA
/* Two cuda devices can be opened. */
static bool two_gpus(void) {
    chm_backend_options bo = {.device_index = 1, .quiet = true};
    chm_backend *be = NULL;
    chm_err err = {0};
    if (chm_backend_open("cuda", &bo, &be, &err) != CHM_OK) return false;
    chm_backend_close(be);
    return true;
}
#endif

/* One GPU at micro batch 4 (f32), the reference of the NCCL tests: run A of dir. */
#define F32_CUDA "--backend cuda --set precision=f32"

Test(dp, nccl_two_gpus_mpirun) {
#ifndef CHIMERA_HAVE_CUDA
    cr_skip_test("this build has no cuda backend");
#else
    if (!two_gpus()) cr_skip_test("fewer than two cuda devices");
    need_mpirun();
    char *dir = make_tmpdir_named("chm-dp-"), cmd[4096];
    snprintf(cmd, sizeof cmd, MPIRUN "2 %s train --backend cuda --comm-check", bin());
    int rc = sh(dir, cmd);
    char *out = slurp(dir, "out.txt");
    cr_assert(rc == 0 && strstr(out, "nccl ") && strstr(out, "every collective agrees"),
              "exit %d: %s%s", rc, out, slurp(dir, "err.txt"));
    cr_log_info("%s", out);
    free(out);
    /* f32 on two GPUs against one GPU at twice the batch */
    snprintf(cmd, sizeof cmd, "%s train %s " F32_CUDA " --out A --set train.micro_batch=4", bin(),
             DP_ARGS);
    cr_assert_eq(sh(dir, cmd), 0, "%s", slurp(dir, "err.txt"));
    snprintf(cmd, sizeof cmd, MPIRUN "2 %s train %s " F32_CUDA " --out B --set train.micro_batch=2",
             bin(), DP_ARGS);
    cr_assert_eq(sh(dir, cmd), 0, "%s", slurp(dir, "err.txt"));
    double la[7], lb[7];
    losses(dir, "A", la, 6);
    losses(dir, "B", lb, 6);
    same_losses(lb, la, 1, 6, 1e-4, "nccl: 2 GPUs x 2 vs 1 GPU x 4");
    /* bf16 mixed precision (precision auto on cuda) trains on two GPUs */
    snprintf(cmd, sizeof cmd,
             MPIRUN "2 %s train %s --backend cuda --out M --set train.micro_batch=2", bin(),
             DP_ARGS);
    cr_assert_eq(sh(dir, cmd), 0, "%s", slurp(dir, "err.txt"));
    losses(dir, "M", lb, 6);
    cr_assert(isfinite(lb[6]) && lb[6] < lb[1], "bf16 on 2 GPUs: loss %g -> %g", lb[1], lb[6]);
    remove_tmpdir(dir);
#endif
}

#ifdef CHIMERA_HAVE_CUDA
/* Rank 1 in the background, rank 0 in front, both with `args` and the environment
 * assignments `env`; the status is rank 0's, or 9 when only rank 1 failed. */
static int by_hand(const char *dir, const char *env, const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "env %s timeout 100 %s train %s --rank 1 --world-size 2 --rendezvous rdv/id "
             ">out1.txt 2>err1.txt & p=$!; env %s timeout 100 %s train %s --rank 0 "
             "--world-size 2 --rendezvous rdv/id; r=$?; wait $p || [ $r -ne 0 ] || r=9; exit $r",
             env, bin(), args, env, bin(), args);
    return sh(dir, cmd);
}
#endif

Test(dp, nccl_two_gpus_by_hand) {
#ifndef CHIMERA_HAVE_CUDA
    cr_skip_test("this build has no cuda backend");
#else
    if (!two_gpus()) cr_skip_test("fewer than two cuda devices");
    char *dir = make_tmpdir_named("chm-dp-"), args[4096];
    /* the collectives, with the NCCL id through the rendezvous file */
    int rc = by_hand(dir, "", "--backend cuda --comm-check");
    char *out = slurp(dir, "out.txt");
    cr_assert(rc == 0 && strstr(out, "every collective agrees"), "exit %d: %s%s", rc, out,
              slurp(dir, "err.txt"));
    free(out);
    /* the same run as one GPU at twice the batch */
    snprintf(args, sizeof args, "%s train %s " F32_CUDA " --out A --set train.micro_batch=4",
             bin(), DP_ARGS);
    cr_assert_eq(sh(dir, args), 0, "%s", slurp(dir, "err.txt"));
    snprintf(args, sizeof args, "%s " F32_CUDA " --out H --set train.micro_batch=2", DP_ARGS);
    cr_assert_eq(by_hand(dir, "", args), 0, "%s", slurp(dir, "err.txt"));
    double la[7], lh[7];
    losses(dir, "A", la, 6);
    losses(dir, "H", lh, 6);
    same_losses(lh, la, 1, 6, 1e-4, "nccl, hand-started group vs 1 GPU x 4");
    /* a dead peer: rank 0's watchdog ends the run with a message */
    snprintf(args, sizeof args, "%s " F32_CUDA " --out W --set train.micro_batch=2", DP_ARGS);
    rc = by_hand(dir, "CHIMERA_COMM_TIMEOUT=15 CHIMERA_DEBUG_DIE_RANK=1 CHIMERA_DEBUG_DIE_STEP=2",
                 args);
    char *err = slurp(dir, "err.txt");
    cr_assert(rc == 1 && strstr(err, "not finished after") && strstr(err, "rank 0 of 2"),
              "exit %d: %s", rc, err);
    free(err);
    remove_tmpdir(dir);
#endif
}
