/*
 * train_log.c: what a run tells its user: the header, a line per log_every
 * steps (a progress bar between them on a terminal), evaluation and
 * checkpoint lines, warnings for skipped steps, and metrics.jsonl.
 *
 * metrics.jsonl gets one JSON object per line and event, flushed at once:
 *   start       step, tokens, total_steps, resumed_from, backend, device, why,
 *               params_total, params_active, flops_per_token, peak_tflops,
 *               peak_source, floor, memory_bytes, config, run_dir, world_size,
 *               comm (the data-parallel transport, "single process" alone)
 *   train       step, tokens, loss, ce, mtp, moe_balance, moe_z, mod_aux (means
 *               over the good steps since the previous train event), lr and
 *               grad_norm, clip_factor (of this step), tokens_per_s (every rank's),
 *               mfu (per device; null when the peak is unknown), memory_bytes (of
 *               one rank), eta_s, elapsed_s
 *   eval        step, tokens, val_loss, val_ppl, val_bpb, val_tokens,
 *               bytes_per_token, floor
 *   skip        step, loss, grad_norm (null when not finite), bad_streak
 *   checkpoint  step, path
 *   end         step, reason ("done", "signal", "non-finite"), elapsed_s
 * Every event also has "event" (its name) and "time" (Unix seconds).
 * Non-finite numbers are written as null (JSON has no NaN). In a data-parallel
 * run only rank 0 logs (the others have no log and no metrics file).
 */
#include "trainer_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- formatting --------------------------------------------------------------------- */

/* 1234 -> "1.23k", 5.6e6 -> "5.60M". */
static void fmt_count(double x, char *out, size_t n) {
    if (x >= 1e9) snprintf(out, n, "%.2fG", x / 1e9);
    else if (x >= 1e6) snprintf(out, n, "%.2fM", x / 1e6);
    else if (x >= 1e3) snprintf(out, n, "%.1fk", x / 1e3);
    else snprintf(out, n, "%.0f", x);
}

static void fmt_bytes(double b, char *out, size_t n) {
    if (b >= 1073741824.0) snprintf(out, n, "%.2f GiB", b / 1073741824.0);
    else if (b >= 1048576.0) snprintf(out, n, "%.1f MiB", b / 1048576.0);
    else snprintf(out, n, "%.1f KiB", b / 1024.0);
}

static void fmt_dur(double s, char *out, size_t n) {
    if (!isfinite(s) || s < 0) snprintf(out, n, "?");
    else if (s >= 3600) snprintf(out, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60) snprintf(out, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(out, n, "%.0fs", s);
}

static json_t *jreal(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* Append one event (consumes fields): {"event", "time", fields...} to metrics.jsonl. */
static void emit(chm_trainer *t, const char *event, json_t *fields) {
    if (!fields) return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    json_t *obj = json_object();
    json_object_set_new(obj, "event", json_string(event));
    json_object_set_new(obj, "time", json_real((double)now.tv_sec + 1e-9 * (double)now.tv_nsec));
    json_object_update(obj, fields);
    json_decref(fields);
    if (t->metrics) {
        json_dumpf(obj, t->metrics, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(13));
        fputc('\n', t->metrics);
        fflush(t->metrics);
    }
    json_decref(obj);
}

void tr_log_clear_bar(chm_trainer *t) {
    if (t->bar) fputs("\r\033[K", t->log);
}

/* printf to the log, above the progress bar. */
static void say(chm_trainer *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void say(chm_trainer *t, const char *fmt, ...) {
    if (!t->log) return;
    tr_log_clear_bar(t);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->log, fmt, ap);
    va_end(ap);
    fflush(t->log);
}

/* ---- start and header ----------------------------------------------------------------- */

/* How the gradients are summed over the ranks (train_dp.c). */
static void log_reduce_mode(chm_trainer *t) {
    double mb = t->cfg.train.comm_bucket_mb;
    if (t->bkt.on)
        say(t, "gradient all-reduce: buckets of %g MiB started during the backward of each "
            "step's last micro batch (overlapped)\n", mb);
    else
        say(t, "gradient all-reduce: one after the backward (%s)\n",
            mb <= 0 ? "train.comm_bucket_mb 0" : "this transport does not overlap");
}

void tr_log_header(chm_trainer *t, const char *resumed_from) {
    const chm_config *c = &t->cfg;
    char p[32], a[32], mem[32];
    fmt_count((double)t->stats.params_total, p, sizeof p);
    fmt_count((double)t->stats.params_active, a, sizeof a);
    fmt_bytes((double)t->mem_bytes, mem, sizeof mem);
    say(t, "chimera train: %s -> %s, %lld steps of %lld tokens\n", c->source, t->run_dir,
        (long long)c->train.total_steps, (long long)c->train.tokens_per_step);
    if (!t->quiet) say(t, "backend: %s\n", t->be->why);
    if (t->world > 1) {
        say(t, "data parallel: %s; global batch %lld sequences = micro batch %d x grad_accum %d "
            "x %d ranks; AdamW state sharded over the ranks (ZeRO-1)\n", chm_comm_describe(t->comm),
            (long long)c->train.micro_batch * c->train.grad_accum * t->world, c->train.micro_batch,
            c->train.grad_accum, t->world);
        log_reduce_mode(t);
    }
    say(t, "model: %s parameters (%s active), %.3g MFLOP per token (training), %s, %s in use\n", p,
        a, t->stats.flops_train / 1e6, chm_model_precision_name(t->model), mem);
    say(t, "data: %s\n", t->data_desc);
    if (t->floor > 0)
        say(t, "loss floor of the corpus: %.4f nats per token (the loss cannot go below it)\n",
            t->floor);
    if (t->peak.tflops > 0) say(t, "MFU against %.3g TFLOP/s: %s\n", t->peak.tflops, t->peak.source);
    else say(t, "MFU: not shown (%s)\n", t->peak.source);
    if (resumed_from)
        say(t, "resumed from %s at step %lld (%lld tokens)\n", resumed_from, (long long)t->st.step,
            (long long)t->st.tokens);
}

void tr_log_start(chm_trainer *t, const char *resumed_from) {
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:o,s:s,s:s,s:s,s:I,s:I,s:f,s:o,s:s,s:o,s:I,s:s,s:s}", "step",
        (json_int_t)t->st.step, "tokens", (json_int_t)t->st.tokens, "total_steps",
        (json_int_t)t->cfg.train.total_steps, "resumed_from",
        resumed_from ? json_string(resumed_from) : json_null(), "backend", t->be->name, "device",
        t->be->device, "why", t->be->why, "params_total", (json_int_t)t->stats.params_total,
        "params_active", (json_int_t)t->stats.params_active, "flops_per_token", t->stats.flops_train,
        "peak_tflops", t->peak.tflops > 0 ? json_real(t->peak.tflops) : json_null(), "peak_source",
        t->peak.source, "floor", t->floor > 0 ? json_real(t->floor) : json_null(), "memory_bytes",
        (json_int_t)t->mem_bytes, "config", t->cfg.source, "run_dir", t->run_dir);
    if (o) {
        json_object_set_new(o, "world_size", json_integer(t->world));
        json_object_set_new(o, "comm", json_string(chm_comm_describe(t->comm)));
    }
    emit(t, "start", o);
}

/* ---- steps ---------------------------------------------------------------------------- */

/* " (ce 1.23 mtp 1.45 bal 1.01 z 0.12 mod 0.69)": the parts this model has. */
static void parts_text(const chm_config_model *m, const chm_model_loss *l, char *out, size_t n) {
    snprintf(out, n, " (ce %.4f", l->ce);
    if (m->mtp.depth > 0) snprintf(out + strlen(out), n - strlen(out), " mtp %.4f", l->mtp);
    if (m->n_moe > 0 && m->moe.experts > 0)
        snprintf(out + strlen(out), n - strlen(out), " bal %.3f z %.3f", l->moe_balance, l->moe_z);
    if (m->mod.n_layers > 0) snprintf(out + strlen(out), n - strlen(out), " mod %.3f", l->mod_aux);
    snprintf(out + strlen(out), n - strlen(out), ")");
}

static void bar(chm_trainer *t, const chm_train_step *s, double tps, double eta) {
    int64_t total = t->cfg.train.total_steps, w = 30;
    int64_t fill = total > 0 ? s->step * w / total : w;
    char b[64], tp[32], et[32];
    for (int64_t i = 0; i < w; i++) b[i] = i < fill ? '#' : '.';
    b[w] = '\0';
    fmt_count(tps, tp, sizeof tp);
    fmt_dur(eta, et, sizeof et);
    fprintf(t->log, "\r[%s] %lld/%lld loss %.4f | %s tok/s | ETA %s\033[K", b, (long long)s->step,
            (long long)total, s->loss.total, tp, et);
    fflush(t->log);
}

/* The log line and "train" event for the window ending at step s. */
static void log_line(chm_trainer *t, const chm_train_step *s, double tps, double eta) {
    chm_model_loss l = t->win.sum;
    double k = t->win.good > 0 ? 1.0 / (double)t->win.good : NAN;
    l.total *= k, l.ce *= k, l.mtp *= k, l.moe_balance *= k, l.moe_z *= k, l.mod_aux *= k;
    /* tps counts every rank's tokens; the peak is one device's */
    double mfu = t->peak.tflops > 0
                     ? t->stats.flops_train * tps / (t->peak.tflops * 1e12 * (double)t->world)
                     : NAN;
    double elapsed = t->elapsed_open + (tr_now() - t->t_open);
    char parts[160], tp[32], mem[32], et[32], mf[32];
    parts_text(&t->cfg.model, &l, parts, sizeof parts);
    fmt_count(tps, tp, sizeof tp);
    fmt_bytes((double)t->mem_bytes, mem, sizeof mem);
    fmt_dur(eta, et, sizeof et);
    if (isfinite(mfu)) snprintf(mf, sizeof mf, "%.2f%%", 100 * mfu);
    else snprintf(mf, sizeof mf, "n/a");
    int width = snprintf(NULL, 0, "%lld", (long long)t->cfg.train.total_steps);
    double per = t->win.steps > 0 ? 1e3 / (double)t->win.steps : 0;
    double comm_ms = per * t->win.comm_seconds, exposed_ms = per * t->win.comm_exposed_seconds;
    char comm[64] = "";
    if (t->world > 1)
        snprintf(comm, sizeof comm, " | comm %.1f ms/step (exposed %.1f)", comm_ms, exposed_ms);
    say(t,
        "step %*lld/%lld | loss %.4f%s | lr %.2e | grad norm %.3f | %s tok/s | MFU %s | mem %s%s "
        "| ETA %s\n",
        width, (long long)s->step, (long long)t->cfg.train.total_steps, l.total, parts, s->lr,
        s->grad_norm, tp, mf, mem, comm, et);
    emit(t, "train",
         json_pack("{s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:f,s:o,s:o,s:o,s:o,s:I,s:o,s:f}", "step",
                   (json_int_t)s->step, "tokens", (json_int_t)s->tokens, "loss", jreal(l.total),
                   "ce", jreal(l.ce), "mtp", jreal(l.mtp), "moe_balance", jreal(l.moe_balance),
                   "moe_z", jreal(l.moe_z), "mod_aux", jreal(l.mod_aux), "lr", s->lr, "grad_norm",
                   jreal(s->grad_norm), "clip_factor", jreal(s->clip_factor), "tokens_per_s",
                   jreal(tps), "mfu", jreal(mfu), "memory_bytes", (json_int_t)t->mem_bytes, "eta_s",
                   jreal(eta), "elapsed_s", elapsed));
    if (t->world > 1 && t->metrics) {
        /* the collectives' share, on its own line so that single-process metrics keep their shape */
        emit(t, "comm", json_pack("{s:I,s:f,s:f,s:i,s:i}", "step", (json_int_t)s->step,
                                  "comm_ms_per_step", comm_ms, "comm_exposed_ms_per_step",
                                  exposed_ms, "grad_all_reduces", t->bkt.on ? t->bkt.started : 1,
                                  "world_size", t->world));
    }
}

void tr_log_step(chm_trainer *t, const chm_train_step *s) {
    tr_window *w = &t->win;
    w->steps++;
    w->seconds += s->seconds;
    w->comm_seconds += s->comm_seconds;
    w->comm_exposed_seconds += s->comm_exposed_seconds;
    if (!s->skipped) {
        w->good++;
        chm_model_loss *a = &w->sum;
        a->total += s->loss.total, a->ce += s->loss.ce, a->mtp += s->loss.mtp;
        a->moe_balance += s->loss.moe_balance, a->moe_z += s->loss.moe_z;
        a->mod_aux += s->loss.mod_aux;
    }
    const chm_config_train *tc = &t->cfg.train;
    double per = w->seconds / (double)w->steps;
    double tps = per > 0 ? (double)tc->tokens_per_step / per : NAN;
    double eta = per * (double)(tc->total_steps - s->step);
    bool line = s->step % tc->log_every == 0 || s->step == 1 || s->step >= tc->total_steps;
    if (!line) {
        if (t->bar) bar(t, s, tps, eta);
        return;
    }
    log_line(t, s, tps, eta);
    memset(w, 0, sizeof *w);
}

void tr_log_skip(chm_trainer *t, const chm_train_step *s) {
    if (t->rank != 0) return; /* every rank skips the same step; one warning is enough */
    tr_log_clear_bar(t);
    fprintf(stderr, "chimera: warning: step %lld: non-finite %s (loss %g, grad norm %g): step "
            "skipped, weights unchanged (%d in a row; %d stop the run)\n",
            (long long)s->step, isfinite(s->loss.total) ? "gradient" : "loss", s->loss.total,
            s->grad_norm, s->bad_streak, CHM_TRAIN_MAX_BAD_STEPS);
    emit(t, "skip", json_pack("{s:I,s:o,s:o,s:i}", "step", (json_int_t)s->step, "loss",
                              jreal(s->loss.total), "grad_norm", jreal(s->grad_norm), "bad_streak",
                              s->bad_streak));
}

void tr_log_eval(chm_trainer *t, const chm_eval_result *r) {
    char fl[96] = "";
    if (t->floor > 0) snprintf(fl, sizeof fl, " | floor %.4f", t->floor);
    say(t, "eval step %lld | val loss %.4f | ppl %.3f | %.4f bits/byte%s\n", (long long)t->st.step,
        r->loss, r->ppl, r->bits_per_byte, fl);
    emit(t, "eval", json_pack("{s:I,s:I,s:o,s:o,s:o,s:I,s:f,s:o}", "step", (json_int_t)t->st.step,
                              "tokens", (json_int_t)t->st.tokens, "val_loss", jreal(r->loss),
                              "val_ppl", jreal(r->ppl), "val_bpb", jreal(r->bits_per_byte),
                              "val_tokens", (json_int_t)r->tokens, "bytes_per_token",
                              r->bytes_per_token, "floor",
                              t->floor > 0 ? json_real(t->floor) : json_null()));
}

void tr_log_checkpoint(chm_trainer *t, const char *path) {
    say(t, "checkpoint %s\n", path);
    emit(t, "checkpoint", json_pack("{s:I,s:s}", "step", (json_int_t)t->st.step, "path", path));
}

void tr_log_end(chm_trainer *t, const char *reason) {
    double elapsed = t->elapsed_open + (tr_now() - t->t_open);
    char d[32];
    fmt_dur(tr_now() - t->t_open, d, sizeof d);
    if (!strcmp(reason, "done")) {
        char fl[96] = "";
        if (t->floor > 0 && isfinite(t->last_eval_loss))
            snprintf(fl, sizeof fl, " (floor %.4f)", t->floor);
        if (isfinite(t->last_eval_loss))
            say(t, "done: %lld steps in %s, final val loss %.4f%s\n", (long long)t->st.step, d,
                t->last_eval_loss, fl);
        else
            say(t, "done: %lld steps in %s\n", (long long)t->st.step, d);
    } else if (!strcmp(reason, "signal")) {
        say(t, "stopped by a signal at step %lld after %s; continue with --resume auto\n",
            (long long)t->st.step, d);
    }
    emit(t, "end", json_pack("{s:I,s:s,s:f}", "step", (json_int_t)t->st.step, "reason", reason,
                             "elapsed_s", elapsed));
}
