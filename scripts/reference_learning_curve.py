#!/usr/bin/env python3
"""Validation-PSNR learning curve of the tiny KL-f4 network in PyTorch/diffusers.

A yardstick for ldm-train's tiny config: the same architecture as
configs/tiny/kl-f4.toml (diffusers AutoencoderKL with block_out_channels
32,64,64, one res block per level, z 3, GroupNorm 8, posterior logvar bias -6),
trained with L1 + 1e-6 KL (the reference reductions: sums per image / batch)
and Adam on the same photos, validated on the same six held-out photos (whole
64² crops) against the average-pool + bilinear baseline. If PyTorch learns no
faster per step than we do, a slow curve is the recipe's, not a bug of ours.

Images are resized with PIL's bicubic, so the baseline prints a little higher
than ldm-train's (Catmull-Rom resize): compare each curve with its own baseline.

Usage (reference venv from scripts/ref_venv.sh, after scripts/setup.sh):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/reference_learning_curve.py \
        --steps 2000 --batch 16 --crop 32 --lr 4e-4
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCALE = 64  # shorter side of every photo, as data.resize in the tiny config


def to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def resize_shorter(im: Image.Image, side: int) -> Image.Image:
    w, h = im.size
    k = side / min(w, h)
    return im.resize((max(side, round(w * k)), max(side, round(h * k))), Image.BICUBIC)


def crop(im: Image.Image, size: int, rng: random.Random | None) -> torch.Tensor:
    w, h = im.size
    if rng is None:
        left, top = (w - size) // 2, (h - size) // 2
    else:
        left, top = rng.randint(0, w - size), rng.randint(0, h - size)
    x = to_tensor(im.crop((left, top, left + size, top + size)))
    return x.flip(2) if rng is not None and rng.random() < 0.5 else x


def psnr(x: torch.Tensor, y: torch.Tensor, luma: bool = False) -> float:
    """Mean PSNR (peak 1) over images; of BT.601 luma only with `luma`, as
    ldm-train's `psnr_y` (colour errors show as the gap between the two)."""
    unit = lambda t: (t.clamp(-1, 1) + 1) / 2  # noqa: E731
    x, y = unit(x), unit(y)
    if luma:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x, y = (x * w).sum(1), (y * w).sum(1)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    return float((-10 * mse.log10()).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=32, help="training crop of the photos at 64²")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.9))
    ap.add_argument("--every", type=int, default=250, help="validate every N steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)

    def photos(split: str) -> list[Image.Image]:
        files = sorted((ROOT / "datasets/photos" / split).iterdir())
        return [resize_shorter(Image.open(f).convert("RGB"), SCALE) for f in files]

    train, val = photos("train"), photos("val")
    vx = torch.stack([crop(im, SCALE, None) for im in val])
    model = AutoencoderKL(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, latent_channels=3, norm_num_groups=8,
    )
    with torch.no_grad():
        model.quant_conv.bias[3:] = -6.0
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=tuple(a.betas))
    base = F.interpolate(F.avg_pool2d(vx, 4), scale_factor=4, mode="bilinear", align_corners=False)
    print(f"baseline PSNR {psnr(vx, base):.2f} dB (luma {psnr(vx, base, True):.2f})", flush=True)
    start = time.time()
    for step in range(1, a.steps + 1):
        x = torch.stack([crop(rng.choice(train), a.crop, rng) for _ in range(a.batch)])
        post = model.encode(x).latent_dist
        recon = model.decode(post.sample()).sample
        loss = ((x - recon).abs().sum() + 1e-6 * post.kl().sum()) / a.batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0:
            with torch.no_grad():
                model.eval()
                vr = model.decode(model.encode(vx).latent_dist.mode()).sample
                model.train()
            print(f"step {step}: val PSNR {psnr(vx, vr):.2f} dB (luma {psnr(vx, vr, True):.2f}) "
                  f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
