/*
 * schedule.c: learning-rate schedules (chimera/optim.h): linear warmup, then
 * cosine, linear, warmup-stable-decay or constant.
 *
 * Steps are 0-based optimizer steps. Every decaying schedule is written as a
 * progress p in [0, 1] from its decay start s0 (lr) to the last step S-1
 * (min_lr), so that the formulas share one definition of "start" and "end"
 * and the tests can check both ends exactly.
 */
#include "chimera/optim.h"

#include <math.h>

/* pi (M_PI is not in strict C11). */
static const double PI = 3.14159265358979323846;

/* Progress in [0, 1] from step s0 (0) to step last (1); 1 when there is no room. */
static double progress(int64_t step, int64_t s0, int64_t last) {
    if (last <= s0) return step >= s0 ? 1.0 : 0.0;
    double p = (double)(step - s0) / (double)(last - s0);
    return p < 0 ? 0 : p > 1 ? 1 : p;
}

/* First step of the decay of a warmup-stable-decay schedule. */
static int64_t wsd_start(const chm_config_train *tc, int64_t S) {
    int64_t decay = (int64_t)llround(tc->decay_frac * (double)S);
    int64_t s0 = S - decay;
    return s0 < tc->warmup ? tc->warmup : s0;
}

double chm_lr_at(const chm_config_train *tc, int64_t step) {
    double lr = tc->lr, lo = tc->min_lr;
    int64_t S = tc->total_steps, W = tc->warmup;
    if (step < 0) step = 0;
    if (step < W) return lr * (double)(step + 1) / (double)W;
    switch (tc->schedule) {
    case CHM_CONFIG_SCHEDULE_COSINE:
        return lo + (lr - lo) * 0.5 * (1.0 + cos(PI * progress(step, W, S - 1)));
    case CHM_CONFIG_SCHEDULE_LINEAR:
        return lr - (lr - lo) * progress(step, W, S - 1);
    case CHM_CONFIG_SCHEDULE_WSD: {
        int64_t s0 = wsd_start(tc, S);
        return step < s0 ? lr : lr - (lr - lo) * progress(step, s0, S - 1);
    }
    case CHM_CONFIG_SCHEDULE_CONSTANT:
    default:
        return lr;
    }
}
