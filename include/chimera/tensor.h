/*
 * chimera/tensor.h: dtypes, tensors, views and the activation arena.
 *
 * A tensor is a small value type: dtype, shape (1 to 4 dims, row-major and
 * contiguous) and a place in a backend buffer (buffer + byte offset). Tensors
 * never own memory; buffers do. A view is a tensor that points into another
 * tensor's bytes with a new shape. Model, optimizer and trainer code never
 * dereference tensor memory: they call backend ops (backend.h).
 *
 * Dimension letters used in shape comments across the project:
 *   B batch, T sequence, C model width, V vocabulary, L layers, H heads,
 *   Hk kv heads, D head dim, N d_state (Mamba) or rows, E experts, K top-k.
 */
#ifndef CHIMERA_TENSOR_H
#define CHIMERA_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "chimera/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CHM_MAX_DIMS 4

/* Element types. I32 holds indices (token ids, expert ids, slots). */
typedef enum chm_dtype {
    CHM_F32 = 0,
    CHM_F64 = 1,
    CHM_BF16 = 2,
    CHM_F16 = 3,
    CHM_I32 = 4
} chm_dtype;

typedef struct chm_backend chm_backend;

/*
 * A block of memory owned by one backend. `host` is a CPU-addressable pointer
 * when the backend's memory is host memory (cpu backend), else NULL. `impl`
 * belongs to the backend.
 */
typedef struct chm_buffer {
    chm_backend *backend;  /* owner */
    size_t size;           /* bytes */
    void *host;            /* host address or NULL */
    void *impl;            /* backend-private handle */
} chm_buffer;

/* A contiguous row-major tensor living in a buffer at a byte offset. */
typedef struct chm_tensor {
    chm_dtype dtype;
    int ndim;                      /* 1..CHM_MAX_DIMS */
    int64_t shape[CHM_MAX_DIMS];   /* unused trailing entries are 1 */
    chm_buffer *buf;               /* NULL for an unbound tensor */
    size_t offset;                 /* bytes from the start of buf */
} chm_tensor;

/* Bytes per element of a dtype (bf16/f16: 2, f32/i32: 4, f64: 8). */
size_t chm_dtype_size(chm_dtype dt);

/* Lower-case name of a dtype: "f32", "f64", "bf16", "f16", "i32". */
const char *chm_dtype_name(chm_dtype dt);

/* True for f32, f64, bf16 and f16. */
bool chm_dtype_is_float(chm_dtype dt);

/* Dtype of the statistics an op saves (logsumexp, rstd): f64 for f64 inputs, else f32. */
chm_dtype chm_dtype_stats(chm_dtype dt);

/* A tensor description with the given dtype and shape, bound to `buf` at `offset`. */
chm_tensor chm_tensor_make(chm_buffer *buf, size_t offset, chm_dtype dt, int ndim,
                           const int64_t *shape);

/* Shorthands for chm_tensor_make with 1, 2, 3 or 4 dims. */
chm_tensor chm_tensor_1d(chm_buffer *buf, size_t offset, chm_dtype dt, int64_t d0);
chm_tensor chm_tensor_2d(chm_buffer *buf, size_t offset, chm_dtype dt, int64_t d0, int64_t d1);
chm_tensor chm_tensor_3d(chm_buffer *buf, size_t offset, chm_dtype dt, int64_t d0, int64_t d1,
                         int64_t d2);
chm_tensor chm_tensor_4d(chm_buffer *buf, size_t offset, chm_dtype dt, int64_t d0, int64_t d1,
                         int64_t d2, int64_t d3);

/* Number of elements (product of the shape). */
int64_t chm_tensor_numel(const chm_tensor *t);

/* Size in bytes (numel * dtype size). */
size_t chm_tensor_nbytes(const chm_tensor *t);

/* Product of all dims but the last ("rows") and the last dim ("cols"). */
int64_t chm_tensor_rows(const chm_tensor *t);
int64_t chm_tensor_cols(const chm_tensor *t);

/* True when both tensors have the same ndim and shape. */
bool chm_tensor_same_shape(const chm_tensor *a, const chm_tensor *b);

/* Write "[2, 3, 4] f32" into out (always NUL-terminated); returns out. */
char *chm_tensor_describe(const chm_tensor *t, char *out, size_t n);

/*
 * A view of `src` starting `elem_offset` elements in, with a new shape whose
 * element count must fit inside src. Fails with CHM_ERR_SHAPE otherwise.
 */
chm_status chm_tensor_view(const chm_tensor *src, int64_t elem_offset, int ndim,
                           const int64_t *shape, chm_tensor *out, chm_err *err);

/* Same bytes, new shape with the same element count. */
chm_status chm_tensor_reshape(const chm_tensor *src, int ndim, const int64_t *shape,
                              chm_tensor *out, chm_err *err);

/*
 * The activation arena: one backend buffer carved into tensors by a bump
 * pointer. Allocation is O(1), nothing is freed individually; `mark` and
 * `release` rewind to a saved position (e.g. after each layer's scratch).
 * Offsets are aligned to 256 bytes so that every backend can bind them.
 */
typedef struct chm_arena {
    chm_buffer *buf;   /* owned by the arena */
    size_t used;       /* bytes handed out */
    size_t peak;       /* high-water mark */
} chm_arena;

#define CHM_ARENA_ALIGN 256

/* Allocate an arena of `bytes` on backend `be`. */
chm_status chm_arena_init(chm_arena *a, chm_backend *be, size_t bytes, chm_err *err);

/* Free the arena's buffer; the tensors handed out become invalid. */
void chm_arena_free(chm_arena *a);

/* Hand out a tensor of the given dtype and shape; CHM_ERR_NOMEM when full. */
chm_status chm_arena_alloc(chm_arena *a, chm_dtype dt, int ndim, const int64_t *shape,
                           chm_tensor *out, chm_err *err);

/* Current position, to pass to chm_arena_release later. */
size_t chm_arena_mark(const chm_arena *a);

/* Rewind to a position returned by chm_arena_mark. */
void chm_arena_release(chm_arena *a, size_t mark);

/* Bytes needed for a tensor of this dtype/shape including alignment padding. */
size_t chm_arena_size_for(chm_dtype dt, int ndim, const int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif
