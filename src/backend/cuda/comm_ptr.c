/*
 * comm_ptr.c: what the NCCL transport (src/comm/comm_nccl.c) needs from the
 * cuda backend: a tensor's device address, the backend's stream (collectives
 * are enqueued on it, in order with the compute), its device, and a second
 * stream for the collectives that overlap the compute (the gradient buckets).
 * Kept here so that src/comm never reads the backend's context directly.
 */
#include "cuda_backend.h"

void *chm_cuda_comm_ptr(const chm_tensor *t) { return chm_cuda_ptr(t); }

cudaStream_t chm_cuda_comm_stream(chm_backend *be) { return chm_cuda_ctx_of(be)->stream; }

int chm_cuda_comm_device(chm_backend *be) { return chm_cuda_ctx_of(be)->device; }

cudaError_t chm_cuda_comm_side_stream(chm_backend *be, cudaStream_t *out) {
    cudaError_t e = cudaSetDevice(chm_cuda_ctx_of(be)->device);
    return e == cudaSuccess ? cudaStreamCreateWithFlags(out, cudaStreamNonBlocking) : e;
}
