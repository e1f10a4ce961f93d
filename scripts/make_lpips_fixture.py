#!/usr/bin/env python3
"""Regenerate the LPIPS-VGG16 parity fixture for the Rust implementation.

Writes crates/ldm-models/tests/fixtures/lpips_vgg16_ref.safetensors with

    x         F32 [2, 3, 32, 32]  images in [-1, 1]
    y         F32 [2, 3, 32, 32]
    expected  F32 [2]             LPIPS(x[n], y[n])
    per_tap   F32 [2, 5]          contribution of each VGG tap (sums to expected)

Pair 0 is smooth pseudo-random noise (8x8 Gaussian noise, bilinearly
upsampled, squashed by tanh); pair 1 is a real photograph (a 128x128 crop of
skimage's chelsea.png box-averaged to 32x32) and a blurred copy of it.

The reference is this file's own float64 numpy implementation of LPIPS v0.1,
VGG variant, evaluated on the float32 inputs exactly as stored, using the
weights produced by scripts/setup.sh ($CACHE/weights/lpips_vgg16.safetensors,
whose sha256 is pinned in scripts/_assets.py and recorded in the fixture):

    z        = (x - shift) / scale        shift = [-.030, -.088, -.188]
                                          scale = [ .458,  .448,  .450]  (per RGB channel)
    VGG16    conv3x3 (padding 1, bias) + ReLU, 2x2 max-pool (stride 2) between blocks:
               [conv0 conv1] P [conv2 conv3] P [conv4 conv5 conv6] P
               [conv7 conv8 conv9] P [conv10 conv11 conv12]
    taps     f_k = ReLU outputs of conv1, conv3, conv6, conv9, conv12
               (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
    normal.  u_k = f_k / (sqrt(sum_c f_k^2) + 1e-10)        per pixel, over channels
    per_tap  d_k = mean_{h,w} sum_c lin_k[c] * (u_k(x) - u_k(y))^2   (1x1 conv, no bias)
    LPIPS    = sum_k d_k

The script also reports how far a float32 evaluation of the same formula
drifts from the float64 reference, as a guide for the Rust test tolerance.

Usage (after scripts/setup.sh):
    ~/.cache/ldm-train/venv/bin/python scripts/make_lpips_fixture.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.dont_write_bytecode = True  # keep scripts/__pycache__ out of the work tree
import _assets as A  # noqa: E402  (scripts/ is on sys.path when run directly)

SHIFT = np.array([-0.030, -0.088, -0.188])
SCALE = np.array([0.458, 0.448, 0.450])
POOL_AFTER = {1, 3, 6, 9}          # conv indices followed by a 2x2 max-pool
TAPS = (1, 3, 6, 9, 12)            # conv indices whose ReLU output is a tap
NORM_EPS = 1e-10
SEED = 20240611
SIZE = 32
PHOTO = "val/skimage_chelsea.png"
PHOTO_CROP = (slice(60, 188), slice(120, 248))  # eye and nose of the cat, 128x128


# ---- reference LPIPS --------------------------------------------------------

def conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x [N,C,H,W], w [O,C,3,3] (cross-correlation, as in PyTorch), padding 1."""
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], n, h, wd), dtype=x.dtype)
    for dy in range(3):
        for dx in range(3):
            out += np.tensordot(w[:, :, dy, dx], xp[:, :, dy:dy + h, dx:dx + wd], axes=([1], [1]))
    return out.transpose(1, 0, 2, 3) + b[None, :, None, None]


def maxpool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def vgg16_taps(z: np.ndarray, weights: dict, dtype) -> list[np.ndarray]:
    taps = []
    for k in range(13):
        z = np.maximum(conv3x3(z, weights[f"vgg.conv{k}.weight"].astype(dtype),
                               weights[f"vgg.conv{k}.bias"].astype(dtype)), 0)
        if k in TAPS:
            taps.append(z)
        if k in POOL_AFTER:
            z = maxpool2(z)
    return taps


def lpips(x: np.ndarray, y: np.ndarray, weights: dict, dtype=np.float64) -> np.ndarray:
    """Per-tap LPIPS [N, 5] for images in [-1, 1], NCHW RGB."""
    def prep(img):
        img = img.astype(dtype)
        return (img - SHIFT.astype(dtype)[None, :, None, None]) / SCALE.astype(dtype)[None, :, None, None]

    def unit(f):
        return f / (np.sqrt((f * f).sum(axis=1, keepdims=True)) + dtype(NORM_EPS))

    per_tap = []
    for k, (fx, fy) in enumerate(zip(vgg16_taps(prep(x), weights, dtype),
                                     vgg16_taps(prep(y), weights, dtype))):
        d = (unit(fx) - unit(fy)) ** 2
        lin = weights[f"lin{k}.weight"].astype(dtype)[0, :, 0, 0]
        per_tap.append(np.tensordot(lin, d, axes=([0], [1])).mean(axis=(1, 2)))
    return np.stack(per_tap, axis=1)


# ---- inputs -----------------------------------------------------------------

def upsample_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """[C,h,w] -> [C,size,size], half-pixel centres (align_corners=False)."""
    c, h, w = img.shape

    def axis_weights(n_in):
        pos = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    ylo, yhi, fy = axis_weights(h)
    xlo, xhi, fx = axis_weights(w)
    rows = img[:, ylo, :] * (1 - fy)[None, :, None] + img[:, yhi, :] * fy[None, :, None]
    return rows[:, :, xlo] * (1 - fx) + rows[:, :, xhi] * fx


def smooth_noise(rng: np.random.Generator) -> np.ndarray:
    low = rng.standard_normal((3, 8, 8))
    fine = 0.05 * rng.standard_normal((3, SIZE, SIZE))  # a little texture on top
    return np.tanh(0.9 * upsample_bilinear(low, SIZE) + fine)


def blur(img: np.ndarray) -> np.ndarray:
    """Separable binomial [1 4 6 4 1]/16 blur with reflected borders, [C,H,W]."""
    k = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16
    p = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="reflect")
    h, w = img.shape[1:]
    p = sum(k[i] * p[:, i:i + h, :] for i in range(5))
    return sum(k[i] * p[:, :, i:i + w] for i in range(5))


def photo_crop(path: Path) -> np.ndarray:
    rgb = A.decode_png(path.read_bytes())[PHOTO_CROP].astype(np.float64)
    f = rgb.shape[0] // SIZE
    small = rgb.reshape(SIZE, f, SIZE, f, 3).mean(axis=(1, 3))  # box-average down to 32x32
    return small.transpose(2, 0, 1) / 127.5 - 1.0


# ---- main -------------------------------------------------------------------

def main() -> int:
    repo = Path(__file__).resolve().parent.parent
    cache = Path(os.environ.get("LDM_TRAIN_CACHE", Path.home() / ".cache" / "ldm-train"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=cache / "weights" / A.WEIGHTS_NAME)
    ap.add_argument("--photo", type=Path, default=cache / "photos" / PHOTO)
    ap.add_argument("--out", type=Path,
                    default=repo / "crates/ldm-models/tests/fixtures/lpips_vgg16_ref.safetensors")
    args = ap.parse_args()

    for p in (args.weights, args.photo):
        if not p.is_file():
            print(f"error: {p} not found; run scripts/setup.sh first", file=sys.stderr)
            return 1
    digest = A.sha256_file(args.weights)
    if digest != A.WEIGHTS_SHA256:
        print(f"error: {args.weights} sha256 {digest} != pinned {A.WEIGHTS_SHA256}", file=sys.stderr)
        return 1
    weights, _ = A.read_safetensors(args.weights)

    rng = np.random.default_rng(SEED)
    photo = photo_crop(args.photo)
    x = np.stack([smooth_noise(rng), photo]).astype(np.float32)
    y = np.stack([smooth_noise(rng), blur(photo)]).astype(np.float32)
    assert x.min() >= -1 and x.max() <= 1 and y.min() >= -1 and y.max() <= 1

    per_tap = lpips(x, y, weights, np.float64)
    expected = per_tap.sum(axis=1)

    # Cheap self-checks of the reference: identity, symmetry, float32 drift.
    assert np.abs(lpips(x, x, weights).sum(axis=1)).max() == 0.0
    assert np.allclose(lpips(y, x, weights).sum(axis=1), expected, rtol=1e-12, atol=0)
    drift = np.abs(lpips(x, y, weights, np.float32).sum(axis=1) - expected).max()

    blob = A.safetensors_bytes(
        {"x": x, "y": y,
         "expected": expected.astype(np.float32),
         "per_tap": per_tap.astype(np.float32)},
        metadata={
            "generator": "scripts/make_lpips_fixture.py (float64 numpy reference)",
            "weights": f"{A.WEIGHTS_NAME} sha256 {A.WEIGHTS_SHA256}",
            "inputs": f"pair0 smooth noise seed {SEED}; pair1 skimage chelsea.png "
                      f"crop [60:188,120:248] box/4 vs binomial-5 blur",
            "expected_f64": " ".join(repr(float(v)) for v in expected),
        })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    A.write_atomic(args.out, blob)

    np.set_printoptions(precision=6, suppress=True)
    print(f"fixture: {args.out} ({len(blob)} bytes)")
    print(f"expected (f64): {' '.join(f'{v:.10f}' for v in expected)}")
    print(f"per_tap:\n{per_tap}")
    print(f"float32 evaluation differs by at most {drift:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
