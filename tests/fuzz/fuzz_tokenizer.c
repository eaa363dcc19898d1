/*
 * fuzz_tokenizer.c: libFuzzer target for tokenizer.json (chm_tokenizer_load:
 * the BPE model's vocab and merges, added tokens, normalizer, pre-tokenizer
 * Split regexes, post-processor, decoder). A tokenizer that loads must
 * encode a fixed text (ASCII, accents, CJK, emoji, an invalid byte, and the
 * usual special-token spellings) into ids it can decode again.
 */
#include "fuzz_util.h"

#include "chimera/tokenizer.h"

static const char TEXT[] = "Hello, world! It's 2024:\tcaf\xc3\xa9 na\xc3\xafve \xe4\xb8\xad\xe6\x96\x87 "
                           "\xf0\x9f\x98\x80 <|endoftext|> \xff end  \n\n  x";

static void encode_decode(const chm_tokenizer *t) {
    chm_ids ids = {0};
    chm_err err = {0};
    if (chm_tokenizer_encode(t, TEXT, sizeof TEXT - 1, &ids, &err) == CHM_OK) {
        int32_t n = chm_tokenizer_vocab_size(t);
        for (size_t i = 0; i < ids.n; i++)
            if (ids.ids[i] < 0 || ids.ids[i] >= n) abort();
        char *text = NULL;
        size_t len = 0;
        if (chm_tokenizer_decode(t, ids.ids, ids.n, &text, &len, &err) == CHM_OK) free(text);
    }
    chm_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fz_write("tokenizer.json", data, size, path, sizeof path);
    chm_tokenizer *t = NULL;
    chm_err err = {0};
    chm_status rc = chm_tokenizer_load(path, &t, &err);
    fz_report("tokenizer", rc == CHM_OK, err.msg);
    if (rc == CHM_OK) {
        encode_decode(t);
        chm_tokenizer_free(t);
    } else if (!strstr(err.msg, path)) {
        fprintf(stderr, "a refusal must name the file: %s\n", err.msg);
        abort();
    }
    unlink(path);
    return 0;
}
