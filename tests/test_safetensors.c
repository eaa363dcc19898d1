/*
 * test_safetensors.c: safetensors write/read round trip (dtypes, shapes,
 * scalars, empty tensors, metadata, the byte layout of the format), and the
 * reader's refusal of corrupt files with a message naming the file: short
 * file, header length past the end, huge header length, bad JSON, unknown
 * dtype, offsets out of bounds, overlapping tensors, a size that does not
 * match the shape, duplicate names; a missing file is an I/O error.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chimera/checkpoint.h"

/* A fresh temporary path for this test process. */
static void tmp_path(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/chimera_st_%d_%s.safetensors", (int)getpid(), tag);
}

/* Write a file made of an 8-byte length `hlen`, the header text and `data_len` zero bytes. */
static void write_raw(const char *path, uint64_t hlen, const char *header, size_t data_len) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    fclose(f);
}

/* A well-formed file with this header (length taken from the text) and data_len bytes. */
static void write_header(const char *path, const char *header, size_t data_len) {
    write_raw(path, strlen(header), header, data_len);
}

Test(safetensors, round_trip) {
    char path[256];
    tmp_path(path, sizeof path, "rt");
    float a[6] = {1, -2, 3.5f, 4, 5, 6};
    double b[3] = {1e-300, -2.25, 3};
    int32_t c[4] = {7, -8, 9, 2147483647};
    uint16_t h[2] = {0x3f80, 0xc000};
    double s = 42;
    chm_st_tensor t[] = {
        {"layers.0.mixer.in_proj.weight", CHM_F32, 2, {2, 3, 1, 1}, a, sizeof a},
        {"b", CHM_F64, 1, {3, 1, 1, 1}, b, sizeof b},
        {"ids", CHM_I32, 4, {1, 2, 2, 1}, c, sizeof c},
        {"half", CHM_BF16, 1, {2, 1, 1, 1}, h, sizeof h},
        {"scalar", CHM_F64, 0, {1, 1, 1, 1}, &s, sizeof s},
        {"empty", CHM_F32, 2, {0, 5, 1, 1}, NULL, 0},
    };
    const char *md[] = {"format", "pt", "chimera.step", "12", NULL};
    chm_err err = {0};
    cr_assert_eq(chm_safetensors_write(path, t, 6, md, &err), CHM_OK, "%s", err.msg);
    chm_safetensors *f = NULL;
    cr_assert_eq(chm_safetensors_open(path, &f, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_safetensors_count(f), 6);
    for (int i = 0; i < 6; i++) {
        const chm_st_tensor *r = chm_safetensors_get(f, i);
        cr_assert_str_eq(r->name, t[i].name, "header order is kept");
        cr_assert_eq(r->dtype, t[i].dtype);
        cr_assert_eq(r->ndim, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++) cr_assert_eq(r->shape[d], t[i].shape[d]);
        cr_assert_eq(r->nbytes, t[i].nbytes);
        cr_assert(t[i].nbytes == 0 || memcmp(r->data, t[i].data, t[i].nbytes) == 0, "%s data",
                  r->name);
    }
    cr_assert_not_null(chm_safetensors_find(f, "ids"));
    cr_assert_null(chm_safetensors_find(f, "nope"));
    cr_assert_str_eq(chm_safetensors_metadata(f, "chimera.step"), "12");
    cr_assert_null(chm_safetensors_metadata(f, "missing"));
    chm_safetensors_close(f);
    /* the byte layout: length, padded header, data starting at 8 + length */
    FILE *fp = fopen(path, "rb");
    unsigned char len[8];
    cr_assert_eq(fread(len, 1, 8, fp), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len[i];
    cr_assert_eq(n % 8, 0, "the header is padded to 8 bytes");
    char *hdr = calloc(n + 1, 1);
    cr_assert_eq(fread(hdr, 1, n, fp), n);
    cr_assert(strstr(hdr, "\"dtype\":\"F32\"") && strstr(hdr, "\"data_offsets\":[0,24]"), "%s",
              hdr);
    float first;
    cr_assert_eq(fread(&first, 4, 1, fp), 1);
    cr_assert_eq(first, 1.0f);
    free(hdr);
    fclose(fp);
    unlink(path);
}

/* Expect opening `path` to fail with `code` and a message holding the path and `needle`. */
static void expect_bad(const char *path, chm_status code, const char *needle) {
    chm_safetensors *f = (chm_safetensors *)1;
    chm_err err = {0};
    cr_assert_eq(chm_safetensors_open(path, &f, &err), code, "%s: %s", needle, err.msg);
    cr_assert_null(f);
    cr_assert(strstr(err.msg, path) != NULL, "message must name the file: %s", err.msg);
    cr_assert(strstr(err.msg, needle) != NULL, "message lacks '%s': %s", needle, err.msg);
}

Test(safetensors, corrupt_files_are_refused) {
    char path[256];
    tmp_path(path, sizeof path, "bad");
    FILE *f = fopen(path, "wb");
    fputs("abc", f);
    fclose(f);
    expect_bad(path, CHM_ERR_PARSE, "too short");
    write_raw(path, 1000, "{}", 0);
    expect_bad(path, CHM_ERR_PARSE, "runs past the end of the file");
    write_raw(path, (uint64_t)1 << 40, "{}", 0);
    expect_bad(path, CHM_ERR_PARSE, "over the");
    write_header(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], ", 8);
    expect_bad(path, CHM_ERR_PARSE, "not a JSON object");
    write_header(path, "[1, 2]", 0);
    expect_bad(path, CHM_ERR_PARSE, "not a JSON object");
    write_header(path, "{\"a\": {\"dtype\": \"Q7\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8);
    expect_bad(path, CHM_ERR_PARSE, "unknown dtype 'Q7'");
    write_header(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}",
                 8);
    expect_bad(path, CHM_ERR_PARSE, "data_offsets must be");
    write_header(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [-8, 0]}}",
                 8);
    expect_bad(path, CHM_ERR_PARSE, "data_offsets must be");
    write_header(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
                 8);
    expect_bad(path, CHM_ERR_PARSE, "need 12");
    write_header(path,
                 "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                 " \"b\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                 12);
    expect_bad(path, CHM_ERR_PARSE, "overlap");
    write_header(path,
                 "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                 " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                 8);
    expect_bad(path, CHM_ERR_PARSE, "not a JSON object");
    write_header(path,
                 "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16], "
                 "\"data_offsets\": [0, 8]}}",
                 8);
    expect_bad(path, CHM_ERR_PARSE, "tensor 'a'");
    write_header(
        path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1, 1], \"data_offsets\": [0, 4]}}",
        4);
    expect_bad(path, CHM_ERR_PARSE, "at most 4");
    unlink(path);
    expect_bad(path, CHM_ERR_IO, "cannot open");
}

Test(safetensors, writer_refuses_bad_tensors) {
    char path[256];
    tmp_path(path, sizeof path, "w");
    float x = 1;
    chm_st_tensor t = {"", CHM_F32, 1, {1, 1, 1, 1}, &x, 4};
    chm_err err = {0};
    cr_assert_eq(chm_safetensors_write(path, &t, 1, NULL, &err), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, path) != NULL, "%s", err.msg);
    cr_assert_eq(chm_safetensors_write("/nonexistent-dir/x.safetensors", NULL, 0, NULL, &err),
                 CHM_ERR_IO);
    cr_assert(strstr(err.msg, "/nonexistent-dir/x.safetensors") != NULL, "%s", err.msg);
    unlink(path);
}
