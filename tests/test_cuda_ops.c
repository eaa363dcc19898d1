/*
 * test_cuda_ops.c: every op of the cuda backend against the cpu reference.
 *
 * The cases live in tools/cuda_opcheck.c (also a standalone program for the
 * GPU machine, tools/gpu_check.sh); this file runs each of them as one
 * Criterion test: the same random inputs on cpu (f32) and cuda (f32, then
 * bf16 with the cpu fed the bf16-rounded values), outputs poisoned with NaN
 * first, gradients starting from random values (backwards accumulate), f32
 * tolerances for f32 runs and bf16 ones (about 1e-2 relative) for bf16 runs;
 * integer outputs (router plans, top-k indices) and fill/cast bits exactly.
 * Without a usable CUDA device (or in a build without CUDA) every test is
 * skipped with the reason.
 */
#define CHM_OPCHECK_NO_MAIN
#include "../tools/cuda_opcheck.c"

#include <criterion/criterion.h>

/* Run the named case (f32 and bf16); skip without a GPU; fail with the first mismatch. */
static void run_named(const char *name) {
    oc_ctx x;
    char why[1024];
    if (!oc_open(&x, 7, why, sizeof why)) cr_skip_test("no usable CUDA device: %s", why);
    x.quiet = true;
    int found = 0;
    for (int i = 0; i < OC_NCASES; i++)
        if (!strcmp(oc_cases[i].name, name)) {
            oc_run_case(&x, &oc_cases[i]);
            found = 1;
        }
    int failures = x.failures, checks = x.checks;
    char first[1024];
    snprintf(first, sizeof first, "%s", x.first_failure);
    oc_close(&x);
    cr_assert(found, "no case named %s", name);
    cr_assert(checks > 0, "%s ran no checks", name);
    cr_assert_eq(failures, 0, "%s: %d of %d checks failed; first: %s", name, failures, checks,
                 first);
}

Test(cuda, memory_fill_cast_copy_bit_exact) { run_named("memory"); }
Test(cuda, elementwise_add_scale_axpy_sum_rows) { run_named("elementwise"); }
Test(cuda, rmsnorm_fwd_bwd) { run_named("rmsnorm"); }
Test(cuda, rope_fwd_bwd_in_place) { run_named("rope"); }
Test(cuda, swiglu_fwd_bwd) { run_named("swiglu"); }
Test(cuda, embedding_fwd_bwd_repeated_ids) { run_named("embedding"); }
Test(cuda, matmul_transposes_batches_bias_beta) { run_named("matmul"); }
Test(cuda, matmul_grouped_counts) { run_named("matmul_grouped"); }
Test(cuda, attention_simple_and_flash) { run_named("attention"); }
Test(cuda, selective_scan_fwd_bwd) { run_named("selective_scan"); }
Test(cuda, causal_conv1d_fwd_bwd) { run_named("causal_conv1d"); }
Test(cuda, router_topk_plan_and_bwd) { run_named("router"); }
Test(cuda, select_topk_ties) { run_named("select_topk"); }
Test(cuda, gather_and_deterministic_scatter) { run_named("rows"); }
Test(cuda, cross_entropy_chunked_and_in_place) { run_named("cross_entropy"); }
Test(cuda, adamw_flat_with_lowp_copy) { run_named("adamw"); }
Test(cuda, sum_squares_two_pass) { run_named("sum_squares"); }
Test(cuda, row_scale_fwd_bwd_in_place) { run_named("row_scale"); }
Test(cuda, exp_fwd_bwd_in_place) { run_named("exp"); }
Test(cuda, bce_logits_written_and_in_place) { run_named("bce_logits"); }
Test(cuda, moe_aux_losses_and_grad) { run_named("moe_aux"); }
Test(cuda, attention_decode_against_cache) { run_named("attention_decode"); }
Test(cuda, selective_scan_step_from_state) { run_named("selective_scan_step"); }
Test(cuda, data_errors_at_sync_and_f64_rejected) { run_named("errors"); }
