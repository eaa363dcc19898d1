// selective_scan_bwd_w16.cu: the selective scan backward's main kernel as chimera-1b calls it,
// in blocks of 16 warps (128 channels) instead of 8 (selective_scan_bwd.cu launches it and
// runs the finish kernel). One block an SM either way (16 warps at 128 registers), but each
// block's dBm/dCm partials now cover 128 channels: half the partials for the finish kernel to
// write and read (134 MB -> 67 MB of traffic at chimera-1b's call), -14 us, 1.4% of the scan's
// fwd+bwd on an H100 (tools/bench/RESULTS.md, session 22). Its 196 KiB of shared memory fit
// only an sm_90; elsewhere, and for f32 (which would need 262), the 8-warp kernels run.
#define SCAN_WARPS 16
#include "selective_scan_bwd.cuh"

static_assert(SCAN_MINB == 1, "one 16-warp block an SM at 128 registers");

cudaError_t chm_cu_scan_bwd_w16(const chm_cu_scan *a, const scan_k &k, const scan_g &g,
                                int64_t *nblk, cudaStream_t s) {
    *nblk = 0;
    size_t bytes = scan_sm_bytes(sizeof(bf16), true, true);
    if (a->dt != CHM_BF16 || !scan_full_ok(a, k, true) || !scan_smem_fits(bytes))
        return cudaSuccess;
    *nblk = a->Di / SCAN_CB;
    return scan_launch(scan_bwd_kernel<bf16, true, true, true, true, true>, scan_grid(a), bytes, s,
                       k, g);
}
