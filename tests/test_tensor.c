/* test_tensor.c: tensor descriptions, views, reshapes, the arena and the registry. */
#include "testutil.h"

Test(tensor, sizes_and_names) {
    cr_assert_eq(chm_dtype_size(CHM_F32), 4);
    cr_assert_eq(chm_dtype_size(CHM_F64), 8);
    cr_assert_eq(chm_dtype_size(CHM_BF16), 2);
    cr_assert_eq(chm_dtype_size(CHM_F16), 2);
    cr_assert_eq(chm_dtype_size(CHM_I32), 4);
    cr_assert_str_eq(chm_dtype_name(CHM_BF16), "bf16");
    cr_assert(!chm_dtype_is_float(CHM_I32));
    chm_tensor t = chm_tensor_3d(NULL, 0, CHM_F32, 2, 3, 5);
    cr_assert_eq(chm_tensor_numel(&t), 30);
    cr_assert_eq(chm_tensor_nbytes(&t), 120);
    cr_assert_eq(chm_tensor_rows(&t), 6);
    cr_assert_eq(chm_tensor_cols(&t), 5);
    char s[64];
    cr_assert_str_eq(chm_tensor_describe(&t, s, sizeof s), "[2, 3, 5] f32");
}

Test(tensor, views_stay_inside) {
    chm_tensor t = chm_tensor_2d(NULL, 64, CHM_F64, 4, 8), v;
    chm_err err = {0};
    cr_assert_eq(chm_tensor_view(&t, 8, 2, (int64_t[]){3, 8}, &v, &err), CHM_OK);
    cr_assert_eq(v.offset, 64 + 8 * 8);
    cr_assert_eq(chm_tensor_view(&t, 9, 2, (int64_t[]){3, 8}, &v, &err), CHM_ERR_SHAPE);
    cr_assert(strstr(err.msg, "does not fit") != NULL, "%s", err.msg);
    cr_assert_eq(chm_tensor_reshape(&t, 1, (int64_t[]){32}, &v, &err), CHM_OK);
    cr_assert_eq(chm_tensor_reshape(&t, 1, (int64_t[]){31}, &v, &err), CHM_ERR_SHAPE);
    cr_assert_eq(chm_tensor_reshape(&t, 5, (int64_t[]){1, 1, 1, 1, 32}, &v, &err), CHM_ERR_SHAPE);
}

Test(tensor, arena_bumps_aligns_and_rewinds) {
    chm_backend *be = tt_open_cpu();
    chm_arena a;
    chm_err err = {0};
    cr_assert_eq(chm_arena_init(&a, be, 4096, &err), CHM_OK);
    chm_tensor x, y, z;
    cr_assert_eq(chm_arena_alloc(&a, CHM_F32, 2, (int64_t[]){3, 7}, &x, &err), CHM_OK);
    size_t m = chm_arena_mark(&a);
    cr_assert_eq(chm_arena_alloc(&a, CHM_F64, 1, (int64_t[]){5}, &y, &err), CHM_OK);
    cr_assert_eq(y.offset % CHM_ARENA_ALIGN, 0);
    cr_assert(y.offset >= chm_tensor_nbytes(&x));
    chm_arena_release(&a, m);
    cr_assert_eq(chm_arena_alloc(&a, CHM_F64, 1, (int64_t[]){5}, &z, &err), CHM_OK);
    cr_assert_eq(z.offset, y.offset);
    cr_assert_eq(chm_arena_alloc(&a, CHM_F32, 1, (int64_t[]){100000}, &z, &err), CHM_ERR_NOMEM);
    cr_assert(a.peak >= a.used);
    chm_arena_free(&a);
    chm_backend_close(be);
}

Test(registry, names_and_auto) {
    chm_err err = {0};
    chm_backend *be = NULL;
    cr_assert_eq(chm_backend_open("auto", NULL, &be, &err), CHM_OK, "%s", err.msg);
    cr_assert(strncmp(be->why, "auto: ", 6) == 0, "why: %s", be->why);
    chm_backend_close(be);
    cr_assert_eq(chm_backend_open("tpu", NULL, &be, &err), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "choose auto, cpu, vulkan or cuda") != NULL, "%s", err.msg);
    cr_assert_eq(chm_backend_count(), 3);
}

Test(registry, checks_reject_foreign_and_out_of_bounds_tensors) {
    chm_backend *a = tt_open_cpu(), *b = tt_open_cpu();
    tt_tensor x = tt_alloc(a, CHM_F32, 1, (int64_t[]){8});
    cr_assert_eq(chm_fill(b, &x.t, 1.0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(b->err.msg, "copy it over first") != NULL, "%s", b->err.msg);
    chm_tensor past = x.t;
    past.shape[0] = 9;
    cr_assert_eq(chm_fill(a, &past, 1.0), CHM_ERR_SHAPE);
    tt_free(&x);
    chm_backend_close(a);
    chm_backend_close(b);
}
