/*
 * test_checkpoint.c: checkpoint directories (chimera/trainer.h): a save
 * loads back bit for bit (weights, moments, counters, the documented
 * trainer_state.json keys); refusals name the file or tensor (a tampered
 * checksum, a missing file, a wrong shape, a missing or unexpected tensor,
 * another model config, a run directory that holds checkpoints); atomic
 * saves (a leftover temporary directory is ignored and cleaned) and pruning
 * to the newest K.
 */
#include <jansson.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chimera/checkpoint.h"
#include "chimera/trainer.h"
#include "ckpt/checkpoint_internal.h"
#include "testutil.h"
#include "train_fixture.h"

/* The corpus cache shared by the trainer tests (tokenized once, renamed into place). */
#define TEST_CACHE "/tmp/chimera-tests-cache/chimera"


static char *make_tmpdir(void) { return make_tmpdir_named("chm-ckpt-"); }

/* A trainer in run_dir (fresh unless resume), one cpu thread, silent. */
static chm_status open_trainer(const chm_config *cfg, const char *run_dir, const char *resume,
                               chm_trainer **t, chm_err *err) {
    chm_trainer_options o = {.out_dir = run_dir, .resume = resume, .backend = "cpu", .quiet = true,
                             .threads = 1, .cache_dir = TEST_CACHE, .peak_tflops = 1};
    return chm_trainer_open(cfg, &o, t, err);
}

/* Train `steps` steps in a fresh run and save; the checkpoint path into ckpt. */
static chm_trainer *train_and_save(const chm_config *cfg, const char *run_dir, int steps,
                                   char *ckpt, size_t n) {
    chm_trainer *t;
    chm_err err = {0};
    cr_assert_eq(open_trainer(cfg, run_dir, NULL, &t, &err), CHM_OK, "%s", err.msg);
    for (int i = 0; i < steps; i++) {
        chm_train_step s;
        cr_assert_eq(chm_trainer_step(t, &s, &err), CHM_OK, "%s", err.msg);
    }
    cr_assert_eq(chm_trainer_save(t, ckpt, n, &err), CHM_OK, "%s", err.msg);
    return t;
}

/* Host bytes of a whole tensor view. */
static void *bytes_of(chm_backend *be, const chm_tensor *v) {
    void *h = malloc(chm_tensor_nbytes(v));
    cr_assert_eq(chm_download(be, v, h), CHM_OK);
    return h;
}

Test(checkpoint, roundtrip_exact) {
    char *dir = make_tmpdir(), ckpt[4096];
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer *t = train_and_save(&cfg, dir, 2, ckpt, sizeof ckpt);
    chm_err err = {0};
    chm_checkpoint *c;
    cr_assert_eq(chm_checkpoint_open(ckpt, &c, &err), CHM_OK, "%s", err.msg);
    const chm_checkpoint_state *st = chm_checkpoint_get_state(c);
    cr_assert_eq(st->step, 2);
    cr_assert_eq(st->tokens, 2 * 2 * 16);
    cr_assert_eq(st->adamw_updates, 2);
    cr_assert_eq(chm_checkpoint_check_model(c, &cfg.model, &err), CHM_OK, "%s", err.msg);
    /* a second model and optimizer, loaded from the files */
    chm_backend *be = chm_trainer_backend(t);
    chm_model_options mo = {.dtype = CHM_F32, .batch = 2, .seq_len = 16};
    chm_model *m;
    chm_optim *o;
    cr_assert_eq(chm_model_create(&cfg.model, be, &mo, &m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_optim_create(m, &cfg.train, NULL, &o, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_checkpoint_load_model(c, m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_checkpoint_load_optim(c, m, o, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_optim_updates(o), 2);
    for (int i = 0; i < chm_model_param_count(m); i++) {
        const chm_model_param *a = chm_model_param_get(chm_trainer_model(t), i);
        const chm_model_param *b = chm_model_param_get(m, i);
        chm_tensor ma, va, mb, vb;
        chm_optim_moments(chm_trainer_optim(t), a, &ma, &va);
        chm_optim_moments(o, b, &mb, &vb);
        const chm_tensor *x[3] = {&a->value, &ma, &va}, *y[3] = {&b->value, &mb, &vb};
        for (int k = 0; k < 3; k++) {
            void *p = bytes_of(be, x[k]), *q = bytes_of(be, y[k]);
            cr_assert(!memcmp(p, q, chm_tensor_nbytes(x[k])), "%s (%d) differs after loading",
                      a->name, k);
            free(p), free(q);
        }
    }
    chm_optim_free(o);
    chm_model_free(m);
    chm_checkpoint_close(c);
    chm_trainer_close(t);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

Test(checkpoint, state_json_keys) {
    char *dir = make_tmpdir(), ckpt[4096], path[4200];
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer_close(train_and_save(&cfg, dir, 1, ckpt, sizeof ckpt));
    snprintf(path, sizeof path, "%s/trainer_state.json", ckpt);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    cr_assert_not_null(j, "%s", je.text);
    const char *keys[] = {"format", "version", "chimera_version", "step", "tokens", "adamw_updates",
                          "skipped_steps", "elapsed_s", "loader", "rng", "schedule", "backend",
                          "device", "dtype", "config", "files"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert_not_null(json_object_get(j, keys[i]), "trainer_state.json lacks %s", keys[i]);
    json_t *files = json_object_get(j, "files");
    const char *names[] = {"model.safetensors", "optimizer.safetensors"};
    for (int i = 0; i < 2; i++)
        cr_assert(json_is_string(json_object_get(json_object_get(files, names[i]), "sha256")));
    cr_assert_not_null(json_object_get(json_object_get(j, "loader"), "position"));
    json_t *schedule = json_object_get(j, "schedule");
    cr_assert_str_eq(json_string_value(json_object_get(schedule, "name")), "cosine");
    cr_assert(strstr(json_string_value(json_object_get(j, "config")), "d_model: 16"));
    json_decref(j);
    /* the moments are named after the parameters */
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt);
    chm_safetensors *f;
    chm_err err = {0};
    cr_assert_eq(chm_safetensors_open(path, &f, &err), CHM_OK, "%s", err.msg);
    cr_assert_not_null(chm_safetensors_find(f, "exp_avg.embed.weight"));
    cr_assert_not_null(chm_safetensors_find(f, "exp_avg_sq.layers.0.mixer.A_log"));
    chm_safetensors_close(f);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

/* Flip one byte near the end of dir/name. */
static void tamper(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, -5, SEEK_END);
    int c = fgetc(f);
    fseek(f, -5, SEEK_END);
    fputc(c ^ 0x40, f);
    fclose(f);
}

Test(checkpoint, refuses_tampered_checksum) {
    char *dir = make_tmpdir(), ckpt[4096];
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer_close(train_and_save(&cfg, dir, 1, ckpt, sizeof ckpt));
    tamper(ckpt, "model.safetensors");
    chm_checkpoint *c;
    chm_err err = {0};
    cr_assert_eq(chm_checkpoint_open(ckpt, &c, &err), CHM_ERR_PARSE);
    cr_assert(strstr(err.msg, "model.safetensors") && strstr(err.msg, "checksum"), "%s", err.msg);
    /* resuming refuses it the same way */
    chm_trainer *t;
    cr_assert_eq(open_trainer(&cfg, dir, "auto", &t, &err), CHM_ERR_PARSE, "%s", err.msg);
    cr_assert(strstr(err.msg, "model.safetensors"), "%s", err.msg);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

Test(checkpoint, refuses_missing_file) {
    char *dir = make_tmpdir(), ckpt[4096], path[4200];
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer_close(train_and_save(&cfg, dir, 1, ckpt, sizeof ckpt));
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt);
    cr_assert_eq(unlink(path), 0);
    chm_checkpoint *c;
    chm_err err = {0};
    cr_assert_eq(chm_checkpoint_open(ckpt, &c, &err), CHM_ERR_IO);
    cr_assert(strstr(err.msg, "optimizer.safetensors") && strstr(err.msg, "missing"), "%s", err.msg);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

/* Load the checkpoint of config TINY into a model of TINY + `other`; the error. */
static chm_status load_into_other(const char *other, chm_err *err) {
    char *dir = make_tmpdir(), ckpt[4096];
    chm_config a, b;
    load_config(&a, NULL);
    load_config(&b, other);
    chm_trainer *t = train_and_save(&a, dir, 1, ckpt, sizeof ckpt);
    chm_checkpoint *c;
    cr_assert_eq(chm_checkpoint_open(ckpt, &c, err), CHM_OK, "%s", err->msg);
    chm_model_options mo = {.dtype = CHM_F32, .batch = 2, .seq_len = 16};
    chm_model *m;
    cr_assert_eq(chm_model_create(&b.model, chm_trainer_backend(t), &mo, &m, err), CHM_OK);
    chm_status rc = chm_checkpoint_load_model(c, m, err);
    chm_model_free(m);
    chm_checkpoint_close(c);
    chm_trainer_close(t);
    chm_config_free(&a);
    chm_config_free(&b);
    remove_tmpdir(dir);
    return rc;
}

Test(checkpoint, refuses_wrong_shape) {
    chm_err err = {0};
    cr_assert_eq(load_into_other("model.ffn.hidden=48", &err), CHM_ERR_PARSE);
    cr_assert(strstr(err.msg, "model.safetensors") && strstr(err.msg, "layers.0.ffn.w1.weight") &&
              strstr(err.msg, "[32, 16]") && strstr(err.msg, "[48, 16]"), "%s", err.msg);
}

Test(checkpoint, refuses_unexpected_tensor) {
    chm_err err = {0};
    cr_assert_eq(load_into_other("model.mtp.depth=0", &err), CHM_ERR_PARSE);
    cr_assert(strstr(err.msg, "'mtp.0.") && strstr(err.msg, "not a parameter"), "%s", err.msg);
}

Test(checkpoint, refuses_missing_tensor) {
    chm_err err = {0};
    cr_assert_eq(load_into_other("model.mtp.depth=2", &err), CHM_ERR_PARSE);
    cr_assert(strstr(err.msg, "'mtp.1.") && strstr(err.msg, "missing"), "%s", err.msg);
}

Test(checkpoint, refuses_other_model_config) {
    char *dir = make_tmpdir(), ckpt[4096];
    chm_config a, b;
    load_config(&a, NULL);
    load_config(&b, "model.d_model=24");
    chm_trainer_close(train_and_save(&a, dir, 1, ckpt, sizeof ckpt));
    chm_checkpoint *c;
    chm_err err = {0};
    cr_assert_eq(chm_checkpoint_open(ckpt, &c, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_checkpoint_check_model(c, &b.model, &err), CHM_ERR_CONFIG);
    cr_assert(strstr(err.msg, "model.d_model is 16") && strstr(err.msg, "24"), "%s", err.msg);
    chm_checkpoint_close(c);
    /* resuming with the other config is refused before anything is built */
    chm_trainer *t;
    cr_assert_eq(open_trainer(&b, dir, "auto", &t, &err), CHM_ERR_CONFIG);
    cr_assert(strstr(err.msg, "model.d_model"), "%s", err.msg);
    /* a training key may change on resume */
    chm_config_free(&b);
    load_config(&b, "train.steps=9");
    cr_assert_eq(open_trainer(&b, dir, "auto", &t, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_trainer_steps_done(t), 1);
    chm_trainer_close(t);
    chm_config_free(&a);
    chm_config_free(&b);
    remove_tmpdir(dir);
}

Test(checkpoint, refuses_to_overwrite_a_run) {
    char *dir = make_tmpdir(), ckpt[4096];
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer_close(train_and_save(&cfg, dir, 1, ckpt, sizeof ckpt));
    chm_trainer *t;
    chm_err err = {0};
    cr_assert_eq(open_trainer(&cfg, dir, NULL, &t, &err), CHM_ERR_CONFIG);
    cr_assert(strstr(err.msg, "already holds checkpoints") && strstr(err.msg, "--resume auto"),
              "%s", err.msg);
    cr_assert(ck_exists(ckpt), "the checkpoint is untouched");
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

Test(checkpoint, leftover_temp_dir_ignored_and_cleaned) {
    char *dir = make_tmpdir(), ckpt[4096], tmp[4200], junk[4300], latest[4096];
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer_close(train_and_save(&cfg, dir, 2, ckpt, sizeof ckpt));
    /* an interrupted save of a later step: a temp dir with a partial file */
    snprintf(tmp, sizeof tmp, "%s/.tmp-step-00000005-4242", dir);
    cr_assert_eq(mkdir(tmp, 0777), 0);
    snprintf(junk, sizeof junk, "%s/model.safetensors", tmp);
    FILE *f = fopen(junk, "w");
    fputs("partial", f);
    fclose(f);
    bool found;
    chm_err err = {0};
    cr_assert_eq(chm_checkpoint_latest(dir, false, latest, sizeof latest, &found, &err), CHM_OK);
    cr_assert(found && !strcmp(latest, ckpt), "latest %s, want %s", latest, ckpt);
    cr_assert(ck_exists(tmp), "without clean the temp dir stays");
    chm_trainer *t;
    cr_assert_eq(open_trainer(&cfg, dir, "auto", &t, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_trainer_steps_done(t), 2, "resumed from the complete checkpoint");
    cr_assert(!ck_exists(tmp), "--resume auto removes the leftover");
    chm_trainer_close(t);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

Test(checkpoint, keeps_newest_k_and_replaces_same_step) {
    char *dir = make_tmpdir(), path[4200];
    chm_config cfg;
    load_config(&cfg, NULL);
    chm_trainer *t;
    chm_err err = {0};
    chm_trainer_options o = {.out_dir = dir, .backend = "cpu", .quiet = true, .threads = 1,
                             .cache_dir = TEST_CACHE, .peak_tflops = 1, .keep = 2};
    cr_assert_eq(chm_trainer_open(&cfg, &o, &t, &err), CHM_OK, "%s", err.msg);
    for (int i = 0; i < 4; i++) {
        chm_train_step s;
        cr_assert_eq(chm_trainer_step(t, &s, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(chm_trainer_save(t, NULL, 0, &err), CHM_OK, "%s", err.msg);
    }
    cr_assert_eq(chm_trainer_save(t, NULL, 0, &err), CHM_OK, "%s", err.msg); /* step 4 again */
    for (int s = 1; s <= 4; s++) {
        snprintf(path, sizeof path, "%s/step-%08d/trainer_state.json", dir, s);
        cr_assert_eq(ck_exists(path), s >= 3, "step %d kept: %d", s, ck_exists(path));
    }
    chm_trainer_close(t);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}
