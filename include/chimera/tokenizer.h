/*
 * chimera/tokenizer.h: text <-> token ids.
 *
 * Two kinds of tokenizer behind one handle: a Hugging Face tokenizer.json
 * byte-level BPE (GPT-2, GPT-NeoX-20B as used by OLMo/Dolma), and the built-in
 * byte tokenizer of the embedded default corpus (ids 0..255 are the bytes,
 * 256 is <|endoftext|>, 257 <|padding|>, 258..259 reserved: vocab 260).
 * A loaded tokenizer is read-only: encode and decode may be called from many
 * threads at once on the same handle.
 */
#ifndef CHIMERA_TOKENIZER_H
#define CHIMERA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "chimera/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct chm_tokenizer chm_tokenizer;

/* A growable array of token ids. Zero-initialise; free with chm_ids_free. */
typedef struct chm_ids {
    int32_t *ids;
    size_t n, cap;
} chm_ids;

/* Append one id (grows the array); CHM_ERR_NOMEM on failure. */
chm_status chm_ids_push(chm_ids *a, int32_t id);
/* Free the array's memory and reset it to empty. */
void chm_ids_free(chm_ids *a);

#define CHM_BYTE_VOCAB 260
#define CHM_BYTE_EOS 256
#define CHM_BYTE_PAD 257

/* Load a tokenizer.json (byte-level BPE). Errors name the file and what is wrong. */
chm_status chm_tokenizer_load(const char *path, chm_tokenizer **out, chm_err *err);
/* The built-in byte tokenizer (no file needed). */
chm_status chm_tokenizer_byte(chm_tokenizer **out, chm_err *err);
/* Free a tokenizer (NULL is a no-op). */
void chm_tokenizer_free(chm_tokenizer *t);

/* Number of ids (the largest id + 1, added tokens included). */
int32_t chm_tokenizer_vocab_size(const chm_tokenizer *t);
/* The end-of-text id used to join documents, or -1 when the tokenizer has none. */
int32_t chm_tokenizer_eos(const chm_tokenizer *t);
/* A short description, e.g. "byte-level BPE, 50280 ids, from gpt-neox-20b.json". */
const char *chm_tokenizer_describe(const chm_tokenizer *t);

/*
 * Append the ids of text[0..len) to *out. Invalid UTF-8 is replaced by U+FFFD
 * per maximal ill-formed subsequence (as Python's bytes.decode(errors="replace")),
 * so results match Hugging Face tokenizers on the replaced string.
 */
chm_status chm_tokenizer_encode(const chm_tokenizer *t, const char *text, size_t len,
                                chm_ids *out, chm_err *err);

/* Decode ids into a malloc'd NUL-terminated string (*len_out bytes before the NUL). */
chm_status chm_tokenizer_decode(const chm_tokenizer *t, const int32_t *ids, size_t n,
                                char **text_out, size_t *len_out, chm_err *err);

/* Train a GPT-2-style byte-level BPE (bytes 0..255, merges, <|endoftext|> last; <= vocab_size ids)
 * on text or .json/.jsonl(.gz/.zst) files, write out_path; *n_ids_out (or NULL) = ids written. */
chm_status chm_tokenizer_train(const char *const *inputs, size_t n_inputs, int32_t vocab_size,
                               const char *out_path, int32_t *n_ids_out, chm_err *err);

#ifdef __cplusplus
}
#endif
#endif
