/* tensor.c: dtype facts, tensor descriptions and views (see include/chimera/tensor.h). */
#include "chimera/tensor.h"

#include <stdio.h>
#include <string.h>

size_t chm_dtype_size(chm_dtype dt) {
    switch (dt) {
    case CHM_F32: return 4;
    case CHM_F64: return 8;
    case CHM_BF16: return 2;
    case CHM_F16: return 2;
    case CHM_I32: return 4;
    }
    return 0;
}

const char *chm_dtype_name(chm_dtype dt) {
    switch (dt) {
    case CHM_F32: return "f32";
    case CHM_F64: return "f64";
    case CHM_BF16: return "bf16";
    case CHM_F16: return "f16";
    case CHM_I32: return "i32";
    }
    return "?";
}

bool chm_dtype_is_float(chm_dtype dt) { return dt != CHM_I32 && chm_dtype_size(dt) != 0; }

chm_dtype chm_dtype_stats(chm_dtype dt) { return dt == CHM_F64 ? CHM_F64 : CHM_F32; }

chm_tensor chm_tensor_make(chm_buffer *buf, size_t offset, chm_dtype dt, int ndim,
                           const int64_t *shape) {
    chm_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = ndim;
    for (int i = 0; i < CHM_MAX_DIMS; i++) t.shape[i] = (i < ndim && shape) ? shape[i] : 1;
    t.buf = buf;
    t.offset = offset;
    return t;
}

chm_tensor chm_tensor_1d(chm_buffer *buf, size_t offset, chm_dtype dt, int64_t d0) {
    int64_t s[1] = {d0};
    return chm_tensor_make(buf, offset, dt, 1, s);
}

chm_tensor chm_tensor_2d(chm_buffer *buf, size_t offset, chm_dtype dt, int64_t d0, int64_t d1) {
    int64_t s[2] = {d0, d1};
    return chm_tensor_make(buf, offset, dt, 2, s);
}

chm_tensor chm_tensor_3d(chm_buffer *buf, size_t offset, chm_dtype dt, int64_t d0, int64_t d1,
                         int64_t d2) {
    int64_t s[3] = {d0, d1, d2};
    return chm_tensor_make(buf, offset, dt, 3, s);
}

chm_tensor chm_tensor_4d(chm_buffer *buf, size_t offset, chm_dtype dt, int64_t d0, int64_t d1,
                         int64_t d2, int64_t d3) {
    int64_t s[4] = {d0, d1, d2, d3};
    return chm_tensor_make(buf, offset, dt, 4, s);
}

int64_t chm_tensor_numel(const chm_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t chm_tensor_nbytes(const chm_tensor *t) {
    return (size_t)chm_tensor_numel(t) * chm_dtype_size(t->dtype);
}

int64_t chm_tensor_cols(const chm_tensor *t) { return t->ndim > 0 ? t->shape[t->ndim - 1] : 1; }

int64_t chm_tensor_rows(const chm_tensor *t) {
    int64_t c = chm_tensor_cols(t);
    return c ? chm_tensor_numel(t) / c : 0;
}

bool chm_tensor_same_shape(const chm_tensor *a, const chm_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *chm_tensor_describe(const chm_tensor *t, char *out, size_t n) {
    size_t len = 0;
    if (n == 0) return out;
    out[0] = '\0';
    len += (size_t)snprintf(out + len, n - len, "[");
    for (int i = 0; i < t->ndim && len < n; i++)
        len += (size_t)snprintf(out + len, n - len, "%s%lld", i ? ", " : "",
                                (long long)t->shape[i]);
    if (len < n) snprintf(out + len, n - len, "] %s", chm_dtype_name(t->dtype));
    return out;
}

static chm_status check_shape(int ndim, const int64_t *shape, chm_err *err) {
    if (ndim < 1 || ndim > CHM_MAX_DIMS)
        return CHM_ERR(err, CHM_ERR_SHAPE, "a tensor has 1 to %d dims, not %d", CHM_MAX_DIMS,
                       ndim);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return CHM_ERR(err, CHM_ERR_SHAPE, "dim %d is negative (%lld)", i,
                           (long long)shape[i]);
    return CHM_OK;
}

chm_status chm_tensor_view(const chm_tensor *src, int64_t elem_offset, int ndim,
                           const int64_t *shape, chm_tensor *out, chm_err *err) {
    chm_status rc = check_shape(ndim, shape, err);
    if (rc) return rc;
    chm_tensor v = chm_tensor_make(src->buf, 0, src->dtype, ndim, shape);
    int64_t n = chm_tensor_numel(&v), have = chm_tensor_numel(src);
    if (elem_offset < 0 || elem_offset > have || n > have - elem_offset) {
        char a[96], b[96];
        return CHM_ERR(err, CHM_ERR_SHAPE,
                       "view %s at element %lld does not fit inside %s",
                       chm_tensor_describe(&v, a, sizeof a), (long long)elem_offset,
                       chm_tensor_describe(src, b, sizeof b));
    }
    v.offset = src->offset + (size_t)elem_offset * chm_dtype_size(src->dtype);
    *out = v;
    return CHM_OK;
}

chm_status chm_tensor_reshape(const chm_tensor *src, int ndim, const int64_t *shape,
                              chm_tensor *out, chm_err *err) {
    chm_status rc = check_shape(ndim, shape, err);
    if (rc) return rc;
    chm_tensor v = chm_tensor_make(src->buf, src->offset, src->dtype, ndim, shape);
    if (chm_tensor_numel(&v) != chm_tensor_numel(src)) {
        char a[96], b[96];
        return CHM_ERR(err, CHM_ERR_SHAPE, "cannot reshape %s to %s: element counts differ",
                       chm_tensor_describe(src, a, sizeof a), chm_tensor_describe(&v, b, sizeof b));
    }
    *out = v;
    return CHM_OK;
}
