/*
 * profile.h: per-op device times of a backend (CHIMERA_PROFILE=1, or the
 * --profile option of `chimera train` and `chimera plan`).
 *
 * Every op wrapper's final call (chm_fault_after in check.c) records an
 * event on the backend's stream after the op; the time between an op's
 * event and the previous one is that op's: its device time plus any idle
 * gap before it (so launch-bound ops show up too); the first op only starts
 * the clock. Events come from a pool;
 * when it is full the backend is synchronised once and the times are added
 * up per op. chm_backend_close prints the table to stderr, most expensive
 * op first. CHIMERA_PROFILE=shapes gives each matmul shape its own row,
 * with its TFLOP/s.
 */
#ifndef CHIMERA_BACKEND_PROFILE_H
#define CHIMERA_BACKEND_PROFILE_H

#include "chimera/backend.h"

/* Start profiling be when CHIMERA_PROFILE is set to anything but "" or "0" (registry). */
void chm_profile_open(chm_backend *be);

/* Record the end of op `op` (a string literal) on be's stream. */
void chm_profile_after(chm_backend *be, const char *op);

/* The row label of one GEMM call: "op MxNxK[ xbatch] [tA][tB]" under CHIMERA_PROFILE=shapes
 * (interned in the profile, with 2*M*N*K*batch flops per call for the TFLOP/s column), else op. */
const char *chm_profile_gemm_label(chm_backend *be, const char *op, int64_t M, int64_t N, int64_t K,
                                   int64_t batch, bool trans_a, bool trans_b);

/* Print the table to stderr and free the profile (before the backend closes). */
void chm_profile_close(chm_backend *be);

#endif
