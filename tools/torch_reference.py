#!/usr/bin/env python3
"""torch_reference.py: an independent PyTorch implementation of chimera's model.

It checks the C model (src/model/) against plain PyTorch autograd in float64
on the CPU. chimera writes its weights, one batch and its gradients:

    chimera model --config test --dump /tmp/ref [--seed N] [--jitter X]
    python3 tools/torch_reference.py /tmp/ref

and this script rebuilds the same architecture from the config stored in
model.safetensors' metadata, computes the loss parts and every parameter's
gradient with autograd, and compares: each loss part and each gradient
tensor must agree to --tol (default 1e-8) relative. It exits 0 when all
agree, 1 when one does not, and 0 with a "skipped" line when PyTorch is not
installed (pass --require to make that an error).

A trained checkpoint is checked the same way: its model.safetensors (which
carries the same "chimera.config" metadata) is dumped with its weights,
widened from f32 to f64, instead of fresh ones:

    chimera model --dump /tmp/ref --weights runs/NAME[/step-XXXXXXXX]
    python3 tools/torch_reference.py /tmp/ref

(a run directory means its newest checkpoint; the config and the batch
shape are the checkpoint's). tests/test_interop.c does this on a tiny run.

The architecture, written from DESIGN.md and model.h, not from the C code:
pre-RMSNorm layers x + mixer(norm1(x)), then + ffn(norm2(.)); attention
with rotate-half RoPE and GQA; Mamba-1 (in_proj split into x and z rows,
causal depthwise conv + SiLU, x_proj split into dt/B/C rows, dt_proj,
softplus(dt + dt_proj.bias), A = -exp(A_log), sequential scan, D skip,
SiLU(z) gate, out_proj); SwiGLU FFN or MoE (softmax router, top-k,
renormalised gates, per-expert capacity ceil(cf*K*R/E) filled first come
first served in token order, Switch balance loss and z-loss on the
pre-capacity top-k); mixture-of-depths (top ceil(capacity*T) scores per
sequence run the layer in order, increment scaled by sigmoid(score), BCE
aux loss towards the selection mask); MTP depth k: proj([norm_h(h_k-1);
norm_e(emb(t+k+1))]) -> one layer (mixer = pattern[0], dense FFN) ->
norm_out -> shared unembedding; tied or untied unembedding.

Results (torch 2.15 CPU, float64), worst relative difference over the six
loss parts and every gradient tensor:
  --config test (B=8, T=64, init weights)                          2.2e-15
  test with capacity_factor 0.75 (drops), untied, pattern AM, MoD on
  layers 1 and 2, MTP depth 2, B=4, T=33, --jitter 0.3             6.9e-15
  --config tiny with B=2, T=128, --jitter 0.05                     5.7e-15
tests/test_model_cmd.c runs one such comparison when torch is importable.
"""
import argparse
import json
import math
import struct
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None

DTYPES = {"F64": "float64", "F32": "float32", "I32": "int32", "BF16": "bfloat16", "F16": "float16"}


def load_safetensors(path):
    """The tensors (float64 or int64) and the metadata of a safetensors file."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = memoryview(buf)[8 + n:]
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        dt = getattr(torch, DTYPES[e["dtype"]])
        raw = bytearray(data[begin:end])
        t = torch.frombuffer(raw, dtype=dt) if raw else torch.empty(0, dtype=dt)
        t = t.reshape(e["shape"])
        out[name] = t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)
    return out, meta


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    """Rotate-half RoPE on x [B,T,H,D] at positions 0..T-1."""
    T, D = x.shape[1], x.shape[3]
    half = D // 2
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Reference:
    """The model as a function of a dict of parameter tensors."""

    def __init__(self, cfg, params):
        self.c, self.p = cfg, params
        self.aux = {"balance": [], "z": [], "bce": []}

    def w(self, name):
        return self.p[name]

    def attention(self, pre, x):
        c = self.c
        B, T, _ = x.shape
        H, Hk, D = c["heads"], c["kv_heads"], c["head_dim"]
        q = (x @ self.w(pre + "mixer.q_proj.weight").T).view(B, T, H, D)
        k = (x @ self.w(pre + "mixer.k_proj.weight").T).view(B, T, Hk, D)
        v = (x @ self.w(pre + "mixer.v_proj.weight").T).view(B, T, Hk, D)
        q, k = rope(q, c["rope_theta"]), rope(k, c["rope_theta"])
        k, v = k.repeat_interleave(H // Hk, dim=2), v.repeat_interleave(H // Hk, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        s = s.masked_fill(causal, float("-inf"))
        o = torch.einsum("bhts,bshd->bthd", s.softmax(-1), v).reshape(B, T, H * D)
        return o @ self.w(pre + "mixer.o_proj.weight").T

    def mamba(self, pre, x):
        m = self.c["mamba"]
        B, T, _ = x.shape
        Di, N, W, Rk = m["d_inner"], m["d_state"], m["d_conv"], m["dt_rank"]
        w_in, w_x = self.w(pre + "mixer.in_proj.weight"), self.w(pre + "mixer.x_proj.weight")
        xi, z = x @ w_in[:Di].T, x @ w_in[Di:].T
        conv = F.conv1d(F.pad(xi.transpose(1, 2), (W - 1, 0)),
                        self.w(pre + "mixer.conv1d.weight").unsqueeze(1),
                        self.w(pre + "mixer.conv1d.bias"), groups=Di)
        xc = F.silu(conv.transpose(1, 2))
        dtl, bm, cm = xc @ w_x[:Rk].T, xc @ w_x[Rk:Rk + N].T, xc @ w_x[Rk + N:].T
        dt = F.softplus(dtl @ self.w(pre + "mixer.dt_proj.weight").T
                        + self.w(pre + "mixer.dt_proj.bias"))
        A = -torch.exp(self.w(pre + "mixer.A_log"))
        h = torch.zeros(B, Di, N, dtype=torch.float64)
        ys = []
        for t in range(T):
            d = dt[:, t, :, None]
            h = torch.exp(d * A) * h + d * bm[:, t, None, :] * xc[:, t, :, None]
            ys.append((h * cm[:, t, None, :]).sum(-1) + self.w(pre + "mixer.D") * xc[:, t])
        y = torch.stack(ys, dim=1) * F.silu(z)
        return y @ self.w(pre + "mixer.out_proj.weight").T

    def ffn(self, pre, x):
        g, u = x @ self.w(pre + "ffn.w1.weight").T, x @ self.w(pre + "ffn.w3.weight").T
        return (F.silu(g) * u) @ self.w(pre + "ffn.w2.weight").T

    def moe(self, pre, x):
        c = self.c["moe"]
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        R, E, K = x.shape[0], c["experts"], c["top_k"]
        logits = x @ self.w(pre + "ffn.router.weight").T
        probs = logits.softmax(-1)
        idx = torch.topk(logits.detach(), K, dim=-1).indices                 # [R,K], best first
        chosen = probs.gather(1, idx)
        gates = chosen / chosen.sum(-1, keepdim=True)
        cap = min(max(math.ceil(c["capacity_factor"] * K * R / E), 1), R)
        onehot = F.one_hot(idx, E).reshape(R * K, E)                         # order (r, then k)
        slot = (onehot.cumsum(0) - 1)[torch.arange(R * K), idx.reshape(-1)]
        keep = (slot < cap).reshape(R, K).to(torch.float64)                 # first come, first served
        w1, w3, w2 = (self.w(pre + "ffn.experts." + n) for n in ("w1", "w3", "w2"))
        every = torch.stack([(F.silu(x @ w1[e].T) * (x @ w3[e].T)) @ w2[e].T for e in range(E)])
        picked = every[idx, torch.arange(R)[:, None]]                        # [R,K,C]
        out = (keep[..., None] * gates[..., None] * picked).sum(1)
        frac = F.one_hot(idx, E).sum((0, 1)).to(torch.float64) / (R * K)
        self.aux["balance"].append(E * (frac * probs.mean(0)).sum())
        self.aux["z"].append((torch.logsumexp(logits, -1) ** 2).mean())
        return out.reshape(shape)

    def layer(self, pre, x, mixer, moe):
        eps = self.c["norm_eps"]
        xn = rmsnorm(x, self.w(pre + "norm1.weight"), eps)
        h = x + (self.attention(pre, xn) if mixer == "A" else self.mamba(pre, xn))
        hn = rmsnorm(h, self.w(pre + "norm2.weight"), eps)
        return h + (self.moe(pre, hn) if moe else self.ffn(pre, hn))

    def mod_layer(self, pre, x, mixer, moe):
        B, T, C = x.shape
        score = (x @ self.w(pre + "mod.router.weight").T).squeeze(-1)          # [B,T]
        k = min(max(math.ceil(self.c["mod"]["capacity"] * T), 1), T)
        idx = torch.topk(score.detach(), k, dim=1).indices.sort(dim=1).values  # in order
        rows = idx[..., None].expand(B, k, C)
        xs, rs = x.gather(1, rows), score.gather(1, idx)
        delta = self.layer(pre, xs, mixer, moe) - xs
        out = x + torch.zeros_like(x).scatter_add(1, rows, torch.sigmoid(rs)[..., None] * delta)
        mask = torch.zeros(B, T, dtype=torch.float64).scatter(1, idx, 1.0)
        self.aux["bce"].append(F.binary_cross_entropy_with_logits(score, mask))
        return out

    def head(self, h, norm, targets):
        W = self.w("embed.weight" if self.c["tie_embeddings"] else "lm_head.weight")
        logits = rmsnorm(h, self.w(norm), self.c["norm_eps"]) @ W.T
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=-100)

    def loss(self, ids):
        c = self.c
        B, T = ids.shape[0], ids.shape[1] - 1
        emb = self.w("embed.weight")
        x = emb[ids[:, :T]]
        for l in range(c["n_layers"]):
            args = ("layers.%d." % l, x, c["mixers"][l], c["moe"]["layers"][l])
            x = self.mod_layer(*args) if c["mod"]["layers"][l] else self.layer(*args)
        parts = {"ce": self.head(x, "final_norm.weight", ids[:, 1:])}
        h, depth, mtp = x, c["mtp"]["depth"], []
        for k in range(depth):
            pre = "mtp.%d." % k
            tok = torch.cat([ids[:, k + 1:], ids.new_zeros(B, k)], 1)
            tgt = torch.cat([ids[:, k + 2:], ids.new_full((B, k + 1), -100)], 1)
            a = rmsnorm(h, self.w(pre + "norm_h.weight"), c["norm_eps"])
            e = rmsnorm(emb[tok], self.w(pre + "norm_e.weight"), c["norm_eps"])
            proj = self.w(pre + "proj.weight")
            h = self.layer(pre + "layer.", a @ proj[0].T + e @ proj[1].T, c["pattern"][0], False)
            mtp.append(self.head(h, pre + "norm_out.weight", tgt))
        zero = emb.new_zeros(())  # (emb's dtype and device: float64 on the cpu when checking)
        mean = lambda v: torch.stack(v).mean() if v else zero  # noqa: E731
        parts["mtp"] = mean(mtp)
        parts["mtp_depth"] = mtp
        parts["moe_balance"], parts["moe_z"] = mean(self.aux["balance"]), mean(self.aux["z"])
        parts["mod_aux"] = mean(self.aux["bce"])
        parts["total"] = (parts["ce"] + c["mtp"]["weight"] * parts["mtp"]
                          + c["moe"]["aux_weight"] * parts["moe_balance"]
                          + c["moe"]["z_weight"] * parts["moe_z"]
                          + c["mod"]["aux_weight"] * parts["mod_aux"])
        return parts


def rel(a, b):
    """Relative difference of two numbers or tensors (L2)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    den = max(float(b.norm()), 1e-300)
    return float((a - b).norm()) / den


# ---- a model from a config alone (no dump): for tools/bench/torch_bench.py ----
#
# `chimera config --config X` prints the resolved config as YAML plus a derived
# per-layer table in comments; `chimera model --config X` prints the parameter
# table. From those two this builds the config dict that model.safetensors'
# "chimera.config" metadata carries, and random parameters of the right names
# and shapes, so that Reference (or a faster subclass) runs at full size.

def _yaml_scalar(v):
    """A scalar of chimera's resolved YAML: int, float, bool, quoted string or flow list."""
    v = v.strip()
    if v.startswith("[") and v.endswith("]"):
        return [_yaml_scalar(e) for e in v[1:-1].split(",") if e.strip()]
    if v.startswith('"') and v.endswith('"'):
        return v[1:-1]
    if v in ("true", "false"):
        return v == "true"
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def parse_resolved_config(text):
    """The nested dict of `chimera config` output, and its derived layer rows (mixer, ffn, depth)."""
    root, rows = {}, []
    stack = [(-1, root)]  # (indent, dict) of the open mappings
    for line in text.splitlines():
        body = line.split("#", 1)
        fields = line.split()
        if len(fields) == 5 and fields[0] == "#" and fields[1].isdigit():
            rows.append(tuple(fields[2:]))  # "#  layer  mixer  ffn  depth"
            continue
        if not body[0].strip() or ":" not in body[0]:
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, val = body[0].strip().split(":", 1)
        if val.strip() == "auto" and len(body) > 1 and "=" in body[1]:
            val = body[1].rsplit("=", 1)[1]  # "dt_rank: auto  # = ceil(d_model / 16) = 4"
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if val.strip():
            parent[key] = _yaml_scalar(val)
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root, rows


def config_dict(resolved_text):
    """The "chimera.config" dict (as `chimera model --dump` writes it) of `chimera config` output."""
    root, rows = parse_resolved_config(resolved_text)
    m = root["model"]
    mb, mo, mod = m["mamba"], m["moe"], m["mod"]
    if len(rows) != m["n_layers"]:
        raise ValueError("chimera config output: %d layer rows for %d layers" % (len(rows), m["n_layers"]))
    return {
        "vocab": m["vocab"], "d_model": m["d_model"], "n_layers": m["n_layers"],
        "mixers": "".join("A" if r[0] == "attention" else "M" for r in rows),
        "pattern": m["pattern"], "heads": m["heads"], "kv_heads": m["kv_heads"],
        "head_dim": m["head_dim"], "rope_theta": float(m["rope_theta"]), "norm_eps": float(m["norm_eps"]),
        "mamba": {"d_state": mb["d_state"], "d_conv": mb["d_conv"], "expand": mb["expand"],
                  "dt_rank": mb["dt_rank"], "d_inner": mb["expand"] * m["d_model"]},
        "ffn_hidden": m["ffn"]["hidden"],
        "moe": {"experts": mo["experts"], "top_k": mo["top_k"], "hidden": mo["hidden"],
                "capacity_factor": float(mo["capacity_factor"]), "aux_weight": float(mo["aux_weight"]),
                "z_weight": float(mo["z_weight"]), "layers": [r[1] == "moe" for r in rows]},
        "mod": {"layers": [r[2] == "routed" for r in rows], "capacity": float(mod["capacity"]),
                "aux_weight": float(mod["aux_weight"])},
        "mtp": {"depth": m["mtp"]["depth"], "weight": float(m["mtp"]["weight"])},
        "tie_embeddings": bool(m["tie_embeddings"]),
    }, root.get("train", {})


def parse_param_table(text):
    """[(name, shape)] of `chimera model` output, and the training FLOPs per token (or None)."""
    shapes, flops = [], None
    for line in text.splitlines():
        f = line.split(None, 1)
        if len(f) == 2 and f[1].startswith("[") and "]" in f[1]:
            dims = f[1][1:f[1].index("]")]
            shapes.append((f[0], [int(d) for d in dims.split(",")]))
        elif line.startswith("FLOPs per token") and "training" in line:
            num, unit = line.split("training", 1)[1].split()[:2]
            flops = float(num) * {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(unit[:1], 1.0)
    return shapes, flops


def describe_config(binary, config, sets=(), env=None):
    """Run `chimera config` and `chimera model` on a config: (cfg dict, train dict, [(name, shape)], FLOPs/token)."""
    import subprocess
    extra = [a for kv in sets for a in ("--set", kv)]
    run = lambda *cmd: subprocess.run([binary, *cmd, "--config", config, *extra], env=env, check=True,  # noqa: E731
                                      capture_output=True, text=True).stdout
    cfg, train = config_dict(run("config"))
    shapes, flops = parse_param_table(run("model"))
    return cfg, train, shapes, flops


def init_params(cfg, shapes, seed=0, dtype=None, device="cpu"):
    """Random parameters of the given names and shapes: GPT-style normal(0, 0.02) (residual outputs
    scaled by 1/sqrt(2 n_layers)), unit norms and D, Mamba's A_log = log(1..N) and dt bias = softplus^-1
    of log-uniform [1e-3, 1e-1]. Statistics only: benchmarks need sizes, not chimera's exact draws."""
    dtype = dtype or torch.get_default_dtype()
    gen = torch.Generator(device=device).manual_seed(seed)
    out, std = {}, 0.02
    for name, shape in shapes:
        last = name.rsplit(".", 2)
        t = torch.empty(shape, dtype=dtype, device=device)
        if "norm" in last[-2] or name.endswith("mixer.D"):
            t.fill_(1.0)
        elif name.endswith("A_log"):
            t.copy_(torch.log(torch.arange(1, shape[1] + 1, dtype=dtype, device=device)).expand(shape))
        elif name.endswith("dt_proj.bias"):
            dt = torch.exp(torch.empty(shape, dtype=dtype, device=device).uniform_(
                math.log(1e-3), math.log(1e-1), generator=gen))
            t.copy_(dt + torch.log(-torch.expm1(-dt)))
        elif name.endswith("conv1d.bias"):
            t.zero_()
        elif name.endswith("dt_proj.weight"):
            t.uniform_(-shape[1] ** -0.5, shape[1] ** -0.5, generator=gen)
        elif any(name.endswith(s) for s in ("out_proj.weight", "o_proj.weight", "w2.weight", "experts.w2")):
            t.normal_(0.0, std / math.sqrt(2 * cfg["n_layers"]), generator=gen)
        else:
            t.normal_(0.0, std, generator=gen)
        out[name] = t
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the directory written by `chimera model --dump DIR [--weights CKPT]`")
    ap.add_argument("--tol", type=float, default=1e-8, help="relative tolerance (default 1e-8)")
    ap.add_argument("--require", action="store_true", help="fail when PyTorch is missing")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every tensor")
    args = ap.parse_args()
    if torch is None:
        print("torch_reference: skipped: PyTorch is not installed (pip install torch)")
        return 1 if args.require else 0
    torch.set_default_dtype(torch.float64)
    params, meta = load_safetensors(args.dir + "/model.safetensors")
    grads, _ = load_safetensors(args.dir + "/grads.safetensors")
    ids = load_safetensors(args.dir + "/batch.safetensors")[0]["ids"]
    cfg, ours = json.loads(meta["chimera.config"]), json.loads(meta["chimera.loss"])
    for t in params.values():
        t.requires_grad_(True)
    parts = Reference(cfg, params).loss(ids)
    parts["total"].backward()
    worst, bad = 0.0, []
    for key in ("total", "ce", "mtp", "moe_balance", "moe_z", "mod_aux"):
        r = rel(ours[key], float(parts[key].detach()))
        worst = max(worst, r)
        print("loss %-12s torch %.15g  chimera %.15g  rel %.2e" % (key, float(parts[key].detach()), ours[key], r))
        if r > args.tol:
            bad.append("loss " + key)
    for name, p in params.items():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        r = rel(grads[name], g)
        worst = max(worst, r)
        if args.verbose or r > args.tol:
            print("grad %-44s |g| %.3e  rel %.2e" % (name, float(g.norm()), r))
        if r > args.tol:
            bad.append(name)
    print("torch_reference: %d parameter tensors, %d tokens; worst relative difference %.2e "
          "(tolerance %.0e): %s" % (len(params), ids.numel(), worst, args.tol,
                                     "OK" if not bad else "MISMATCH in " + ", ".join(bad)))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
