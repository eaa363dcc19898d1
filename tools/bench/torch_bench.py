#!/usr/bin/env python3
"""torch_bench.py: the PyTorch side of chimera's CUDA benchmarks (issue 7).

Measures, on one card in one run, what tools/cuda_opcheck.c --bench and
`chimera train` measure on the chimera side, with the same shapes, input
ranges and FLOP conventions, so that the two `== summary` blocks compare line
by line:

  attention  causal scaled_dot_product_attention in bf16 with the flash
             backend forced (torch.nn.attention.sdpa_kernel), and cuDNN's for
             reference; [B,T,H,D] tensors as chimera stores them (SDPA gets
             transposed views, no copies). Shapes: cuda_opcheck's
             8x2048 h16 d64 and 8x2048 h8 d128, and the same 16384 tokens as
             2x8192. FLOPs: fwd 2*B*H*T^2*D (the causal half of 4BHT^2D), bwd
             2.5x that, fwd+bwd 3.5x (cuda_opcheck's convention).
  scan       a chunked Mamba-1 selective scan in plain PyTorch (chunked_scan
             below: within-chunk cumulative sums of delta*A in log space, a
             recurrence over chunk states, fp32 math), eagerly and under
             torch.compile, fwd and fwd+bwd (all eight gradients), at
             cuda_opcheck's B8 T2048 Di2048 N16 with its input ranges; rates as
             multiples of cuda_opcheck's 3 TB/s memory floor.
  model      chimera-1b training (tools/torch_reference.py's architecture, a
             faster subclass below: SDPA, chunked scan, capacity-bounded MoE
             dispatch) with random weights, bf16 autocast, fp32 master
             weights, fused AdamW, grad clipping, torch.compile per layer
             (regional compilation); micro batch 8 x 2048 and the config's
             grad_accum. Prints tokens/s, MFU against 989 TFLOP/s (H100 SXM
             bf16 dense spec) and 766 TFLOP/s (cuBLASLt 4096^3 measured by
             cuda_opcheck), FLOPs/token from `chimera model`, and peak memory.

Timing: median of repeats after warm-up, CUDA events (perf_counter on the
cpu); the model's tokens/s is wall time over whole optimizer steps. Each part
runs alone (--only) and reports a failure (no flash kernel, out of memory,
compile error) and goes on. The model part needs the chimera binary for the
config and the parameter table (.gpu/bin/chimera, build/chimera or --chimera).

  python3 tools/bench/torch_bench.py                     # on the GPU machine
  python3 tools/bench/torch_bench.py --device cpu --quick  # tiny sizes, any cpu
  python3 tools/bench/torch_bench.py --selftest          # correctness checks, cpu

--selftest checks chunked_scan against a sequential float64 scan (outputs
and every gradient, several shapes, chunk boundaries, large decays), and the
benchmark model (float64, eager) against chimera's own losses and gradients
from `chimera model --config test --dump`.
"""
import argparse
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch_reference as tr  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PEAK_SPEC, PEAK_CUBLAS = 989e12, 766e12  # bf16 dense: H100 SXM spec; cuBLASLt 4096^3 (RESULTS.md)
FLOOR_BPS = 3.0e12                       # cuda_opcheck's memory floor for the scan


# ---- timing and results ----

def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median_ms(fn, dev, warm, reps):
    """Median milliseconds of reps calls of fn after warm calls (CUDA events on cuda)."""
    for _ in range(warm):
        fn()
    sync(dev)
    times = []
    if dev.type == "cuda":
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
        for e0, e1 in ev:
            e0.record()
            fn()
            e1.record()
        sync(dev)
        times = [e0.elapsed_time(e1) for e0, e1 in ev]
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class Results:
    """The rows of the summary and the JSON file."""

    def __init__(self):
        self.rows, self.notes = [], []

    def add(self, what, ms, rate, **values):
        self.rows.append({"what": what, "ms": ms, "rate": rate, **values})
        print("  %-44s %9.3f ms  %s" % (what, ms, rate), flush=True)

    def note(self, text):
        self.notes.append(text)
        print("  note: " + text, flush=True)


def uniform(shape, lo, hi, dev, dtype=torch.bfloat16):
    return torch.empty(shape, device=dev, dtype=torch.float32).uniform_(lo, hi).to(dtype)


# ---- attention ----

def attention_backends():
    from torch.nn.attention import SDPBackend
    return [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]


def bench_attention_shape(res, dev, B, T, H, D, backends, reps):
    """One shape: fwd, bwd and fwd+bwd of causal SDPA per backend."""
    from torch.nn.attention import sdpa_kernel
    q, k, v = (uniform((B, T, H, D), -1, 1, dev).requires_grad_(True) for _ in range(3))
    dout = uniform((B, T, H, D), -1, 1, dev).transpose(1, 2)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # [B,H,T,D] views of [B,T,H,D]
    sdpa = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)  # noqa: E731
    flops = 2.0 * B * H * T * T * D
    shape = "%dx%d h%d d%d" % (B, T, H, D)
    for name, be in backends:
        try:
            with sdpa_kernel(be):
                with torch.no_grad():
                    f = median_ms(sdpa, dev, 3, reps)
                out = sdpa()
                b = median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), dev, 3, reps)
                del out
                fb = median_ms(lambda: torch.autograd.grad(sdpa(), (q, k, v), dout), dev, 3, reps)
        except RuntimeError as e:  # "No available kernel" (flash/cuDNN missing or refusing the shape)
            res.note("sdpa %s unavailable at %s: %s" % (name, shape, str(e).splitlines()[0][:160]))
            continue
        tag = "sdpa %s" % name
        res.add("%s fwd %s" % (tag, shape), f, "%.1f TFLOP/s" % (flops / (f * 1e9)),
                tflops=flops / (f * 1e9))
        res.add("%s bwd %s" % (tag, shape), b, "%.1f TFLOP/s (2.5x fwd flops)" % (2.5 * flops / (b * 1e9)),
                tflops=2.5 * flops / (b * 1e9))
        res.add("%s fwd+bwd %s" % (tag, shape), fb, "%.1f TFLOP/s" % (3.5 * flops / (fb * 1e9)),
                tflops=3.5 * flops / (fb * 1e9))


def bench_attention(res, dev, quick):
    shapes = [(1, 128, 2, 64), (1, 128, 1, 128)] if quick else \
        [(8, 2048, 16, 64), (8, 2048, 8, 128), (2, 8192, 16, 64), (2, 8192, 8, 128)]
    print("\n== attention: causal SDPA, bf16, [B,T,H,D] (median of repeats)", flush=True)
    for B, T, H, D in shapes:
        bench_attention_shape(res, dev, B, T, H, D, attention_backends(), 3 if quick else 10)


# ---- selective scan ----

def sequential_scan(u, delta, A, Bm, Cm, D=None, z=None, delta_bias=None, softplus=True):
    """The Mamba-1 scan step by step in float64 (the oracle of chunked_scan; shapes as chunked_scan)."""
    f = lambda t: None if t is None else t.to(torch.float64)  # noqa: E731
    u, delta, A, Bm, Cm, D, z, delta_bias = map(f, (u, delta, A, Bm, Cm, D, z, delta_bias))
    d = delta + delta_bias if delta_bias is not None else delta
    d = F.softplus(d) if softplus else d
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(d[:, t, :, None] * A) * h + (d[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    y = torch.stack(ys, 1)
    if D is not None:
        y = y + D * u
    return y * F.silu(z) if z is not None else y


def chunked_scan(u, delta, A, Bm, Cm, D=None, z=None, delta_bias=None, softplus=True, chunk=64):
    """The Mamba-1 selective scan of chimera's chm_scan_args, chunked.

    u, delta, z [B,T,Di]; A [Di,N]; Bm, Cm [B,T,N]; D, delta_bias [Di]. With
    d = softplus(delta + delta_bias): h[t] = exp(d[t] A) h[t-1] + d[t] u[t] Bm[t],
    y[t] = (Cm[t].h[t] + D u[t]) silu(z[t]). Math in fp32 (float64 for float64
    inputs); y in u's dtype.

    Within a chunk of L steps, with c[t] = sum_{s<=t} d[s] A (a cumulative
    sum, <= 0 and falling when d >= 0 and A < 0), the state from a zero start
    is h[t] = exp(c[t]) sum_{s<=t} exp(-c[s]) d[s] u[s] Bm[s]: two cumulative
    sums in log space. c is taken relative to the chunk's middle step so that
    both exp(c) and exp(-c) stay inside fp32's range while a chunk's total
    decay |sum d A| is below ~170 (cuda_opcheck's inputs give about 60 at
    L = 64; chimera-1b's init, d <~ 0.1 and |A| <= 16, at most ~100). Chunk
    states then pass on by a recurrence over the T/L chunks.
    Tensors [B, chunks, Di, N, L] keep the chunk's time axis innermost.
    """
    Bsz, T, Di = u.shape
    N = A.shape[1]
    cd = torch.float64 if u.dtype == torch.float64 else torch.float32
    L = max(1, min(chunk, T))
    nc = (T + L - 1) // L
    pad = nc * L - T
    d = delta.to(cd) + (delta_bias.to(cd) if delta_bias is not None else 0.0)
    d = F.softplus(d) if softplus else d
    uu = u.to(cd)
    if pad:  # padded steps: d = 0 (no decay, no input); their outputs are dropped
        d, uu = F.pad(d, (0, 0, 0, pad)), F.pad(uu, (0, 0, 0, pad))
    chunks = lambda t, w: F.pad(t.to(cd), (0, 0, 0, pad)).view(Bsz, nc, L, w).transpose(2, 3)  # noqa: E731
    dl, ul = d.view(Bsz, nc, L, Di).transpose(2, 3), uu.view(Bsz, nc, L, Di).transpose(2, 3)
    Bl, Cl = chunks(Bm, N), chunks(Cm, N)                                  # [B,nc,N,L]
    c = torch.cumsum(dl[:, :, :, None, :] * A.to(cd)[:, :, None], dim=-1)  # [B,nc,Di,N,L]
    mid = c[..., (L - 1) // 2, None]
    cr = c - mid
    x = (dl * ul)[:, :, :, None, :] * Bl[:, :, None]
    inner = torch.cumsum(torch.exp(-cr) * x, dim=-1)                      # h[t] = exp(cr[t]) * inner[t]
    decay, ends = torch.exp(c[..., -1]), torch.exp(cr[..., -1]) * inner[..., -1]  # [B,nc,Di,N]
    state, starts = torch.zeros_like(decay[:, 0]), []
    for k in range(nc):  # the state entering chunk k
        starts.append(state)
        if k + 1 < nc:
            state = decay[:, k] * state + ends[:, k]
    h0 = torch.stack(starts, 1) * torch.exp(mid[..., 0])                   # rescaled to the middle step
    y = (torch.exp(cr) * (inner + h0[..., None]) * Cl[:, :, None]).sum(3)   # [B,nc,Di,L]
    y = y.transpose(2, 3).reshape(Bsz, nc * L, Di)[:, :T]
    if D is not None:
        y = y + D.to(cd) * uu[:, :T]
    if z is not None:
        y = y * F.silu(z.to(cd))
    return y.to(u.dtype)


def scan_inputs(B, T, Di, N, dev):
    """cuda_opcheck's scan inputs (bf16, same ranges): u, delta, A, Bm, Cm, D, z, delta_bias, and dy."""
    ins = [uniform((B, T, Di), -1, 1, dev), uniform((B, T, Di), -4, 0, dev),
           uniform((Di, N), -4, -0.5, dev), uniform((B, T, N), -1, 1, dev),
           uniform((B, T, N), -1, 1, dev), uniform((Di,), -1, 1, dev),
           uniform((B, T, Di), -2, 2, dev), uniform((Di,), -2, 0, dev)]
    return ins, uniform((B, T, Di), -1, 1, dev)


def bench_scan_mode(res, dev, name, fn, ins, dy, floors, reps, shape):
    """fwd and fwd+bwd of one scan function; returns False when it failed."""
    fb_floor, bb_floor = floors
    grads_of = [t.detach().requires_grad_(True) for t in ins]
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            fn(*ins)
        torch.autograd.grad(fn(*grads_of), grads_of, dy)
        sync(dev)
    except Exception as e:  # noqa: BLE001 (compile errors come in many types)
        res.note("scan %s failed: %s: %s" % (name, type(e).__name__, str(e).splitlines()[0][:200]))
        return False
    res.note("scan %s: first fwd and fwd+bwd (compile included) took %.1f s"
             % (name, time.perf_counter() - t0))
    with torch.no_grad():
        f = median_ms(lambda: fn(*ins), dev, 2, reps)
    fb = median_ms(lambda: torch.autograd.grad(fn(*grads_of), grads_of, dy), dev, 2, reps)
    floor_ms = lambda b: b / FLOOR_BPS * 1e3  # noqa: E731
    res.add("torch scan %s fwd %s" % (name, shape), f, "%.1fx the 3 TB/s floor" % (f / floor_ms(fb_floor)))
    res.add("torch scan %s fwd+bwd %s" % (name, shape), fb,
            "%.1fx the floor" % (fb / floor_ms(fb_floor + bb_floor)))
    return True


def bench_scan(res, dev, quick, chunk, compile_):
    B, T, Di, N = (2, 128, 64, 16) if quick else (8, 2048, 2048, 16)
    print("\n== scan: chunked selective scan (chunk %d, fp32 math), bf16 tensors B%d T%d Di%d N%d"
          % (chunk, B, T, Di, N), flush=True)
    ins, dy = scan_inputs(B, T, Di, N, dev)
    btd2, btn2 = B * T * Di * 2.0, B * T * N * 2.0  # cuda_opcheck's bytes: inputs once, outputs once
    # autograd writes fresh gradients: the backward reads u, delta, z, dy, Bm, Cm, writes 5
    floors = (4 * btd2 + 2 * btn2, 7 * btd2 + 4 * btn2)
    reps = 3 if quick else 10
    shape = "%dx%dx%d n%d" % (B, T, Di, N)

    def scan(*a):
        return chunked_scan(*a, chunk=chunk)
    bench_scan_mode(res, dev, "eager", scan, ins, dy, floors, reps, shape)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if compile_:
        bench_scan_mode(res, dev, "compiled", torch.compile(scan, dynamic=False), ins, dy, floors, reps,
                        shape)
    if dev.type == "cuda":
        res.note("scan: peak memory %.1f GiB" % (torch.cuda.max_memory_allocated(dev) / 2**30))


# ---- the model ----

def wide(t):
    """t in float64 when it is float64, else in float32 (routers and scores stay out of bf16)."""
    return t if t.dtype == torch.float64 else t.float()


def rope_fast(x, theta):
    """Rotate-half RoPE on x [B,T,H,D] at positions 0..T-1, in fp32 (float64 for float64)."""
    T, D = x.shape[1], x.shape[3]
    half = D // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64, device=x.device) / D)
    ang = torch.arange(T, dtype=torch.float64, device=x.device)[:, None] * inv[None, :]
    xf = wide(x)
    cos, sin = ang.cos().to(xf.dtype)[None, :, None, :], ang.sin().to(xf.dtype)[None, :, None, :]
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class Fast(tr.Reference):
    """torch_reference's model, written for speed: same math, any device and dtype.

    Attention by scaled_dot_product_attention; the Mamba scan by chunked_scan
    (optionally recomputed in the backward through torch.utils.checkpoint,
    which is what keeps 19 scans of chimera-1b inside 80 GB); MoE by a
    dispatch into [E, capacity, C] slots (the kept (token, expert) pairs of
    Reference.moe, first come first served) and batched matmuls, instead of
    every expert on every token; routers and MoD scores in fp32.
    """

    def __init__(self, cfg, params, chunk=64, ckpt_scan=False):
        super().__init__(cfg, params)
        self.chunk, self.ckpt_scan = chunk, ckpt_scan

    def attention(self, pre, x):
        c = self.c
        B, T, _ = x.shape
        H, Hk, D = c["heads"], c["kv_heads"], c["head_dim"]
        q = (x @ self.w(pre + "mixer.q_proj.weight").T).view(B, T, H, D)
        k = (x @ self.w(pre + "mixer.k_proj.weight").T).view(B, T, Hk, D)
        v = (x @ self.w(pre + "mixer.v_proj.weight").T).view(B, T, Hk, D)
        q, k = rope_fast(q, c["rope_theta"]), rope_fast(k, c["rope_theta"])
        if H != Hk:
            k, v = k.repeat_interleave(H // Hk, dim=2), v.repeat_interleave(H // Hk, dim=2)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)
        return o.transpose(1, 2).reshape(B, T, H * D) @ self.w(pre + "mixer.o_proj.weight").T

    def mamba(self, pre, x):
        m = self.c["mamba"]
        Di, N, W, Rk = m["d_inner"], m["d_state"], m["d_conv"], m["dt_rank"]
        xz = x @ self.w(pre + "mixer.in_proj.weight").T
        xi, z = xz[..., :Di], xz[..., Di:]
        conv = F.conv1d(F.pad(xi.transpose(1, 2), (W - 1, 0)),
                        self.w(pre + "mixer.conv1d.weight").unsqueeze(1),
                        self.w(pre + "mixer.conv1d.bias"), groups=Di)
        xc = F.silu(conv).transpose(1, 2)
        xdbl = xc @ self.w(pre + "mixer.x_proj.weight").T
        dtl, bm, cm = xdbl[..., :Rk], xdbl[..., Rk:Rk + N], xdbl[..., Rk + N:]
        dt = dtl @ self.w(pre + "mixer.dt_proj.weight").T  # bias and softplus inside the scan
        A = -torch.exp(self.w(pre + "mixer.A_log"))
        args = (xc, dt, A, bm, cm, self.w(pre + "mixer.D"), z, self.w(pre + "mixer.dt_proj.bias"))
        scan = lambda *a: chunked_scan(*a, chunk=self.chunk)  # noqa: E731
        y = checkpoint(scan, *args, use_reentrant=False) if self.ckpt_scan else scan(*args)
        return y @ self.w(pre + "mixer.out_proj.weight").T

    def moe(self, pre, x):
        c = self.c["moe"]
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        R, E, K = x.shape[0], c["experts"], c["top_k"]
        with torch.autocast(x.device.type, enabled=False):
            logits = wide(x) @ wide(self.w(pre + "ffn.router.weight")).T
        probs = logits.softmax(-1)
        idx = torch.topk(logits.detach(), K, dim=-1).indices                  # [R,K], best first
        chosen = probs.gather(1, idx)
        gates = chosen / chosen.sum(-1, keepdim=True)
        cap = min(max(math.ceil(c["capacity_factor"] * K * R / E), 1), R)
        flat = idx.reshape(-1)                                                # order (r, then k)
        slot = (F.one_hot(flat, E).cumsum(0) - 1).gather(1, flat[:, None])[:, 0]
        keep = slot < cap
        dest = torch.where(keep, flat * cap + slot, E * cap)                  # E*cap: the dropped
        token = torch.arange(R * K, device=x.device) // K
        slot_token = torch.full((E * cap + 1,), R, device=x.device, dtype=torch.long)
        slot_token = slot_token.scatter(0, dest, token)                       # empty slots read row R
        xin = torch.cat([x, x.new_zeros(1, x.shape[1])])[slot_token[:E * cap]].view(E, cap, -1)
        w1, w3, w2 = (self.w(pre + "ffn.experts." + n) for n in ("w1", "w3", "w2"))
        hid = F.silu(xin @ w1.transpose(1, 2)) * (xin @ w3.transpose(1, 2))   # [E,cap,hidden]
        yexp = (hid @ w2.transpose(1, 2)).reshape(E * cap, -1)
        picked = torch.cat([yexp, yexp.new_zeros(1, yexp.shape[1])])[dest].view(R, K, -1)
        out = ((gates * keep.view(R, K))[..., None] * picked).sum(1)
        frac = F.one_hot(idx, E).sum((0, 1)).to(probs.dtype) / (R * K)
        self.aux["balance"].append(E * (frac * probs.mean(0)).sum())
        self.aux["z"].append((torch.logsumexp(logits, -1) ** 2).mean())
        return out.reshape(shape)

    def mod_layer(self, pre, x, mixer, moe):
        B, T, C = x.shape
        with torch.autocast(x.device.type, enabled=False):
            score = (wide(x) @ wide(self.w(pre + "mod.router.weight")).T).squeeze(-1)  # [B,T]
        k = min(max(math.ceil(self.c["mod"]["capacity"] * T), 1), T)
        idx = torch.topk(score.detach(), k, dim=1).indices.sort(dim=1).values  # in order
        rows = idx[..., None].expand(B, k, C)
        xs, rs = x.gather(1, rows), score.gather(1, idx)
        delta = self.layer(pre, xs, mixer, moe) - xs
        out = x + torch.zeros_like(x).scatter_add(1, rows, (torch.sigmoid(rs)[..., None] * delta).to(x.dtype))
        mask = torch.zeros_like(score).scatter(1, idx, 1.0)
        self.aux["bce"].append(F.binary_cross_entropy_with_logits(score, mask))
        return out


class Regions:
    """One function per kind of layer (mixer, MoE or not, MoD or not) and one for the heads, each
    over a dict of its own parameters with the layer prefix stripped, so that every layer of a kind
    reuses one torch.compile'd graph (regional compilation: compile time of one layer, not 25)."""

    def __init__(self, cfg, params, chunk, ckpt_scan, compile_):
        self.cfg, self.params, self.chunk, self.ckpt_scan = cfg, params, chunk, ckpt_scan
        self.compile, self.fns, self.subs = compile_, {}, {}

    def sub(self, pre):
        if pre not in self.subs:
            self.subs[pre] = {k[len(pre):]: v for k, v in self.params.items() if k.startswith(pre)}
        return self.subs[pre]

    def fn(self, key):
        if key in self.fns:
            return self.fns[key]
        cfg, chunk, ckpt_scan = self.cfg, self.chunk, self.ckpt_scan
        if key[0] == "head":
            def run(sub, h, targets):
                return Fast(cfg, sub, chunk).head(h, "norm", targets)
        else:
            _, mixer, moe, mod = key

            def run(sub, x):
                m = Fast(cfg, sub, chunk, ckpt_scan)
                y = m.mod_layer("", x, mixer, moe) if mod else m.layer("", x, mixer, moe)
                return y, m.aux["balance"], m.aux["z"], m.aux["bce"]
        self.fns[key] = torch.compile(run, dynamic=False) if self.compile else run
        return self.fns[key]


class Regional(Fast):
    """Fast whose layers and heads run through Regions (compiled or not), optionally each layer
    recomputed in the backward (ckpt_layers)."""

    def __init__(self, cfg, params, regions, ckpt_layers=False):
        super().__init__(cfg, params)
        self.regions, self.ckpt_layers = regions, ckpt_layers

    def _run(self, key, pre, x):
        fn = self.regions.fn(key)
        sub = self.regions.sub(pre)
        x = wide(x)  # the residual stream in fp32 (MTP's comes in bf16): one compiled graph per kind
        y, bal, z, bce = checkpoint(fn, sub, x, use_reentrant=False) if self.ckpt_layers else fn(sub, x)
        self.aux["balance"] += bal
        self.aux["z"] += z
        self.aux["bce"] += bce
        return y

    def layer(self, pre, x, mixer, moe):
        return self._run(("layer", mixer, moe, False), pre, x)

    def mod_layer(self, pre, x, mixer, moe):
        return self._run(("layer", mixer, moe, True), pre, x)

    def head(self, h, norm, targets):
        out = "embed.weight" if self.c["tie_embeddings"] else "lm_head.weight"
        sub = {"norm": self.w(norm), out: self.w(out)}
        return self.regions.fn(("head",))(sub, wide(h), targets)


def find_chimera(path):
    """The chimera binary and the environment to run it with (.gpu/lib for a packed one)."""
    env = dict(os.environ)
    cands = [path] if path else [os.path.join(ROOT, ".gpu/bin/chimera"), os.path.join(ROOT, "build/chimera"),
                                 shutil.which("chimera")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            lib = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(c))), "lib")
            if os.path.isdir(lib):
                env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
            return c, env
    raise FileNotFoundError("no chimera binary (tried %s); pass --chimera PATH"
                            % ", ".join(c for c in cands if c))


def train_steps(model_of, params, opt, batches, accum, steps, dev):
    """steps optimizer steps of accum micro batches each; returns the wall seconds (synchronized)."""
    sync(dev)
    t0 = time.perf_counter()
    for s in range(steps):
        for i in range(accum):
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = model_of().loss(batches[(s * accum + i) % len(batches)])["total"]
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(dev)
    return time.perf_counter() - t0, float(loss.detach())


def bench_model_try(res, dev, args, desc, ckpt, compile_):
    """One attempt at the model benchmark with the given checkpointing and compile settings."""
    cfg, train, shapes, flops, B, T, accum = desc
    params = tr.init_params(cfg, shapes, seed=1, dtype=torch.float32, device=dev)
    plist = list(params.values())
    for p in plist:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(plist, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                            **({"fused": True} if dev.type == "cuda" else {"foreach": True}))
    gen = torch.Generator(device=dev).manual_seed(2)
    batches = [torch.randint(0, cfg["vocab"], (B, T + 1), device=dev, generator=gen) for _ in range(2)]
    regions = Regions(cfg, params, args.chunk, ckpt in ("scan", "layer"), compile_)
    model_of = lambda: Regional(cfg, params, regions, ckpt == "layer")  # noqa: E731
    warm, timed = (1, 2) if args.quick else (args.warmup_steps, args.steps)
    t_warm, loss0 = train_steps(model_of, plist, opt, batches, accum, warm, dev)
    res.note("model: %d warm-up step(s) (compile included) took %.1f s, loss %.4f" % (warm, t_warm, loss0))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    secs, loss = train_steps(model_of, plist, opt, batches, accum, timed, dev)
    tokens = timed * accum * B * T
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    tps = tokens / secs
    mode = "%s, ckpt %s" % ("compiled" if compile_ else "eager", ckpt)
    what = "torch %s train %dx%d x%d (%s)" % (args.config_name, B, T, accum, mode)
    res.add(what, secs / (timed * accum) * 1e3,
            "%.0f tokens/s, MFU %.1f%% of 989 / %.1f%% of 766 TFLOP/s, peak %s"
            % (tps, 100 * tps * flops / PEAK_SPEC, 100 * tps * flops / PEAK_CUBLAS,
               "%.1f GiB" % peak if dev.type == "cuda" else "n/a on cpu"),
            tokens_per_s=tps, mfu_spec=tps * flops / PEAK_SPEC, mfu_cublas=tps * flops / PEAK_CUBLAS,
            peak_gib=peak if dev.type == "cuda" else None, flops_per_token=flops, loss=loss, per="micro step")
    return True


def bench_model(res, dev, args):
    binary, env = find_chimera(args.chimera)
    name = args.config or ("test" if args.quick else "training_dolma")
    args.config_name = name
    sets = []
    if args.micro_batch:
        sets.append("train.micro_batch=%d" % args.micro_batch)
    if args.seq_len:
        sets.append("train.seq_len=%d" % args.seq_len)
    cfg, train, shapes, flops = tr.describe_config(binary, name, sets, env)
    B, T = train["micro_batch"], train["seq_len"]
    accum = args.accum or (1 if args.quick else train.get("grad_accum", 1))
    nparam = sum(math.prod(s) for _, s in shapes)
    print("\n== model: %s (%s), %.3f B parameters, micro batch %d x %d, grad_accum %d, %.4g GFLOP/token "
          "(chimera model), bf16 autocast, fp32 master weights, AdamW %s"
          % (name, binary, nparam / 1e9, B, T, accum, flops / 1e9,
             "fused" if dev.type == "cuda" else "foreach"), flush=True)
    desc = (cfg, train, shapes, flops, B, T, accum)
    tries = [(args.ckpt, not args.no_compile)]
    if args.ckpt != "layer":
        tries.append(("layer", not args.no_compile))
    if not args.no_compile:
        tries.append(("layer", False))
    for ckpt, comp in tries:
        try:
            return bench_model_try(res, dev, args, desc, ckpt, comp)
        except torch.cuda.OutOfMemoryError as e:
            res.note("model (ckpt %s) out of memory: %s" % (ckpt, str(e).splitlines()[0][:200]))
        except Exception as e:  # noqa: BLE001 (compile errors come in many types)
            if not comp:
                raise
            res.note("model with torch.compile failed: %s: %s" % (type(e).__name__, str(e).splitlines()[0][:200]))
        gc.collect()  # the failed attempt's tensors, before the next one allocates
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return False


# ---- self test ----

def rel_l2(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm()) / max(float(b.norm()), 1e-300)


def selftest_scan():
    """chunked_scan against sequential_scan: outputs and all gradients, f64 and f32."""
    g = torch.Generator().manual_seed(7)
    U = lambda shape, lo, hi: torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo  # noqa: E731
    worst = {"f64": 0.0, "f32": 0.0}
    cases = [(2, 1, 3, 4, 16, True, True), (1, 7, 5, 3, 4, True, False), (2, 33, 6, 4, 8, False, True),
             (1, 64, 4, 16, 16, True, True), (2, 50, 3, 2, 64, True, True)]
    for B, T, Di, N, L, opt, sp in cases:
        ins = [U((B, T, Di), -1, 1), U((B, T, Di), -4, 1) if sp else U((B, T, Di), 0.01, 0.5),
               U((Di, N), -4, -0.5), U((B, T, N), -1, 1), U((B, T, N), -1, 1)]
        ins += [U((Di,), -1, 1), U((B, T, Di), -2, 2), U((Di,), -2, 0)] if opt else [None, None, None]
        dy = U((B, T, Di), -1, 1)
        for dt, tol in ((torch.float64, 1e-11), (torch.float32, 2e-5)):
            xs = [t.to(dt).requires_grad_(True) if t is not None else None for t in ins]
            ref_in = [t.detach().requires_grad_(True) if t is not None else None for t in ins]
            y = chunked_scan(*xs, softplus=sp, chunk=L)
            yr = sequential_scan(*ref_in, softplus=sp)
            live = [i for i, t in enumerate(xs) if t is not None]
            ga = torch.autograd.grad(y, [xs[i] for i in live], dy.to(dt))
            gr = torch.autograd.grad(yr, [ref_in[i] for i in live], dy)
            errs = [rel_l2(y, yr)] + [rel_l2(a, b) for a, b in zip(ga, gr)]
            key = "f64" if dt == torch.float64 else "f32"
            worst[key] = max(worst[key], max(errs))
            if max(errs) > tol:
                print("selftest: chunked_scan %s B%d T%d Di%d N%d chunk %d: rel errors %s (tolerance %.0e)"
                      % (key, B, T, Di, N, L, ["%.1e" % e for e in errs], tol))
                return False
    # large decays: per-step |d A| up to ~10, 16-step chunks span up to ~130 (past e^88 without the
    # middle reference), in f32
    B, T, Di, N = 1, 48, 4, 4
    ins = [U((B, T, Di), -1, 1), U((B, T, Di), 1.5, 2.5), U((Di, N), -4, -3), U((B, T, N), -1, 1),
           U((B, T, N), -1, 1)]
    y = chunked_scan(*[t.float() for t in ins], chunk=16, softplus=True)
    e = rel_l2(y, sequential_scan(*ins))
    print("selftest: chunked_scan vs sequential f64 scan: worst rel L2 f64 %.1e, f32 %.1e, f32 large decays %.1e"
          % (worst["f64"], worst["f32"], e))
    return e < 1e-5 and bool(torch.isfinite(y).all())


def selftest_model(binary, env):
    """The benchmark model (f64, eager; plain and regional with checkpointing) against chimera's dump."""
    with tempfile.TemporaryDirectory() as tmp:
        # MoD on a Mamba layer too, untied, MTP depth 2, drops: every path of Fast
        sets = ["model.mod.layers=[1,3]", "model.tie_embeddings=false", "model.mtp.depth=2",
                "model.moe.capacity_factor=0.75", "train.micro_batch=2", "train.seq_len=40"]
        cmd = [binary, "model", "--config", "test", "--dump", tmp, "--jitter", "0.2", "--seed", "5"]
        subprocess.run(cmd + [a for kv in sets for a in ("--set", kv)], env=env, check=True, capture_output=True)
        params, meta = tr.load_safetensors(tmp + "/model.safetensors")
        grads, _ = tr.load_safetensors(tmp + "/grads.safetensors")
        ids = tr.load_safetensors(tmp + "/batch.safetensors")[0]["ids"]
        cfg, ours = json.loads(meta["chimera.config"]), json.loads(meta["chimera.loss"])
        cfg2, _, shapes, _ = tr.describe_config(binary, "test", sets, env)
        ok = cfg2 == cfg and sorted(shapes) == sorted((k, list(v.shape)) for k, v in params.items())
        print("selftest: config dict and parameter table from `chimera config/model` %s the dump's"
              % ("match" if ok else "DO NOT match"))
        variants = [("Fast", lambda p: Fast(cfg, p, chunk=16)),
                    ("Regional, checkpointed", lambda p: Regional(
                        cfg, p, Regions(cfg, p, 16, True, False), ckpt_layers=True))]
        for name, make in variants:
            p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
            parts = make(p).loss(ids)
            parts["total"].backward()
            worst = max(tr.rel(ours[k], float(parts[k].detach())) for k in ("total", "ce", "mtp", "moe_balance",
                                                                   "moe_z", "mod_aux"))
            gw = max(tr.rel(grads[k], v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in p.items())
            print("selftest: %s model (f64) vs chimera: loss parts %.1e, gradients %.1e" % (name, worst, gw))
            ok = ok and worst < 1e-9 and gw < 1e-8
    return ok


def selftest(args):
    torch.manual_seed(0)
    ok = selftest_scan()
    try:
        binary, env = find_chimera(args.chimera)
    except FileNotFoundError as e:
        print("selftest: model check skipped: %s" % e)
    else:
        ok = selftest_model(binary, env) and ok
    print("torch_bench selftest: %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


# ---- main ----

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test config), for checking the script")
    ap.add_argument("--only", default="attention,scan,model", help="comma list of attention, scan, model")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--selftest", action="store_true", help="run the correctness checks (cpu) and exit")
    ap.add_argument("--chunk", type=int, default=64, help="chunk length of the chunked scan (default 64)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (eager only)")
    ap.add_argument("--chimera", metavar="BIN", help="the chimera binary (default .gpu/bin/chimera, build/chimera)")
    ap.add_argument("--config", help="model config (default training_dolma; test with --quick)")
    ap.add_argument("--micro-batch", type=int, help="override train.micro_batch")
    ap.add_argument("--seq-len", type=int, help="override train.seq_len")
    ap.add_argument("--accum", type=int, help="micro batches per optimizer step (default: the config's grad_accum)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps (default 3)")
    ap.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first, compile included (default 1)")
    ap.add_argument("--ckpt", choices=("scan", "layer", "none"), default="scan",
                    help="recompute in the backward: each scan (default), each layer, or nothing; "
                         "out of memory falls back to layer")
    args = ap.parse_args()
    if args.selftest:
        return selftest(args)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("torch_bench: no CUDA device (torch %s); use --device cpu" % torch.__version__)
        return 77
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (%d threads)" % torch.get_num_threads()
    print("torch_bench on %s: torch %s, CUDA %s%s" % (name, torch.__version__, torch.version.cuda,
                                                      ", quick" if args.quick else ""), flush=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    res, failed = Results(), []
    parts = {"attention": lambda: bench_attention(res, dev, args.quick),
             "scan": lambda: bench_scan(res, dev, args.quick, args.chunk, not args.no_compile),
             "model": lambda: bench_model(res, dev, args)}
    t_all = time.perf_counter()
    for part in args.only.split(","):
        if part not in parts:
            print("torch_bench: unknown part %r (attention, scan, model)" % part)
            return 2
        try:
            if parts[part]() is False:
                failed.append(part)
        except Exception as e:  # noqa: BLE001 (report and go on with the next part)
            res.note("%s failed: %s: %s" % (part, type(e).__name__, str(e).splitlines()[0][:300]))
            failed.append(part)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    print("\n== summary (%s, torch %s)" % (name, torch.__version__))
    for r in res.rows:
        print("  %-44s %9.3f ms  %s" % (r["what"], r["ms"], r["rate"]))
    print("  (%.0f s in all%s)" % (time.perf_counter() - t_all, "; failed: " + ", ".join(failed) if failed else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                       "args": {k: v for k, v in vars(args).items()}, "rows": res.rows, "notes": res.notes,
                       "failed": failed}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
