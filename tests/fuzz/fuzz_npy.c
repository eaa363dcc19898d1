/*
 * fuzz_npy.c: libFuzzer target for token files: the NumPy .npy header parser
 * (chm_npy_parse, from memory) and the loader's file opening
 * (chm_tok_file_open: .npy, llm.c .bin and headerless memmaps, every size
 * checked against the file). A file that opens must hold exactly its tokens.
 */
#include "fuzz_util.h"

#include "chimera/data.h"
#include "data/loader.h"

/* Open the bytes as a token file; an accepted file must map exactly count tokens. */
static void open_as_file(const char *path, chm_token_dtype raw) {
    chm_tok_file f;
    chm_err err = {0};
    chm_status rc = chm_tok_file_open(path, raw, -1, &f, &err);
    fz_report("token file", rc == CHM_OK, err.msg);
    if (rc == CHM_OK) {
        int es = chm_token_dtype_size(f.dtype);
        const unsigned char *end = f.map ? (const unsigned char *)f.map + f.map_len : f.data;
        if (f.count < 0 || f.data + f.count * es != end) {
            fprintf(stderr, "%s: %lld tokens do not fill the file\n", path, (long long)f.count);
            abort();
        }
        unsigned sum = 0; /* touch every token byte */
        for (int64_t i = 0; i < f.count * es; i++) sum += f.data[i];
        (void)sum;
    } else if (!strstr(err.msg, path)) {
        fprintf(stderr, "the message must name the file: %s\n", err.msg);
        abort();
    }
    chm_tok_file_close(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    chm_npy_header h;
    chm_err err = {0};
    chm_status rc = chm_npy_parse(data, size, "fuzz.npy", &h, &err);
    fz_report(".npy header", rc == CHM_OK, err.msg);
    if (rc == CHM_OK) {
        if (h.data_offset < 10 || (size_t)h.data_offset > size || h.count < 0) abort();
    } else if (!strstr(err.msg, "fuzz.npy")) {
        abort();
    }
    char path[512];
    fz_write(size && (data[0] & 1) ? "tokens.bin" : "tokens.npy", data, size, path, sizeof path);
    open_as_file(path, size > 1 && (data[1] & 1) ? CHM_TOKENS_U32 : CHM_TOKENS_U16);
    unlink(path);
    return 0;
}
