#!/usr/bin/env python3
"""Side-by-side reconstructions of several `ldm-train eval autoencoder` runs.

Each eval folder holds `NNNN-<name>.png` pairs (input | reconstruction, 2 px
apart on a 2 px border). This script picks the same images from every folder
and lays them out as rows of [input, run 1, run 2, …], several row blocks
across, labelled on top, so colour casts and blur can be compared by eye:

    python scripts/recon_sheet.py --out sheet.png --pick 24 \\
        before=runs/old/eval after=runs/new/eval

`--pick N` takes N images spread evenly over the set (default all). Needs
Pillow (the setup venv, `~/.cache/ldm-train/venv`, has it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

PAD = 2  # eval's border and gap between input and reconstruction


def pairs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.glob("[0-9][0-9][0-9][0-9]-*.png"))}


def halves(path: Path) -> tuple[Image.Image, Image.Image]:
    im = Image.open(path).convert("RGB")
    side = im.height - 2 * PAD
    left = im.crop((PAD, PAD, PAD + side, PAD + side))
    right = im.crop((2 * PAD + side, PAD, 2 * PAD + 2 * side, PAD + side))
    return left, right


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="label=eval_folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pick", type=int, default=0, help="images, spread evenly (0 = all)")
    ap.add_argument("--blocks", type=int, default=3, help="row blocks side by side")
    ap.add_argument("--scale", type=int, default=2, help="pixel magnification")
    a = ap.parse_args()

    runs = [(label, pairs(Path(folder))) for label, folder in (r.split("=", 1) for r in a.runs)]
    names = sorted(set.intersection(*(set(p) for _, p in runs)))
    if not names:
        raise SystemExit("recon_sheet: the folders share no images")
    if 0 < a.pick < len(names):
        names = [names[i * len(names) // a.pick] for i in range(a.pick)]
    side = halves(runs[0][1][names[0]])[0].height * a.scale
    cols = 1 + len(runs)
    rows = -(-len(names) // a.blocks)
    head, gap = 14, 2
    block_w = cols * (side + gap) + 3 * gap
    sheet = Image.new("RGB", (a.blocks * block_w, head + rows * (side + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for b in range(a.blocks):
        for c, label in enumerate(["input"] + [label for label, _ in runs]):
            draw.text((b * block_w + c * (side + gap) + 2, 1), label, fill="black")
    for i, name in enumerate(names):
        b, r = divmod(i, rows)
        x0, y = b * block_w, head + r * (side + gap)
        tiles = [halves(runs[0][1][name])[0]] + [halves(p[name])[1] for _, p in runs]
        for c, tile in enumerate(tiles):
            sheet.paste(tile.resize((side, side), Image.NEAREST), (x0 + c * (side + gap), y))
    sheet.save(a.out)
    print(f"{a.out}: {len(names)} images × {len(runs)} runs")


if __name__ == "__main__":
    main()
