#!/usr/bin/env python3
"""Validation-PSNR learning curve of the tiny KL-f4 network in PyTorch/diffusers.

A yardstick for ldm-train's tiny config: the same architecture as
configs/tiny/kl-f4.toml (diffusers AutoencoderKL with block_out_channels
32,64,64, one res block per level, z `--z`, GroupNorm 8, posterior logvar
bias -6), trained with L1 + `--perceptual-weight` × LPIPS + 1e-6 KL (the
reference reductions: sums per image / batch, LPIPS broadcast over the
pixels; LPIPS is the VGG16 v0.1 net from the weights setup.sh converts) and
Adam on the same photos, validated on the same six held-out photos (whole
64² crops) against the average-pool + bilinear baseline. If PyTorch learns no
faster per step than we do, a slow curve is the recipe's, not a bug of ours.

Images are resized with PIL's bicubic, so the baseline prints a little higher
than ldm-train's (Catmull-Rom resize): compare each curve with its own baseline.
`--save DIR` writes the trained model as a diffusers folder: `ldm-train import
--from diffusers DIR` then `ldm-train eval autoencoder` score it with exactly
the code that scores ldm-train's own runs.

Usage (reference venv from scripts/ref_venv.sh, after scripts/setup.sh):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/reference_learning_curve.py \
        --steps 2000 --batch 16 --crop 32 --lr 4e-4
    # the tiny config's recipe (configs/tiny/kl-f4.toml):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/reference_learning_curve.py \
        --steps 800 --z 8 --perceptual-weight 1 --betas 0.9 0.999 --save torch-kl-f4
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
SCALE = 64  # shorter side of every photo, as data.resize in the tiny config
CACHE = Path(os.environ.get("LDM_TRAIN_CACHE", Path.home() / ".cache/ldm-train"))


class Lpips(torch.nn.Module):
    """LPIPS v0.1 (VGG16) with the weights scripts/setup.sh converts: frozen
    ImageNet VGG16 features, taps relu1_2 … relu5_3, channel-normalized squared
    differences weighted by the linear heads, spatial mean, summed over taps."""

    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)
    # VGG16 convs per block; a tap after the last ReLU of each block.
    BLOCKS = (2, 2, 3, 3, 3)

    def __init__(self, path: Path):
        super().__init__()
        w = load_file(str(path))
        self.convs = torch.nn.ParameterList()
        for k in range(13):
            self.convs.append(torch.nn.Parameter(w[f"vgg.conv{k}.weight"], requires_grad=False))
            self.convs.append(torch.nn.Parameter(w[f"vgg.conv{k}.bias"], requires_grad=False))
        self.lins = torch.nn.ParameterList(
            torch.nn.Parameter(w[f"lin{k}.weight"], requires_grad=False) for k in range(5))
        self.register_buffer("shift", torch.tensor(self.SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(self.SCALE).view(1, 3, 1, 1))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out, k = (x - self.shift) / self.scale, [], 0
        for b, n in enumerate(self.BLOCKS):
            if b > 0:
                h = F.max_pool2d(h, 2)
            for _ in range(n):
                h = F.relu(F.conv2d(h, self.convs[2 * k], self.convs[2 * k + 1], padding=1))
                k += 1
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distance, shape [N]."""
        unit = lambda t: t / (t.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # noqa: E731
        return sum(F.conv2d((unit(a) - unit(b)) ** 2, lin).mean((1, 2, 3))
                   for a, b, lin in zip(self.taps(x), self.taps(y), self.lins))


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
    ap.add_argument("--z", type=int, default=3, help="latent channels (z_channels = embed_dim)")
    ap.add_argument("--perceptual-weight", type=float, default=0.0,
                    help="LPIPS weight in the reconstruction loss (0: L1 + KL only)")
    ap.add_argument("--lpips-weights", type=Path, default=CACHE / "weights/lpips_vgg16.safetensors")
    ap.add_argument("--save", type=Path, help="write the trained model here as a diffusers folder "
                    "(and at every validation into DIR/step-N)")
    ap.add_argument("--resize-max", type=int, default=SCALE,
                    help="scale augmentation: shorter side drawn log-uniformly in [64, this]")
    ap.add_argument("--channel-shuffle", action="store_true",
                    help="colour augmentation: each sample's RGB channels in a random order")
    ap.add_argument("--decay", choices=("constant", "cosine"), default="constant",
                    help="learning-rate schedule over --steps")
    ap.add_argument("--every", type=int, default=250, help="validate every N steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)

    def photos(split: str, side: int) -> list[Image.Image]:
        files = sorted((ROOT / "datasets/photos" / split).iterdir())
        return [resize_shorter(Image.open(f).convert("RGB"), side) for f in files]

    # With scale augmentation, photos are kept at the largest scale and each
    # sample is resized from there (ldm-train resizes from the original).
    train, val = photos("train", a.resize_max), photos("val", SCALE)

    def sample() -> torch.Tensor:
        im = rng.choice(train)
        if a.resize_max > SCALE:
            lo, hi = math.log(SCALE), math.log(a.resize_max)
            im = resize_shorter(im, round(math.exp(rng.uniform(lo, hi))))
        x = crop(im, a.crop, rng)
        if a.channel_shuffle:
            x = x[torch.tensor(rng.sample(range(3), 3))]
        return x

    vx = torch.stack([crop(im, SCALE, None) for im in val])
    model = AutoencoderKL(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, latent_channels=a.z, norm_num_groups=8,
    )
    with torch.no_grad():
        model.quant_conv.bias[a.z:] = -6.0
    lpips = Lpips(a.lpips_weights) if a.perceptual_weight > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=tuple(a.betas))
    if a.decay == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, a.steps) / a.steps)))
    else:
        sched = None
    base = F.interpolate(F.avg_pool2d(vx, 4), scale_factor=4, mode="bilinear", align_corners=False)
    print(f"baseline PSNR {psnr(vx, base):.2f} dB (luma {psnr(vx, base, True):.2f})", flush=True)
    start = time.time()
    for step in range(1, a.steps + 1):
        x = torch.stack([sample() for _ in range(a.batch)])
        post = model.encode(x).latent_dist
        recon = model.decode(post.sample()).sample
        rec = (x - recon).abs().sum()
        if lpips is not None:
            # The reference adds LPIPS to every pixel's L1 before summing.
            rec = rec + a.perceptual_weight * lpips(x, recon).sum() * x[0].numel()
        loss = (rec + 1e-6 * post.kl().sum()) / a.batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if step % a.every == 0:
            with torch.no_grad():
                model.eval()
                vr = model.decode(model.encode(vx).latent_dist.mode()).sample
                model.train()
            print(f"step {step}: val PSNR {psnr(vx, vr):.2f} dB (luma {psnr(vx, vr, True):.2f}) "
                  f"({time.time() - start:.0f} s)", flush=True)
            if a.save and step < a.steps:
                model.save_pretrained(a.save / f"step-{step}")
    if a.save:
        model.save_pretrained(a.save)
        print(f"saved {a.save}")


if __name__ == "__main__":
    main()
