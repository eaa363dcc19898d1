/*
 * bce_logits.comp: binary cross-entropy with logits (the MoD router's
 * auxiliary loss), one invocation per element. x, y, losses, dlogits [R]:
 *   losses[r]  = softplus(x) - y*x = max(x,0) - x*y + log1p(exp(-|x|))
 *   dlogits[r] = grad_scale * (sigmoid(x) - y)   (flag 1; WRITTEN, may be x itself)
 * Both forms are stable for any finite x; log1p is computed so that it
 * keeps its digits for tiny arguments (GLSL has no log1p). Also as _bf16
 * and _f16 (dt.glsl): x, y, dlogits 16-bit (dlogits rounded once on
 * store); losses stay f32.
 */
#version 450
#include "dt.glsl"
#include "common.glsl"

layout(binding = 0) readonly buffer X { DT x[]; };
layout(binding = 1) readonly buffer Y { DT y[]; };
layout(binding = 2) writeonly buffer Losses { float losses[]; };
layout(binding = 3) writeonly buffer Dx { DT dx[]; };

layout(push_constant) uniform Push {
    uint off[4];
    uint n, flags;
    float scale;
} p;

/* log(1+u) for u >= 0: the rounding error of 1+u cancels in log(w)*u/(w-1). */
float log1p_(float u) {
    float w = 1.0 + u;
    return w == 1.0 ? u : log(w) * u / (w - 1.0);
}

void main() {
    uint i = chm_index();
    if (i >= p.n) return;
    float xi = LOAD(x[p.off[0] + i]), yi = LOAD(y[p.off[1] + i]);
    float e = exp(-abs(xi));
    losses[p.off[2] + i] = max(xi, 0.0) - xi * yi + log1p_(e);
    if ((p.flags & 1u) != 0u) {
        float sig = xi >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        dx[p.off[3] + i] = STORE(p.scale * (sig - yi));
    }
}
