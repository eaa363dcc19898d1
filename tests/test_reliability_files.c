/*
 * test_reliability_files.c: corrupt and hostile input files through the
 * `chimera` command: every one is refused with exit code 2 (never a crash)
 * and a message naming the file and what is wrong.
 *   - model.safetensors of a checkpoint (its checksum in trainer_state.json
 *     updated, so the damage reaches the safetensors reader): header length
 *     past the end, a huge claimed header, a header that is not JSON,
 *     offsets out of bounds, overlapping tensors, an unknown dtype, a dtype
 *     chimera does not load, shapes that disagree with the config, a
 *     truncated file; through `chimera eval` and `chimera train --resume`;
 *   - trainer_state.json: broken JSON, a tampered file (checksum mismatch),
 *     and "files" entries that are not files of the checkpoint ('..', '.',
 *     '', a path, a FIFO that would block a reader);
 *   - token files for `chimera train`: a .npy with a damaged magic, a float
 *     dtype, a truncated one, and a manifest that points outside its
 *     directory (absolute, '..');
 *   - `chimera tokenize` over many files with a truncated .gz and a file that
 *     is not gzip among them: the others are tokenized, the bad ones named
 *     with what is wrong, exit 1; the broken lines of a file are reported as
 *     file:line and its good documents kept.
 */
#include "test_reliability_util.h"

#include "chimera/checkpoint.h"
#include "chimera/data.h"

#define FIX CHIMERA_SOURCE_DIR "/tests/data/dolma/"

/* A checkpoint of the tiny model after 2 steps (library, in-process): dir/run/step-00000002. */
static void make_checkpoint(const char *dir, char *ckpt, size_t n) {
    char run[4200];
    snprintf(run, sizeof run, "%s/run", dir);
    chm_config cfg;
    load_config(&cfg, "train.steps=2");
    chm_trainer_options o = {.out_dir = run, .backend = "cpu", .quiet = true, .threads = 1,
                             .cache_dir = RL_CACHE, .peak_tflops = 1};
    chm_trainer *t;
    chm_err err = {0};
    cr_assert_eq(chm_trainer_open(&cfg, &o, &t, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_trainer_run(t, NULL, &err), CHM_OK, "%s", err.msg);
    chm_trainer_close(t);
    chm_config_free(&cfg);
    snprintf(ckpt, n, "%s/step-00000002", run);
}

/* ---- safetensors surgery ------------------------------------------------------------------ */

/* A safetensors file in memory: header JSON and the data after it. */
typedef struct st_file {
    json_t *header;
    unsigned char *data;
    size_t data_len;
} st_file;

static st_file st_read(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    unsigned char lb[8];
    cr_assert_eq(fread(lb, 1, 8, f), 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lb[i];
    char *h = malloc(hlen);
    cr_assert_eq(fread(h, 1, hlen, f), hlen);
    st_file s = {0};
    json_error_t je;
    s.header = json_loadb(h, hlen, JSON_REJECT_DUPLICATES, &je);
    cr_assert_not_null(s.header, "%s", je.text);
    free(h);
    long at = ftell(f);
    fseek(f, 0, SEEK_END);
    s.data_len = (size_t)(ftell(f) - at);
    fseek(f, at, SEEK_SET);
    s.data = malloc(s.data_len + 1);
    cr_assert_eq(fread(s.data, 1, s.data_len, f), s.data_len);
    fclose(f);
    return s;
}

/* Write s to path (header padded to 8 bytes), `cut` bytes short of the end; frees s. */
static void st_write(const char *path, st_file *s, size_t cut) {
    char *h = json_dumps(s->header, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    size_t len = strlen(h), padded = (len + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(lb, 1, 8, f);
    fwrite(h, 1, len, f);
    for (size_t i = len; i < padded; i++) fputc(' ', f);
    fwrite(s->data, 1, s->data_len - cut, f);
    fclose(f);
    free(h);
    free(s->data);
    json_decref(s->header);
}

/* The first tensor entry with a 2-D shape of unequal sides (its name into *name). */
static json_t *st_matrix(const st_file *s, const char **name) {
    const char *key;
    json_t *e;
    json_object_foreach(s->header, key, e) {
        json_t *sh = json_object_get(e, "shape");
        if (json_array_size(sh) == 2 && json_integer_value(json_array_get(sh, 0)) !=
                                            json_integer_value(json_array_get(sh, 1))) {
            *name = key;
            return e;
        }
    }
    cr_assert_fail("no matrix in the checkpoint");
    return NULL;
}

/* Two tensor entries with data (for an overlap). */
static void st_two(const st_file *s, json_t **a, json_t **b) {
    const char *key;
    json_t *e;
    *a = *b = NULL;
    json_object_foreach(s->header, key, e) {
        if (!strcmp(key, "__metadata__")) continue;
        if (!*a) *a = e;
        else if (!*b) *b = e;
    }
    cr_assert(*a && *b);
}

/* Patch the 8-byte header length of the file at path to v. */
static void patch_length(const char *path, uint64_t v) {
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(v >> (8 * i));
    fwrite(lb, 1, 8, f);
    fclose(f);
}

/* One damage applied to a model.safetensors, and what the refusal must say. */
typedef enum damage {
    D_PAST_EOF, D_HUGE_HEADER, D_NOT_JSON, D_OUT_OF_BOUNDS, D_OVERLAP, D_UNKNOWN_DTYPE,
    D_INT_DTYPE, D_SHAPE, D_TRUNCATED, N_DAMAGE
} damage;

static const char *const damage_name[N_DAMAGE] = {
    "past_eof", "huge_header", "not_json", "out_of_bounds", "overlap", "unknown_dtype",
    "int_dtype", "shape", "truncated"};
static const char *const damage_needle[N_DAMAGE] = {
    "runs past the end of the file", "over the 104857600-byte limit", "not a JSON object",
    "data_offsets must be", "overlap in the data", "unknown dtype 'F8_E4M3'",
    "expected F32 or F64", "the model expects", "data_offsets must be"};

static void apply(const char *path, damage d) {
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    if (d == D_PAST_EOF) return patch_length(path, (uint64_t)sb.st_size);
    if (d == D_HUGE_HEADER) return patch_length(path, (uint64_t)1 << 40);
    st_file s = st_read(path);
    const char *name;
    json_t *e = st_matrix(&s, &name), *a, *b;
    size_t cut = 0;
    if (d == D_NOT_JSON) {
        json_decref(s.header);
        s.header = json_string("}{ not json");
    } else if (d == D_OUT_OF_BOUNDS) {
        json_object_set_new(e, "data_offsets", json_pack("[I,I]", (json_int_t)s.data_len,
                                                         (json_int_t)s.data_len + 64));
    } else if (d == D_OVERLAP) {
        st_two(&s, &a, &b);
        json_int_t a0 = json_integer_value(json_array_get(json_object_get(a, "data_offsets"), 0));
        json_int_t bn = json_integer_value(json_array_get(json_object_get(b, "data_offsets"), 1)) -
                        json_integer_value(json_array_get(json_object_get(b, "data_offsets"), 0));
        json_object_set_new(b, "data_offsets", json_pack("[I,I]", a0, a0 + bn));
    } else if (d == D_UNKNOWN_DTYPE) {
        json_object_set_new(e, "dtype", json_string("F8_E4M3"));
    } else if (d == D_INT_DTYPE) {
        json_object_set_new(e, "dtype", json_string("I32"));
    } else if (d == D_SHAPE) {
        json_t *sh = json_object_get(e, "shape");
        json_object_set_new(e, "shape", json_pack("[O,O]", json_array_get(sh, 1),
                                                  json_array_get(sh, 0)));
    } else if (d == D_TRUNCATED) {
        cut = 100;
    }
    st_write(path, &s, cut);
}

/* The command refused the file: exit 2, the file and `needle` in its error, no crash. */
static void expect_refused(const char *dir, int code, const char *file, const char *needle) {
    char *err = rl_read(dir, "err.txt");
    cr_assert_eq(code, 2, "exit %d (want 2) for %s: %s", code, needle, err);
    cr_assert(strstr(err, file) != NULL, "the message does not name %s: %s", file, err);
    cr_assert(strstr(err, needle) != NULL, "the message lacks '%s': %s", needle, err);
    free(err);
}

Test(reliability_files, damaged_checkpoint_files_exit_2_naming_the_file, .timeout = 120) {
    char *dir = make_tmpdir_named("chm-rl-files-"), ckpt[4200], bad[4200], file[4300];
    make_checkpoint(dir, ckpt, sizeof ckpt);
    for (int d = 0; d < N_DAMAGE; d++) {
        snprintf(bad, sizeof bad, "%s/%s", dir, damage_name[d]);
        rl_copy_checkpoint(ckpt, bad);
        snprintf(file, sizeof file, "%s/" CK_MODEL_FILE, bad);
        apply(file, (damage)d);
        rl_restamp(bad, CK_MODEL_FILE);
        int code = rl_chimera(dir, NULL, "eval --checkpoint %s --backend cpu", bad);
        expect_refused(dir, code, file, damage_needle[d]);
    }
    /* the same through a resumed training run */
    snprintf(bad, sizeof bad, "%s/shape", dir);
    snprintf(file, sizeof file, "%s/" CK_MODEL_FILE, bad);
    int code = rl_chimera(dir, NULL, "train --out run2 --resume %s %s --quiet", bad, RL_TINY);
    expect_refused(dir, code, file, "the model expects");
    /* trainer_state.json: a tampered weight file, then broken JSON */
    snprintf(bad, sizeof bad, "%s/tampered", dir);
    rl_copy_checkpoint(ckpt, bad);
    snprintf(file, sizeof file, "%s/" CK_MODEL_FILE, bad);
    patch_length(file, 16);
    code = rl_chimera(dir, NULL, "eval --checkpoint %s --backend cpu", bad);
    expect_refused(dir, code, file, "checksum mismatch");
    snprintf(file, sizeof file, "%s/" CK_STATE_FILE, bad);
    cr_assert_eq(truncate(file, 100), 0);
    code = rl_chimera(dir, NULL, "sample --checkpoint %s --backend cpu --tokens 2", bad);
    expect_refused(dir, code, file, CK_STATE_FILE ":");
    remove_tmpdir(dir);
}

/* Add a "files" entry `name` to ckpt/trainer_state.json (any checksum). */
static void list_file(const char *ckpt, const char *name) {
    char state[4200];
    snprintf(state, sizeof state, "%s/" CK_STATE_FILE, ckpt);
    json_t *root = json_load_file(state, 0, NULL);
    cr_assert_not_null(root);
    json_object_set_new(json_object_get(root, "files"), name,
                        json_pack("{s:s, s:i}", "sha256", "00", "bytes", 0));
    cr_assert_eq(json_dump_file(root, state, JSON_INDENT(2)), 0);
    json_decref(root);
}

/* A state file whose "files" names something that is not a file of the checkpoint
 * (a parent directory, the directory itself, a FIFO that would block a reader). */
Test(reliability_files, hostile_state_file_lists_are_refused, .timeout = 60) {
    char *dir = make_tmpdir_named("chm-rl-state-"), ckpt[4200], bad[4200], fifo[4300];
    make_checkpoint(dir, ckpt, sizeof ckpt);
    const char *names[] = {"..", ".", "", "../run/step-00000002/model.safetensors", "fifo"};
    const char *needles[] = {"bad file name", "bad file name", "bad file name", "bad file name",
                             "not a regular file"};
    for (int i = 0; i < 5; i++) {
        snprintf(bad, sizeof bad, "%s/bad%d", dir, i);
        rl_copy_checkpoint(ckpt, bad);
        snprintf(fifo, sizeof fifo, "%s/fifo", bad);
        cr_assert_eq(mkfifo(fifo, 0600), 0);
        list_file(bad, names[i]);
        chm_checkpoint *c = NULL;
        chm_err err = {0};
        cr_assert_eq(chm_checkpoint_open(bad, &c, &err), CHM_ERR_PARSE, "'%s': %s", names[i],
                     err.msg);
        cr_assert_null(c);
        cr_assert(strstr(err.msg, bad) && strstr(err.msg, needles[i]), "'%s': %s", names[i],
                  err.msg);
    }
    remove_tmpdir(dir);
}

/* ---- token files ------------------------------------------------------------------------- */

/* Write a .npy (v1) with descr and shape text, then `payload` bytes. */
static void write_npy(const char *path, const char *magic, const char *descr, const char *shape,
                      size_t payload) {
    char d[128];
    int n = snprintf(d, sizeof d, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
                     shape);
    while ((10 + n + 1) % 64) d[n++] = ' ';
    d[n++] = '\n';
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite(magic, 1, 6, f);
    unsigned char v[4] = {1, 0, (unsigned char)n, (unsigned char)(n >> 8)};
    fwrite(v, 1, 4, f);
    fwrite(d, 1, (size_t)n, f);
    for (size_t i = 0; i < payload; i++) fputc((int)(i % 7), f);
    fclose(f);
}

/* A shard directory whose manifest lists `file` (the rest well-formed). */
static void write_manifest(const char *dir, const char *file) {
    char path[4200];
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:[{s:s, s:i, s:s}]}", "format",
                          "chimera-token-shards", "version", 1, "status", "complete", "dtype",
                          "uint16", "shards", "file", file, "tokens", 4000, "sha256",
                          "0000000000000000000000000000000000000000000000000000000000000000");
    cr_assert_eq(json_dump_file(m, path, JSON_INDENT(2)), 0);
    json_decref(m);
}

Test(reliability_files, bad_token_files_exit_2_naming_the_file, .timeout = 120) {
    char *dir = make_tmpdir_named("chm-rl-tokens-"), p[4200], m[4300];
    struct {
        const char *name, *magic, *descr, *shape;
        size_t payload;
        const char *needle;
    } npy[] = {
        {"magic.npy", "\x93NUMPZ", "<u2", "(4000,)", 8000, "wrong magic"},
        {"magic2.npy", "\x92NUMPY", "<u2", "(4000,)", 8000, "wrong magic"},
        {"float.npy", "\x93NUMPY", "<f4", "(2000,)", 8000, "'<f4' is not a token type"},
        {"short.npy", "\x93NUMPY", "<u2", "(4000,)", 7000, "truncated"},
    };
    for (size_t i = 0; i < sizeof npy / sizeof npy[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, npy[i].name);
        write_npy(p, npy[i].magic, npy[i].descr, npy[i].shape, npy[i].payload);
        int code = rl_chimera(dir, NULL, "train --out run%zu %s --set train.steps=1 "
                              "--set data.train=%s --quiet", i, RL_TINY, p);
        expect_refused(dir, code, p, npy[i].needle);
    }
    const char *outside[] = {"../short.npy", "/etc/hostname", "sub/../../short.npy"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/shards%d", dir, i);
        write_manifest(p, outside[i]);
        snprintf(m, sizeof m, "%s/manifest.json", p);
        int code = rl_chimera(dir, NULL, "train --out runm%d %s --set train.steps=1 "
                              "--set data.train=%s --quiet", i, RL_TINY, p);
        expect_refused(dir, code, m, "points outside the manifest's directory");
    }
    remove_tmpdir(dir);
}

/* ---- chimera tokenize over many files ------------------------------------------------------ */

Test(reliability_files, tokenize_names_bad_files_and_broken_lines_and_exits_1, .timeout = 60) {
    char *dir = make_tmpdir_named("chm-rl-tok-");
    int code = rl_chimera(dir, NULL,
                          "tokenize --quiet --tokenizer byte --out shards %sdocs.jsonl "
                          "%struncated.jsonl.gz %smixed.jsonl %snotgzip.jsonl.gz %sdocs.jsonl.zst",
                          FIX, FIX, FIX, FIX, FIX);
    char *out = rl_read(dir, "out.txt"), *err = rl_read(dir, "err.txt");
    cr_assert_eq(code, 1, "exit %d: %s", code, err);
    cr_assert(strstr(err, "truncated.jsonl.gz") && strstr(err, "truncated"), "%s", err);
    cr_assert(strstr(err, "notgzip.jsonl.gz") && strstr(err, "not one"), "%s", err);
    cr_assert(strstr(out, "mixed.jsonl:2: broken JSON") && strstr(out, "mixed.jsonl:4: no \"text\"") &&
                  strstr(out, "mixed.jsonl:7: invalid UTF-8"),
              "broken lines by file:line: %s", out);
    long docs = strtol(out, NULL, 10);
    cr_assert(docs >= 4 + 6, "the good documents of the good files and of mixed.jsonl: %s", out);
    free(out), free(err);
    char manifest[4200];
    snprintf(manifest, sizeof manifest, "%s/shards/manifest.json", dir);
    json_t *j = json_load_file(manifest, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_eq(json_array_size(json_object_get(j, "errors")), 2);
    json_decref(j);
    remove_tmpdir(dir);
}
