#!/usr/bin/env python3
"""The Tux Paint stamps behind scripts/setup.sh: a small real captioned image
set for text-to-image and for the first stage under it.

Debian's tuxpaint-stamps-default ships PNG cut-outs (mostly RGBA, about
130 px) each with a sibling `.txt` whose first line is the English caption
("A horse.") and whose other lines are translations.  This copies every PNG
that has a caption, byte for byte, and writes the English line alone as the
sidecar caption file (the kohya / image-folder convention: `name.txt` beside
`name.png`), keeping the category folders:

    $CACHE/tux-stamps/{train,val}/<category path>/<name>.png + <name>.txt

Every 16th stamp in path order is held out in val/ (for judging
reconstructions and samples on stamps no model trained on).  The `_mirror`
variants, which have no caption of their own, are skipped.  manifest.json
lists each file with its caption, split and size.

Usage (setup.sh runs it):
    _stamps.py --cache CACHE --deb tuxpaint-stamps-default_…deb
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _assets import (AssetError, _dpkg_extract, image_geometry, read_json, recipe_stamp,
                     report_errors, sha256_file, staged_dir)

OUT = "tux-stamps"
STAMPS_DIR = "usr/share/tuxpaint/stamps"
VAL_EVERY = 16
# tuxpaint-stamps-default 2022.06.04-1: 796 PNGs, 785 of them captioned.
EXPECTED = 785


def english_caption(txt: Path) -> str:
    """The first line of a Tux Paint description file, whitespace-trimmed."""
    try:
        first = txt.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as e:
        raise AssetError(f"{txt}: cannot read its English caption: {e}") from None
    if not first:
        raise AssetError(f"{txt}: the English caption (first line) is empty")
    return first


def _intact(out: Path, manifest, stamp: dict) -> bool:
    if not manifest or manifest.get("stamp") != stamp:
        return False
    return all((out / f["split"] / f["file"]).is_file() for f in manifest["files"])


def build(cache: Path, deb: Path) -> tuple[Path, dict, bool]:
    out = cache / OUT
    stamp = recipe_stamp([deb]) | {"stamps_code": sha256_file(Path(__file__))}
    manifest = read_json(out / "manifest.json")
    if _intact(out, manifest, stamp):
        return out, manifest, False
    with staged_dir(cache, out) as staging, \
            tempfile.TemporaryDirectory(dir=cache, prefix="extract.") as scratch:
        _dpkg_extract(deb, Path(scratch))
        root = Path(scratch) / STAMPS_DIR
        captioned = [p for p in sorted(root.rglob("*.png")) if p.with_suffix(".txt").is_file()]
        if len(captioned) != EXPECTED:
            raise AssetError(f"{deb.name}: expected {EXPECTED} captioned PNG stamps, "
                             f"found {len(captioned)}")
        files = []
        for i, png in enumerate(captioned):
            rel = png.relative_to(root)
            split = "val" if i % VAL_EVERY == VAL_EVERY - 1 else "train"
            data = png.read_bytes()
            w, h, c = image_geometry(data)
            caption = english_caption(png.with_suffix(".txt"))
            dest = staging / split / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            dest.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
            files.append({"file": rel.as_posix(), "split": split, "caption": caption,
                          "width": w, "height": h, "channels": c})
        manifest = {"stamp": stamp, "source": f"Debian {deb.name} ({STAMPS_DIR})",
                    "license": "GPL-2+ (tuxpaint-stamps debian/copyright)", "files": files}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out, manifest, True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--deb", type=Path, required=True)
    a = ap.parse_args(argv)

    def step():
        out, manifest, built = build(a.cache, a.deb)
        n_val = sum(f["split"] == "val" for f in manifest["files"])
        print(f"tux stamps: {out} ({'built' if built else 'cached'}; "
              f"{len(manifest['files']) - n_val} train + {n_val} val, captioned)")

    return report_errors(step)


if __name__ == "__main__":
    sys.exit(main())
