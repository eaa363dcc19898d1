/*
 * train_dp.c: data-parallel training (chimera/trainer.h, chimera/comm.h):
 * one process per device, each with the whole model, its own slice of every
 * global batch, and one block of the optimizer state (ZeRO-1).
 *
 * A step on `world` ranks: each rank runs its micro batches with
 * grad_scale 1 / (grad_accum * world) (train_step.c), the gradient buffer
 * is summed over the ranks (all-reduced in buckets during the backward, or
 * at once after it: see Overlap below; it then holds the gradient of the
 * mean loss over the global batch), the norm is computed from it as on one
 * process, the loss parts and the norm are averaged over the ranks (one
 * small host sum, so that every rank takes the same skip and clip
 * decision), each rank's AdamW updates the parameters of its block
 * (chm_comm_block of the flat buffer) with moments held for that block
 * only, and the parameters are all-gathered (in mixed precision the 16-bit
 * compute copy, the master blocks only for checkpoints: tr_dp_gather_params).
 * With the loader's sharding
 * (rank r reads rows r*B .. r*B+B-1 of each global micro batch of B*world
 * windows) this is the same computation as one process at micro batch
 * B*world, up to rounding (MoE's capacity and balance loss are computed per
 * rank's micro batch, as usual for data parallelism).
 *
 * Checkpoints keep the standard format, so a run resumes on any number of
 * ranks: rank 0 gathers every block of both moments into host memory (one
 * broadcast per block and chunk, through a small scratch buffer: no rank
 * ever holds the whole moments on its device) and writes; on resume every
 * rank reads its own block of optimizer.safetensors.
 *
 * Overlap (train.comm_bucket_mb > 0, on nccl and on mpi in place): during
 * the LAST micro batch of a step (the earlier ones only accumulate), the
 * model's gradient hook (chm_model_set_grad_hook) reports each range of the
 * gradient buffer as the backward finishes it: heads first, then the layers
 * from the last, the embedding at the end. Ranges that touch merge into
 * contiguous runs (decayed parameters and the others lie in two regions of
 * the buffer, so a few runs grow side by side); a run that reaches the
 * bucket size is started as one nonblocking all-reduce
 * (chm_comm_all_reduce_start), and the last range starts whatever is left.
 * Before the norm the step waits for all of them (chm_comm_wait_all), which
 * also says how much of the all-reduce the backward did not hide. The sums
 * are elementwise, so the buckets change no bit of the result on two ranks.
 * With train.comm_bucket_mb 0, or on the host-staged transport (vulkan), the
 * whole buffer is all-reduced once after the backward.
 */
#include "trainer_internal.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chimera/checkpoint.h"
#include "ckpt/checkpoint_internal.h"

/* Elements per broadcast when gathering the moments (64 MiB of f32). */
#define DP_GATHER_CHUNK (INT64_C(16) << 20)

/* ---- setup ------------------------------------------------------------------------------- */

void tr_dp_options(chm_trainer *t, chm_comm *comm) {
    t->comm = comm;
    t->rank = chm_comm_rank(comm);
    t->world = chm_comm_size(comm);
    const char *r = getenv("CHIMERA_DEBUG_DIE_RANK"), *s = getenv("CHIMERA_DEBUG_DIE_STEP");
    t->die_rank = r && *r ? atoi(r) : -1;
    t->die_step = s && *s ? atoll(s) : 1;
    if (t->world <= 1) return;
    /* one optimizer step consumes every rank's batches: the config counts one process */
    chm_config_train *tc = &t->cfg.train;
    tc->tokens_per_step *= t->world;
    if (tc->tokens > 0)
        tc->total_steps = (tc->tokens + tc->tokens_per_step - 1) / tc->tokens_per_step;
}

chm_status tr_dp_attach(chm_trainer *t, chm_err *err) {
    if (!t->comm) return CHM_OK;
    char rdv[TR_PATH + 16];
    snprintf(rdv, sizeof rdv, "%s/.nccl-id", t->run_dir);
    return chm_comm_attach(t->comm, t->be, rdv, err);
}

chm_optim_options tr_dp_optim_options(const chm_trainer *t) {
    chm_optim_options o = {0};
    if (t->world <= 1) return o;
    chm_tensor view;
    int64_t first;
    ck_param_span(t->model, false, &view, &first);
    o.shard = true;
    chm_comm_block(chm_tensor_numel(&view), t->world, t->rank, &o.shard_begin, &o.shard_count);
    return o;
}

/* Rank 0's values of x[0..n) on every rank (a sum where the others give 0). */
static chm_status from_rank0(chm_trainer *t, double *x, int n, chm_err *err) {
    if (t->rank != 0)
        for (int i = 0; i < n; i++) x[i] = 0;
    return chm_comm_sum_host(t->comm, x, n, err);
}

/* Every rank must start from the same step of the same model and data. */
static chm_status agree(chm_trainer *t, chm_err *err) {
    chm_tensor view;
    int64_t first;
    ck_param_span(t->model, false, &view, &first);
    chm_loader_cursor cur = chm_loader_get_cursor(t->loader);
    double mine[5] = {(double)t->st.step, (double)chm_tensor_numel(&view), (double)cur.epoch,
                      (double)cur.position, (double)chm_optim_updates(t->optim)};
    double ref[5];
    memcpy(ref, mine, sizeof ref);
    chm_status rc = from_rank0(t, ref, 5, err);
    double bad[1] = {memcmp(ref, mine, sizeof ref) != 0};
    if (rc == CHM_OK) rc = chm_comm_sum_host(t->comm, bad, 1, err);
    if (rc == CHM_OK && bad[0] > 0)
        rc = CHM_ERR(err, CHM_ERR_CONFIG,
                     "the ranks do not agree on where the run starts (rank 0: step %.0f, %.0f "
                     "parameters, data epoch %.0f position %.0f; rank %d: step %.0f, %.0f, %.0f, "
                     "%.0f): give every rank the same config, data and --resume",
                     ref[0], ref[1], ref[2], ref[3], t->rank, mine[0], mine[1], mine[2], mine[3]);
    return rc;
}

/* Bytes per token over every rank's validation windows. */
static chm_status global_bytes_per_token(chm_trainer *t, chm_err *err) {
    double x[2] = {t->bytes_per_token * (double)t->n_val, (double)t->n_val};
    chm_status rc = chm_comm_sum_host(t->comm, x, 2, err);
    if (rc == CHM_OK && x[1] > 0) t->bytes_per_token = x[0] / x[1];
    return rc;
}

/* ---- the gradient all-reduce in buckets ----------------------------------------------------- */

/* Start the all-reduce of open run i and drop it from the list. */
static chm_status start_run(chm_trainer *t, int i, chm_err *err) {
    tr_buckets *b = &t->bkt;
    size_t ds = chm_dtype_size(b->grads.dtype);
    int64_t begin = b->run_begin[i], n = b->run_end[i] - begin;
    chm_tensor v = chm_tensor_1d(b->grads.buf, b->grads.offset + (size_t)begin * ds,
                                 b->grads.dtype, n);
    b->n_runs--;
    b->run_begin[i] = b->run_begin[b->n_runs];
    b->run_end[i] = b->run_end[b->n_runs];
    b->started++;
    b->covered += n;
    return chm_comm_all_reduce_start(t->comm, &v, err);
}

/* The longest open run. */
static int longest_run(const tr_buckets *b) {
    int k = 0;
    for (int i = 1; i < b->n_runs; i++)
        if (b->run_end[i] - b->run_begin[i] > b->run_end[k] - b->run_begin[k]) k = i;
    return k;
}

/* Add [begin, end) to the open runs (one slot must be free), merged with every run it touches;
 * the index of its run. */
static int add_range(tr_buckets *b, int64_t begin, int64_t end) {
    for (int i = 0; i < b->n_runs;) {
        if (b->run_end[i] != begin && b->run_begin[i] != end) {
            i++;
            continue;
        }
        begin = b->run_begin[i] < begin ? b->run_begin[i] : begin;
        end = b->run_end[i] > end ? b->run_end[i] : end;
        b->n_runs--;
        b->run_begin[i] = b->run_begin[b->n_runs];
        b->run_end[i] = b->run_end[b->n_runs];
    }
    b->run_begin[b->n_runs] = begin;
    b->run_end[b->n_runs] = end;
    return b->n_runs++;
}

/* The model's gradient hook: elements [begin, begin + count) are final (see the top). Every
 * rank sees the same ranges in the same order, so every rank starts the same buckets. */
static chm_status grad_ready(void *user, int64_t begin, int64_t count, bool last, chm_err *err) {
    chm_trainer *t = user;
    tr_buckets *b = &t->bkt;
    if (!b->armed) return CHM_OK;
    chm_status rc = b->n_runs == TR_OPEN_RUNS ? start_run(t, longest_run(b), err) : CHM_OK;
    int i = rc == CHM_OK ? add_range(b, begin, begin + count) : -1;
    if (i >= 0 && b->run_end[i] - b->run_begin[i] >= b->size) rc = start_run(t, i, err);
    while (rc == CHM_OK && last && b->n_runs > 0) rc = start_run(t, b->n_runs - 1, err);
    /* Open MPI moves the data of started all-reduces only inside MPI calls */
    if (rc == CHM_OK && !last) rc = chm_comm_progress(t->comm, err);
    return rc;
}

/* Bucketing when the run has several ranks, a bucket size and a transport that overlaps. */
static void buckets_setup(chm_trainer *t) {
    tr_buckets *b = &t->bkt;
    memset(b, 0, sizeof *b);
    double mb = t->cfg.train.comm_bucket_mb;
    if (t->world <= 1 || mb <= 0 || !chm_comm_overlaps(t->comm)) return;
    int64_t first;
    ck_param_span(t->model, true, &b->grads, &first);
    double el = ceil(mb * 1048576.0 / (double)chm_dtype_size(b->grads.dtype));
    b->size = el < 1 ? 1 : (int64_t)el;
    b->on = true;
    chm_model_set_grad_hook(t->model, grad_ready, t);
}

void tr_dp_micro_batch(chm_trainer *t, int a, int accum) {
    tr_buckets *b = &t->bkt;
    if (!b->on) return;
    b->armed = a == accum - 1;
    b->n_runs = b->started = 0;
    b->covered = 0;
}

chm_status tr_dp_wait_grads(chm_trainer *t, double *seconds, double *exposed, chm_err *err) {
    tr_buckets *b = &t->bkt;
    b->armed = false;
    chm_comm_timing tm;
    chm_status rc = chm_comm_wait_all(t->comm, &tm, err);
    int64_t n = chm_tensor_numel(&b->grads);
    if (rc == CHM_OK && (b->n_runs > 0 || b->covered != n))
        rc = CHM_ERR(err, CHM_ERR_INTERNAL,
                     "gradient buckets: %lld of %lld elements were all-reduced (%d runs left)",
                     (long long)b->covered, (long long)n, b->n_runs);
    *seconds += tm.busy_s;
    *exposed += tm.exposed_s;
    return rc;
}

chm_status tr_dp_start(chm_trainer *t, chm_err *err) {
    buckets_setup(t);
    if (t->world <= 1) return CHM_OK;
    chm_tensor view;
    int64_t first;
    ck_param_span(t->model, false, &view, &first);
    chm_status rc = agree(t, err);
    if (rc == CHM_OK) rc = global_bytes_per_token(t, err);
    /* identical already (same seed or checkpoint); the broadcast makes it a fact */
    if (rc == CHM_OK) rc = chm_comm_broadcast(t->comm, &view, 0, err);
    if (rc == CHM_OK) rc = chm_model_refresh_compute(t->model, err);
    return rc;
}

/* ---- the step ------------------------------------------------------------------------------ */

chm_status tr_dp_reduce_grads(chm_trainer *t, chm_err *err) {
    if (t->world <= 1) return CHM_OK;
    chm_tensor g;
    int64_t first;
    ck_param_span(t->model, true, &g, &first);
    return chm_comm_all_reduce(t->comm, &g, err);
}

chm_status tr_dp_mean(chm_trainer *t, chm_model_loss *l, double *norm, chm_err *err) {
    if (t->world <= 1) return CHM_OK;
    enum { N = 7 + CHM_MODEL_MAX_MTP };
    double x[N] = {l->total, l->ce, l->mtp, l->moe_balance, l->moe_z, l->mod_aux, *norm};
    memcpy(x + 7, l->mtp_depth, sizeof l->mtp_depth);
    chm_status rc = chm_comm_sum_host(t->comm, x, N, err);
    if (rc) return rc;
    for (int i = 0; i < N; i++) x[i] /= t->world;
    l->total = x[0], l->ce = x[1], l->mtp = x[2], l->moe_balance = x[3], l->moe_z = x[4];
    l->mod_aux = x[5], *norm = x[6];
    memcpy(l->mtp_depth, x + 7, sizeof l->mtp_depth);
    return CHM_OK;
}

/* The whole 16-bit compute copy as one flat view (the span of ck_param_span, element for
 * element); false when the model is not mixed. */
static bool compute_span(const chm_model *m, chm_tensor *view) {
    chm_tensor ld, ln;
    if (!chm_model_compute_region(m, true, &ld) || !chm_model_compute_region(m, false, &ln))
        return false;
    int64_t nd = chm_tensor_numel(&ld), n = nd + chm_tensor_numel(&ln);
    if (ln.buf != ld.buf || ln.offset != ld.offset + (size_t)nd * chm_dtype_size(ld.dtype))
        return false; /* not one span (the master span's layout): gather the masters instead */
    *view = chm_tensor_1d(ld.buf, ld.offset, ld.dtype, n);
    return true;
}

/* Every rank's block of the master weights onto every rank. */
static chm_status gather_masters(chm_trainer *t, chm_err *err) {
    chm_tensor p;
    int64_t first;
    ck_param_span(t->model, false, &p, &first);
    chm_status rc = chm_comm_all_gather(t->comm, &p, err);
    if (rc == CHM_OK) t->masters_stale = false;
    return rc;
}

/* Mixed precision gathers the 16-bit compute copy, which is all the forward reads and half the
 * bytes of the f32 master weights: each rank's AdamW has written its block of both (the copy
 * is the rounded master), so the other ranks' master blocks are only gathered when a
 * checkpoint needs them (tr_dp_save). Otherwise the master weights are gathered (and cast). */
chm_status tr_dp_gather_params(chm_trainer *t, chm_err *err) {
    if (t->world <= 1) return CHM_OK;
    chm_tensor lowp;
    if (compute_span(t->model, &lowp)) {
        t->masters_stale = true;
        return chm_comm_all_gather(t->comm, &lowp, err);
    }
    chm_status rc = gather_masters(t, err);
    /* mixed precision without one span: the other ranks' blocks reach the copy by one cast */
    return rc ? rc : chm_model_refresh_compute(t->model, err);
}

chm_status tr_dp_stop(chm_trainer *t, const volatile sig_atomic_t *stop, bool *halt, chm_err *err) {
    double x[1] = {stop && *stop};
    chm_status rc = t->world > 1 ? chm_comm_sum_host(t->comm, x, 1, err) : CHM_OK;
    *halt = x[0] > 0;
    return rc;
}

void tr_dp_debug_die(const chm_trainer *t) {
    if (t->die_rank != t->rank || t->die_step != t->st.step + 1) return;
    fprintf(stderr, "chimera: debug: rank %d of %d dies at step %lld (CHIMERA_DEBUG_DIE_RANK)\n",
            t->rank, t->world, (long long)t->die_step);
    fflush(stderr);
    raise(SIGKILL);
}

chm_status tr_dp_eval(chm_trainer *t, chm_eval_result *r, chm_err *err) {
    if (t->world <= 1) return CHM_OK;
    enum { N = 8 + CHM_MODEL_MAX_MTP };
    double b = (double)r->batches;
    const chm_model_loss *p = &r->parts;
    double x[N] = {b * p->total, b * p->ce, b * p->mtp, b * p->moe_balance, b * p->moe_z,
                   b * p->mod_aux, b, (double)r->tokens};
    for (int k = 0; k < CHM_MODEL_MAX_MTP; k++) x[8 + k] = b * p->mtp_depth[k];
    chm_status rc = chm_comm_sum_host(t->comm, x, N, err);
    if (rc) return rc;
    chm_model_loss *q = &r->parts;
    double k1 = x[6] > 0 ? 1.0 / x[6] : 0;
    q->total = k1 * x[0], q->ce = k1 * x[1], q->mtp = k1 * x[2], q->moe_balance = k1 * x[3];
    q->moe_z = k1 * x[4], q->mod_aux = k1 * x[5];
    for (int k = 0; k < CHM_MODEL_MAX_MTP; k++) q->mtp_depth[k] = k1 * x[8 + k];
    r->batches = (int64_t)x[6], r->tokens = (int64_t)x[7];
    r->loss = q->ce;
    r->ppl = exp(r->loss);
    r->bytes_per_token = t->bytes_per_token;
    r->bits_per_byte = r->loss / log(2.0) / r->bytes_per_token;
    return CHM_OK;
}

/* ---- checkpoints: gathering and scattering the moments ----------------------------------- */

/* Every rank's block of one moment (this rank's block: `mine`) into host [E] on rank 0: one
 * broadcast per block and chunk, rooted at the block's owner, received into scratch. */
static chm_status gather_moment(chm_trainer *t, const chm_tensor *mine, char *host,
                                chm_buffer *scratch, int64_t E, chm_err *err) {
    size_t ds = chm_dtype_size(mine->dtype);
    chm_status rc = CHM_OK;
    for (int r = 0; rc == CHM_OK && r < t->world; r++) {
        int64_t b, cnt;
        chm_comm_block(E, t->world, r, &b, &cnt);
        for (int64_t off = 0; rc == CHM_OK && off < cnt; off += DP_GATHER_CHUNK) {
            int64_t k = cnt - off < DP_GATHER_CHUNK ? cnt - off : DP_GATHER_CHUNK;
            chm_tensor v = chm_tensor_1d(scratch, 0, mine->dtype, k);
            if (r == t->rank)
                v = chm_tensor_1d(mine->buf, mine->offset + (size_t)off * ds, mine->dtype, k);
            rc = chm_comm_broadcast(t->comm, &v, r, err);
            if (rc == CHM_OK && t->rank == 0 &&
                chm_download(t->be, &v, host + (size_t)(b + off) * ds))
                rc = CHM_ERR(err, CHM_ERR_DEVICE, "checkpoint gather: %s", t->be->err.msg);
        }
    }
    return rc;
}

/* Host [E] copies of both moments on rank 0 (NULL elsewhere); every rank takes part. */
static chm_status gather_moments(chm_trainer *t, chm_checkpoint_moments *mo, chm_err *err) {
    int64_t lo, cnt, E;
    chm_optim_shard(t->optim, &lo, &cnt, &E);
    chm_tensor mv, vv;
    chm_optim_moment_buffers(t->optim, &mv, &vv);
    size_t ds = chm_dtype_size(mv.dtype);
    int64_t s0, b0;
    chm_comm_block(E, t->world, 0, &b0, &s0);
    int64_t sk = s0 < DP_GATHER_CHUNK ? s0 : DP_GATHER_CHUNK;
    *mo = (chm_checkpoint_moments){.dtype = mv.dtype, .updates = chm_optim_updates(t->optim)};
    char *hm = NULL, *hv = NULL;
    chm_buffer *scratch = NULL;
    chm_status rc = chm_buffer_alloc(t->be, (size_t)(sk > 0 ? sk : 1) * ds, &scratch);
    if (rc) rc = CHM_ERR(err, rc, "checkpoint gather: %s", t->be->err.msg);
    if (rc == CHM_OK && t->rank == 0 &&
        (!(hm = calloc((size_t)E + 1, ds)) || !(hv = calloc((size_t)E + 1, ds))))
        rc = CHM_ERR(err, CHM_ERR_NOMEM, "checkpoint gather: no host memory for %lld moments",
                     (long long)E);
    if (rc == CHM_OK) rc = gather_moment(t, &mv, hm, scratch, E, err);
    if (rc == CHM_OK) rc = gather_moment(t, &vv, hv, scratch, E, err);
    chm_buffer_free(scratch);
    if (rc) {
        free(hm);
        free(hv);
        return rc;
    }
    mo->exp_avg = hm, mo->exp_avg_sq = hv;
    return CHM_OK;
}

chm_status tr_dp_save(chm_trainer *t, char *path, size_t n, chm_err *err) {
    chm_checkpoint_moments mo;
    chm_status rc = t->masters_stale ? gather_masters(t, err) : CHM_OK;
    if (rc == CHM_OK) rc = gather_moments(t, &mo, err);
    if (rc) return rc;
    if (t->rank == 0)
        rc = chm_checkpoint_save_moments(t->run_dir, t->model, &mo, &t->cfg, &t->st, t->keep, path,
                                         n, err);
    else
        snprintf(path, n, "%s/step-%08lld", t->run_dir, (long long)t->st.step);
    free((void *)mo.exp_avg);
    free((void *)mo.exp_avg_sq);
    return rc;
}

/* Element i of a safetensors tensor (f32 or f64, possibly unaligned) into dst[j] of dtype dt. */
static void put(const chm_st_tensor *s, int64_t i, chm_dtype dt, void *dst, int64_t j) {
    double v;
    if (s->dtype == CHM_F32) {
        float f;
        memcpy(&f, (const char *)s->data + i * 4, 4);
        v = f;
    } else {
        memcpy(&v, (const char *)s->data + i * 8, 8);
    }
    if (dt == CHM_F32) ((float *)dst)[j] = (float)v;
    else ((double *)dst)[j] = v;
}

/* Tensor `prefix``p->name` of f, checked against p; NULL with err otherwise. */
static const chm_st_tensor *moment_of(chm_safetensors *f, const char *path, const char *prefix,
                                      const chm_model_param *p, chm_err *err) {
    char name[160];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    const chm_st_tensor *s = chm_safetensors_find(f, name);
    int64_t numel = 1;
    for (int d = 0; s && d < s->ndim; d++) numel *= s->shape[d];
    if (!s)
        CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%s' is missing (the model has it)", path, name);
    else if (numel != p->numel || (s->dtype != CHM_F32 && s->dtype != CHM_F64))
        CHM_ERR(err, CHM_ERR_PARSE, "%s: tensor '%s' is %s with %lld elements, the model expects "
                "F32 or F64 with %lld", path, name, chm_safetensors_dtype_name(s->dtype),
                (long long)numel, (long long)p->numel);
    else return s;
    return NULL;
}

/* This rank's block of both moments of optimizer file f into host hm, hv ([cnt] each). */
static chm_status read_block(chm_trainer *t, chm_safetensors *f, const char *path, chm_dtype dt,
                             void *hm, void *hv, chm_err *err) {
    int64_t lo, cnt, E, first;
    chm_tensor view;
    chm_optim_shard(t->optim, &lo, &cnt, &E);
    ck_param_span(t->model, false, &view, &first);
    int np = chm_model_param_count(t->model);
    if (chm_safetensors_count(f) != 2 * np)
        return CHM_ERR(err, CHM_ERR_PARSE, "%s: holds %d tensors, the model's optimizer has %d",
                       path, chm_safetensors_count(f), 2 * np);
    for (int i = 0; i < np; i++) {
        const chm_model_param *p = chm_model_param_get(t->model, i);
        int64_t at = p->offset - first, b = at > lo ? at : lo;
        int64_t e = at + p->numel < lo + cnt ? at + p->numel : lo + cnt;
        const chm_st_tensor *m = moment_of(f, path, CK_PREFIX_M, p, err);
        const chm_st_tensor *v = m ? moment_of(f, path, CK_PREFIX_V, p, err) : NULL;
        if (!v) return err ? err->code : CHM_ERR_PARSE;
        for (int64_t k = b; k < e; k++) {
            put(m, k - at, dt, hm, k - lo);
            put(v, k - at, dt, hv, k - lo);
        }
    }
    return CHM_OK;
}

chm_status tr_dp_load_moments(chm_trainer *t, const chm_checkpoint *c, chm_err *err) {
    char path[TR_PATH + 32];
    snprintf(path, sizeof path, "%s/" CK_OPTIM_FILE, chm_checkpoint_dir(c));
    chm_tensor mv, vv;
    chm_optim_moment_buffers(t->optim, &mv, &vv);
    if (mv.dtype != CHM_F32 && mv.dtype != CHM_F64)
        return CHM_ERR(err, CHM_ERR_UNSUPPORTED, "%s: sharded moments of dtype %s cannot be loaded",
                       path, chm_dtype_name(mv.dtype));
    size_t nb = chm_tensor_nbytes(&mv);
    chm_safetensors *f = NULL;
    char *h = calloc(2 * nb + 1, 1);
    chm_status rc = h ? chm_safetensors_open(path, &f, err)
                      : CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory", path);
    if (rc == CHM_OK) rc = read_block(t, f, path, mv.dtype, h, h + nb, err);
    if (rc == CHM_OK && nb && (chm_upload(t->be, &mv, h) || chm_upload(t->be, &vv, h + nb)))
        rc = CHM_ERR(err, CHM_ERR_DEVICE, "%s: %s", path, t->be->err.msg);
    if (rc == CHM_OK) chm_optim_set_updates(t->optim, chm_checkpoint_get_state(c)->adamw_updates);
    chm_safetensors_close(f);
    free(h);
    return rc;
}
