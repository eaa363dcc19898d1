/*
 * test_dolma.c: the Dolma reader: containers (plain, multi-member gzip, multi-frame
 * zstd) by magic and by name, unlimited line length, bad lines skipped and counted
 * with their file:line, truncated and corrupt files (good documents, then an error
 * naming the file), and the real Dolma files in ../shared/data when present.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "chimera/data.h"

#define FIX CHIMERA_SOURCE_DIR "/tests/data/dolma/"
#define SHARED CHIMERA_SOURCE_DIR "/../shared/data/dolma/"

/* What reading a whole file gave. */
typedef struct readout {
    int n;
    char ids[64][48];
    char *texts[64];
    size_t lens[64];
    int64_t lines[64];
    chm_dolma_stats st;
    chm_status rc;      /* of open, or of the last next */
    chm_err err;
} readout;

static void read_all(const char *path, readout *o) {
    memset(o, 0, sizeof *o);
    chm_dolma_reader *r;
    o->rc = chm_dolma_open(path, &r, &o->err);
    if (o->rc) return;
    chm_dolma_doc d;
    int got;
    while (!(o->rc = chm_dolma_next(r, &d, &got, &o->err)) && got) {
        if (o->n < 64) {
            snprintf(o->ids[o->n], sizeof o->ids[0], "%s", d.id);
            o->texts[o->n] = malloc(d.text_len + 1);
            memcpy(o->texts[o->n], d.text, d.text_len);
            o->texts[o->n][d.text_len] = '\0';
            o->lens[o->n] = d.text_len;
            o->lines[o->n] = d.line;
        }
        o->n++;
    }
    o->st = *chm_dolma_stats_get(r);
    chm_dolma_close(r);
}

static void readout_free(readout *o) {
    for (int i = 0; i < o->n && i < 64; i++) free(o->texts[i]);
}

static int have(const char *path) { return access(path, R_OK) == 0; }

/* A fresh directory under /tmp; removed (one level) by rm_tmpdir. */
static void make_tmpdir(char dir[64]) {
    strcpy(dir, "/tmp/chimera-dolma-XXXXXX");
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

Test(dolma, bad_lines_are_skipped_and_counted_with_locations) {
    readout o;
    read_all(FIX "mixed.jsonl", &o);
    cr_assert_eq(o.rc, CHM_OK, "%s", o.err.msg);
    cr_assert_eq(o.n, 4);
    cr_assert_str_eq(o.ids[0], "a1");
    cr_assert_str_eq(o.ids[1], "7", "a numeric id is printed");
    cr_assert_str_eq(o.ids[2], "a8");
    cr_assert_str_eq(o.ids[3], "a9");
    cr_assert_eq(o.lines[0], 1);
    cr_assert_eq(o.lines[1], 9);
    cr_assert_eq(o.lines[3], 12, "the last line has no newline");
    cr_assert_str_eq(o.texts[1], "Numeric id and CRLF ending.");
    static const char a8[] = "Escapes: caf\xc3\xa9 \0 nul, \"quotes\", commas\nnewline";
    cr_assert_eq(o.lens[2], sizeof a8 - 1, "the \\u0000 escape keeps its NUL");
    cr_assert_eq(memcmp(o.texts[2], a8, sizeof a8 - 1), 0);
    cr_assert_eq(o.st.documents, 4);
    cr_assert_eq(o.st.lines, 11);
    cr_assert_eq(o.st.blank, 1);
    cr_assert_eq(o.st.empty, 1);
    cr_assert_eq(o.st.bad_json, 3, "unterminated, not an object, lone surrogate");
    cr_assert_eq(o.st.missing_text, 2, "absent, not a string");
    cr_assert_eq(o.st.bad_utf8, 1);
    cr_assert_eq(chm_dolma_stats_skipped(&o.st), 6);
    cr_assert_eq(o.st.n_samples, 6);
    cr_assert(strstr(o.st.samples[0], "mixed.jsonl:2: broken JSON") != NULL, "%s", o.st.samples[0]);
    cr_assert(strstr(o.st.samples[1], "mixed.jsonl:4: no \"text\"") != NULL, "%s", o.st.samples[1]);
    cr_assert(strstr(o.st.samples[3], "mixed.jsonl:7: invalid UTF-8") != NULL, "%s", o.st.samples[3]);
    readout_free(&o);
}

Test(dolma, stats_add_sums_and_keeps_samples) {
    chm_dolma_stats a = {0}, b = {0};
    b.bad_json = 2;
    b.documents = 3;
    b.n_samples = CHM_DOLMA_SAMPLES;
    for (int i = 0; i < CHM_DOLMA_SAMPLES; i++) snprintf(b.samples[i], sizeof b.samples[i], "f:%d: x", i);
    chm_dolma_stats_add(&a, &b);
    chm_dolma_stats_add(&a, &b);
    cr_assert_eq(a.bad_json, 4);
    cr_assert_eq(a.documents, 6);
    cr_assert_eq(a.n_samples, CHM_DOLMA_SAMPLES, "samples stop at the limit");
    cr_assert_str_eq(a.samples[1], "f:1: x");
}

Test(dolma, plain_multimember_gzip_and_multiframe_zstd_agree) {
    static const char *names[] = {FIX "docs.jsonl", FIX "docs.jsonl.gz", FIX "docs.jsonl.zst"};
    static const chm_container kinds[] = {CHM_CONTAINER_PLAIN, CHM_CONTAINER_GZIP, CHM_CONTAINER_ZSTD};
    for (int k = 0; k < 3; k++) {
        readout o;
        read_all(names[k], &o);
        cr_assert_eq(o.rc, CHM_OK, "%s: %s", names[k], o.err.msg);
        cr_assert_eq(o.n, 3, "%s: %d documents (every member/frame read)", names[k], o.n);
        for (int i = 0; i < 3; i++) {
            char want[80];
            snprintf(want, sizeof want, "Document number %d of the container fixtures.", i);
            cr_assert_str_eq(o.texts[i], want);
        }
        readout_free(&o);
        chm_lines *l;
        chm_err err = {0};
        cr_assert_eq(chm_lines_open(names[k], &l, &err), CHM_OK, "%s", err.msg);
        cr_assert_eq(chm_lines_container(l), kinds[k]);
        chm_lines_close(l);
    }
    cr_assert_str_eq(chm_container_name(CHM_CONTAINER_ZSTD), "zstd");
}

Test(dolma, magic_bytes_win_over_the_name) {
    char dir[64], path[128];
    make_tmpdir(dir);
    snprintf(path, sizeof path, "%s/gzip-inside.jsonl", dir);
    FILE *in = fopen(FIX "docs.jsonl.gz", "rb"), *out = fopen(path, "wb");
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    readout o;
    read_all(path, &o);
    cr_assert_eq(o.rc, CHM_OK, "%s", o.err.msg);
    cr_assert_eq(o.n, 3);
    readout_free(&o);
    rm_tmpdir(dir);
}

Test(dolma, a_plain_file_named_gz_is_refused_by_name) {
    readout o;
    read_all(FIX "notgzip.jsonl.gz", &o);
    cr_assert_eq(o.rc, CHM_ERR_PARSE);
    cr_assert(strstr(o.err.msg, "notgzip.jsonl.gz") && strstr(o.err.msg, "not one"), "%s", o.err.msg);
    chm_lines *l;
    chm_err err = {0};
    cr_assert_eq(chm_lines_open("/nonexistent/x.jsonl", &l, &err), CHM_ERR_IO);
    cr_assert(strstr(err.msg, "/nonexistent/x.jsonl") != NULL, "%s", err.msg);
}

/* Truncated or corrupt: documents in order from t0, fewer than 40, then an error naming the file. */
static void check_damaged(const char *path, const char *what) {
    readout o;
    read_all(path, &o);
    cr_assert_eq(o.rc, CHM_ERR_PARSE, "%s: rc %d", path, o.rc);
    cr_assert(strstr(o.err.msg, path) && strstr(o.err.msg, what), "%s", o.err.msg);
    cr_assert(o.n >= 1 && o.n < 40, "%s: %d good documents before the damage", path, o.n);
    for (int i = 0; i < o.n && i < 64; i++) {
        char want[16];
        snprintf(want, sizeof want, "t%d", i);
        cr_assert_str_eq(o.ids[i], want);
    }
    cr_assert_eq(o.st.bad_json, 0, "the cut-off last line is dropped, not reported as JSON");
    readout_free(&o);
}

Test(dolma, truncated_files_give_their_documents_then_an_error) {
    check_damaged(FIX "truncated.jsonl.gz", "truncated");
    check_damaged(FIX "truncated.jsonl.zst", "truncated");
    check_damaged(FIX "corrupt.jsonl.gz", "corrupt gzip");
}

Test(dolma, lines_longer_than_any_buffer) {
    char dir[64], path[128];
    make_tmpdir(dir);
    size_t n = 300 * 1024;
    char *text = malloc(n + 1);
    for (size_t i = 0; i < n; i++) text[i] = "abcdefgh "[i % 9];
    text[n] = '\0';
    for (int gz = 0; gz < 2; gz++) {
        snprintf(path, sizeof path, "%s/long.jsonl%s", dir, gz ? ".gz" : "");
        gzFile g = gzopen(path, gz ? "wb" : "wbT"); /* T: no compression */
        gzprintf(g, "{\"id\":\"short\",\"text\":\"x\"}\n{\"id\":\"long\",\"text\":\"");
        gzwrite(g, text, (unsigned)n);
        gzprintf(g, "\"}\n{\"id\":\"after\",\"text\":\"y\"}\n");
        gzclose(g);
        readout o;
        read_all(path, &o);
        cr_assert_eq(o.rc, CHM_OK, "%s", o.err.msg);
        cr_assert_eq(o.n, 3);
        cr_assert_eq(o.lens[1], n);
        cr_assert_eq(memcmp(o.texts[1], text, n), 0);
        cr_assert_str_eq(o.ids[2], "after");
        readout_free(&o);
    }
    free(text);
    rm_tmpdir(dir);
}

Test(dolma, empty_files) {
    char dir[64], path[128];
    make_tmpdir(dir);
    snprintf(path, sizeof path, "%s/empty.jsonl", dir);
    fclose(fopen(path, "wb"));
    readout o;
    read_all(path, &o);
    cr_assert_eq(o.rc, CHM_OK, "%s", o.err.msg);
    cr_assert_eq(o.n, 0);
    snprintf(path, sizeof path, "%s/empty.jsonl.gz", dir);
    fclose(fopen(path, "wb"));
    read_all(path, &o);
    cr_assert_eq(o.rc, CHM_ERR_PARSE, "an empty .gz is not gzip");
    cr_assert(strstr(o.err.msg, "empty") != NULL, "%s", o.err.msg);
    rm_tmpdir(dir);
}

Test(dolma, shared_test_jsonl_in_three_containers) {
    if (!have(SHARED "test.jsonl")) cr_skip_test("../shared/data is not here");
    static const char *names[] = {SHARED "test.jsonl", SHARED "test.jsonl.gz", SHARED "test.jsonl.zst"};
    for (int k = 0; k < 3; k++) {
        chm_lines *l;
        chm_err err = {0};
        cr_assert_eq(chm_lines_open(names[k], &l, &err), CHM_OK, "%s", err.msg);
        const char *line;
        size_t len;
        int got;
        cr_assert_eq(chm_lines_next(l, &line, &len, &got, &err), CHM_OK, "%s", err.msg);
        cr_assert(got);
        cr_assert_eq(len, 29);
        cr_assert_eq(memcmp(line, "{\"message\": \"this is a test\"}", 29), 0);
        cr_assert_eq(chm_lines_next(l, &line, &len, &got, &err), CHM_OK, "%s", err.msg);
        cr_assert(!got);
        chm_lines_close(l);
        readout o;
        read_all(names[k], &o);
        cr_assert_eq(o.rc, CHM_OK, "%s", o.err.msg);
        cr_assert_eq(o.n, 0);
        cr_assert_eq(o.st.missing_text, 1, "not a Dolma document: counted, not a crash");
    }
}

Test(dolma, shared_common_crawl_documents) {
    if (!have(SHARED "cc_en_head-0091.jsonl.gz")) cr_skip_test("../shared/data is not here");
    static const char *names[] = {SHARED "cc_en_head-0091.jsonl.gz", SHARED "cc_en_head-0174.jsonl.gz"};
    static const int64_t text_bytes[] = {94424, 61163};
    for (int k = 0; k < 2; k++) {
        readout o;
        read_all(names[k], &o);
        cr_assert_eq(o.rc, CHM_OK, "%s", o.err.msg);
        cr_assert_eq(o.n, 10);
        cr_assert_eq(o.st.text_bytes, text_bytes[k]);
        cr_assert_eq(chm_dolma_stats_skipped(&o.st), 0);
        cr_assert(strncmp(o.ids[0], "http", 4) == 0, "%s", o.ids[0]);
        readout_free(&o);
    }
    /* The source field of the first document. */
    chm_dolma_reader *r;
    chm_err err = {0};
    cr_assert_eq(chm_dolma_open(names[0], &r, &err), CHM_OK);
    chm_dolma_doc d;
    int got;
    cr_assert_eq(chm_dolma_next(r, &d, &got, &err), CHM_OK);
    cr_assert_str_eq(d.source, "common-crawl");
    chm_dolma_close(r);
}
