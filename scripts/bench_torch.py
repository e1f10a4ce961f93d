#!/usr/bin/env python3
"""PyTorch/diffusers counterpart of `ldm-train bench autoencoder` (one case).

Times one case of scripts/bench.sh on PyTorch's CPU backend and prints ONE
JSON line with the keys ldm-train prints (less "backend"):

    {"mode", "batch", "size", "median_s", "min_s", "images_per_sec",
     "peak_rss_mib", "params"}

One case per process, so peak_rss_mib (getrusage ru_maxrss) is that case's.
The networks are diffusers' AutoencoderKL with plain DownEncoderBlock2D /
UpDecoderBlock2D levels (no attention in the levels; the mid-block attention
that diffusers always has, and ldm-train too, stays):

  diffusers-f8-l1kl    channels 64,128,256,256, 2 res blocks, z 4, GroupNorm 32,
                       4 x 3 x 128^2: one training step (below), lr 4.5e-6 x 4
  diffusers-f8-encode  the same network, 16 x 3 x 128^2: encoder forward to the
                       posterior mean under torch.no_grad(), nothing else
  tiny-l1kl            configs/tiny/kl-f4.toml: channels 32,64,64, 1 res block,
                       z 3, GroupNorm 8, posterior logvar bias -6,
                       4 x 3 x 64^2: one training step, lr 4e-4

A training step is what `--mode l1kl` does: encode, posterior.sample(),
decode, loss = sum|x - x^| / B + 1e-6 * (KL summed per image) / B (the
reference reductions, as in scripts/reference_learning_curve.py), backward,
AdamW (betas 0.5, 0.9, eps 1e-8, no weight decay) step, zero_grad(set_to_none).
Input is uniform(-1, 1) and fixed; each iteration is timed whole with
time.perf_counter, and the median is the sorted times' element at len // 2,
as ldm-train reports it.

Usage (the reference venv of scripts/ref_venv.sh: torch + diffusers, pinned):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/bench_torch.py \\
        --case tiny-l1kl --steps 5 [--warmup 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

# (block_out_channels, layers_per_block, latent_channels, norm_num_groups,
#  batch, size, mode, lr, posterior logvar bias or None)
CASES = {
    "diffusers-f8-l1kl": ((64, 128, 256, 256), 2, 4, 32, 4, 128, "l1kl", 4.5e-6 * 4, None),
    "diffusers-f8-encode": ((64, 128, 256, 256), 2, 4, 32, 16, 128, "encode", 4.5e-6 * 4, None),
    "tiny-l1kl": ((32, 64, 64), 1, 3, 8, 4, 64, "l1kl", 4e-4, -6.0),
}
KL_WEIGHT = 1e-6


def fail(msg: str) -> None:
    print(f"bench_torch.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--steps", type=int, default=5, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch.set_num_threads (default: all CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.steps < 1 or a.warmup < 0 or a.threads < 1:
        fail("--steps and --threads must be >= 1, --warmup >= 0")

    # Nothing here needs the network; keep huggingface-hub from trying.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from diffusers import AutoencoderKL
        from diffusers.utils import logging as diffusers_logging
    except Exception as e:  # ImportError, or a broken torch install
        fail(f"cannot import torch and diffusers ({type(e).__name__}: {e}); "
             "run bash scripts/ref_venv.sh and use ${LDM_TRAIN_CACHE:-~/.cache/ldm-train}"
             "/ref-venv/bin/python")
    diffusers_logging.set_verbosity_error()

    channels, layers, z, groups, batch, size, mode, lr, logvar_bias = CASES[a.case]
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=layers,
        latent_channels=z,
        norm_num_groups=groups,
        sample_size=size,
    )
    if logvar_bias is not None:
        with torch.no_grad():
            model.quant_conv.bias[z:] = logvar_bias
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x = torch.rand(batch, 3, size, size) * 2 - 1

    if mode == "encode":
        model.eval()

        def step() -> None:
            with torch.no_grad():
                model.encode(x).latent_dist.mode()
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.5, 0.9), eps=1e-8,
                                weight_decay=0.0)

        def step() -> None:
            posterior = model.encode(x).latent_dist
            recon = model.decode(posterior.sample()).sample
            loss = (x - recon).abs().sum() / batch + KL_WEIGHT * posterior.kl().sum() / batch
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        step()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
    times.sort()
    median = times[len(times) // 2]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "mode": mode,
        "batch": batch,
        "size": size,
        "median_s": median,
        "min_s": times[0],
        "images_per_sec": batch / median,
        "peak_rss_mib": peak_kib / 1024,
        "params": params,
    }), flush=True)


if __name__ == "__main__":
    main()
