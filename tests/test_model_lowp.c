/*
 * test_model_lowp.c: the mixed-precision model (chimera/model.h: dtype bf16
 * or f16 over fp32 master weights) on the cpu backend, with the tiny config
 * of train_fixture.h (configs/test.yaml with every block kind: Mamba,
 * attention, MoE, mixture-of-depths, MTP).
 *
 * Covered: one micro batch in bf16 and in f16 (with a loss scale) against
 * f32 from the same master weights and routing decisions (loss parts within
 * 16-bit noise, every parameter gradient's cosine and relative L2 error);
 * the compute copy equals the rounded master weights after optimizer
 * steps, while the master keeps more bits; logits and incremental decoding in bf16 against f32; 20
 * training steps in bf16 lower the loss as f32 does; a bf16 checkpoint
 * holds f32 weights and resuming continues bit for bit; precision auto is
 * f32 on the cpu; bad dtypes are refused.
 */
#include <math.h>
#include <stdio.h>

#include "chimera/checkpoint.h"
#include "chimera/model.h"
#include "chimera/optim.h"
#include "chimera/trainer.h"
#include "core/half.h"
#include "testutil.h"
#include "train_fixture.h"

#define TEST_CACHE "/tmp/chimera-tests-cache/chimera"

/* Any float tensor into host doubles. */
static void download_f64(chm_backend *be, const chm_tensor *t, double *out) {
    int64_t n = chm_tensor_numel(t);
    void *raw = malloc(chm_tensor_nbytes(t) ? chm_tensor_nbytes(t) : 1);
    cr_assert_eq(chm_download(be, t, raw), CHM_OK, "%s", be->err.msg);
    for (int64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case CHM_F64: out[i] = ((double *)raw)[i]; break;
        case CHM_F32: out[i] = ((float *)raw)[i]; break;
        case CHM_BF16: out[i] = chm_bf16_to_f32(((uint16_t *)raw)[i]); break;
        case CHM_F16: out[i] = chm_f16_to_f32(((uint16_t *)raw)[i]); break;
        default: cr_assert_fail("not a float tensor");
        }
    }
    free(raw);
}

static chm_model *make_model(const chm_config *cfg, chm_backend *be, chm_dtype dt) {
    chm_model_options mo = {.dtype = dt, .batch = cfg->train.micro_batch,
                            .seq_len = cfg->train.seq_len};
    chm_model *m;
    chm_err err = {0};
    cr_assert_eq(chm_model_create(&cfg->model, be, &mo, &m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_init_params(m, 7, &err), CHM_OK, "%s", err.msg);
    return m;
}

/* Random ids of one micro batch [B, T+1]. */
static int32_t *random_ids(const chm_config *cfg, uint64_t seed) {
    int64_t n = cfg->train.micro_batch * (cfg->train.seq_len + 1);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    tt_rng r = tt_rng_make(seed);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(tt_next(&r) % (uint64_t)cfg->model.vocab);
    return ids;
}

static chm_model_loss fwd_bwd(chm_model *m, const int32_t *ids, double scale) {
    chm_err err = {0};
    chm_model_loss l;
    cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_forward_backward(m, ids, scale, &l, &err), CHM_OK, "%s", err.msg);
    return l;
}

/* One loss part within rel of the f32 value (atol for parts near zero). */
static void part_close(const char *what, double got, double want, double rel) {
    cr_assert(isfinite(got) && fabs(got - want) <= 1e-3 + rel * fabs(want),
              "%s: %.6g in 16-bit, %.6g in f32", what, got, want);
}

/* Worst cosine similarity and relative L2 error over the parameter gradients of b vs a. */
typedef struct grad_cmp {
    double cos_min, rel_max;
    const char *cos_at, *rel_at;
    int compared, skipped;
    char skipped_names[256];
} grad_cmp;

/* Parameters whose f32 gradient has an RMS below min_rms are skipped (and listed). */
static grad_cmp compare_grads(chm_model *a, chm_model *b, double min_rms) {
    grad_cmp g = {2, 0, "", "", 0, 0, ""};
    for (int i = 0; i < chm_model_param_count(a); i++) {
        const chm_model_param *p = chm_model_param_get(a, i), *q = chm_model_param_get(b, i);
        double *x = tt_dalloc(p->numel), *y = tt_dalloc(p->numel), xy = 0, xx = 0, yy = 0;
        download_f64(chm_model_backend(a), &p->grad, x);
        download_f64(chm_model_backend(b), &q->grad, y);
        for (int64_t j = 0; j < p->numel; j++)
            xy += x[j] * y[j], xx += x[j] * x[j], yy += y[j] * y[j];
        free(x), free(y);
        cr_assert(xx > 0 || yy == 0, "%s: f32 gradient is zero, 16-bit is not", p->name);
        if (xx == 0) continue; /* e.g. an expert no token reached */
        if (sqrt(xx / (double)p->numel) < min_rms) {
            size_t at = strlen(g.skipped_names);
            snprintf(g.skipped_names + at, sizeof g.skipped_names - at, " %s", p->name);
            g.skipped++;
            continue;
        }
        double cs = yy > 0 ? xy / sqrt(xx * yy) : 0, rel = sqrt(xx + yy - 2 * xy) / sqrt(xx);
        if (cs < g.cos_min) g.cos_min = cs, g.cos_at = p->name;
        if (rel > g.rel_max) g.rel_max = rel, g.rel_at = p->name;
        g.compared++;
    }
    return g;
}

/*
 * The first of a few random batches whose routing (MoE top-k and capacity, MoD top-k) is the
 * same in dt as in f32: a flipped decision is a discrete change no precision can compare, so
 * the batch is chosen (deterministically) among those where every decision agrees.
 */
static int32_t *agreeing_batch(const chm_config *cfg, chm_model *a, chm_model *b, double scale,
                               chm_model_loss *la, chm_model_loss *lb) {
    for (uint64_t seed = 1; seed <= 16; seed++) {
        int32_t *ids = random_ids(cfg, seed);
        *la = fwd_bwd(a, ids, scale);
        *lb = fwd_bwd(b, ids, scale);
        uint64_t da, db;
        chm_err err = {0};
        cr_assert_eq(chm_model_routing_digest(a, &da, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(chm_model_routing_digest(b, &db, &err), CHM_OK, "%s", err.msg);
        if (da == db) {
            printf("model_lowp %s: batch %d routes as in f32\n", chm_dtype_name(chm_model_dtype(b)),
                   (int)seed);
            return ids;
        }
        free(ids);
    }
    cr_assert_fail("every batch flips a routing decision in %s",
                   chm_dtype_name(chm_model_dtype(b)));
    return NULL;
}

/*
 * One micro batch in dt against f32 from the same master weights, with gradients of
 * scale * loss (a loss scale) and gradients of RMS below min_rms left out of the comparison.
 */
static void lowp_matches_f32(chm_backend *be_b, chm_dtype dt, double scale, double min_rms) {
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_backend *be = tt_open_cpu();
    chm_model *a = make_model(&cfg, be, CHM_F32), *b = make_model(&cfg, be_b, dt);
    chm_model_loss la, lb;
    int32_t *ids = agreeing_batch(&cfg, a, b, scale, &la, &lb);
    part_close("total", lb.total, la.total, 2e-2);
    part_close("ce", lb.ce, la.ce, 2e-2);
    part_close("mtp", lb.mtp, la.mtp, 2e-2);
    part_close("moe_balance", lb.moe_balance, la.moe_balance, 2e-2);
    part_close("moe_z", lb.moe_z, la.moe_z, 2e-2);
    part_close("mod_aux", lb.mod_aux, la.mod_aux, 2e-2);
    grad_cmp g = compare_grads(a, b, min_rms);
    printf("model_lowp %s %s vs cpu f32: loss %.6f vs %.6f (rel %.1e); %d gradients, worst cosine %.5f "
           "(%s), worst rel L2 %.4f (%s); %d below RMS %.1e left out:%s\n",
           be_b->name, chm_dtype_name(dt), lb.total, la.total, fabs(lb.total - la.total) / la.total,
           g.compared, g.cos_min, g.cos_at, g.rel_max, g.rel_at, g.skipped, min_rms,
           g.skipped_names);
    cr_assert(g.cos_min > 0.99, "%s: gradient cosine %.5f", g.cos_at, g.cos_min);
    cr_assert(g.rel_max < 0.1, "%s: gradient relative L2 error %.4f", g.rel_at, g.rel_max);
    cr_assert(g.skipped <= 2, "%d gradients too small to compare:%s", g.skipped, g.skipped_names);
    free(ids);
    chm_model_free(a);
    chm_model_free(b);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

/* bf16 has f32's exponent range: every gradient compares, no loss scale. */
Test(model_lowp, bf16_matches_f32) {
    chm_backend *be = tt_open_cpu();
    lowp_matches_f32(be, CHM_BF16, 1.0, 0.0);
    chm_backend_close(be);
}

/*
 * f16 needs a loss scale (2^16, the usual starting scale of dynamic loss scaling) and still
 * flushes gradients of magnitude below its subnormal step 2^-24: Mamba's dt_proj.weight
 * gradient at init is ~1e-13 per unit loss. Gradients of RMS under 2^-20 (16 subnormal steps)
 * are left out and listed.
 */
Test(model_lowp, f16_matches_f32) {
    chm_backend *be = tt_open_cpu();
    lowp_matches_f32(be, CHM_F16, 65536.0, 0x1p-20);
    chm_backend_close(be);
}

/* The compute copy equals the rounded master, bit for bit; *wider counts the master weights
 * that bf16 cannot hold. */
static void check_compute_is_rounded_master(chm_backend *be, chm_model *m, int64_t *wider) {
    *wider = 0;
    for (int r = 0; r < 2; r++) {
        chm_tensor pm, lp;
        chm_model_param_region(m, r == 0, &pm, NULL);
        cr_assert(chm_model_compute_region(m, r == 0, &lp));
        cr_assert_eq(pm.dtype, CHM_F32);
        cr_assert_eq(lp.dtype, CHM_BF16);
        int64_t n = chm_tensor_numel(&pm);
        float *x = malloc((size_t)n * sizeof *x);
        uint16_t *h = malloc((size_t)n * sizeof *h);
        cr_assert_eq(chm_download(be, &pm, x), CHM_OK);
        cr_assert_eq(chm_download(be, &lp, h), CHM_OK);
        for (int64_t i = 0; i < n; i++) {
            cr_assert_eq(h[i], chm_f32_to_bf16(x[i]), "element %lld: compute 0x%04x, master %.9g",
                         (long long)i, h[i], x[i]);
            *wider += chm_bf16_to_f32(h[i]) != x[i];
        }
        free(x), free(h);
    }
}

/* A bf16 model on be, 3 optimizer steps: masters f32, compute copy = their rounding. */
static void master_stays_f32(chm_backend *be) {
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_model *m = make_model(&cfg, be, CHM_BF16);
    cr_assert(chm_model_is_mixed(m));
    cr_assert_eq(chm_model_master_dtype(m), CHM_F32);
    cr_assert_eq(chm_model_param_get(m, 0)->value.dtype, CHM_F32);
    cr_assert_eq(chm_model_param_get(m, 0)->grad.dtype, CHM_BF16);
    chm_optim *o;
    chm_err err = {0};
    cr_assert_eq(chm_optim_create(m, &cfg.train, NULL, &o, &err), CHM_OK, "%s", err.msg);
    int64_t wider;
    check_compute_is_rounded_master(be, m, &wider);
    for (int s = 0; s < 3; s++) {
        int32_t *ids = random_ids(&cfg, 100 + (uint64_t)s);
        fwd_bwd(m, ids, 1.0);
        double norm;
        cr_assert_eq(chm_optim_grad_norm(o, &norm, &err), CHM_OK, "%s", err.msg);
        cr_assert(isfinite(norm) && norm > 0);
        double clip = chm_optim_clip_factor(norm, cfg.train.clip);
        cr_assert_eq(chm_optim_step(o, 1e-2, clip, &err), CHM_OK, "%s", err.msg);
        free(ids);
    }
    check_compute_is_rounded_master(be, m, &wider);
    /* the updates move the master by less than a bf16 ulp: most weights leave the bf16 grid */
    chm_tensor pd, pn;
    chm_model_param_region(m, true, &pd, NULL);
    chm_model_param_region(m, false, &pn, NULL);
    int64_t n = chm_tensor_numel(&pd) + chm_tensor_numel(&pn);
    printf("model_lowp %s: after 3 steps %lld of %lld master weights lie off the bf16 grid\n",
           be->name, (long long)wider, (long long)n);
    cr_assert(wider > n / 2, "only %lld of %lld master weights hold more than bf16",
              (long long)wider, (long long)n);
    chm_optim_free(o);
    chm_model_free(m);
    chm_config_free(&cfg);
}

Test(model_lowp, master_stays_f32) {
    chm_backend *be = tt_open_cpu();
    master_stays_f32(be);
    chm_backend_close(be);
}

/* Relative L2 distance of the logits of one sequence, causal routing, and of decoding. */
Test(model_lowp, bf16_logits_and_decoding) {
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_backend *be = tt_open_cpu();
    chm_model *a = make_model(&cfg, be, CHM_F32), *b = make_model(&cfg, be, CHM_BF16);
    int64_t n = cfg.train.seq_len, V = cfg.model.vocab;
    int32_t *ids = random_ids(&cfg, 5);
    double *la = tt_dalloc(n * V), *lb = tt_dalloc(n * V), *ld = tt_dalloc(n * V);
    chm_err err = {0};
    cr_assert_eq(chm_model_logits(a, ids, n, CHM_ROUTING_CAUSAL, la, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_logits(b, ids, n, CHM_ROUTING_CAUSAL, lb, &err), CHM_OK, "%s", err.msg);
    chm_decoder *d;
    cr_assert_eq(chm_decoder_create(b, n, &d, &err), CHM_OK, "%s", err.msg);
    for (int64_t t = 0; t < n; t++)
        cr_assert_eq(chm_decoder_step(d, ids[t], ld + t * V, &err), CHM_OK, "%s", err.msg);
    chm_decoder_free(d);
    double rb = tt_rel_l2(lb, la, n * V), rd = tt_rel_l2(ld, la, n * V);
    printf("model_lowp bf16 logits vs f32: rel L2 %.4f (full pass), %.4f (decoding)\n", rb, rd);
    cr_assert(rb < 5e-2 && rd < 5e-2, "bf16 logits rel L2 %.4f, decoding %.4f", rb, rd);
    free(ids), free(la), free(lb), free(ld);
    chm_model_free(a);
    chm_model_free(b);
    chm_backend_close(be);
    chm_config_free(&cfg);
}

Test(model_lowp, bad_dtype_refused) {
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_model_options mo = {.dtype = CHM_I32, .batch = 1, .seq_len = 8};
    chm_model *m = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_model_create(&cfg.model, NULL, &mo, &m, &err), CHM_ERR_INVALID_ARG);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, "model_create") && strstr(err.msg, "dtype") && strstr(err.msg, "i32"),
              "%s", err.msg);
    chm_config_free(&cfg);
}

/* ---- through the trainer ---------------------------------------------------------------- */

static chm_trainer *open_on(const char *backend, const chm_config *cfg, const char *dir,
                            const char *resume) {
    chm_trainer_options o = {.out_dir = dir, .resume = resume, .backend = backend, .quiet = true,
                             .threads = 1, .cache_dir = TEST_CACHE, .peak_tflops = 1};
    chm_trainer *t;
    chm_err err = {0};
    cr_assert_eq(chm_trainer_open(cfg, &o, &t, &err), CHM_OK, "%s", err.msg);
    return t;
}

static chm_trainer *open_trainer(const chm_config *cfg, const char *dir, const char *resume) {
    return open_on("cpu", cfg, dir, resume);
}

static void run_steps(chm_trainer *t, int n, double *losses) {
    for (int i = 0; i < n; i++) {
        chm_train_step s;
        chm_err err = {0};
        cr_assert_eq(chm_trainer_step(t, &s, &err), CHM_OK, "%s", err.msg);
        cr_assert(!s.skipped, "step %d skipped", i + 1);
        losses[i] = s.loss.total;
    }
}

Test(model_lowp, precision_auto_is_f32_on_cpu) {
    const char *prec[] = {"precision=auto", "precision=f32", "precision=bf16"};
    const chm_dtype want[] = {CHM_F32, CHM_F32, CHM_BF16};
    for (int k = 0; k < 3; k++) {
        char *dir = make_tmpdir_named("chm-lowp-");
        chm_config cfg;
        load_config(&cfg, prec[k]);
        chm_trainer *t = open_trainer(&cfg, dir, NULL);
        chm_model *m = chm_trainer_model(t);
        cr_assert_eq(chm_model_dtype(m), want[k], "%s", prec[k]);
        cr_assert_eq(chm_model_master_dtype(m), CHM_F32, "%s", prec[k]);
        cr_assert_eq(chm_model_is_mixed(m), want[k] == CHM_BF16);
        cr_assert_str_eq(chm_model_precision_name(m),
                         want[k] == CHM_BF16 ? "bf16 mixed precision (fp32 master)" : "f32");
        chm_trainer_close(t);
        chm_config_free(&cfg);
        remove_tmpdir(dir);
    }
}

/* Mean of x[a..b). */
static double mean(const double *x, int a, int b) {
    double s = 0;
    for (int i = a; i < b; i++) s += x[i];
    return s / (b - a);
}

/* n training steps of the tiny config with `precision` on backend: losses, the model dtype. */
static chm_dtype train_losses(const char *backend, const char *precision, int n, double *loss) {
    char *dir = make_tmpdir_named("chm-lowp-");
    chm_config cfg;
    load_config(&cfg, precision);
    chm_trainer *t = open_on(backend, &cfg, dir, NULL);
    chm_dtype dt = chm_model_dtype(chm_trainer_model(t));
    run_steps(t, n, loss);
    chm_trainer_close(t);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
    return dt;
}

/*
 * 20 steps from the same weights and batches: the mean loss of the last 5 steps falls at least
 * 80% as far in bf16 (b) as in f32 (a). bf16 rounds each weight the ops read by up to 2^-9
 * relative, which perturbs a step's loss by ~1e-3 here (on the cpu the runs' drops agree to
 * 0.3%); a broken mixed path (stale compute copy, lost updates, flushed gradients) falls far
 * short of 80%.
 */
static void trains_alike(const char *what, const double *a, const double *b, int n) {
    /* the same first batch and weights: the first losses agree to bf16 noise */
    part_close("step 1 loss", b[0], a[0], 2e-2);
    double end_a = mean(a, n - 5, n), end_b = mean(b, n - 5, n);
    double drop_a = a[0] - end_a, drop_b = b[0] - end_b;
    printf("model_lowp %d steps: f32 %.4f -> %.4f (drop %.4f), %s %.4f -> %.4f (drop %.4f)\n", n,
           a[0], end_a, drop_a, what, b[0], end_b, drop_b);
    cr_assert(drop_a > 0.1, "f32 does not learn (drop %.4f)", drop_a);
    cr_assert(drop_b > 0.8 * drop_a, "%s: drop %.4f is less than 80%% of f32's %.4f", what, drop_b,
              drop_a);
}

Test(model_lowp, bf16_trains_like_f32) {
    enum { N = 20 };
    double a[N], b[N];
    cr_assert_eq(train_losses("cpu", "precision=f32", N, a), CHM_F32);
    cr_assert_eq(train_losses("cpu", "precision=bf16", N, b), CHM_BF16);
    trains_alike("bf16", a, b, N);
}

/* Every tensor of a checkpoint's model.safetensors is F32. */
static void assert_f32_file(const char *dir, int64_t step) {
    char path[4200];
    snprintf(path, sizeof path, "%s/step-%08lld/model.safetensors", dir, (long long)step);
    chm_safetensors *f;
    chm_err err = {0};
    cr_assert_eq(chm_safetensors_open(path, &f, &err), CHM_OK, "%s", err.msg);
    cr_assert_gt(chm_safetensors_count(f), 0);
    for (int i = 0; i < chm_safetensors_count(f); i++)
        cr_assert_eq(chm_safetensors_get(f, i)->dtype, CHM_F32, "%s",
                     chm_safetensors_get(f, i)->name);
    chm_safetensors_close(f);
}

Test(model_lowp, bf16_resume_is_exact) {
    enum { N = 3 };
    char *da = make_tmpdir_named("chm-lowp-"), *db = make_tmpdir_named("chm-lowp-");
    chm_config cfg;
    load_config(&cfg, "precision=bf16");
    double la[2 * N], lb[2 * N];
    chm_err err = {0};
    chm_trainer *t = open_trainer(&cfg, da, NULL);
    run_steps(t, 2 * N, la);
    chm_trainer_close(t);
    t = open_trainer(&cfg, db, NULL);
    run_steps(t, N, lb);
    cr_assert_eq(chm_trainer_save(t, NULL, 0, &err), CHM_OK, "%s", err.msg);
    chm_trainer_close(t);
    assert_f32_file(db, N);
    t = open_trainer(&cfg, db, "auto");
    cr_assert_eq(chm_model_dtype(chm_trainer_model(t)), CHM_BF16);
    run_steps(t, N, lb + N);
    chm_trainer_close(t);
    for (int i = 0; i < 2 * N; i++)
        cr_assert(la[i] == lb[i], "step %d: loss %.17g in one run, %.17g resumed", i + 1, la[i],
                  lb[i]);
    chm_config_free(&cfg);
    remove_tmpdir(da);
    remove_tmpdir(db);
}

/* ---- on a GPU (skipped without one): bf16 on cuda against f32 on the cpu ------------------ */

/* The cuda backend, or skip the test. */
static chm_backend *open_cuda_or_skip(void) {
    chm_backend_options bo = {.device_index = -1, .quiet = true};
    chm_backend *be = NULL;
    chm_err err = {0};
    if (chm_backend_open("cuda", &bo, &be, &err) != CHM_OK)
        cr_skip_test("no usable CUDA device: %s", err.msg);
    return be;
}

Test(model_lowp, cuda_bf16_matches_cpu_f32) {
    chm_backend *be = open_cuda_or_skip();
    lowp_matches_f32(be, CHM_BF16, 1.0, 0.0);
    chm_backend_close(be);
}

Test(model_lowp, cuda_bf16_master_stays_f32) {
    chm_backend *be = open_cuda_or_skip();
    master_stays_f32(be);
    chm_backend_close(be);
}

/* precision auto on cuda is bf16, and 20 steps there learn as f32 does on the cpu. */
Test(model_lowp, cuda_auto_is_bf16_and_trains) {
    chm_backend_close(open_cuda_or_skip());
    enum { N = 20 };
    double a[N], b[N];
    cr_assert_eq(train_losses("cpu", "precision=f32", N, a), CHM_F32);
    cr_assert_eq(train_losses("cuda", "precision=auto", N, b), CHM_BF16);
    trains_alike("cuda bf16", a, b, N);
}
