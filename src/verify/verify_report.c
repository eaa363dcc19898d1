/*
 * verify_report.c: the report of `chimera verify`: its growing arrays, the
 * op table built from the checks, the totals, the readable tables (stdout)
 * with the one-line verdict, and the JSON file (jansson).
 */
#include "verify_internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *result_name(chm_verify_result r) {
    return r == CHM_VERIFY_PASS ? "PASS" : r == CHM_VERIFY_FAIL ? "FAIL" : "SKIP";
}

/* ---- building ---- */

chm_status vf_add_check(chm_verify_report *r, const chm_verify_check *c, chm_err *err) {
    int n = r->n_checks;
    if ((n & (n - 1)) == 0) { /* grow at powers of two */
        chm_verify_check *p = realloc(r->checks, (size_t)(n ? 2 * n : 64) * sizeof *p);
        if (!p) return CHM_ERR(err, CHM_ERR_NOMEM, "verify: no memory for %d checks", n);
        r->checks = p;
    }
    r->checks[r->n_checks++] = *c;
    return CHM_OK;
}

/* Fold check c into row w. */
static void row_add(chm_verify_op_row *w, const chm_verify_check *c) {
    if (c->result != CHM_VERIFY_SKIP) {
        w->checks++;
        w->exact = w->exact && c->exact;
        if (!(c->max_abs <= w->max_abs)) w->max_abs = c->max_abs;
        if (!(c->rel_l2 <= w->rel_l2)) w->rel_l2 = c->rel_l2;
    }
    bool first_fail = c->result == CHM_VERIFY_FAIL && w->result != CHM_VERIFY_FAIL;
    if (first_fail || (c->result == CHM_VERIFY_SKIP && !w->note[0]))
        snprintf(w->note, sizeof w->note, "%s: %s", c->what, c->note);
    if (c->result == CHM_VERIFY_FAIL) w->result = CHM_VERIFY_FAIL;
    else if (c->result == CHM_VERIFY_PASS && w->result == CHM_VERIFY_SKIP)
        w->result = CHM_VERIFY_PASS;
}

static chm_verify_op_row make_row(const chm_verify_report *r, int op, const char *backend,
                                  chm_dtype dt) {
    chm_verify_op_row w;
    memset(&w, 0, sizeof w);
    snprintf(w.op, sizeof w.op, "%s", chm_verify_op_name(op));
    snprintf(w.backend, sizeof w.backend, "%s", backend);
    w.dtype = dt;
    w.limit = vf_op_limit(op) * (dt == CHM_F32 ? 1 : 1000); /* verify_ops.h's VO_LOWP_FACTOR */
    w.exact = true;
    w.result = CHM_VERIFY_SKIP;
    for (int i = 0; i < r->n_checks; i++) {
        const chm_verify_check *c = &r->checks[i];
        if (!strcmp(c->op, w.op) && !strcmp(c->backend, backend) && c->dtype == dt)
            row_add(&w, c);
    }
    if (w.checks == 0 && !w.note[0]) snprintf(w.note, sizeof w.note, "no output was compared");
    return w;
}

/* Whether backend ran the pass of dtype dt (it has checks in it). */
static bool ran_pass(const chm_verify_report *r, const char *backend, chm_dtype dt) {
    for (int i = 0; i < r->n_checks; i++)
        if (r->checks[i].dtype == dt && !strcmp(r->checks[i].backend, backend)) return true;
    return false;
}

chm_status vf_build_rows(chm_verify_report *r, const bool *want, chm_err *err) {
    static const chm_dtype passes[] = {CHM_F32, CHM_BF16};
    int n = 0;
    for (int i = 0; i < chm_verify_op_count(); i++) n += want[i];
    r->rows = calloc((size_t)(n ? n : 1) * (size_t)r->n_backends * 2, sizeof *r->rows);
    if (!r->rows) return CHM_ERR(err, CHM_ERR_NOMEM, "verify: no memory for the op table");
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < chm_verify_op_count(); i++)
            for (int b = 0; want[i] && b < r->n_backends; b++) {
                const char *name = r->backends[b].name;
                bool in = p == 0 ? r->backends[b].available : ran_pass(r, name, passes[p]);
                if (in) r->rows[r->n_rows++] = make_row(r, i, name, passes[p]);
            }
    return CHM_OK;
}

static void count(chm_verify_report *r, chm_verify_result x) {
    if (x == CHM_VERIFY_PASS) r->passed++;
    else if (x == CHM_VERIFY_FAIL) r->failed++;
    else r->skipped++;
}

void vf_tally(chm_verify_report *r) {
    r->passed = r->failed = r->skipped = 0;
    for (int i = 0; i < r->n_rows; i++) count(r, r->rows[i].result);
    for (int i = 0; i < r->n_steps; i++) count(r, r->steps[i].result);
    for (int i = 0; i < r->n_trajs; i++) count(r, r->trajs[i].result);
    for (int i = 0; i < r->n_crosses; i++) count(r, r->crosses[i].result);
}

bool chm_verify_passed(const chm_verify_report *r) { return r && r->failed == 0; }

void chm_verify_report_free(chm_verify_report *r) {
    if (!r) return;
    for (int i = 0; i < r->n_steps; i++) free(r->steps[i].params);
    for (int i = 0; i < r->n_trajs; i++) free(r->trajs[i].loss);
    free(r->checks);
    free(r->rows);
    free(r->steps);
    free(r->ref_traj);
    free(r->trajs);
    free(r->crosses);
    free(r);
}

/* ---- the readable report ---- */

static void print_backends(const chm_verify_report *r, FILE *f) {
    fprintf(f, "chimera verify: every backend against the cpu reference\n");
    for (int b = 0; b < r->n_backends; b++) {
        const chm_verify_backend *k = &r->backends[b];
        if (k->available) fprintf(f, "  %-7s %s\n", k->name, k->device);
        else fprintf(f, "  %-7s unavailable: %s\n", k->name, k->why);
    }
}

/* One backend's cell of an op row: rel-L2, max |err|, result. */
static void print_cell(const chm_verify_op_row *w, FILE *f) {
    if (w->checks == 0) fprintf(f, "  %8s %8s  %-4s", "-", "-", result_name(w->result));
    else if (w->exact) fprintf(f, "  %8s %8s  %-4s", "exact", "", result_name(w->result));
    else fprintf(f, "  %8.1e %8.1e  %-4s", w->rel_l2, w->max_abs, result_name(w->result));
}

/* The table of the rows [from, to) (one dtype): one line per op, one cell per backend. */
static void print_pass(const chm_verify_report *r, int from, int to, FILE *f) {
    int nb = 1;
    while (from + nb < to && !strcmp(r->rows[from + nb].op, r->rows[from].op)) nb++;
    const char *dt = chm_dtype_name(r->rows[from].dtype);
    fprintf(f, "\nops: forward and backward on random inputs at several shapes, %s on each "
               "backend against the cpu in f64\n%-20s %7s", dt, "", "limit");
    for (int i = 0; i < nb; i++) fprintf(f, "  %-23s", r->rows[from + i].backend);
    fprintf(f, "\n%-20s %7s", "op", "rel-L2");
    for (int i = 0; i < nb; i++) fprintf(f, "  %8s %8s %5s", "rel-L2", "max|err|", "");
    fprintf(f, "\n");
    for (int i = from; i + nb <= to; i += nb) {
        fprintf(f, "%-20s %7.0e", r->rows[i].op, r->rows[i].limit);
        for (int b = 0; b < nb; b++) print_cell(&r->rows[i + b], f);
        fprintf(f, "\n");
    }
    for (int i = from; i < to; i++) /* failures always; skips of the f32 pass */
        if (r->rows[i].result == CHM_VERIFY_FAIL ||
            (r->rows[i].result == CHM_VERIFY_SKIP && r->rows[i].dtype == CHM_F32))
            fprintf(f, "  %s %s %s: %s\n", result_name(r->rows[i].result), r->rows[i].backend,
                    r->rows[i].op, r->rows[i].note);
}

static void print_ops(const chm_verify_report *r, FILE *f) {
    for (int from = 0, to; from < r->n_rows; from = to) {
        to = from;
        while (to < r->n_rows && r->rows[to].dtype == r->rows[from].dtype) to++;
        print_pass(r, from, to, f);
    }
}

static void print_loss_row(const char *name, const chm_model_loss *l, double gn, FILE *f) {
    fprintf(f, "  %-8s %11.7f %11.7f %11.7f %9.6f %9.6f %9.6f %10.6f", name, l->total, l->ce,
            l->mtp, l->moe_balance, l->moe_z, l->mod_aux, gn);
}

static void print_steps(const chm_verify_report *r, FILE *f) {
    if (!r->model_run || r->n_steps == 0) return;
    fprintf(f, "\nstep: one optimizer step of %s (%s) from the same weights and batch\n",
            r->config, r->model_desc);
    fprintf(f, "  %-8s %11s %11s %11s %9s %9s %9s %10s  %s\n", "backend", "loss", "ce", "mtp",
            "balance", "z-loss", "mod-aux", "grad-norm", "result");
    print_loss_row("ref", &r->steps[0].ref_loss, r->steps[0].ref_grad_norm, f);
    fprintf(f, "  the %s reference\n", r->reference);
    for (int i = 0; i < r->n_steps; i++) {
        const chm_verify_step *s = &r->steps[i];
        if (s->result == CHM_VERIFY_SKIP) {
            fprintf(f, "  %-8s SKIP: %s\n", s->backend, s->note);
            continue;
        }
        print_loss_row(s->backend, &s->loss, s->grad_norm, f);
        fprintf(f, "  %s\n", result_name(s->result));
        fprintf(f, "    loss parts within %.1e (limit %.0e); gradients rel-L2 %.1e, max|err| %.1e "
                   "(limit %.0e per parameter)%s\n", s->loss_rel, s->loss_limit, s->grad_rel_l2,
                s->grad_max_abs, s->grad_limit,
                s->routing_same ? "" : "; MoE/MoD routing decisions differ");
        if (s->loss_rel == 0 && s->grad_rel_l2 == 0)
            fprintf(f, "    bit for bit the reference's loss and gradients\n");
        for (int k = 0; k < s->n_params && k < CHM_VERIFY_WORST && s->grad_rel_l2 > 0; k++)
            fprintf(f, "    %-40s rel-L2 %.1e  max|err| %.1e\n", s->params[k].name,
                    s->params[k].rel_l2, s->params[k].max_abs);
        if (s->result == CHM_VERIFY_FAIL) fprintf(f, "    FAIL: %s\n", s->note);
    }
}

static void print_traj(const chm_verify_report *r, FILE *f) {
    if (!r->model_run || r->n_trajs == 0 || !r->ref_traj) return;
    fprintf(f, "\ntrajectory: %d step%s from the same start (total loss; ref: the %s "
               "reference)\n  %-5s %12s", r->traj_steps, r->traj_steps == 1 ? "" : "s",
            r->reference, "step", "ref");
    for (int i = 0; i < r->n_trajs; i++) fprintf(f, " %12s", r->trajs[i].backend);
    fprintf(f, "\n");
    for (int k = 0; k < r->traj_steps; k++) {
        fprintf(f, "  %-5d %12.7f", k + 1, r->ref_traj[k]);
        for (int i = 0; i < r->n_trajs; i++) {
            const chm_verify_traj *t = &r->trajs[i];
            if (t->loss && k < t->steps) fprintf(f, " %12.7f", t->loss[k]);
            else fprintf(f, " %12s", "-");
        }
        fprintf(f, "\n");
    }
    for (int i = 0; i < r->n_trajs; i++) {
        const chm_verify_traj *t = &r->trajs[i];
        if (t->result == CHM_VERIFY_SKIP) fprintf(f, "  %s SKIP: %s\n", t->backend, t->note);
        else
            fprintf(f, "  largest divergence of %s: %.1e relative at step %d (limit %.0e): "
                    "%s%s%s\n", t->backend, t->max_rel, t->at_step, t->limit,
                    result_name(t->result), t->note[0] ? ": " : "", t->note);
    }
}

static void print_cross(const chm_verify_report *r, FILE *f) {
    if (!r->model_run || r->n_crosses == 0) return;
    fprintf(f, "\ncheckpoint crossing: saved after step %lld on one backend, the next step resumed "
               "on another\n  %-22s %12s %12s %9s %9s %9s  %s\n", (long long)r->crosses[0].step,
            "from -> to", "loss", "continued", "rel-diff", "gnorm-rel", "weights", "result");
    for (int i = 0; i < r->n_crosses; i++) {
        const chm_verify_cross *c = &r->crosses[i];
        char ft[40];
        snprintf(ft, sizeof ft, "%s%s -> %s%s", c->from, c->from_ref ? "(ref)" : "", c->to,
                 c->from_ref ? "" : "(ref)");
        if (c->result == CHM_VERIFY_SKIP) {
            fprintf(f, "  %-22s SKIP: %s\n", ft, c->note);
            continue;
        }
        double gn = fabs(c->grad_norm - c->ref_grad_norm) / fabs(c->ref_grad_norm);
        fprintf(f, "  %-22s %12.7f %12.7f %9.1e %9.1e %9.1e  %s%s%s\n", ft, c->loss, c->ref_loss,
                c->loss_rel, gn, c->weights_rel_l2, result_name(c->result),
                c->note[0] ? ": " : "", c->note);
    }
}

/* Append "s" to buf as one more item of a "; " separated list. */
static void add_item(char *buf, size_t n, const char *s) {
    size_t at = strlen(buf);
    if (at + 8 >= n) return;
    snprintf(buf + at, n - at, "%s%s", buf[at - 1] == ':' ? " " : "; ", s);
}

void chm_verify_verdict(const chm_verify_report *r, char *buf, size_t n) {
    if (r->failed == 0) {
        int nb = 0;
        for (int b = 0; b < r->n_backends; b++) nb += r->backends[b].available;
        snprintf(buf, n, "verdict: PASS: %d backend%s agree%s with the cpu reference (%d passed, "
                 "%d skipped)", nb, nb == 1 ? "" : "s", nb == 1 ? "s" : "", r->passed, r->skipped);
        return;
    }
    snprintf(buf, n, "verdict: FAIL (%d failed):", r->failed);
    char item[128];
    for (int i = 0; i < r->n_rows; i++)
        if (r->rows[i].result == CHM_VERIFY_FAIL) {
            snprintf(item, sizeof item, "op %s on %s%s", r->rows[i].op, r->rows[i].backend,
                     r->rows[i].dtype == CHM_F32 ? "" : " in bf16");
            add_item(buf, n, item);
        }
    for (int i = 0; i < r->n_steps; i++)
        if (r->steps[i].result == CHM_VERIFY_FAIL) {
            snprintf(item, sizeof item, "step on %s", r->steps[i].backend);
            add_item(buf, n, item);
        }
    for (int i = 0; i < r->n_trajs; i++)
        if (r->trajs[i].result == CHM_VERIFY_FAIL) {
            snprintf(item, sizeof item, "trajectory on %s", r->trajs[i].backend);
            add_item(buf, n, item);
        }
    for (int i = 0; i < r->n_crosses; i++)
        if (r->crosses[i].result == CHM_VERIFY_FAIL) {
            snprintf(item, sizeof item, "crossing %s -> %s", r->crosses[i].from, r->crosses[i].to);
            add_item(buf, n, item);
        }
}

void chm_verify_print(const chm_verify_report *r, FILE *f) {
    print_backends(r, f);
    print_ops(r, f);
    print_steps(r, f);
    print_traj(r, f);
    print_cross(r, f);
    char v[2048];
    chm_verify_verdict(r, v, sizeof v);
    fprintf(f, "\n%s\n", v);
}

/* ---- JSON ---- */

/* A double as JSON: null when not finite (JSON has no NaN or infinity). */
static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *json_loss(const chm_model_loss *l) {
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "total", jnum(l->total), "ce", jnum(l->ce),
                     "mtp", jnum(l->mtp), "moe_balance", jnum(l->moe_balance), "moe_z",
                     jnum(l->moe_z), "mod_aux", jnum(l->mod_aux));
}

static json_t *json_ops(const chm_verify_report *r) {
    json_t *rows = json_array(), *checks = json_array();
    for (int i = 0; i < r->n_rows; i++) {
        const chm_verify_op_row *w = &r->rows[i];
        json_array_append_new(rows, json_pack("{s:s,s:s,s:s,s:i,s:b,s:o,s:o,s:o,s:s,s:s}", "op",
                              w->op, "backend", w->backend, "dtype", chm_dtype_name(w->dtype),
                              "checks", w->checks, "exact", w->exact,
                              "rel_l2", jnum(w->rel_l2), "max_abs", jnum(w->max_abs), "limit",
                              jnum(w->limit), "result", result_name(w->result), "note", w->note));
    }
    for (int i = 0; i < r->n_checks; i++) {
        const chm_verify_check *c = &r->checks[i];
        json_array_append_new(checks, json_pack("{s:s,s:s,s:s,s:s,s:I,s:b,s:o,s:o,s:o,s:s,s:s}",
                              "op", c->op, "what", c->what, "backend", c->backend, "dtype",
                              chm_dtype_name(c->dtype), "n", (json_int_t)c->n, "exact", c->exact,
                              "rel_l2", jnum(c->rel_l2), "max_abs", jnum(c->max_abs), "limit",
                              jnum(c->limit), "result", result_name(c->result), "note", c->note));
    }
    return json_pack("{s:b,s:o,s:o}", "run", r->ops_run, "rows", rows, "checks", checks);
}

static json_t *json_step(const chm_verify_step *s) {
    json_t *params = json_array();
    for (int k = 0; k < s->n_params; k++)
        json_array_append_new(params, json_pack("{s:s,s:I,s:o,s:o}", "name", s->params[k].name,
                              "n", (json_int_t)s->params[k].n, "rel_l2", jnum(s->params[k].rel_l2),
                              "max_abs", jnum(s->params[k].max_abs)));
    return json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b,s:o}", "backend",
                     s->backend, "result", result_name(s->result), "note", s->note, "loss",
                     json_loss(&s->loss), "ref_loss", json_loss(&s->ref_loss), "grad_norm",
                     jnum(s->grad_norm), "ref_grad_norm", jnum(s->ref_grad_norm), "loss_rel",
                     jnum(s->loss_rel), "loss_limit", jnum(s->loss_limit), "grad_rel_l2",
                     jnum(s->grad_rel_l2), "grad_max_abs", jnum(s->grad_max_abs), "grad_limit",
                     jnum(s->grad_limit), "routing_same", s->routing_same, "params", params);
}

static json_t *json_losses(const double *l, int n) {
    json_t *a = json_array();
    for (int k = 0; l && k < n; k++) json_array_append_new(a, jnum(l[k]));
    return a;
}

static json_t *json_model(const chm_verify_report *r) {
    json_t *steps = json_array(), *trajs = json_array(), *cross = json_array();
    for (int i = 0; i < r->n_steps; i++) json_array_append_new(steps, json_step(&r->steps[i]));
    for (int i = 0; i < r->n_trajs; i++) {
        const chm_verify_traj *t = &r->trajs[i];
        json_array_append_new(trajs, json_pack("{s:s,s:s,s:s,s:o,s:o,s:i,s:o}", "backend",
                              t->backend, "result", result_name(t->result), "note", t->note,
                              "loss", json_losses(t->loss, t->steps), "max_rel", jnum(t->max_rel),
                              "at_step", t->at_step, "limit", jnum(t->limit)));
    }
    for (int i = 0; i < r->n_crosses; i++) {
        const chm_verify_cross *c = &r->crosses[i];
        json_array_append_new(cross, json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o,"
                              "s:o,s:o}", "from", c->from, "to", c->to, "step", (json_int_t)c->step,
                              "result", result_name(c->result), "note", c->note, "loss",
                              jnum(c->loss), "ref_loss", jnum(c->ref_loss), "loss_rel",
                              jnum(c->loss_rel), "grad_norm", jnum(c->grad_norm), "ref_grad_norm",
                              jnum(c->ref_grad_norm), "weights_rel_l2", jnum(c->weights_rel_l2),
                              "limit", jnum(c->limit), "weights_limit", jnum(c->weights_limit)));
    }
    return json_pack("{s:b,s:s,s:s,s:o,s:{s:i,s:o,s:o},s:o}", "run", r->model_run, "model",
                     r->model_desc, "reference", r->reference, "step", steps, "trajectory",
                     "steps", r->traj_steps, "reference", json_losses(r->ref_traj, r->traj_steps),
                     "backends", trajs, "crossing", cross);
}

static json_t *json_report(const chm_verify_report *r) {
    json_t *bes = json_array();
    for (int b = 0; b < r->n_backends; b++) {
        const chm_verify_backend *k = &r->backends[b];
        json_array_append_new(bes, json_pack("{s:s,s:s,s:b,s:b,s:s}", "name", k->name, "device",
                              k->device, "named", k->named, "available", k->available, "why",
                              k->why));
    }
    char v[2048];
    chm_verify_verdict(r, v, sizeof v);
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:o,s:o,s:o,s:{s:i,s:i,s:i,s:f,s:f}}",
                     "format", "chimera-verify", "chimera_version", CHIMERA_VERSION, "verdict",
                     r->failed ? "FAIL" : "PASS", "summary", v, "seed", (json_int_t)r->seed,
                     "backends", bes, "ops", json_ops(r), "model", json_model(r), "totals",
                     "passed", r->passed, "failed", r->failed, "skipped", r->skipped,
                     "seconds_ops", r->seconds_ops, "seconds_model", r->seconds_model);
}

chm_status chm_verify_write_json(const chm_verify_report *r, const char *path, chm_err *err) {
    json_t *root = json_report(r);
    if (!root) return CHM_ERR(err, CHM_ERR_NOMEM, "verify: cannot build the JSON report");
    json_object_set_new(root, "config", json_string(r->config));
    int rc = json_dump_file(root, path, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (rc != 0)
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot write the JSON report: %s", path,
                       strerror(errno));
    return CHM_OK;
}
