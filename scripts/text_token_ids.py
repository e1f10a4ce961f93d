#!/usr/bin/env python3
"""Print the reference token ids that crates/ldm-text/tests/known_ids.rs checks.

The Rust crate `ldm-text` re-implements, with the Rust `tokenizers` crate and
offline, the two tokenizers the latent-diffusion references feed their text
encoders. This script asks the real Python libraries what ids those produce
for a fixed list of prompts (SENTENCES below, mirrored in the Rust test), so
the Rust test can compare without Python:

  WordPiece  the LDM reference's BERTTokenizer: transformers' BertTokenizerFast
             (bert-base-uncased vocabulary; here loaded from all-MiniLM-L6-v2's
             tokenizer.json, the same 30,522-entry uncased vocabulary) called
             with truncation=True, max_length=77, padding="max_length".
             Cross-checked against the slow BertTokenizer on vocab.txt.
  CLIP       Stable Diffusion 1.x's FrozenCLIPEmbedder: transformers'
             CLIPTokenizer (the slow, Python one; it runs ftfy.fix_text when
             ftfy is installed) with the same call, on a vocab.json/merges.txt
             this script derives from bpe_simple_vocab_16e6.txt.gz exactly as
             OpenAI's SimpleTokenizer builds its vocabulary. Cross-checked
             against CLIPTokenizerFast (what the Rust crate mirrors) and
             open_clip's SimpleTokenizer (read straight out of the cached
             open_clip_torch wheel). open_clip pads with 0 where transformers
             pads with <|endoftext|>; only the unpadded ids are compared.

The script fails when the libraries disagree on a prompt in SENTENCES.
NORMALIZATION_DIFFS lists prompts where they are *expected* to disagree: the
original CLIP cleaning runs ftfy.fix_text (curly quotes -> straight, ligatures
split, mojibake repaired, ...) and html.unescape twice, which the fast
tokenizer (and so the Rust crate) does not; those ids are printed for the
record and the Rust test pins the fast tokenizer's.

Pinned versions used to produce the ids in known_ids.rs (Python 3.11.7):
    transformers==4.57.1 tokenizers==0.22.1 ftfy==6.3.1 regex==2025.11.3 numpy==2.3.5
torch is not needed: open_clip's tokenizer module imports it only to build
output tensors, so when torch is absent a numpy stand-in with zeros/tensor is
put in its place.

Usage (after scripts/setup.sh has filled the cache):
    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install transformers==4.57.1 tokenizers==0.22.1 \\
        ftfy==6.3.1 regex==2025.11.3 numpy==2.3.5
    /tmp/tokvenv/bin/python scripts/text_token_ids.py          # table
    /tmp/tokvenv/bin/python scripts/text_token_ids.py --rust   # Rust constants
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import types
import zipfile
from pathlib import Path

CONTEXT = 77
OPEN_CLIP_WHEEL = "open_clip_torch-3.3.0-py3-none-any.whl"

# Long enough to overflow 77 tokens with either vocabulary.
LONG = ("a highly detailed oil painting of a quiet harbour town at dusk, with small "
        "fishing boats resting on calm water, warm lights glowing in the windows of "
        "old stone houses, gulls circling above the masts, a lighthouse on the distant "
        "cliff, soft pink and violet clouds reflected in the sea, children running along "
        "the pier, an old man mending his nets, and a black cat sleeping on a pile of "
        "ropes beside a red wooden door")

# Mirrored, in this order, by crates/ldm-text/tests/known_ids.rs.
SENTENCES = [
    "hello world",
    "A horse.",
    "An electric kettle.",
    "a photo of a cat",
    "",
    "Hello, World! It's 3:45pm",
    "café naïve über Crème Brûlée",
    "!!!???",
    "1234567",
    "A PHOTO of The Eiffel TOWER, MiXeD CaSe",
    "two  spaces\tand a tab\nand a newline   ",
    "don't you're we'll I'd they've she's",
    "a 🐱 and 猫 in 東京",
    "cafe\u0301 au lait, decomposed",           # NFC composes the accent
    "a\u00a0cat\u3000and\u2003a\r\ndog",   # Unicode whitespace
    LONG,
]

# The original CLIP cleaning (ftfy + html.unescape) changes these; the fast
# tokenizer and the Rust crate do not.
NORMALIZATION_DIFFS = [
    "it\u2019s a \u201cquoted\u201d &amp; \ufb01ne day",
]


def cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("LDM_TRAIN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ldm-train"


def unpadded(ids: list[int], mask: list[int]) -> list[int]:
    n = sum(mask)
    assert all(mask[:n]) and not any(mask[n:]), mask
    return list(ids[:n])


def truncates(tok, s: str) -> bool:
    return len(tok(s)["input_ids"]) > CONTEXT


def wordpiece_refs(cache: Path, sentences: list[str]) -> list[tuple[list[int], bool]]:
    from transformers import BertTokenizer, BertTokenizerFast

    folder = cache / "text" / "minilm"
    fast = BertTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    slow = BertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    out = []
    for s in sentences:
        got = {}
        for name, tok in (("fast", fast), ("slow", slow)):
            enc = tok(s, truncation=True, max_length=CONTEXT, padding="max_length")
            assert len(enc["input_ids"]) == CONTEXT
            assert all(i == 0 for i in enc["input_ids"][sum(enc["attention_mask"]):])
            got[name] = unpadded(enc["input_ids"], enc["attention_mask"])
        if got["fast"] != got["slow"]:
            sys.exit(f"WordPiece fast/slow disagree on {s!r}: {got}")
        out.append((got["fast"], truncates(fast, s)))
    return out


def _torch_stand_in() -> types.ModuleType:
    import numpy as np

    torch = types.ModuleType("torch")
    torch.long = np.int64
    torch.Tensor = torch.LongTensor = np.ndarray
    torch.zeros = lambda *shape, dtype=None: np.zeros(shape, dtype=dtype)
    torch.tensor = lambda data, dtype=None: np.asarray(data, dtype=dtype)
    return torch


def open_clip_tokenizer(wheel: Path, bpe_gz: Path, scratch: Path):
    """open_clip's SimpleTokenizer, executed from the wheel's own source."""
    with zipfile.ZipFile(wheel) as z:
        source = z.read("open_clip/tokenizer.py").decode("utf-8")
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.modules["torch"] = _torch_stand_in()
    folder = scratch / "open_clip"
    folder.mkdir()
    shutil.copy(bpe_gz, folder / "bpe_simple_vocab_16e6.txt.gz")  # default_bpe() looks here
    module = types.ModuleType("open_clip_tokenizer")
    module.__file__ = str(folder / "tokenizer.py")
    exec(compile(source, "open_clip/tokenizer.py", "exec"), module.__dict__)
    return module.SimpleTokenizer(bpe_path=str(bpe_gz), context_length=CONTEXT)


def clip_vocab_files(bpe_gz: Path, scratch: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt as OpenAI's SimpleTokenizer defines the vocabulary."""
    text = gzip.open(bpe_gz).read().decode("utf-8")
    merges = [tuple(m.split()) for m in text.split("\n")[1:49152 - 256 - 2 + 1]]
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = dict(zip(vocab, range(len(vocab))))
    assert len(encoder) == 49408, len(encoder)
    vocab_json = scratch / "vocab.json"
    merges_txt = scratch / "merges.txt"
    vocab_json.write_text(json.dumps(encoder, ensure_ascii=False))
    merges_txt.write_text(text)  # CLIPTokenizer skips line 0 and keeps the same slice
    return vocab_json, merges_txt


def clip_refs(cache: Path, sentences: list[str], strict: bool) -> list[tuple[list[int], bool]]:
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    bpe_gz = cache / "text" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        vocab_json, merges_txt = clip_vocab_files(bpe_gz, scratch)
        slow = CLIPTokenizer(str(vocab_json), str(merges_txt))
        if slow.fix_text is None:
            sys.exit("ftfy is not installed: CLIPTokenizer would fall back to BasicTokenizer")
        fast = CLIPTokenizerFast(str(vocab_json), str(merges_txt))
        oc = open_clip_tokenizer(cache / "downloads" / OPEN_CLIP_WHEEL, bpe_gz, scratch)
        out = []
        for s in sentences:
            got = {}
            for name, tok in (("slow", slow), ("fast", fast)):
                enc = tok(s, truncation=True, max_length=CONTEXT, padding="max_length")
                assert len(enc["input_ids"]) == CONTEXT
                pads = enc["input_ids"][sum(enc["attention_mask"]):]
                assert all(i == 49407 for i in pads)
                got[name] = unpadded(enc["input_ids"], enc["attention_mask"])
            row = [int(i) for i in oc(s)[0]]
            got["open_clip"] = row[:len(got["slow"])]
            assert not any(row[len(got["slow"]):]), "open_clip pads with 0"
            same = got["slow"] == got["fast"] == got["open_clip"]
            if not same:
                msg = f"CLIP references disagree on {s!r}: {got}"
                if strict:
                    sys.exit(msg)
                print(f"# expected difference: {msg}", file=sys.stderr)
            out.append((got["fast"], truncates(fast, s)))
        return out


def rust_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def rust_ids(ids: list[int]) -> str:
    return "&[" + ", ".join(str(i) for i in ids) + "]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", help="asset cache (default $LDM_TRAIN_CACHE or ~/.cache/ldm-train)")
    ap.add_argument("--rust", action="store_true", help="print Rust constants for known_ids.rs")
    args = ap.parse_args()
    cache = cache_dir(args.cache)

    bert = wordpiece_refs(cache, SENTENCES)
    clip = clip_refs(cache, SENTENCES, strict=True)
    bert_diff = wordpiece_refs(cache, NORMALIZATION_DIFFS)
    clip_diff = clip_refs(cache, NORMALIZATION_DIFFS, strict=False)

    # Anchors anyone can check by hand against the published tokenizers.
    assert bert[0][0] == [101, 7592, 2088, 102], bert[0]
    assert clip[3][0] == [49406, 320, 1125, 539, 320, 2368, 49407], clip[3]

    if args.rust:
        print("// Generated by scripts/text_token_ids.py --rust; do not edit by hand.")
        print("// (prompt, truncated to 77 by the reference, unpadded ids)")
        for name, rows, sents in (("WORDPIECE", bert, SENTENCES), ("CLIP", clip, SENTENCES),
                                  ("WORDPIECE_NORM", bert_diff, NORMALIZATION_DIFFS),
                                  ("CLIP_NORM", clip_diff, NORMALIZATION_DIFFS)):
            print(f"const {name}: &[(&str, bool, &[u32])] = &[")
            for s, (ids, cut) in zip(sents, rows):
                print(f"    ({rust_string(s)}, {str(cut).lower()}, {rust_ids(ids)}),")
            print("];")
        return
    for s, (b, bt), (c, ct) in zip(SENTENCES + NORMALIZATION_DIFFS, bert + bert_diff,
                                   clip + clip_diff):
        print(repr(s))
        print(f"  wordpiece ({len(b)}{', truncated' if bt else ''}): {b}")
        print(f"  clip      ({len(c)}{', truncated' if ct else ''}): {c}")


if __name__ == "__main__":
    main()
