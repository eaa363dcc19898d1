// rope.cu: rotary position embedding ("rotate half"), forward and backward.
//
// x [B,T,H,D], D even; the pair (i, i+D/2) at position p = t + pos_offset turns
// by a = p * theta^(-2i/D). One thread per (b, t, i): the angle, its sine and
// cosine are computed once in double (positions reach thousands of radians,
// where an f32 angle would be off by 1e-3) and reused across the H heads.
// The backward turns by -a and ACCUMULATES into dx. In place is safe: each
// pair is read before it is written, by one thread.
#include "common.cuh"

template <typename T>
__global__ void rope_kernel(T *out, const T *x, int64_t BT, int64_t Tn, int64_t H, int64_t D,
                            double theta, int64_t pos_offset, float sign, int acc) {
    chm_pdl_enter();
    int64_t half = D / 2, n = BT * half;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t bt = k / half, i = k % half;
        double p = (double)(bt % Tn + pos_offset);
        double a = p * pow(theta, -2.0 * (double)i / (double)D);
        double sd, cd;
        sincos(a, &sd, &cd);
        float c = (float)cd, sn = sign * (float)sd;
        for (int64_t h = 0; h < H; h++) {
            int64_t j = (bt * H + h) * D + i;
            float x0 = to_f(x[j]), x1 = to_f(x[j + half]);
            float y0 = x0 * c - x1 * sn, y1 = x0 * sn + x1 * c;
            if (acc) {
                y0 += to_f(out[j]);
                y1 += to_f(out[j + half]);
            }
            out[j] = from_f<T>(y0);
            out[j + half] = from_f<T>(y1);
        }
    }
}

extern "C" cudaError_t chm_cu_rope(void *out, const void *x, int64_t B, int64_t T, int64_t H,
                                   int64_t D, double theta, int64_t pos_offset, int sign,
                                   bool accumulate, chm_dtype dt, cudaStream_t s) {
    int64_t n = B * T * (D / 2);
    if (n <= 0 || H <= 0) return cudaSuccess;
    CHM_CU_DISPATCH(dt, T_,
                    chm_launch(rope_kernel<T_>, grid_for(n, 128), 128, 0, s, (T_ *)out,
                               (const T_ *)x, B * T, T, H, D, theta, pos_offset, (float)sign,
                               accumulate ? 1 : 0));
    return cudaGetLastError();
}
