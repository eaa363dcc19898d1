#!/usr/bin/env python3
"""tokenizer_fixtures.py: write the tokenizer test fixtures under tests/data/tokenizer/ from
Hugging Face `tokenizers` (pip install tokenizers), and check chimera against them.

    python3 tools/tokenizer_fixtures.py --binary build/chimera [--shared ../shared/data]

Writes:
  neox_adversarial.json  adversarial strings (as hex bytes) and their full gpt-neox-20b ids;
                         invalid UTF-8 is decoded with errors="replace" before HF encodes it
  neox_dolma.json        per document of shared/data/dolma/cc_en_head-*.jsonl.gz: file, line,
                         doc id, number of ids, sha256 of the ids as little-endian uint32 and
                         the first 16 ids (no text, no full ids: the data is not copied)
  trained*.json          a GPT-2-style tokenizer trained by `chimera tokenizer train` on
                         generated text, plus variants of it that exercise Split pre-tokenizer
                         steps, NFC and added-token flags (HF loads each one)
  trained_expected.json  HF's ids for test strings under each trained*.json

Every expected id list is also checked against `chimera tokenizer encode`; the script exits
non-zero on any difference.
"""
import argparse
import copy
import gzip
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")

ZWJ_FAMILY = "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466"

# (name, text as str or bytes). bytes may be invalid UTF-8.
ADVERSARIAL = [
    ("empty", ""),
    ("hello", "Hello, world!"),
    ("emoji", "I \u2764\ufe0f tokenizers \U0001F600\U0001F44D"),
    ("emoji_skin_tones", "\U0001F44D\U0001F3FB \U0001F44D\U0001F3FD \U0001F44D\U0001F3FF\U0001F469\U0001F3FF\u200D\U0001F4BB"),
    ("emoji_zwj_family", "family: " + ZWJ_FAMILY + " and flag \U0001F3F3\ufe0f\u200D\U0001F308"),
    ("emoji_flags_keycaps", "\U0001F1FA\U0001F1F8\U0001F1EB\U0001F1F7 1\ufe0f\u20e3#\ufe0f\u20e3"),
    ("emoji_run", "\U0001F642" * 40),
    ("cjk_japanese", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca\u3002"),
    ("cjk_chinese", "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\uff0c\u6807\u70b9\u7b26\u53f7\u3002"),
    ("korean", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4"),
    ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645"),
    ("hebrew", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd"),
    ("bidi_mixed", "abc \u0645\u0631\u062d\u0628\u0627 123 \u05e9\u05dc\u05d5\u05dd!"),
    ("thai", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a"),
    ("devanagari", "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e"),
    ("greek_cyrillic", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0420\u0443\u0441\u0441\u043a\u0438\u0439"),
    ("nfd_e_acute", "cafe\u0301 re\u0301sume\u0301"),
    ("nfc_e_acute", "caf\u00e9 r\u00e9sum\u00e9"),
    ("nfd_angstrom", "A\u030a and \u212b and \u00c5"),
    ("nfd_hangul_jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab"),
    ("combining_order", "q\u0307\u0323 o\u0308\u0301 a\u0328\u0301"),
    ("combining_alone", "\u0301\u0308 x\u0344"),
    ("compat_not_nfc", "\ufb01 \u2460 \uff21\uff22 x\u00b2"),
    ("spaces_two", "a  b"),
    ("spaces_three", "a   b"),
    ("spaces_runs", "x" + "".join(" " * k + "y" for k in range(1, 30))),
    ("spaces_long", " " * 60 + "end"),
    ("newlines_mix", "\n\n\n  \n"),
    ("newlines_text", "line one\nline two\n\nline four\n\n\n"),
    ("tabs", "\tindented\t\ttext\t \t"),
    ("crlf", "dos\r\nlines\r\n\r\n"),
    ("leading_trailing", "   leading and trailing   "),
    ("unicode_spaces", "a\u00a0b\u3000c\u2009d\u2028e\u2029f\u0085g\u200bh"),
    ("mongolian_vowel_separator", "a\u180eb \u180e1\u180e x\u180e\u180e '\u180es\t\u180e \u180e\n"),
    ("control_chars", "\x00\x01\x02\x1f\x7f a\x0bb\x0cc \u0010x\u0010"),
    ("digits", "0123456789 42 007"),
    ("long_number", "3.14159265358979323846264338327950288419716939937510"),
    ("numbers_grouped", "1,000,000 and 12.5% of $3,499.99"),
    ("digits_other", "\u0663\u0664\u0665 \u2167 \u00b2\u00b3 \u0e51\u0e52"),
    ("contractions", "it's don't they're we've I'm you'll he'd"),
    ("contractions_upper", "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D 'S"),
    ("contractions_odd", "'s''s x's'd'll 'll've '"),
    ("added_eot_inside", "a<|endoftext|>b"),
    ("added_eot_twice", "<|endoftext|><|endoftext|>x<|endoftext|>"),
    ("added_email", "|||EMAIL_ADDRESS|||"),
    ("added_ip_inside", "x|||IP_ADDRESS|||y and |||PHONE_NUMBER||||"),
    ("added_padding", "<|padding|> pad <|padding|>"),
    ("added_partial", "<|endoftext <|endof|> |||EMAIL"),
    ("added_spaces_25", "a" + " " * 25 + "b"),
    ("repeat_a", "a" * 1000),
    ("repeat_eq", "=" * 300),
    ("repeat_newline", "\n" * 50),
    ("repeat_dots", "." * 257 + "!"),
    ("code", "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n"),
    ("html", "<div class=\"a\">&amp; <b>bold</b></div>"),
    ("url", "https://example.com/path?q=1&r=two#frag mailto:a@b.org"),
    ("math", "\u2211 \u222b \u221a\u221e \u2260 \u2264 \u03c0r\u00b2"),
    ("latin_accents", "na\u00efve Stra\u00dfe \u00c0\u00c9\u00ce\u00d5\u00dc \u0141\u00f3d\u017a"),
    ("noncharacters", "\ufffe\uffff\U0010ffff\ufdd0"),
    ("replacement_char", "\ufffd already"),
    ("invalid_ff", b"\xff"),
    ("invalid_middle", b"abc\x80def"),
    ("invalid_truncated_3", b"\xe2\x82"),
    ("invalid_truncated_end", b"ok \xf0\x9f\x98"),
    ("invalid_surrogate", b"\xed\xa0\x80x"),
    ("invalid_too_big", b"\xf4\x90\x80\x80"),
    ("invalid_overlong", b"\xc0\xaf \xe0\x80\xaf \xc1\xbf"),
    ("invalid_mixed", b"caf\xc3\xa9 \xc3 \xa9\xa9 \xf0\x9f\x91\x8d\xf0\x9f"),
    ("invalid_lone_cont", b"\x80\x81\x82\xbf"),
    ("invalid_f5_ff", b"\xf5\xf6\xf7\xf8\xfe"),
]

# GPT-4-style pre-tokenizer regex (as in newer byte-level BPEs, used via Split).
GPT4_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def as_bytes(text):
    return text if isinstance(text, bytes) else text.encode("utf-8")


def hf_ids(tok, data):
    return tok.encode(data.decode("utf-8", errors="replace")).ids


def chimera_ids(binary, tokenizer, data):
    r = subprocess.run([binary, "tokenizer", "encode", "--tokenizer", tokenizer], input=data,
                       capture_output=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"chimera encode failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return [int(x) for x in r.stdout.split()]


class Checker:
    def __init__(self, binary):
        self.binary = binary
        self.bad = 0
        self.checked = 0

    def check(self, tokenizer, name, data, want):
        got = chimera_ids(self.binary, tokenizer, data)
        self.checked += 1
        if got != want:
            self.bad += 1
            k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            print(f"MISMATCH {os.path.basename(tokenizer)} {name}: first difference at {k}: "
                  f"chimera {got[k:k + 8]} HF {want[k:k + 8]}", file=sys.stderr)


def compact(obj, indent=0):
    """JSON with one line per element of a list of objects (small diffs, readable files)."""
    pad = " " * indent
    if isinstance(obj, dict) and any(isinstance(v, (dict, list)) and v and isinstance(v, dict) or
                                     (isinstance(v, list) and v and isinstance(v[0], dict))
                                     for v in obj.values()):
        items = [f'{pad} {json.dumps(k)}: {compact(v, indent + 1).lstrip()}' for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        items = [pad + " " + json.dumps(v, ensure_ascii=False) for v in obj]
        return pad + "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return pad + json.dumps(obj, ensure_ascii=False)


def write_json(name, obj, tokenizer_file=False):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        if tokenizer_file:  # as HF writes them: easy to read and to diff
            json.dump(obj, f, ensure_ascii=False, indent=1)
        else:
            f.write(compact(obj))
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


def adversarial(neox, chk):
    tok = Tokenizer.from_file(neox)
    cases = []
    for name, text in ADVERSARIAL:
        data = as_bytes(text)
        ids = hf_ids(tok, data)
        chk.check(neox, name, data, ids)
        cases.append({"name": name, "hex": data.hex(), "ids": ids})
    write_json("neox_adversarial.json", {"tokenizer": "tokenizers/gpt-neox-20b.json", "cases": cases})


def dolma(neox, shared, chk):
    tok = Tokenizer.from_file(neox)
    ddir = os.path.join(shared, "dolma")
    docs = []
    for fn in sorted(f for f in os.listdir(ddir) if f.startswith("cc_en_head-") and f.endswith(".jsonl.gz")):
        with gzip.open(os.path.join(ddir, fn), "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                doc = json.loads(line)
                ids = tok.encode(doc["text"]).ids
                chk.check(neox, f"{fn}:{line_no}", doc["text"].encode("utf-8"), ids)
                raw = struct.pack(f"<{len(ids)}I", *ids)
                docs.append({"file": fn, "line": line_no, "id": doc["id"], "n_ids": len(ids),
                             "sha256": hashlib.sha256(raw).hexdigest(), "first_ids": ids[:16]})
    write_json("neox_dolma.json", {"tokenizer": "tokenizers/gpt-neox-20b.json", "docs": docs})


WORDS = ("the of and to in is was for on that with as by it at from his her they we you this "
         "tokenizer token merge byte pair encoding model data training learning hybrid mamba "
         "attention expert router depth caf\u00e9 na\u00efve \u00fcber \u65e5\u672c \u043c\u0438\u0440 "
         "don't it's we're I'll").split()


def generate_texts(tmp):
    """A plain text file and a Dolma-style JSONL file of deterministic pseudo-random text."""
    rng = random.Random(1234)

    def sentence():
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words.insert(rng.randint(0, len(words)), str(rng.randint(0, 100000)))
        s = " ".join(words)
        return s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?", ";", ":"])

    txt = os.path.join(tmp, "train.txt")
    with open(txt, "w", encoding="utf-8") as f:
        for _ in range(400):
            f.write(" ".join(sentence() for _ in range(rng.randint(1, 5))) + "\n")
            if rng.random() < 0.2:
                f.write("\n")
    jsonl = os.path.join(tmp, "train.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        for i in range(100):
            text = "\n\n".join(" ".join(sentence() for _ in range(3)) for _ in range(rng.randint(1, 4)))
            f.write(json.dumps({"id": f"gen-{i}", "text": text, "source": "generated"}) + "\n")
    return [txt, jsonl]


def variants(base):
    """Variants of the trained tokenizer that exercise the other supported pre-tokenizers."""
    n = len(base["model"]["vocab"])
    out = {}
    v = copy.deepcopy(base)
    v["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}]}
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": GPT4_REGEX}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False}]}
    v["added_tokens"] += [
        {"id": n, "content": "<mask>", "single_word": True, "lstrip": True, "rstrip": True,
         "normalized": True, "special": False},
        {"id": n + 1, "content": "[SEP]", "single_word": False, "lstrip": False, "rstrip": True,
         "normalized": False, "special": True},
        {"id": n + 2, "content": "caf\u00e9!", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False}]
    out["trained_split1.json"] = v
    v = copy.deepcopy(base)
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "MergedWithPrevious", "invert": False},
        {"type": "Split", "pattern": {"String": "-"}, "behavior": "Removed", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    out["trained_split2.json"] = v
    v = copy.deepcopy(base)
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "[0-9]"}, "behavior": "MergedWithNext", "invert": False},
        {"type": "Split", "pattern": {"Regex": r"\p{L}+"}, "behavior": "Contiguous", "invert": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    out["trained_split3.json"] = v
    v = copy.deepcopy(base)
    v["pre_tokenizer"]["add_prefix_space"] = True
    v["model"]["ignore_merges"] = True
    # a whole-word token that the merges alone would not produce, so ignore_merges matters
    v["model"]["vocab"]["Ġtokenizerz"] = n
    v["added_tokens"][0]["id"] = n + 1
    v["model"]["vocab"]["<|endoftext|>"] = n + 1
    out["trained_ignore_merges.json"] = v
    return out


TRAINED_TESTS = [
    "The tokenizer merges byte pairs.", "don't it's we're I'll", "caf\u00e9 cafe\u0301 na\u00efve",
    "numbers 12345 and 3.14-2.71", "<|endoftext|>after", "a<mask>b <mask> c [SEP]  d [SEP]x",
    "caf\u00e9! cafe\u0301! \u00fcber-mamba", "  spaces   and\ttabs\n\nnewlines  ",
    "\u65e5\u672c \u043c\u0438\u0440 \U0001F600", "unseen wordz qqq xyzzy", "a-b--c - d",
    "1a2b3c 45 x6", "tokenizerz tokenizer", "",
]


def trained(binary, chk):
    with tempfile.TemporaryDirectory() as tmp:
        inputs = generate_texts(tmp)
        path = os.path.join(tmp, "trained.json")
        subprocess.run([binary, "tokenizer", "train", "--vocab-size", "600", "--out", path] + inputs,
                       check=True, stdout=subprocess.DEVNULL)
        with open(path, encoding="utf-8") as f:
            base = json.load(f)
    files = {"trained.json": base}
    files.update(variants(base))
    expected = {}
    for name, obj in files.items():
        write_json(name, obj, tokenizer_file=True)
        path = os.path.join(OUT, name)
        tok = Tokenizer.from_file(path)  # HF must load it
        expected[name] = []
        for text in TRAINED_TESTS + [t for _, t in ADVERSARIAL if isinstance(t, str)]:
            data = as_bytes(text)
            ids = hf_ids(tok, data)
            chk.check(path, text[:30], data, ids)
            expected[name].append({"hex": data.hex(), "ids": ids})
    write_json("trained_expected.json", expected)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True, help="the built chimera binary")
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"),
                    help="shared test data (default: ../shared/data next to the repository)")
    args = ap.parse_args()
    neox = os.path.join(args.shared, "tokenizers", "gpt-neox-20b.json")
    os.makedirs(OUT, exist_ok=True)
    chk = Checker(os.path.abspath(args.binary))
    adversarial(neox, chk)
    dolma(neox, args.shared, chk)
    trained(os.path.abspath(args.binary), chk)
    print(f"checked {chk.checked} encodings against chimera: {chk.bad} differ")
    return 1 if chk.bad else 0


if __name__ == "__main__":
    sys.exit(main())
