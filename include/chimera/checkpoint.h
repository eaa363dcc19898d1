/*
 * chimera/checkpoint.h: checkpoint files. So far: safetensors, the named
 * tensor table that model.safetensors and optimizer.safetensors use (the
 * trainer state and the atomic save build on it).
 *
 * Format (https://github.com/huggingface/safetensors): an unsigned 64-bit
 * little-endian header length N, N bytes of JSON {"name": {"dtype": "F32",
 * "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__":
 * {"key": "value"}}, then the data, offsets relative to its start. The
 * writer pads the header with spaces to a multiple of 8 bytes and lays the
 * tensors out in order. Files load in Python's safetensors and PyTorch.
 *
 * The reader maps the file and checks everything against its length before
 * handing out a pointer: the header length, the header size limit, the
 * JSON, each dtype, each shape against its byte range, each range inside
 * the data, no two ranges overlapping, no duplicate names. Every error is
 * CHM_ERR_IO (cannot open/read/write) or CHM_ERR_PARSE (a malformed file)
 * with a message that starts with the file's path.
 */
#ifndef CHIMERA_CHECKPOINT_H
#define CHIMERA_CHECKPOINT_H

#include <stdint.h>

#include "chimera/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest header the reader accepts (the safetensors library's own limit). */
#define CHM_SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)

/* One named tensor in host memory. */
typedef struct chm_st_tensor {
    char name[128];
    chm_dtype dtype; /* f32, f64, bf16, f16 or i32 ("F32", "F64", "BF16", "F16", "I32") */
    int ndim;        /* 0..CHM_MAX_DIMS (0: a scalar) */
    int64_t shape[CHM_MAX_DIMS];
    const void *data; /* numel * dtype size bytes; from the reader: inside the mapped
                         file, possibly unaligned (copy with memcpy) */
    uint64_t nbytes;  /* numel * dtype size */
} chm_st_tensor;

/*
 * Write n tensors (their data from host memory) to `path`, replacing it.
 * metadata: NULL, or a NULL-terminated list of key, value, key, value, ...
 * strings stored under "__metadata__".
 */
chm_status chm_safetensors_write(const char *path, const chm_st_tensor *tensors, int n,
                                 const char *const *metadata, chm_err *err);

/* An opened, checked safetensors file (read-only map). */
typedef struct chm_safetensors chm_safetensors;

chm_status chm_safetensors_open(const char *path, chm_safetensors **out, chm_err *err);

/* Tensors in header order (the JSON's order), by index or by name (NULL if absent). */
int chm_safetensors_count(const chm_safetensors *f);
const chm_st_tensor *chm_safetensors_get(const chm_safetensors *f, int i);
const chm_st_tensor *chm_safetensors_find(const chm_safetensors *f, const char *name);

/* A "__metadata__" value, or NULL when absent. Valid until close. */
const char *chm_safetensors_metadata(const chm_safetensors *f, const char *key);

/* Unmap and free. NULL is a no-op. */
void chm_safetensors_close(chm_safetensors *f);

/* The safetensors name of a dtype ("F32" ...), and back (false when unknown). */
const char *chm_safetensors_dtype_name(chm_dtype dt);
bool chm_safetensors_dtype_parse(const char *name, chm_dtype *dt);

#ifdef __cplusplus
}
#endif
#endif
