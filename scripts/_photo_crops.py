#!/usr/bin/env python3
"""The held-out photo crops behind scripts/setup.sh: 256 crops of 64² for
judging small first stages by eye and by number.

The six validation photos are one crop each at the tiny config's scale
(shorter side 64), which says little about colour: a model can get those six
right and still turn an evening sky green.  This set takes 64² tiles of
photographs no training set here contains, at three scales (shorter side
64, 128 and 256 px: dense detail to smooth skies and gradients), so the
average covers what a person notices first.

Sources, all held out from every training split:
* the six validation photos of the photo dataset ($CACHE/photos/val);
* twelve photographs among Debian's plasma-workspace-wallpapers (the other
  wallpapers of that package are drawings and renders, left out).

Every photo is resized with Pillow's bicubic filter (antialiased) so its
shorter side is the scale, then cut into the centred grid of whole 64²
tiles.  All tiles at 64 and 128 are kept and the 256-scale tiles are thinned
evenly to reach 256 crops.  Files are PNG, named
`<source>_s<scale>_<x>_<y>.png`; manifest.json lists the source, member,
licence and box of each.

Usage (setup.sh runs it):
    _photo_crops.py --cache CACHE --plasma plasma-workspace-wallpapers_…deb
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

from _assets import (AssetError, _dpkg_extract, read_json, recipe_stamp, report_errors,
                     sha256_file, staged_dir)

OUT = "photo-crops"
TILE = 64
SCALES = (64, 128, 256)
COUNT = 256
PLASMA_DIR = "usr/share/wallpapers"
PLASMA_PACKAGE = "plasma-workspace-wallpapers 4:5.27.5-2 (Debian)"
# The photographs of the package (its metadata.json gives author and
# licence); the largest JPEG of each is used.
PLASMA_PHOTOS = {
    "BytheWater": "LGPL-3 (Maciej Wiklo)",
    "ColdRipple": "LGPL-3 (Risto Saukonpää)",
    "ColorfulCups": "LGPL-3 (Dmitri Popov)",
    "DarkestHour": "LGPL-3 (Risto Saukonpää)",
    "EveningGlow": "LGPL-3 (Ian Hex)",
    "FallenLeaf": "LGPL-3 (Martin Klapetek)",
    "Grey": "LGPL-3 (Sigi Sagi)",
    "Kite": "LGPL-3 (Risto Saukonpää)",
    "OneStandsOut": "LGPL-3 (Risto Saukonpää)",
    "Path": "LGPL-3 (Risto Saukonpää)",
    "summer_1am": "LGPL-3 (Risto Saukonpää)",
    "Volna": "CC-BY-SA-4.0 (Nikita Babin)",
}


def _largest_jpeg(folder: Path) -> Path:
    def pixels(p: Path) -> int:
        w, h = p.stem.split("x")
        return int(w) * int(h)

    jpegs = sorted(folder.glob("*.jpg"))
    if not jpegs:
        raise AssetError(f"{folder}: no JPEG in the wallpaper folder")
    return max(jpegs, key=pixels)


def _sources(plasma_deb: Path, val: Path, scratch: Path):
    """Yields (name, PIL image, source, member, licence) of every held-out photo."""
    from PIL import Image

    _dpkg_extract(plasma_deb, scratch)
    for name, lic in PLASMA_PHOTOS.items():
        path = _largest_jpeg(scratch / PLASMA_DIR / name / "contents" / "images")
        member = path.relative_to(scratch).as_posix()
        yield f"plasma_{name}", Image.open(path).convert("RGB"), PLASMA_PACKAGE, member, lic
    photos_manifest = read_json(val.parent / "manifest.json")
    if not photos_manifest:
        raise AssetError(f"{val.parent}/manifest.json missing: build the photos first")
    for entry in photos_manifest["files"]:
        if entry["split"] != "val":
            continue
        stem = Path(entry["file"]).stem
        yield (stem, Image.open(val / entry["file"]).convert("RGB"), entry["source"],
               entry["member"], entry["license"])


def _tiles(image, scale: int):
    """The centred grid of whole TILE² tiles of `image` resized to shorter side `scale`."""
    from PIL import Image

    w, h = image.size
    k = scale / min(w, h)
    size = (max(scale, round(w * k)), max(scale, round(h * k)))
    resized = image.resize(size, Image.BICUBIC)
    nx, ny = size[0] // TILE, size[1] // TILE
    ox, oy = (size[0] - nx * TILE) // 2, (size[1] - ny * TILE) // 2
    for j in range(ny):
        for i in range(nx):
            x, y = ox + i * TILE, oy + j * TILE
            yield x, y, resized.crop((x, y, x + TILE, y + TILE))


def _thin(items: list, keep: int) -> list:
    """`keep` items spread evenly over `items`, in order."""
    if keep >= len(items):
        return items
    return [items[(i * len(items)) // keep] for i in range(keep)]


def build(cache: Path, plasma_deb: Path) -> tuple[Path, dict, bool]:
    out = cache / OUT
    val = cache / "photos" / "val"
    stamp = recipe_stamp([plasma_deb]) | {"crops_code": sha256_file(Path(__file__)),
                                           "val": sorted(p.name for p in val.iterdir())}
    manifest = read_json(out / "manifest.json")
    if manifest and manifest.get("stamp") == stamp and all(
            (out / f["file"]).is_file() for f in manifest["files"]):
        return out, manifest, False

    tiles: dict[int, list] = {s: [] for s in SCALES}
    with tempfile.TemporaryDirectory(dir=cache, prefix="extract.") as scratch:
        for name, image, source, member, lic in _sources(plasma_deb, val, Path(scratch)):
            for scale in SCALES:
                for x, y, tile in _tiles(image, scale):
                    tiles[scale].append((f"{name}_s{scale}_{x}_{y}.png", tile, {
                        "source": source, "member": member, "license": lic,
                        "scale": scale, "box": [x, y, TILE, TILE]}))
    fixed = sum(len(tiles[s]) for s in SCALES[:-1])
    if fixed >= COUNT or len(tiles[SCALES[-1]]) < COUNT - fixed:
        raise AssetError(f"photo crops: {fixed} tiles at scales {SCALES[:-1]} and "
                         f"{len(tiles[SCALES[-1]])} at {SCALES[-1]} cannot make {COUNT}")
    chosen = [t for s in SCALES[:-1] for t in tiles[s]] + _thin(tiles[SCALES[-1]], COUNT - fixed)

    with staged_dir(cache, out) as staging:
        files = []
        for file, tile, meta in chosen:
            buf = io.BytesIO()
            tile.save(buf, format="PNG")
            (staging / file).write_bytes(buf.getvalue())
            files.append({"file": file, **meta})
        manifest = {"stamp": stamp, "files": files}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out, manifest, True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--plasma", type=Path, required=True)
    a = ap.parse_args(argv)

    def step():
        out, manifest, built = build(a.cache, a.plasma)
        by_scale = {s: sum(f["scale"] == s for f in manifest["files"]) for s in SCALES}
        print(f"photo crops: {out} ({'built' if built else 'cached'}; {len(manifest['files'])} "
              f"crops of {TILE}², by scale {by_scale})")

    return report_errors(step)


if __name__ == "__main__":
    sys.exit(main())
