#!/usr/bin/env python3
"""bench_tokenizer.py: encode throughput of chimera's tokenizer and of Hugging Face `tokenizers`
on the same documents, in one run, as a short table (not a test).

    python3 tools/bench_tokenizer.py [--binary build/chimera] [--tokenizer FILE]
                                     [--threads N] [--repeat R] [FILES...]

Defaults: the GPT-NeoX-20B tokenizer and the cc_en_head-*.jsonl.gz documents of
../shared/data, N = all cores, R = 20 passes after one warm-up pass. chimera runs its hidden
`chimera tokenizer bench`; HF runs Tokenizer.encode one document at a time (one thread) and
encode_batch (RAYON_NUM_THREADS=N); "cold caches" is chimera's warm-up pass alone (empty
per-thread word caches, one pass: noisy on small inputs). MB are MB of UTF-8 text (10^6 bytes). Both sides must
produce the same number of tokens, or the script says so and exits 1.
"""
import argparse
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "data")


def read_docs(files):
    docs = []
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            if ".json" in os.path.basename(path):
                docs += [json.loads(line)["text"] for line in f if line.strip()]
            else:
                docs.append(f.read())
    return docs


def chimera(binary, tokenizer, files, threads, repeat):
    out = subprocess.run([binary, "tokenizer", "bench", "--tokenizer", tokenizer, "--threads", str(threads),
                          "--repeat", str(repeat)] + files, capture_output=True, text=True, check=True).stdout
    mbs = float(re.search(r"s: ([0-9.]+) MB/s", out).group(1))
    tokens = int(re.search(r"MB, ([0-9]+) tokens per pass", out).group(1))
    cold = float(re.search(r"cold caches\) ([0-9.]+) MB/s", out).group(1))
    return mbs, tokens, cold


def hf_child(args):
    """Runs in a child process so that RAYON_NUM_THREADS is set before tokenizers starts."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(args.tokenizer)
    docs = read_docs(args.files)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    if args.hf_mode == "single":
        tokens = sum(len(tok.encode(d).ids) for d in docs)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            for d in docs:
                tok.encode(d)
    else:
        tokens = sum(len(e.ids) for e in tok.encode_batch(docs))
        t0 = time.perf_counter()
        tok.encode_batch(docs * args.repeat)
    print(json.dumps({"mbs": mb * args.repeat / (time.perf_counter() - t0), "tokens": tokens}))


def hf(args, mode, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    cmd = [sys.executable, __file__, "--hf-mode", mode, "--tokenizer", args.tokenizer, "--repeat",
           str(args.repeat)] + args.files
    r = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
    return r["mbs"], r["tokens"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "chimera"))
    ap.add_argument("--tokenizer", default=os.path.join(SHARED, "tokenizers", "gpt-neox-20b.json"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--hf-mode", choices=["single", "batch"], help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if not args.files:
        args.files = sorted(glob.glob(os.path.join(SHARED, "dolma", "cc_en_head-*.jsonl.gz")))
    if args.hf_mode:
        return hf_child(args)
    docs = read_docs(args.files)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"{os.path.basename(args.tokenizer)}: {len(docs)} documents, {mb:.3f} MB, {args.repeat} passes "
          f"after a warm-up, {os.cpu_count()} cores")
    mbs, tokens, cold = chimera(args.binary, args.tokenizer, args.files, 1, args.repeat)
    rows = [("chimera encode", 1, mbs, tokens), ("chimera encode, cold caches", 1, cold, tokens)]
    if args.threads > 1:
        mbs, tokens, _ = chimera(args.binary, args.tokenizer, args.files, args.threads, args.repeat)
        rows.append(("chimera encode", args.threads, mbs, tokens))
    rows.append(("HF tokenizers encode", 1, *hf(args, "single", 1)))
    rows.append(("HF tokenizers encode_batch", args.threads, *hf(args, "batch", args.threads)))
    print(f"{'engine':<28} {'threads':>7} {'MB/s':>9} {'MB/s/thread':>12} {'tokens':>9}")
    for name, th, mbs, tokens in rows:
        print(f"{name:<28} {th:>7} {mbs:>9.2f} {mbs / th:>12.2f} {tokens:>9}")
    if len({r[3] for r in rows}) != 1:
        print("token counts differ between engines", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
