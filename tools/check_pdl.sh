#!/usr/bin/env bash
# tools/check_pdl.sh: every CUDA kernel of cuda/ must start with chm_pdl_enter() and be
# launched through chm_launch (cuda/common.cuh): a kernel launched with programmatic stream
# serialization that touched memory before griddepcontrol.wait would race with the kernel
# before it. Fails, naming the file, on a `<<<` launch or a __global__ body without the call
# as its first statement. Run by tools/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - cuda/*.cu cuda/*.cuh <<'PY'
import re, sys
bad = []
for path in sys.argv[1:]:
    src = open(path).read()
    code = re.sub(r"//[^\n]*", "", src)  # comments may mention either
    for m in re.finditer(r"<<<", code):
        bad.append(f"{path}:{code[:m.start()].count(chr(10)) + 1}: a <<< launch (use chm_launch)")
    for m in re.finditer(r"__global__", code):
        brace, semi = code.find("{", m.end()), code.find(";", m.end())
        if semi != -1 and semi < brace:
            continue  # a declaration
        if not code[brace + 1:].lstrip().startswith("chm_pdl_enter();"):
            line = code[:m.start()].count("\n") + 1
            bad.append(f"{path}:{line}: a kernel whose first statement is not chm_pdl_enter()")
for b in bad:
    print("check_pdl:", b)
sys.exit(1 if bad else 0)
PY
echo "check_pdl: every kernel of cuda/ waits for its predecessor and is launched by chm_launch"
