/*
 * test_shards.c: `chimera tokenize`: SHA-256 against the FIPS 180 examples; shards,
 * sidecars and manifest of a byte-tokenizer run checked byte by byte; the same shards
 * for any thread count; re-runs keeping complete shards; a run killed mid-way leaves
 * no shard that looks complete and resumes to the same result; a corrupt input among
 * good ones; shards of another run refused without --overwrite; CLI exit codes.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "chimera/data.h"
#include "data/sha256.h"

#define FIX CHIMERA_SOURCE_DIR "/tests/data/dolma/"

/* ---- helpers --------------------------------------------------------------------------- */

static void make_tmpdir(char dir[64]) {
    strcpy(dir, "/tmp/chimera-shards-XXXXXX");
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

/* Whole file (gunzipped if it is gzip) into a malloc'd buffer. */
static unsigned char *slurp(const char *path, size_t *len) {
    gzFile g = gzopen(path, "rb"); /* reads plain files as they are */
    cr_assert_not_null(g, "cannot open %s", path);
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    int k;
    while ((k = gzread(g, buf + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)k;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    gzclose(g);
    *len = n;
    return buf;
}

static json_t *load_manifest(const char *dir) {
    char p[256];
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    json_error_t je;
    json_t *m = json_load_file(p, 0, &je);
    cr_assert_not_null(m, "%s: %s", p, je.text);
    return m;
}

static chm_tokenize_opts byte_opts(chm_tokenizer *tok, const char *dir, const char *const *in, int n) {
    chm_tokenize_opts o = {.inputs = in, .n_inputs = n, .tok = tok, .tokenizer_name = "byte",
                           .out_dir = dir, .threads = 2, .shard_tokens = 64};
    return o;
}

static chm_tokenizer *byte_tok(void) {
    chm_tokenizer *t;
    chm_err err = {0};
    cr_assert_eq(chm_tokenizer_byte(&t, &err), CHM_OK);
    return t;
}

/* The "sha256" of every shard in a manifest, joined. */
static char *shard_shas(const char *dir) {
    json_t *m = load_manifest(dir), *s = json_object_get(m, "shards"), *v;
    size_t i;
    char *out = calloc(json_array_size(s) * 65 + 1, 1);
    json_array_foreach(s, i, v) strcat(out, json_string_value(json_object_get(v, "sha256")));
    json_decref(m);
    return out;
}

/* ---- sha256 ----------------------------------------------------------------------------- */

static void sha_of(const void *p, size_t n, char hex[65]) {
    chm_sha256 s;
    chm_sha256_init(&s);
    chm_sha256_update(&s, p, n);
    chm_sha256_hex(&s, hex);
}

Test(shards, sha256_known_vectors) {
    char hex[65];
    sha_of("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha_of("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha_of(m2, strlen(m2), hex);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* One million 'a', fed in uneven pieces to exercise the partial-block path. */
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    chm_sha256 s;
    chm_sha256_init(&s);
    for (size_t off = 0, step = 1; off < 1000000; off += step, step = step * 3 % 997 + 1)
        chm_sha256_update(&s, a + off, off + step > 1000000 ? 1000000 - off : step);
    chm_sha256_hex(&s, hex);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* The same through a file. */
    char dir[64], path[128];
    make_tmpdir(dir);
    snprintf(path, sizeof path, "%s/a", dir);
    FILE *f = fopen(path, "wb");
    fwrite(a, 1, 1000000, f);
    fclose(f);
    int64_t size;
    cr_assert_eq(chm_sha256_file(path, hex, &size, NULL), CHM_OK);
    cr_assert_eq(size, 1000000);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
    rm_tmpdir(dir);
}

/* ---- a run checked byte by byte ---------------------------------------------------------- */

/* Expected stream: every good document of the inputs, then EOS (byte tokenizer ids). */
typedef struct expect {
    int n;
    char *ids[16];
    char *texts[16];
    size_t lens[16];
    const char *paths[16];
} expect;

static void expect_read(expect *e, const char *path) {
    chm_dolma_reader *r;
    chm_err err = {0};
    cr_assert_eq(chm_dolma_open(path, &r, &err), CHM_OK);
    chm_dolma_doc d;
    int got;
    while (!chm_dolma_next(r, &d, &got, &err) && got) {
        e->ids[e->n] = strdup(d.id);
        e->texts[e->n] = malloc(d.text_len + 1);
        memcpy(e->texts[e->n], d.text, d.text_len);
        e->lens[e->n] = d.text_len;
        e->paths[e->n++] = path;
    }
    chm_dolma_close(r);
}

/* A CSV field as the writer quotes it. */
static void csv_quote(const char *s, char *out) {
    if (!strpbrk(s, ",\"\r\n")) {
        strcpy(out, s);
        return;
    }
    *out++ = '"';
    for (; *s; s++) {
        if (*s == '"') *out++ = '"';
        *out++ = *s;
    }
    *out++ = '"';
    *out = '\0';
}

/* Check each shard's .npy against the expected documents and its sidecar; returns docs seen. */
static int check_shard(const char *dir, json_t *sh, const expect *e, int doc) {
    char p[256];
    size_t n, cn;
    snprintf(p, sizeof p, "%s/%s", dir, json_string_value(json_object_get(sh, "file")));
    unsigned char *npy = slurp(p, &n);
    char hex[65];
    sha_of(npy, n, hex);
    cr_assert_str_eq(hex, json_string_value(json_object_get(sh, "sha256")));
    cr_assert_eq((json_int_t)n, 2 * json_integer_value(json_object_get(sh, "tokens")));
    snprintf(p, sizeof p, "%s/%s", dir, json_string_value(json_object_get(sh, "sidecar")));
    char *csv = (char *)slurp(p, &cn);
    csv = realloc(csv, cn + 1);
    csv[cn] = '\0';
    size_t pos = 0, off = 0;
    int ndocs = (int)json_integer_value(json_object_get(sh, "documents"));
    for (int k = 0; k < ndocs; k++, doc++) {
        for (size_t i = 0; i <= e->lens[doc]; i++) { /* text bytes, then EOS = 256 */
            unsigned v = npy[2 * (pos + i)] | npy[2 * (pos + i) + 1] << 8;
            unsigned want = i < e->lens[doc] ? (unsigned char)e->texts[doc][i] : 256;
            cr_assert_eq(v, want, "doc %d token %zu", doc, i);
        }
        char line[600], qpath[300], qid[100];
        csv_quote(e->paths[doc], qpath);
        csv_quote(e->ids[doc], qid);
        snprintf(line, sizeof line, "%zu,%zu,%s,%s\n", pos, pos + e->lens[doc] + 1, qpath, qid);
        cr_assert_eq(strncmp(csv + off, line, strlen(line)), 0, "sidecar line %d: want %s got %.80s", k,
                     line, csv + off);
        off += strlen(line);
        pos += e->lens[doc] + 1;
    }
    cr_assert_eq(pos * 2, n, "the shard holds exactly its documents");
    cr_assert_eq(off, cn, "one sidecar line per document");
    free(npy);
    free(csv);
    return doc;
}

Test(shards, byte_run_writes_shards_sidecars_and_manifest) {
    char dir[64];
    make_tmpdir(dir);
    const char *in[] = {FIX "docs.jsonl", FIX "mixed.jsonl"};
    expect e = {0};
    expect_read(&e, in[0]);
    expect_read(&e, in[1]);
    chm_tokenizer *tok = byte_tok();
    chm_tokenize_opts o = byte_opts(tok, dir, in, 2);
    chm_tokenize_result r;
    chm_err err = {0};
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    int64_t tokens = 0;
    for (int i = 0; i < e.n; i++) tokens += (int64_t)e.lens[i] + 1;
    cr_assert_eq(r.documents, 7);
    cr_assert_eq(r.tokens, tokens);
    cr_assert(r.shards >= 3, "64-token shards: %d", r.shards);
    cr_assert_eq(r.stats.bad_json, 3);
    json_t *m = load_manifest(dir);
    cr_assert_str_eq(json_string_value(json_object_get(m, "status")), "complete");
    cr_assert_eq(json_integer_value(json_object_get(m, "version")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(m, "dtype")), "uint16");
    cr_assert_eq(json_integer_value(json_object_get(m, "vocab_size")), 260);
    cr_assert_eq(json_integer_value(json_object_get(m, "eos")), 256);
    cr_assert_eq(json_integer_value(json_object_get(m, "documents")), 7);
    cr_assert_eq(json_integer_value(json_object_get(m, "tokens")), tokens);
    json_t *sk = json_object_get(m, "skipped");
    cr_assert_eq(json_integer_value(json_object_get(sk, "lines")), 6);
    cr_assert_eq(json_array_size(json_object_get(sk, "samples")), 6);
    json_t *shards = json_object_get(m, "shards"), *sh;
    cr_assert_eq((int)json_array_size(shards), r.shards);
    size_t i;
    int doc = 0;
    json_array_foreach(shards, i, sh) {
        char name[40];
        snprintf(name, sizeof name, "part-%05zu.npy", i);
        cr_assert_str_eq(json_string_value(json_object_get(sh, "file")), name);
        doc = check_shard(dir, sh, &e, doc);
    }
    cr_assert_eq(doc, 7);
    json_decref(m);
    DIR *d = opendir(dir);
    struct dirent *de;
    while ((de = readdir(d))) cr_assert(!strstr(de->d_name, ".tmp"), "leftover %s", de->d_name);
    closedir(d);
    for (int k = 0; k < e.n; k++) {
        free(e.ids[k]);
        free(e.texts[k]);
    }
    chm_tokenizer_free(tok);
    rm_tmpdir(dir);
}

/* ---- determinism and resumption --------------------------------------------------------- */

static chm_tokenize_opts corpus_opts(chm_tokenizer *tok, const char *dir, int threads) {
    chm_tokenize_opts o = {.corpus = 1, .corpus_seed = 4, .corpus_docs = 300, .tok = tok,
                           .tokenizer_name = "byte", .out_dir = dir, .threads = threads,
                           .shard_tokens = 8192};
    return o;
}

Test(shards, thread_count_does_not_change_the_shards) {
    char a[64], b[64];
    make_tmpdir(a);
    make_tmpdir(b);
    chm_tokenizer *tok = byte_tok();
    chm_tokenize_result r1, r2;
    chm_err err = {0};
    chm_tokenize_opts o = corpus_opts(tok, a, 1);
    cr_assert_eq(chm_tokenize_run(&o, &r1, &err), CHM_OK, "%s", err.msg);
    o = corpus_opts(tok, b, 4);
    cr_assert_eq(chm_tokenize_run(&o, &r2, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(r1.tokens, r2.tokens);
    cr_assert(r1.shards > 4);
    char *s1 = shard_shas(a), *s2 = shard_shas(b);
    cr_assert_str_eq(s1, s2);
    cr_assert(r1.floor.documents == 300 && r1.floor.bits_per_byte > 0);
    json_t *m = load_manifest(a);
    cr_assert_not_null(json_object_get(m, "corpus_floor"));
    json_decref(m);
    free(s1);
    free(s2);
    chm_tokenizer_free(tok);
    rm_tmpdir(a);
    rm_tmpdir(b);
}

Test(shards, rerun_keeps_complete_shards_and_redoes_damaged_ones) {
    char dir[64], p[256];
    make_tmpdir(dir);
    chm_tokenizer *tok = byte_tok();
    chm_tokenize_result r;
    chm_err err = {0};
    chm_tokenize_opts o = corpus_opts(tok, dir, 2);
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    int n = r.shards;
    char *ref = shard_shas(dir);
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(r.shards_reused, n, "an up-to-date directory is kept whole");
    /* Damage shard 3: it and everything after are rewritten, 0..2 kept. */
    snprintf(p, sizeof p, "%s/part-00003.npy", dir);
    FILE *f = fopen(p, "r+b");
    fputc('X', f);
    fclose(f);
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(r.shards_reused, 3);
    cr_assert_eq(r.shards, n);
    char *now = shard_shas(dir);
    cr_assert_str_eq(now, ref);
    free(now);
    free(ref);
    chm_tokenizer_free(tok);
    rm_tmpdir(dir);
}

/* Every part-*.npy in dir has the sha256 of the same shard in the reference list. */
static void check_no_false_shard(const char *dir, const char *ref) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        int idx;
        if (sscanf(e->d_name, "part-%5d.npy", &idx) != 1 || !strstr(e->d_name, ".npy")) continue;
        char p[256], hex[65];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        cr_assert_eq(chm_sha256_file(p, hex, NULL, NULL), CHM_OK);
        cr_assert((size_t)idx * 64 < strlen(ref) && strncmp(ref + 64 * idx, hex, 64) == 0,
                  "%s looks complete but is not", e->d_name);
    }
    closedir(d);
}

Test(shards, a_killed_run_leaves_no_false_shard_and_resumes_to_the_same_result) {
    char ref_dir[64], dir[64];
    make_tmpdir(ref_dir);
    make_tmpdir(dir);
    chm_tokenizer *tok = byte_tok();
    chm_tokenize_result r;
    chm_err err = {0};
    chm_tokenize_opts o = corpus_opts(tok, ref_dir, 1);
    o.corpus_docs = 600;
    o.shard_tokens = 4096; /* ~37 shards, each a few fsyncs: the kills land mid-run */
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    char *ref = shard_shas(ref_dir);
    o.out_dir = dir;
    for (int delay_us = 5000; delay_us <= 80000; delay_us *= 4) {
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            chm_tokenize_run(&o, &r, &err);
            _exit(0);
        }
        struct timespec ts = {0, delay_us * 1000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        check_no_false_shard(dir, ref);
    }
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    char *now = shard_shas(dir);
    cr_assert_str_eq(now, ref);
    free(now);
    free(ref);
    chm_tokenizer_free(tok);
    rm_tmpdir(ref_dir);
    rm_tmpdir(dir);
}

/* ---- failures -------------------------------------------------------------------------------- */

Test(shards, a_corrupt_input_among_good_ones) {
    char dir[64];
    make_tmpdir(dir);
    const char *in[] = {FIX "docs.jsonl", FIX "truncated.jsonl.gz", FIX "docs.jsonl.zst",
                        FIX "notgzip.jsonl.gz"};
    chm_tokenizer *tok = byte_tok();
    chm_tokenize_opts o = byte_opts(tok, dir, in, 4);
    o.shard_tokens = 0;
    chm_tokenize_result r;
    chm_err err = {0};
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_ERR_PARSE);
    cr_assert_eq(r.failed_inputs, 2);
    cr_assert(strstr(err.msg, "2 of 4 inputs failed") && strstr(err.msg, "truncated.jsonl.gz") &&
                  strstr(err.msg, "notgzip.jsonl.gz"),
              "%s", err.msg);
    cr_assert(r.documents > 6 && r.documents < 46, "the good documents of all four: %lld",
              (long long)r.documents);
    json_t *m = load_manifest(dir);
    cr_assert_eq(json_array_size(json_object_get(m, "errors")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(m, "status")), "complete");
    json_decref(m);
    chm_tokenizer_free(tok);
    rm_tmpdir(dir);
}

Test(shards, shards_of_another_run_need_overwrite) {
    char dir[64];
    make_tmpdir(dir);
    const char *in[] = {FIX "docs.jsonl"};
    chm_tokenizer *tok = byte_tok();
    chm_tokenize_opts o = byte_opts(tok, dir, in, 1);
    chm_tokenize_result r;
    chm_err err = {0};
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    o.shard_tokens = 1000;
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "--overwrite") != NULL, "%s", err.msg);
    o.overwrite = 1;
    cr_assert_eq(chm_tokenize_run(&o, &r, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(r.shards, 1);
    char p[256];
    snprintf(p, sizeof p, "%s/part-00001.npy", dir);
    cr_assert(access(p, F_OK) != 0, "the old run's extra shards are gone");
    chm_tokenizer_free(tok);
    rm_tmpdir(dir);
}

/* ---- the command ------------------------------------------------------------------------------ */

/* Run `chimera tokenize ARGS` (printf-style) through the shell; its exit code. */
static int tokenize_cmd(const char *fmt, ...) {
    char cmd[2048];
    int k = snprintf(cmd, sizeof cmd, "%s tokenize ", CHIMERA_BINARY);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd + k, sizeof cmd - (size_t)k, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(shards, command_exit_codes) {
    char dir[64], sub[128];
    make_tmpdir(dir);
    cr_assert_eq(tokenize_cmd("--help >/dev/null"), 0);
    cr_assert_eq(tokenize_cmd("2>/dev/null"), 2, "no arguments");
    cr_assert_eq(tokenize_cmd("--bogus 2>/dev/null"), 2);
    cr_assert_eq(tokenize_cmd("--tokenizer byte --out %s/a '%s*.nomatch' 2>/dev/null", dir, FIX), 2);
    cr_assert_eq(tokenize_cmd("--tokenizer byte --out %s/a %smissing.jsonl 2>/dev/null", dir, FIX), 2);
    cr_assert_eq(tokenize_cmd("--tokenizer byte --out %s/a '%sdocs.jsonl*' >/dev/null", dir, FIX), 0);
    cr_assert_eq(tokenize_cmd("--quiet --tokenizer byte --out %s/b %sdocs.jsonl %scorrupt.jsonl.gz "
                              ">/dev/null 2>&1",
                              dir, FIX, FIX),
                 1, "a corrupt input: the others are done, exit 1");
    cr_assert_eq(tokenize_cmd("--corpus builtin --docs 10 --tokenizer byte --out %s/c >/dev/null", dir), 0);
    cr_assert_eq(tokenize_cmd("--corpus builtin --entropy --docs 10 >/dev/null"), 0);
    /* While another process holds the directory's lock, a second run is refused. */
    snprintf(sub, sizeof sub, "%s/c/.chimera-tokenize.lock", dir);
    int fd = open(sub, O_RDWR);
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    cr_assert(fd >= 0 && fcntl(fd, F_SETLK, &fl) == 0);
    cr_assert_eq(tokenize_cmd("--corpus builtin --docs 10 --tokenizer byte --out %s/c 2>/dev/null", dir), 2);
    close(fd);
    for (const char *s = "abc"; *s; s++) {
        snprintf(sub, sizeof sub, "%s/%c", dir, *s);
        rm_tmpdir(sub);
    }
    rm_tmpdir(dir);
}
