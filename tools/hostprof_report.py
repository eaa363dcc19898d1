#!/usr/bin/env python3
"""tools/hostprof_report.py: read a tools/hostprof.c sample file and say where the host's CPU
time went: per thread, per library (leaf frame), per leaf symbol, and per innermost chimera
function on the stack (so that time inside the CUDA driver or cuBLASLt is charged to the
chimera function that called it).

    python3 tools/hostprof_report.py host.txt .gpu/bin/chimera [--lib-dir .gpu/lib] [--top 25]

Symbols come from addr2line (binutils) for the chimera binary and for libraries found here
(--lib-dir, or their own path); libraries only on the GPU machine (libcuda) show as
library+offset.
"""
import argparse
import collections
import os
import subprocess
import sys


def parse(path):
    samples, maps, in_maps = [], [], False
    with open(path) as f:
        for line in f:
            if line.startswith("# maps"):
                in_maps = True
                continue
            if line.startswith("#"):
                continue
            if in_maps:
                parts = line.split()
                if len(parts) >= 6 and "x" in parts[1]:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    maps.append((lo, hi, int(parts[2], 16), parts[5]))
            else:
                parts = line.split()
                if parts:
                    samples.append((int(parts[0]), [int(x, 16) for x in parts[1:]]))
    return samples, maps


def locate(maps, pc):
    for lo, hi, off, path in maps:
        if lo <= pc < hi:
            return path, pc - lo + off
    return "?", pc


def symbolize(binary, offsets):
    """offset -> function name, via one addr2line call per file."""
    if not offsets or not os.path.exists(binary):
        return {}
    offs = sorted(offsets)
    try:
        out = subprocess.run(["addr2line", "-f", "-C", "-e", binary] + [hex(o) for o in offs],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {o: out[2 * i] for i, o in enumerate(offs) if 2 * i < len(out)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples")
    ap.add_argument("chimera", help="the chimera binary that ran (the same build)")
    ap.add_argument("--lib-dir", help="folder with copies of the libraries (e.g. .gpu/lib)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--under", help="only samples with this chimera function on the stack (e.g. run_pass)")
    a = ap.parse_args()
    samples, maps = parse(a.samples)
    if not samples:
        sys.exit("no samples")
    exe = os.path.basename(a.chimera)
    # frames -> (file, offset); the return addresses point after the call: -1 to stay inside it
    framed = []
    wanted = collections.defaultdict(set)
    for tid, pcs in samples:
        fr = []
        for k, pc in enumerate(pcs[2:]):  # skip the handler and the signal trampoline
            path, off = locate(maps, pc if k == 0 else pc - 1)
            fr.append((path, off))
            wanted[path].add(off)
        framed.append((tid, fr))
    names = {}
    for path, offs in wanted.items():
        base = os.path.basename(path)
        local = a.chimera if base == exe else path
        if a.lib_dir and os.path.exists(os.path.join(a.lib_dir, base)):
            local = os.path.join(a.lib_dir, base)
        names[path] = symbolize(local, offs)

    def name(path, off):
        n = names.get(path, {}).get(off)
        b = os.path.basename(path)
        return f"{b}:{n}" if n and n != "??" else f"{b}+{off:#x}"

    n = len(framed)
    threads = collections.Counter(t for t, _ in framed)
    main_tid = threads.most_common(1)[0][0]
    print(f"{n} samples; threads (samples): " +
          ", ".join(f"{t}: {c}" for t, c in threads.most_common(6)))
    libs, leaf, ours = collections.Counter(), collections.Counter(), collections.Counter()
    chains, ops = collections.Counter(), collections.Counter()
    internal = ("chm_cuda_", "chm_cpu_", "chm_vk", "chm_cu_", "chm_check", "chm_fault", "chm_profile")
    for tid, fr in framed:
        if tid != main_tid or not fr:
            continue
        if a.under and not any(name(p, o) == f"{exe}:{a.under}" for p, o in fr):
            continue
        libs[os.path.basename(fr[0][0])] += 1
        leaf[name(*fr[0])] += 1
        mine = [name(p, o) for p, o in fr if os.path.basename(p) == exe]
        ours[mine[0] if mine else "(no chimera frame)"] += 1
        chains[" < ".join(mine[:4]) if mine else "(none)"] += 1
        api = [x for x in mine if x.startswith(exe + ":chm_") and not x[len(exe) + 1:].startswith(internal)]
        ops[api[0] if api else "(not under a chm_ call)"] += 1
    m = sum(libs.values())
    if a.under:
        print(f"{m} main-thread samples under {a.under}")
    if not m:
        sys.exit("no samples to report")
    for title, c in (("main thread by library (leaf frame)", libs), ("main thread by leaf symbol", leaf),
                     ("main thread by innermost chimera function (library time included)", ours),
                     ("main thread by chimera call chain (4 frames)", chains),
                     ("main thread by public chm_ function (op wrappers; all below included)", ops)):
        print(f"\n== {title}")
        for k, v in c.most_common(a.top):
            print(f"  {100.0 * v / m:5.1f}%  {k}")


if __name__ == "__main__":
    main()
