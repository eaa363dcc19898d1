/*
 * fuzz_safetensors.c: libFuzzer target for the safetensors reader
 * (chm_safetensors_open: header length, JSON header, dtypes, shapes, data
 * offsets, overlaps). For a file that opens, every tensor's bytes must lie
 * inside the file's data section and match the input there, names must be
 * found again, and the metadata must be readable.
 */
#include "fuzz_util.h"

#include "chimera/checkpoint.h"

/* The header length of the input (the first 8 bytes, little-endian). */
static uint64_t header_len(const uint8_t *data) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | data[i];
    return n;
}

/* Each tensor's bytes equal the input's bytes at some place of its data section. */
static void check_tensors(const chm_safetensors *f, const uint8_t *data, size_t size) {
    uint64_t hlen = header_len(data);
    const uint8_t *sect = data + 8 + hlen;
    size_t sect_len = size - 8 - (size_t)hlen;
    for (int i = 0; i < chm_safetensors_count(f); i++) {
        const chm_st_tensor *t = chm_safetensors_get(f, i);
        if (t->nbytes > sect_len || chm_safetensors_find(f, t->name) == NULL) abort();
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
        if (numel * chm_dtype_size(t->dtype) != t->nbytes) abort();
        if (t->nbytes == 0) continue;
        /* The reader maps the file: find the tensor's offset by its first bytes' place. */
        int found = 0;
        for (size_t off = 0; !found && off + t->nbytes <= sect_len; off++)
            found = memcmp(sect + off, t->data, (size_t)t->nbytes) == 0;
        if (!found) abort();
    }
    (void)chm_safetensors_metadata(f, "format");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fz_write("fuzz.safetensors", data, size, path, sizeof path);
    chm_safetensors *f = NULL;
    chm_err err = {0};
    chm_status rc = chm_safetensors_open(path, &f, &err);
    fz_report("safetensors", rc == CHM_OK, err.msg);
    if (rc == CHM_OK) {
        check_tensors(f, data, size);
        chm_safetensors_close(f);
    } else if (f != NULL || strncmp(err.msg, path, strlen(path)) != 0) {
        fprintf(stderr, "a refusal must name the file first: %s\n", err.msg);
        abort();
    }
    unlink(path);
    return 0;
}
