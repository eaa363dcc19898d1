#!/usr/bin/env python3
"""tools/sass_loops.py: static instruction counts of a CUDA kernel's main loop, from its SASS.

    tools/sass_loops.py FILE.cubin KERNEL_SUBSTRING [--per N]

Disassembles FILE with cuobjdump (CUOBJDUMP, else cuobjdump on PATH, else the copy that
tools/sass_tools.sh fetched into .sass-tools/, with nvdisasm), takes each kernel whose mangled name contains
KERNEL_SUBSTRING, finds its longest backward branch (the outer loop), and prints the loop's
instruction count split at its BAR.SYNCs, each part with its opcode histogram. --per N also
divides by N (e.g. 16 steps a chunk: the count per lane-step of the scan kernels).
No GPU is needed: this machine's nvcc builds the cubin (tools/sass_tools.sh shows how).
"""
import collections
import os
import re
import shutil
import subprocess
import sys


def cuobjdump():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".sass-tools",
                        "nvidia", "cu13", "bin", "cuobjdump")
    for c in (os.environ.get("CUOBJDUMP"), shutil.which("cuobjdump"), here):
        if c and os.path.exists(c):
            return c
    sys.exit("sass_loops: no cuobjdump: run tools/sass_tools.sh (fetches it from PyPI) "
             "or set CUOBJDUMP")


def kernels(path):
    tool = cuobjdump()
    env = dict(os.environ)  # cuobjdump runs nvdisasm, which the same wheels put beside it
    env["PATH"] = os.path.dirname(tool) + os.pathsep + env.get("PATH", "")
    r = subprocess.run([tool, "-sass", path], capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"sass_loops: cuobjdump -sass {path} failed: {r.stderr.strip()}")
    out = r.stdout
    for part in re.split(r"\n\s*Function : ", out)[1:]:
        name = part.split("\n", 1)[0].strip()
        ins = []
        for line in part.split("\n"):
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
            if m:
                ins.append((int(m.group(1), 16), m.group(2).strip()))
        yield name, ins


def opcode(s):
    s = re.sub(r"^@!?U?P\w+\s+", "", s)
    return s.split()[0].split(".")[0]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    per = 0
    if "--per" in sys.argv:
        per = int(sys.argv[sys.argv.index("--per") + 1])
        args = [a for a in args if a != str(per)]
    if len(args) != 2:
        sys.exit(__doc__)
    found = False
    for name, ins in kernels(args[0]):
        if args[1] not in name:
            continue
        found = True
        loop = None
        for a, s in ins:
            m = re.search(r"BRA\s+0x([0-9a-f]+)", s)
            if m and int(m.group(1), 16) < a:
                t = int(m.group(1), 16)
                if loop is None or a - t > loop[1] - loop[0]:
                    loop = (t, a)
        if loop is None:
            print(f"{name}: {len(ins)} instructions, no loop")
            continue
        body = [s for a, s in ins if loop[0] <= a <= loop[1]]
        parts, cur = [], []
        for s in body:
            cur.append(s)
            if opcode(s) == "BAR":
                parts.append(cur)
                cur = []
        parts.append(cur)
        scale = f" ({len(body) / per:.1f} per {per})" if per else ""
        print(f"{name}: {len(ins)} instructions, loop {len(body)}{scale}")
        for i, p in enumerate(parts):
            c = collections.Counter(opcode(s) for s in p)
            scale = f" ({len(p) / per:.1f})" if per else ""
            print(f"  part {i}: {len(p)}{scale}  " +
                  " ".join(f"{k}:{v}" for k, v in c.most_common(16)))
    if not found:
        sys.exit(f"sass_loops: no kernel matching {args[1]!r} in {args[0]}")


if __name__ == "__main__":
    main()
