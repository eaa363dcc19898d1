/*
 * test_loader.c: the training-data loader: NumPy .npy (v1/v2/v3, '<u2'/'<u4'/'<i4')
 * and llm.c .bin files written here, with clear errors for truncation, wrong magic and
 * unsupported layouts; a full epoch visits every training window exactly once; the
 * validation windows never meet the training ones; ranks get disjoint, complete shares;
 * a restored cursor continues exactly; and the shards of chimera tokenize load back and
 * decode to the original documents joined by EOS (byte tokenizer, and GPT-NeoX-20B
 * from ../shared/data when present).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "chimera/data.h"

#define FIX CHIMERA_SOURCE_DIR "/tests/data/dolma/"
#define SHARED CHIMERA_SOURCE_DIR "/../shared/data/"

/* ---- helpers ------------------------------------------------------------------------------ */

static void make_tmpdir(char dir[64]) {
    strcpy(dir, "/tmp/chimera-loader-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void rm_tmpdir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    if (d) closedir(d);
    rmdir(dir);
}

static void write_bytes(const char *path, const void *a, size_t na, const void *b, size_t nb) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite(a, 1, na, f);
    if (nb) fwrite(b, 1, nb, f);
    fclose(f);
}

/* Tokens 0..n-1 (the position: windows are identifiable) as little-endian `size`-byte words. */
static unsigned char *positions(int64_t n, int size) {
    unsigned char *p = malloc((size_t)(n * size) + 1);
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < size; b++) p[i * size + b] = (unsigned char)((uint64_t)i >> (8 * b));
    return p;
}

/* A .npy of format `version` with the given descr and shape text, padded to 64 bytes. */
static void write_npy(const char *path, int version, const char *descr, const char *shape,
                      const void *data, size_t nbytes) {
    char dict[256], head[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
                     shape);
    size_t pre = version == 1 ? 10 : 12, hlen = (size_t)n + 1;
    while ((pre + hlen) % 64) hlen++;
    memcpy(head, "\x93NUMPY", 6);
    head[6] = (char)version;
    head[7] = 0;
    head[8] = (char)(hlen & 0xff);
    head[9] = (char)(hlen >> 8);
    if (version > 1) head[10] = head[11] = 0;
    memset(head + pre, ' ', hlen);
    memcpy(head + pre, dict, (size_t)n);
    head[pre + hlen - 1] = '\n';
    write_bytes(path, head, pre + hlen, data, nbytes);
}

static void write_llmc(const char *path, int32_t magic, int32_t version, int32_t count,
                       const void *data, size_t nbytes) {
    int32_t h[256] = {magic, version, count};
    write_bytes(path, h, sizeof h, data, nbytes);
}

static chm_loader_config config(int64_t T, int64_t B) {
    chm_loader_config c = {.seq_len = T, .batch_size = B, .seed = 42, .world_size = 1};
    return c;
}

static chm_status open1(const char *path, const chm_loader_config *c, chm_loader **ld, chm_err *err) {
    const char *paths[] = {path};
    return chm_loader_open(paths, 1, c, ld, err);
}

/* ---- file formats -------------------------------------------------------------------------- */

Test(loader, npy_versions_and_dtypes) {
    char dir[64], path[128];
    make_tmpdir(dir);
    static const char *descr[] = {"<u2", "<u4", "<i4"};
    for (int v = 1; v <= 3; v++)
        for (int d = 0; d < 3; d++) {
            int size = d ? 4 : 2;
            unsigned char *data = positions(100, size);
            snprintf(path, sizeof path, "%s/v%d_%d.npy", dir, v, d);
            write_npy(path, v, descr[d], "(100,)", data, (size_t)(100 * size));
            chm_loader *ld;
            chm_err err = {0};
            chm_loader_config c = config(9, 1);
            cr_assert_eq(open1(path, &c, &ld, &err), CHM_OK, "v%d %s: %s", v, descr[d], err.msg);
            cr_assert_eq(chm_loader_get_info(ld).tokens, 100);
            int32_t got[100];
            cr_assert_eq(chm_loader_read(ld, 0, 100, got, &err), CHM_OK, "%s", err.msg);
            for (int i = 0; i < 100; i++) cr_assert_eq(got[i], i);
            chm_loader_close(ld);
            free(data);
        }
    rm_tmpdir(dir);
}

/* Opening `path` fails with CHM_ERR_PARSE and a message naming it and containing `what`. */
static void expect_refused(const char *path, const char *what) {
    chm_loader *ld;
    chm_err err = {0};
    chm_loader_config c = config(3, 1);
    cr_assert_eq(open1(path, &c, &ld, &err), CHM_ERR_PARSE, "%s should be refused", path);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, what), "want '%s' in: %s", what, err.msg);
}

Test(loader, npy_problems_are_named) {
    char dir[64], p[128];
    make_tmpdir(dir);
    unsigned char *data = positions(50, 4);
    snprintf(p, sizeof p, "%s/f4.npy", dir);
    write_npy(p, 1, "<f4", "(50,)", data, 200);
    expect_refused(p, "'<f4' is not a token type");
    snprintf(p, sizeof p, "%s/be.npy", dir);
    write_npy(p, 1, ">u2", "(50,)", data, 100);
    expect_refused(p, "'>u2'");
    snprintf(p, sizeof p, "%s/2d.npy", dir);
    write_npy(p, 1, "<u2", "(5, 10)", data, 100);
    expect_refused(p, "2 dimensions");
    snprintf(p, sizeof p, "%s/short.npy", dir);
    write_npy(p, 1, "<u2", "(50,)", data, 99);
    expect_refused(p, "truncated");
    snprintf(p, sizeof p, "%s/long.npy", dir);
    write_npy(p, 2, "<u4", "(50,)", data, 200 - 4);
    expect_refused(p, "truncated");
    snprintf(p, sizeof p, "%s/head.npy", dir);
    write_bytes(p, "\x93NUMPY\x01\x00\x76\x00{'descr'", 17, NULL, 0);
    expect_refused(p, "truncated .npy header");
    snprintf(p, sizeof p, "%s/v9.npy", dir);
    write_bytes(p, "\x93NUMPY\x09\x00\x10\x00{}", 12, NULL, 0);
    expect_refused(p, "version 9");
    snprintf(p, sizeof p, "%s/odd.npy", dir); /* headerless: a dolma memmap */
    write_bytes(p, data, 51, NULL, 0);
    expect_refused(p, "not a whole number");
    free(data);
    rm_tmpdir(dir);
}

Test(loader, llmc_bin_files) {
    char dir[64], p[128];
    make_tmpdir(dir);
    unsigned char *d2 = positions(64, 2), *d4 = positions(64, 4);
    chm_err err = {0};
    chm_loader *ld;
    chm_loader_config c = config(7, 1);
    for (int v = 1; v <= 2; v++) {
        snprintf(p, sizeof p, "%s/v%d.bin", dir, v);
        write_llmc(p, 20240520, v, 64, v == 1 ? d2 : d4, v == 1 ? 128 : 256);
        cr_assert_eq(open1(p, &c, &ld, &err), CHM_OK, "%s", err.msg);
        int32_t got[64];
        cr_assert_eq(chm_loader_read(ld, 0, 64, got, &err), CHM_OK);
        for (int i = 0; i < 64; i++) cr_assert_eq(got[i], i);
        cr_assert_eq(chm_loader_get_info(ld).windows, 8);
        chm_loader_close(ld);
    }
    snprintf(p, sizeof p, "%s/magic.bin", dir);
    write_llmc(p, 20240521, 1, 64, d2, 128);
    expect_refused(p, "wrong magic 20240521");
    snprintf(p, sizeof p, "%s/trunc.bin", dir);
    write_llmc(p, 20240520, 1, 64, d2, 100);
    expect_refused(p, "truncated");
    snprintf(p, sizeof p, "%s/ver.bin", dir);
    write_llmc(p, 20240520, 3, 64, d2, 128);
    expect_refused(p, "version 3");
    snprintf(p, sizeof p, "%s/tiny.bin", dir);
    write_bytes(p, d2, 10, NULL, 0);
    expect_refused(p, "shorter than the 1024-byte");
    free(d2);
    free(d4);
    rm_tmpdir(dir);
}

Test(loader, tokens_outside_the_vocabulary_are_errors) {
    char dir[64], p[128];
    make_tmpdir(dir);
    int32_t toks[40];
    for (int i = 0; i < 40; i++) toks[i] = i == 33 ? -5 : i;
    snprintf(p, sizeof p, "%s/neg.npy", dir);
    write_npy(p, 1, "<i4", "(40,)", toks, sizeof toks);
    chm_loader *ld;
    chm_err err = {0};
    chm_loader_config c = config(39, 1);
    c.vocab_size = 35;
    cr_assert_eq(open1(p, &c, &ld, &err), CHM_OK, "%s", err.msg);
    int32_t row[40];
    cr_assert_eq(chm_loader_next(ld, row, &err), CHM_ERR_PARSE);
    cr_assert(strstr(err.msg, "token 33 is -5") && strstr(err.msg, p), "%s", err.msg);
    cr_assert_eq(chm_loader_read(ld, 34, 2, row, &err), CHM_ERR_PARSE, "35 >= vocab 35");
    cr_assert_eq(chm_loader_read(ld, 38, 5, row, &err), CHM_ERR_INVALID_ARG, "past the end");
    chm_loader_close(ld);
    rm_tmpdir(dir);
}

/* ---- order, split, ranks, resume -------------------------------------------------------------- */

enum { T = 7, W = 1000, EXTRA = 5 };

/* A dir with the stream 0..N-1 split over two uint32 .npy files (windows span the join). */
static void make_stream(char dir[64], const char *paths[2], char bufs[2][128]) {
    make_tmpdir(dir);
    int64_t n = W * (T + 1) + EXTRA, half = 3001;
    unsigned char *d = positions(n, 4);
    for (int i = 0; i < 2; i++) {
        snprintf(bufs[i], 128, "%s/%c.npy", dir, 'a' + i);
        char shape[32];
        snprintf(shape, sizeof shape, "(%lld,)", (long long)(i ? n - half : half));
        write_npy(bufs[i], 1, "<u4", shape, d + (i ? half * 4 : 0), (size_t)((i ? n - half : half) * 4));
        paths[i] = bufs[i];
    }
    free(d);
}

/* The window a batch row holds; also checks the row is T+1 consecutive tokens. */
static int64_t row_window(const int32_t *row) {
    cr_assert_eq(row[0] % (T + 1), 0, "windows start at multiples of T+1");
    for (int k = 1; k <= T; k++) cr_assert_eq(row[k], row[0] + k);
    return row[0] / (T + 1);
}

/* Count of each window seen in n_batches of loader `ld` (B rows each). */
static void draw(chm_loader *ld, int64_t B, int n_batches, int *seen) {
    int32_t *batch = malloc((size_t)(B * (T + 1)) * sizeof *batch);
    chm_err err = {0};
    for (int k = 0; k < n_batches; k++) {
        cr_assert_eq(chm_loader_next(ld, batch, &err), CHM_OK, "%s", err.msg);
        for (int64_t b = 0; b < B; b++) seen[row_window(batch + b * (T + 1))]++;
    }
    free(batch);
}

/* Validation windows of one rank. */
static void draw_val(chm_loader *ld, int64_t B, int *seen) {
    int32_t *batch = malloc((size_t)(B * (T + 1)) * sizeof *batch);
    chm_err err = {0};
    for (int64_t k = 0; k < chm_loader_val_batches(ld); k++) {
        int64_t rows;
        cr_assert_eq(chm_loader_val_batch(ld, k, batch, &rows, &err), CHM_OK, "%s", err.msg);
        for (int64_t b = 0; b < rows; b++) seen[row_window(batch + b * (T + 1))]++;
    }
    free(batch);
}

Test(loader, an_epoch_visits_every_training_window_once_and_never_a_validation_one) {
    char dir[64], bufs[2][128];
    const char *paths[2];
    make_stream(dir, paths, bufs);
    chm_loader_config c = config(T, 7); /* 900 training windows = 128 * 7 + 4: epochs roll mid-batch */
    c.val_fraction = 0.1;
    chm_loader *ld;
    chm_err err = {0};
    cr_assert_eq(chm_loader_open(paths, 2, &c, &ld, &err), CHM_OK, "%s", err.msg);
    chm_loader_info info = chm_loader_get_info(ld);
    cr_assert_eq(info.tokens, W * (T + 1) + EXTRA);
    cr_assert_eq(info.windows, W);
    cr_assert_eq(info.val_windows, 100);
    cr_assert_eq(info.train_windows, 900);
    int train[W] = {0}, val[W] = {0};
    draw(ld, 7, 128, train); /* 896 windows */
    int32_t batch[7 * (T + 1)];
    cr_assert_eq(chm_loader_next(ld, batch, &err), CHM_OK);
    for (int b = 0; b < 4; b++) train[row_window(batch + b * (T + 1))]++; /* the rest of epoch 0 */
    chm_loader_cursor cur = chm_loader_get_cursor(ld);
    cr_assert_eq(cur.epoch, 1);
    cr_assert_eq(cur.position, 3);
    draw_val(ld, 7, val);
    int n_train = 0, n_val = 0, in_order = 0;
    for (int w = 0; w < W; w++) {
        cr_assert(train[w] + val[w] == 1, "window %d: train %d, val %d", w, train[w], val[w]);
        n_train += train[w];
        n_val += val[w];
    }
    cr_assert_eq(n_train, 900);
    cr_assert_eq(n_val, 100);
    /* The order is shuffled: few consecutive draws are neighbours. */
    chm_loader_close(ld);
    c.seed = 43;
    cr_assert_eq(chm_loader_open(paths, 2, &c, &ld, &err), CHM_OK);
    int val2[W] = {0};
    draw_val(ld, 7, val2);
    cr_assert_eq(memcmp(val, val2, sizeof val), 0, "the validation set does not depend on the seed");
    int32_t b1[7 * (T + 1)];
    cr_assert_eq(chm_loader_next(ld, b1, &err), CHM_OK);
    for (int b = 1; b < 7; b++) in_order += b1[b * (T + 1)] == b1[(b - 1) * (T + 1)] + T + 1;
    cr_assert(in_order < 3, "%d of 6 neighbours in stream order", in_order);
    chm_loader_close(ld);
    rm_tmpdir(dir);
}

Test(loader, ranks_see_disjoint_and_complete_shares) {
    char dir[64], bufs[2][128];
    const char *paths[2];
    make_stream(dir, paths, bufs);
    int train[W] = {0}, val[W] = {0};
    chm_loader *ld[3];
    chm_err err = {0};
    for (int r = 0; r < 3; r++) {
        chm_loader_config c = config(T, 4);
        c.val_windows = 50;
        c.rank = r;
        c.world_size = 3;
        cr_assert_eq(chm_loader_open(paths, 2, &c, &ld[r], &err), CHM_OK, "%s", err.msg);
    }
    /* 950 training windows = 79 steps of 12, plus 2 windows of step 80. */
    for (int step = 0; step < 79; step++)
        for (int r = 0; r < 3; r++) draw(ld[r], 4, 1, train);
    for (int r = 0; r < 3; r++) {
        draw_val(ld[r], 4, val);
        chm_loader_cursor c = chm_loader_get_cursor(ld[r]);
        cr_assert(c.epoch == 0 && c.position == 948, "every rank holds the same cursor");
    }
    int32_t batch[4 * (T + 1)];
    cr_assert_eq(chm_loader_next(ld[0], batch, &err), CHM_OK);
    for (int b = 0; b < 2; b++) train[row_window(batch + b * (T + 1))]++;
    for (int w = 0; w < W; w++) cr_assert(train[w] + val[w] == 1, "window %d: %d + %d", w, train[w], val[w]);
    for (int r = 0; r < 3; r++) chm_loader_close(ld[r]);
    rm_tmpdir(dir);
}

Test(loader, a_restored_cursor_continues_exactly) {
    char dir[64], bufs[2][128];
    const char *paths[2];
    make_stream(dir, paths, bufs);
    chm_loader_config c = config(T, 6);
    c.val_fraction = 0.05;
    chm_loader *a, *b;
    chm_err err = {0};
    cr_assert_eq(chm_loader_open(paths, 2, &c, &a, &err), CHM_OK, "%s", err.msg);
    int32_t ra[6 * (T + 1)], rb[6 * (T + 1)], x[6 * T], y[6 * T];
    for (int k = 0; k < 170; k++) cr_assert_eq(chm_loader_next(a, ra, &err), CHM_OK); /* into epoch 1 */
    chm_loader_cursor saved = chm_loader_get_cursor(a);
    cr_assert_eq(saved.epoch, 1);
    c.seed = 999; /* the cursor's seed wins */
    cr_assert_eq(chm_loader_open(paths, 2, &c, &b, &err), CHM_OK);
    cr_assert_eq(chm_loader_set_cursor(b, &saved, &err), CHM_OK, "%s", err.msg);
    for (int k = 0; k < 200; k++) {
        cr_assert_eq(chm_loader_next(a, ra, &err), CHM_OK);
        if (k % 2) {
            cr_assert_eq(chm_loader_next(b, rb, &err), CHM_OK);
            cr_assert_eq(memcmp(ra, rb, sizeof ra), 0, "batch %d after the restore differs", k);
        } else {
            cr_assert_eq(chm_loader_next_xy(b, x, y, &err), CHM_OK);
            for (int r = 0; r < 6; r++)
                for (int t = 0; t < T; t++) {
                    cr_assert_eq(x[r * T + t], ra[r * (T + 1) + t]);
                    cr_assert_eq(y[r * T + t], ra[r * (T + 1) + t + 1]);
                }
        }
    }
    chm_loader_close(b);
    c.seq_len = T + 1;
    cr_assert_eq(chm_loader_open(paths, 2, &c, &b, &err), CHM_OK);
    cr_assert_eq(chm_loader_set_cursor(b, &saved, &err), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "same data") != NULL, "%s", err.msg);
    chm_loader_close(a);
    chm_loader_close(b);
    rm_tmpdir(dir);
}

Test(loader, bad_configs_are_refused) {
    char dir[64], bufs[2][128];
    const char *paths[2];
    make_stream(dir, paths, bufs);
    chm_loader *ld;
    chm_err err = {0};
    chm_loader_config c = config(T, 1);
    c.val_windows = W;
    cr_assert_eq(chm_loader_open(paths, 2, &c, &ld, &err), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "none to train on") != NULL, "%s", err.msg);
    c = config(W * (T + 1) + EXTRA, 1);
    cr_assert_eq(chm_loader_open(paths, 2, &c, &ld, &err), CHM_ERR_INVALID_ARG, "no whole window");
    c = config(T, 1);
    c.rank = 2;
    c.world_size = 2;
    cr_assert_eq(chm_loader_open(paths, 2, &c, &ld, &err), CHM_ERR_INVALID_ARG);
    c = config(T, 1);
    const char *dir_path[] = {dir};
    cr_assert_eq(chm_loader_open(dir_path, 1, &c, &ld, &err), CHM_ERR_IO, "a directory without manifest");
    cr_assert(strstr(err.msg, "not a regular file") != NULL, "%s", err.msg);
    const char *glob_path[] = {"/nonexistent-dir/*.npy"};
    cr_assert_eq(chm_loader_open(glob_path, 1, &c, &ld, &err), CHM_ERR_IO);
    rm_tmpdir(dir);
}

/* ---- shards of chimera tokenize --------------------------------------------------------------- */

/* Read the whole stream, split at EOS, decode each document, compare with the inputs' texts. */
static void check_round_trip(const char *dir, const chm_tokenizer *tok, const char *const *in, int n_in,
                             int nfc) {
    chm_loader_config c = config(1, 1);
    c.verify = 1;
    c.vocab_size = chm_tokenizer_vocab_size(tok);
    chm_loader *ld;
    chm_err err = {0};
    cr_assert_eq(open1(dir, &c, &ld, &err), CHM_OK, "%s", err.msg);
    int64_t n = chm_loader_get_info(ld).tokens, pos = 0;
    int32_t *toks = malloc((size_t)n * sizeof *toks), eos = chm_tokenizer_eos(tok);
    cr_assert_eq(chm_loader_read(ld, 0, n, toks, &err), CHM_OK, "%s", err.msg);
    int docs = 0;
    for (int f = 0; f < n_in; f++) {
        chm_dolma_reader *r;
        cr_assert_eq(chm_dolma_open(in[f], &r, &err), CHM_OK);
        chm_dolma_doc d;
        int got;
        while (!chm_dolma_next(r, &d, &got, &err) && got) {
            int64_t end = pos;
            while (end < n && toks[end] != eos) end++;
            cr_assert(end < n, "document %d has no EOS", docs);
            char *text;
            size_t len;
            cr_assert_eq(chm_tokenizer_decode(tok, toks + pos, (size_t)(end - pos), &text, &len, &err),
                         CHM_OK);
            char *want = nfc ? (char *)utf8proc_NFC((const utf8proc_uint8_t *)d.text) : strdup(d.text);
            cr_assert_eq(len, strlen(want), "document %d of %s: %zu bytes, want %zu", docs, in[f], len,
                         strlen(want));
            cr_assert_eq(memcmp(text, want, len), 0, "document %d of %s differs", docs, in[f]);
            free(text);
            free(want);
            pos = end + 1;
            docs++;
        }
        chm_dolma_close(r);
    }
    cr_assert_eq(pos, n, "nothing after the last EOS");
    free(toks);
    chm_loader_close(ld);
}

Test(loader, tokenize_shards_load_back_byte_tokenizer) {
    char dir[64], p[128];
    make_tmpdir(dir);
    const char *in[] = {FIX "docs.jsonl", FIX "docs.jsonl.zst"};
    chm_tokenizer *tok;
    chm_err err = {0};
    cr_assert_eq(chm_tokenizer_byte(&tok, &err), CHM_OK);
    chm_tokenize_opts o = {.inputs = in, .n_inputs = 2, .tok = tok, .tokenizer_name = "byte",
                           .out_dir = dir, .threads = 3, .shard_tokens = 100};
    chm_tokenize_result res;
    cr_assert_eq(chm_tokenize_run(&o, &res, &err), CHM_OK, "%s", err.msg);
    cr_assert(res.shards >= 3);
    check_round_trip(dir, tok, in, 2, 0);
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    check_round_trip(p, tok, in, 2, 0); /* the manifest file itself works too */
    /* A changed shard fails verification, naming it. */
    snprintf(p, sizeof p, "%s/part-00001.npy", dir);
    FILE *f = fopen(p, "r+b");
    fputc('Z', f);
    fclose(f);
    chm_loader_config c = config(1, 1);
    c.verify = 1;
    chm_loader *ld;
    const char *paths[] = {dir};
    cr_assert_eq(chm_loader_open(paths, 1, &c, &ld, &err), CHM_ERR_PARSE);
    cr_assert(strstr(err.msg, "part-00001.npy") && strstr(err.msg, "sha256"), "%s", err.msg);
    /* A shorter shard fails even without verification. */
    f = fopen(p, "ab");
    fputc('Z', f);
    fclose(f);
    c.verify = 0;
    cr_assert_eq(chm_loader_open(paths, 1, &c, &ld, &err), CHM_ERR_PARSE);
    cr_assert(strstr(err.msg, "part-00001.npy") != NULL, "%s", err.msg);
    chm_tokenizer_free(tok);
    rm_tmpdir(dir);
}

Test(loader, tokenize_shards_load_back_gpt_neox) {
    const char *tj = SHARED "tokenizers/gpt-neox-20b.json";
    if (access(tj, R_OK) != 0 || access(SHARED "dolma/cc_en_head-0091.jsonl.gz", R_OK) != 0)
        cr_skip_test("../shared/data is not here");
    chm_tokenizer *tok;
    chm_err err = {0};
    chm_status rc = chm_tokenizer_load(tj, &tok, &err);
    if (rc == CHM_ERR_UNSUPPORTED) cr_skip_test("tokenizer.json loading not available yet: %s", err.msg);
    cr_assert_eq(rc, CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_tokenizer_eos(tok), 50279);
    char dir[64];
    make_tmpdir(dir);
    const char *in[] = {SHARED "dolma/cc_en_head-0091.jsonl.gz", SHARED "dolma/cc_en_head-0174.jsonl.gz"};
    chm_tokenize_opts o = {.inputs = in, .n_inputs = 2, .tok = tok, .tokenizer_name = tj,
                           .out_dir = dir, .threads = 2, .shard_tokens = 20000};
    chm_tokenize_result res;
    cr_assert_eq(chm_tokenize_run(&o, &res, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(res.documents, 20);
    cr_assert(res.shards >= 2);
    check_round_trip(dir, tok, in, 2, 1);
    chm_tokenizer_free(tok);
    rm_tmpdir(dir);
}
