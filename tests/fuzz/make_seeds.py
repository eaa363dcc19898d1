#!/usr/bin/env python3
"""make_seeds.py: write the seed corpora of the libFuzzer targets (tests/fuzz/<name>/).

Small valid and near-valid inputs for each parser, made from scratch (no shared
data is copied). Deterministic: running it again rewrites the same files. Needs
the `zstd` command for the zstd seeds. Usage: python3 tests/fuzz/make_seeds.py
"""
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, mtime=0)


def zst(data):
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


# ---- config (YAML) ---------------------------------------------------------------------
SMALL = """model:
  vocab: 264
  d_model: 16
  n_layers: 2
  pattern: "MA"
  heads: 2
  kv_heads: 1
  mamba: {d_state: 4, dt_rank: auto}
  moe: {experts: 2, top_k: 1, every: 2, hidden: 16}
  mod: {layers: [1], capacity: 0.5}
  mtp: {depth: 1, weight: 0.3}
train:
  micro_batch: 2
  seq_len: 16
  steps: 6
  lr: 3.0e-3
  schedule: wsd
  betas: [0.9, 0.95]
  on_save_error: continue
data: {train: builtin, val: "", tokenizer: byte}
backend: cpu
precision: f32
warnings: false
"""


def config_seeds():
    put("config", "small.yaml", SMALL)
    put("config", "tokens.yaml", SMALL.replace("steps: 6", 'tokens: "10K"'))
    put("config", "set_override.yaml", "#set model.mod.layers=[0, 1]\n" + SMALL)
    put("config", "set_new_key.yaml", "#set train.warmup=2\n" + SMALL)
    put("config", "anchors.yaml", SMALL.replace("d_model: 16", "d_model: &w 16").replace(
        "hidden: 16", "hidden: *w"))
    put("config", "bad_type.yaml", SMALL.replace("d_model: 16", "d_model: [16]"))
    put("config", "unknown_key.yaml", SMALL.replace("heads: 2", "hedas: 2"))
    put("config", "flow.yaml", '{model: {vocab: 300, d_model: 4, n_layers: 1, pattern: A, heads: 1}, '
        'train: {micro_batch: 1, seq_len: 2, steps: 1, lr: 0.1}}\n')
    put("config", "syntax.yaml", "model:\n  vocab: [1, 2\n")


# ---- tokenizer.json ---------------------------------------------------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tokenizer(merges, added, pre, normalizer=None, extra=None):
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
           "normalizer": normalizer, "pre_tokenizer": pre,
           "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                       "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None,
                     "continuing_subword_prefix": None, "end_of_word_suffix": None,
                     "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                     "merges": [a + " " + b for a, b in merges]}}
    if extra:
        doc.update(extra)
    return json.dumps(doc, ensure_ascii=False, indent=None)


def tokenizer_seeds():
    G = "\u0120"  # the byte-level character of ' '
    merges = [("t", "h"), ("h", "e"), ("th", "e"), (G, "t"), (G + "t", "he"), ("a", "b"), ("i", "n")]
    eos = [{"id": 256 + len(merges), "content": "<|endoftext|>", "single_word": False,
            "lstrip": False, "rstrip": False, "normalized": False, "special": True}]
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    put("tokenizer", "bytelevel.json", tokenizer(merges, eos, bl))
    split = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated",
         "invert": False},
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext",
         "invert": False},
        dict(bl, use_regex=False)]}
    put("tokenizer", "split_nfc.json", tokenizer(merges, eos, split, {"type": "NFC"}))
    added = eos + [{"id": 256 + len(merges) + 1, "content": " caf\u00e9", "single_word": True,
                    "lstrip": True, "rstrip": False, "normalized": True, "special": False}]
    put("tokenizer", "added.json", tokenizer(merges, added, bl,
                                             {"type": "Sequence", "normalizers": [{"type": "NFC"}]}))
    lists = json.loads(tokenizer(merges, eos, bl))
    lists["model"]["merges"] = [[a, b] for a, b in merges]
    lists["model"]["ignore_merges"] = True
    put("tokenizer", "list_merges.json", json.dumps(lists, ensure_ascii=False))
    put("tokenizer", "bad_merge.json", tokenizer(merges + [("x", "q")], eos, bl).replace(
        '"x q"', '"x zz"'))
    put("tokenizer", "wrong_added_id.json", tokenizer(merges, [dict(eos[0], id=5000)], bl))
    put("tokenizer", "tiny.json", '{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},'
        '"merges":["a b"]},"added_tokens":[{"id":3,"content":"<x>","special":true}],'
        '"normalizer":null,"pre_tokenizer":{"type":"ByteLevel"},"decoder":{"type":"ByteLevel"}}')


# ---- Dolma JSON lines (first byte: 0 .jsonl, 1 .jsonl.gz, 2 .jsonl.zst) ----------------------
DOCS = (b'{"id": "a1", "text": "The cat sat on the mat.", "source": "fuzz"}\n'
        b'{"id": 7, "text": "caf\\u00e9 \\u4e2d\\u6587 \\ud83d\\ude00 and a tab\\t.", "added": "x"}\n'
        b'\n'
        b'{"id": "e", "text": ""}\n'
        b'{"id": "nul", "text": "a\\u0000b"}\r\n'
        b'{"id": "last", "text": "no newline at the end"}')
BROKEN = (b'{"id": "ok", "text": "good"}\n'
          b'{"id": "x", "text": "broken\n'
          b'[1, 2, 3]\n'
          b'{"id": "y"}\n'
          b'{"id": "z", "text": 5}\n'
          b'{"id": "u", "text": "bad \xc3\x28 utf8"}\n'
          b'{"id": "ok2", "text": "good again"}\n')


def dolma_seeds():
    put("dolma", "plain.jsonl", b"\x00" + DOCS)
    put("dolma", "broken.jsonl", b"\x00" + BROKEN)
    put("dolma", "docs.gz", b"\x01" + gz(DOCS))
    put("dolma", "multimember.gz", b"\x01" + gz(DOCS[:60]) + gz(DOCS[60:]))
    put("dolma", "truncated.gz", b"\x01" + gz(BROKEN)[:-12])
    put("dolma", "garbage_after.gz", b"\x01" + gz(DOCS) + b"junk")
    put("dolma", "docs.zst", b"\x02" + zst(DOCS))
    put("dolma", "twoframes.zst", b"\x02" + zst(DOCS[:50]) + zst(BROKEN))
    put("dolma", "truncated.zst", b"\x02" + zst(BROKEN)[:-5])
    put("dolma", "skippable.zst", b"\x02" + b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd" + zst(DOCS))
    put("dolma", "plain_named_gz", b"\x01" + DOCS)
    put("dolma", "gz_named_plain", b"\x00" + gz(BROKEN))


# ---- safetensors --------------------------------------------------------------------------
def safetensors(tensors, metadata=None, pad=True):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    f32 = struct.pack("<6f", 1, -2, 3.5, 4, 5, 6)
    good = [("layers.0.mixer.in_proj.weight", "F32", [2, 3], f32),
            ("b", "F64", [2], struct.pack("<2d", 1e-300, -2.25)),
            ("ids", "I32", [1, 2, 1], struct.pack("<2i", 7, -8)),
            ("half", "BF16", [2], b"\x80\x3f\x00\xc0"),
            ("h16", "F16", [1], b"\x00\x3c"),
            ("scalar", "F32", [], struct.pack("<f", 42)),
            ("empty", "F32", [0, 5], b"")]
    put("safetensors", "good.safetensors", safetensors(good, {"format": "pt", "chimera.step": "3"}))
    put("safetensors", "nometa.safetensors", safetensors(good[:2], None, pad=False))
    put("safetensors", "empty.safetensors", safetensors([], {}))
    bad = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    put("safetensors", "overlapping.safetensors", struct.pack("<Q", len(bad)) + bad + bytes(12))
    unk = json.dumps({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}).encode()
    put("safetensors", "unknown_dtype.safetensors", struct.pack("<Q", len(unk)) + unk + bytes(8))
    put("safetensors", "past_eof.safetensors", struct.pack("<Q", 1000) + b"{}")
    put("safetensors", "huge_header.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    big = json.dumps({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16],
                            "data_offsets": [0, 8]}}).encode()
    put("safetensors", "overflow.safetensors", struct.pack("<Q", len(big)) + big + bytes(8))


# ---- trainer_state.json -------------------------------------------------------------------
MODEL_BYTES = b"chimera fuzz model.\n"  # fuzz_trainer_state.c writes it next to the state


def state(**over):
    s = {"format": "chimera-checkpoint", "version": 1, "chimera_version": "0.1.0", "step": 4,
         "tokens": 128, "adamw_updates": 4, "skipped_steps": 0, "elapsed_s": 1.5,
         "loader": {"seed": 1337, "epoch": 0, "position": 8, "train_windows": 100, "seq_len": 16},
         "rng": {"key": "0123456789abcdef", "counter": 0},
         "schedule": {"name": "cosine", "lr": 0.003, "min_lr": 0.0003, "warmup": 2,
                      "total_steps": 6, "decay_frac": 0.2, "last_lr": 0.002},
         "backend": "cpu", "device": "fuzz", "dtype": "f32", "config": SMALL,
         "files": {"model.safetensors": {"sha256": hashlib.sha256(MODEL_BYTES).hexdigest(),
                                         "bytes": len(MODEL_BYTES)}}}
    s.update(over)
    return json.dumps(s, indent=2)


def trainer_state_seeds():
    put("trainer_state", "good.json", state())
    put("trainer_state", "bad_sha.json", state(files={"model.safetensors": {"sha256": "00" * 32,
                                                                            "bytes": 20}}))
    put("trainer_state", "missing_file.json", state(files={
        "model.safetensors": {"sha256": hashlib.sha256(MODEL_BYTES).hexdigest(), "bytes": 20},
        "optimizer.safetensors": {"sha256": "ab" * 32, "bytes": 1}}))
    put("trainer_state", "dotdot.json", state(files={
        "model.safetensors": {"sha256": hashlib.sha256(MODEL_BYTES).hexdigest(), "bytes": 20},
        "..": {"sha256": "00" * 32, "bytes": 1}}))
    put("trainer_state", "bad_config.json", state(config="model: [1, 2"))
    put("trainer_state", "no_counters.json", state(step="four", loader=None))
    put("trainer_state", "version2.json", state(version=2))


# ---- npy / llm.c token files --------------------------------------------------------------
def npy(version, descr, shape, payload, fortran=False):
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    lenbytes = 2 if version == 1 else 4
    pre = 6 + 2 + lenbytes
    total = pre + len(d) + 1
    d += " " * (-total % 64) + "\n"
    head = b"\x93NUMPY" + bytes([version, 0])
    head += struct.pack("<H" if version == 1 else "<I", len(d))
    return head + d.encode() + payload


def npy_seeds():
    u2 = struct.pack("<8H", *range(8))
    u4 = struct.pack("<5I", 1, 2, 3, 70000, 5)
    put("npy", "v1_u2.npy", npy(1, "<u2", "(8,)", u2))
    put("npy", "v2_u4.npy", npy(2, "<u4", "(5,)", u4))
    put("npy", "v3_i4.npy", npy(3, "<i4", "(5,)", u4))
    put("npy", "f4.npy", npy(1, "<f4", "(5,)", u4))
    put("npy", "fortran.npy", npy(1, "<u2", "(8,)", u2, fortran=True))
    put("npy", "2d.npy", npy(1, "<u2", "(2, 4)", u2))
    put("npy", "short.npy", npy(1, "<u2", "(9,)", u2))
    put("npy", "empty.npy", npy(1, "<u2", "(0,)", b""))
    llmc = struct.pack("<256i", 20240520, 1, 8, *([0] * 253)) + u2
    put("npy", "llmc_v1.bin", llmc)
    put("npy", "llmc_v2.bin", struct.pack("<256i", 20240520, 2, 5, *([0] * 253)) + u4)
    put("npy", "raw_even", b"\x02" + bytes(15))
    put("npy", "raw_odd", b"\x00\x01" + bytes(5))


# ---- manifest.json ------------------------------------------------------------------------
SHARD0 = struct.pack("<8H", *range(8))       # fuzz_manifest.c writes these two shards
SHARD1 = struct.pack("<4H", 8, 9, 10, 11)
SIDE0 = b"0,5,in.jsonl,a\n5,8,in.jsonl,b\n"  # and their sidecars (only hashed)
SIDE1 = b"0,4,in.jsonl,c\n"


def manifest(**over):
    sh = [{"file": "part-00000.npy", "sidecar": "part-00000.csv.gz", "tokens": 8, "documents": 2,
           "bytes": 16, "sha256": hashlib.sha256(SHARD0).hexdigest(),
           "sidecar_sha256": hashlib.sha256(SIDE0).hexdigest()},
          {"file": "part-00001.npy", "sidecar": "part-00001.csv.gz", "tokens": 4, "documents": 1,
           "bytes": 8, "sha256": hashlib.sha256(SHARD1).hexdigest(),
           "sidecar_sha256": hashlib.sha256(SIDE1).hexdigest()}]
    m = {"format": "chimera-token-shards", "version": 1, "status": "complete", "tokenizer": "byte",
         "vocab_size": 257, "eos": 256, "dtype": "uint16", "shard_tokens": 8, "documents": 3,
         "tokens": 12, "skipped": {"lines": 0}, "errors": [], "shards": sh}
    m.update(over)
    return json.dumps(m, indent=2)


def manifest_seeds():
    put("manifest", "good.json", manifest())
    put("manifest", "partial.json", manifest(status="partial"))
    put("manifest", "uint32.json", manifest(dtype="uint32"))
    good = json.loads(manifest())
    for name, path in [("dotdot", "../part-00000.npy"), ("absolute", "/etc/passwd"),
                       ("inner_dotdot", "sub/../../x.npy"), ("empty_name", ""), ("dot", ".")]:
        m = json.loads(manifest())
        m["shards"][1]["file"] = path
        put("manifest", name + ".json", json.dumps(m))
    good["shards"][0]["tokens"] = 9
    put("manifest", "wrong_count.json", json.dumps(good))
    put("manifest", "missing_fields.json", '{"format": "chimera-token-shards", "status": '
        '"complete", "dtype": "uint16", "shards": [{"file": 3}]}')


if __name__ == "__main__":
    for t in ["config", "tokenizer", "dolma", "safetensors", "trainer_state", "npy", "manifest"]:
        shutil.rmtree(os.path.join(HERE, t), ignore_errors=True)
    config_seeds()
    tokenizer_seeds()
    dolma_seeds()
    safetensors_seeds()
    trainer_state_seeds()
    npy_seeds()
    manifest_seeds()
