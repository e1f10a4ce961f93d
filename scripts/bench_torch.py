#!/usr/bin/env python3
"""PyTorch/diffusers counterpart of `ldm-train bench autoencoder|diffusion` (one case).

Times one case of scripts/bench.sh on PyTorch's CPU backend and prints ONE
JSON line. Two commands, as ldm-train's `bench`:

  [autoencoder] --case C   the autoencoder cases below (the word `autoencoder`
                           may be left out: `bench_torch.py --case C`)
  diffusion --shape S      the diffusion UNet (see "diffusion" further down)

autoencoder: the keys ldm-train prints (less "backend"):

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

diffusion: the keys `ldm-train bench diffusion` prints, "backend" included:

    {"backend": "pytorch", "mode", "batch", "size", "context_len", "median_s",
     "min_s", "samples_per_sec", "peak_rss_mib", "params"}

params counts the UNet only (the context is synthetic: no class embedder).
The networks are diffusers' UNet2DConditionModel:

  tiny     configs/tiny/cin-fashion.toml, built by scripts/calibrate_diffusion.py
           (build_unet on its defaults, reference zero inits): model channels
           64, mult 1,2, 1 res block, SpatialTransformers (depth 1, 32 ch per
           head) at downsampling 1, 2 and in the middle, context 64; 4.19M.
           Defaults: batch 64, size 8, 1 context token, betas 0.0015..0.0195.
  compass  configs/bench/compass.toml: UNet2DConditionModel(block_out_channels
           128,256,256, down CrossAttn,CrossAttn,Down / up Up,CrossAttn,
           CrossAttn, layers_per_block 2, cross_attention_dim 256,
           attention_head_dim 8), diffusers' init; 34.9M. Defaults: batch 8,
           size 16, 77 context tokens, betas (SD) 0.00085..0.012.

Each shape's numbers are checked against its TOML before anything runs.

  --mode train   one iteration: x, noise ~ N(0, 1) [B, 4, S, S], t uniform in
                 0..1000, a fixed context ~ N(0, 1) [B, L, context_dim];
                 loss = mse(unet(x, t, context), noise), backward, AdamW
                 (lr 1e-4, betas 0.9, 0.999, eps 1e-8, wd 0.01) step,
                 zero_grad(set_to_none). The whole iteration is timed.
  --mode sample  one iteration: --sample-steps DDIM steps (eta 0) from
                 x_T ~ N(0, 1) [B, 4, S, S] with classifier-free guidance
                 --guidance, [uncond, cond] batched so the UNet sees 2B (at
                 guidance 1 the unconditional pass is skipped, as ldm-train's
                 ClassifierFreeGuidance does), under torch.no_grad(). diffusers'
                 DDIMScheduler as the LDM reference (scaled_linear betas,
                 set_alpha_to_one False, steps_offset 1, leading spacing;
                 calibrate_diffusion.check_schedulers checks it against the
                 reference formulas first). Only the loop is timed (UNet calls
                 and scheduler steps), not drawing x_T.

samples_per_sec is batch / median in both modes.

Usage (the reference venv of scripts/ref_venv.sh: torch + diffusers, pinned):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/bench_torch.py \\
        --case tiny-l1kl --steps 5 [--warmup 1] [--threads N]
    ~/.cache/ldm-train/ref-venv/bin/python scripts/bench_torch.py diffusion \\
        --shape compass --batch 8 --size 16 --mode train --steps 5 [--warmup 1] \\
        [--context-len 77] [--sample-steps 50] [--guidance 7.5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def import_torch():
    """torch and diffusers, or a one-line error naming the venv."""
    # Nothing here needs the network; keep huggingface-hub from trying.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        import diffusers
        from diffusers.utils import logging as diffusers_logging
    except Exception as e:  # ImportError, or a broken torch install
        fail(f"cannot import torch and diffusers ({type(e).__name__}: {e}); "
             "run bash scripts/ref_venv.sh and use ${LDM_TRAIN_CACHE:-~/.cache/ldm-train}"
             "/ref-venv/bin/python")
    diffusers_logging.set_verbosity_error()
    return torch, diffusers


def time_iterations(step, warmup: int, steps: int) -> tuple[float, float]:
    """Runs step() warmup + steps times; (median, min) of the timed ones, the
    median as the sorted times' element at len // 2, as ldm-train reports it.
    step() may return its own duration (a float) to time only part of itself."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        own = step()
        dt = time.perf_counter() - t0 if own is None else own
        if i >= warmup:
            times.append(dt)
    times.sort()
    return times[len(times) // 2], times[0]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def autoencoder_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_torch.py [autoencoder]", description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--steps", type=int, default=5, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch.set_num_threads (default: all CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.steps < 1 or a.warmup < 0 or a.threads < 1:
        fail("--steps and --threads must be >= 1, --warmup >= 0")

    torch, diffusers = import_torch()
    AutoencoderKL = diffusers.AutoencoderKL

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

    median, fastest = time_iterations(step, a.warmup, a.steps)
    print(json.dumps({
        "mode": mode,
        "batch": batch,
        "size": size,
        "median_s": median,
        "min_s": fastest,
        "images_per_sec": batch / median,
        "peak_rss_mib": peak_rss_mib(),
        "params": params,
    }), flush=True)


# ---------------------------------------------------------------- diffusion

T = 1000
# The compass UNet, as diffusers spells it (plus sample_size = --size, which
# is only metadata): 34,921,348 parameters.
COMPASS_UNET = dict(
    in_channels=4, out_channels=4, block_out_channels=(128, 256, 256),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2, cross_attention_dim=256, attention_head_dim=8,
)
# shape: (config under configs/, default batch, size, context tokens)
SHAPES = {
    "tiny": ("tiny/cin-fashion.toml", 64, 8, 1),
    "compass": ("bench/compass.toml", 8, 16, 77),
}
COMPASS_BETAS = (0.00085, 0.012)


def import_calibrate():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import calibrate_diffusion
    return calibrate_diffusion


def expected_config(shape: str, cd) -> dict:
    """What the shape's TOML must say, as {"section.key": value}, from the
    network built here (so a config edit that this script does not follow
    stops the run instead of timing a different network)."""
    if shape == "tiny":
        u = cd.unet_defaults()
        unet = {"model_channels": u.model_channels, "channel_mult": list(u.channel_mult),
                "num_res_blocks": u.num_res_blocks, "attention_resolutions": list(u.attention_resolutions),
                "num_head_channels": u.num_head_channels, "transformer_depth": u.transformer_depth,
                "context_dim": u.context_dim}
        betas = (u.beta_start, u.beta_end)
    else:
        chans = COMPASS_UNET["block_out_channels"]
        unet = {"model_channels": chans[0], "channel_mult": [c // chans[0] for c in chans],
                "num_res_blocks": COMPASS_UNET["layers_per_block"],
                "attention_resolutions": [2 ** i for i, b in enumerate(COMPASS_UNET["down_block_types"])
                                          if b.startswith("CrossAttn")],
                # diffusers' attention_head_dim is the number of heads
                "num_heads": COMPASS_UNET["attention_head_dim"],
                "context_dim": COMPASS_UNET["cross_attention_dim"]}
        betas = COMPASS_BETAS
    want = {f"model.unet.{k}": v for k, v in unet.items()}
    want |= {"model.unet.in_channels": 4, "model.unet.out_channels": 4, "model.unet.use_spatial_transformer": True,
             "model.timesteps": T, "model.beta_schedule": "linear",
             "model.linear_start": betas[0], "model.linear_end": betas[1]}
    return want


def check_config(shape: str, cd) -> None:
    import tomllib
    path = ROOT / "configs" / SHAPES[shape][0]
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"--shape {shape}: cannot read {path} ({type(e).__name__}: {e})")
    bad = []
    for key, want in expected_config(shape, cd).items():
        node = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != want:
            bad.append(f"{key} = {node!r} (this script builds {want!r})")
    if bad:
        fail(f"--shape {shape}: {path.relative_to(ROOT)} and this script disagree: " + "; ".join(bad))


def build_unet(shape: str, size: int, torch, diffusers, cd):
    """(unet, context_dim, betas) for the shape."""
    if shape == "tiny":
        u = cd.unet_defaults()
        try:
            unet = cd.build_unet(u, diffusers.UNet2DConditionModel, 4, size)
        except cd.InputError as e:
            fail(f"--size {size}: {e}")
        cd.verify_unet(u, unet)
        return unet, u.context_dim, (u.beta_start, u.beta_end)
    down = len(COMPASS_UNET["block_out_channels"]) - 1
    if size % 2 ** down:
        fail(f"--size {size}: must be a multiple of {2 ** down} (the compass UNet downsamples {down} times)")
    unet = diffusers.UNet2DConditionModel(sample_size=size, **COMPASS_UNET)
    return unet, COMPASS_UNET["cross_attention_dim"], COMPASS_BETAS


def diffusion_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_torch.py diffusion",
                                 description="PyTorch/diffusers counterpart of `ldm-train bench diffusion`")
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, help="latents per batch (default: the shape's, tiny 64, compass 8)")
    ap.add_argument("--size", type=int, help="latent side (default: the shape's, tiny 8, compass 16)")
    ap.add_argument("--mode", choices=("train", "sample"), default="train")
    ap.add_argument("--context-len", type=int,
                    help="context tokens (default: the shape's, tiny 1 (the class token), compass 77)")
    ap.add_argument("--sample-steps", type=int, default=50, help=f"DDIM steps per sampling run (divides {T})")
    ap.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    ap.add_argument("--steps", type=int, default=5, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch.set_num_threads (default: all CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    _, batch, size, ctx_len = SHAPES[a.shape]
    batch = batch if a.batch is None else a.batch
    size = size if a.size is None else a.size
    ctx_len = ctx_len if a.context_len is None else a.context_len
    if min(a.steps, a.threads, batch, size, ctx_len, a.sample_steps) < 1 or a.warmup < 0:
        fail("--steps, --threads, --batch, --size, --context-len and --sample-steps must be >= 1, --warmup >= 0")
    if T % a.sample_steps:
        fail(f"--sample-steps {a.sample_steps}: must divide {T} (the reference's uniform spacing and "
             "diffusers' 'leading' agree only then)")
    if not math.isfinite(a.guidance):
        fail(f"--guidance {a.guidance}: must be finite")

    cd = import_calibrate()
    check_config(a.shape, cd)
    torch, diffusers = import_torch()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    unet, context_dim, (beta_start, beta_end) = build_unet(a.shape, size, torch, diffusers, cd)
    params = sum(p.numel() for p in unet.parameters())
    shape = (batch, 4, size, size)
    context = torch.randn(batch, ctx_len, context_dim)

    if a.mode == "train":
        unet.train()
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

        def step() -> None:
            x = torch.randn(shape)
            noise = torch.randn(shape)
            t = torch.randint(0, T, (batch,))
            loss = torch.nn.functional.mse_loss(unet(x, t, encoder_hidden_states=context).sample, noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        unet.eval()
        sched_args = cd.unet_defaults(beta_start=beta_start, beta_end=beta_end, sample_steps=a.sample_steps)
        ddim, _ = cd.check_schedulers(sched_args, torch, diffusers.DDPMScheduler, diffusers.DDIMScheduler,
                                      cd.reference_alphas_cumprod(beta_start, beta_end))
        s = a.guidance
        batched = s != 1.0
        # [uncond, cond]: a second random context stands in for the null condition.
        ctx = torch.cat([torch.randn(batch, ctx_len, context_dim), context]) if batched else context
        n = 2 * batch if batched else batch
        steps_t = [(t, torch.full((n,), int(t), dtype=torch.long)) for t in ddim.timesteps]

        def step() -> float:
            x = torch.randn(shape)
            t0 = time.perf_counter()
            with torch.no_grad():
                for t, tt in steps_t:
                    if batched:
                        e_u, e_c = unet(torch.cat([x, x]), tt, encoder_hidden_states=ctx).sample.chunk(2)
                        e = e_u + s * (e_c - e_u)
                    else:
                        e = unet(x, tt, encoder_hidden_states=ctx).sample
                    x = ddim.step(e, t, x, eta=0.0).prev_sample
            return time.perf_counter() - t0

    median, fastest = time_iterations(step, a.warmup, a.steps)
    print(json.dumps({
        "backend": "pytorch",
        "mode": a.mode,
        "batch": batch,
        "size": size,
        "context_len": ctx_len,
        "median_s": median,
        "min_s": fastest,
        "samples_per_sec": batch / median,
        "peak_rss_mib": peak_rss_mib(),
        "params": params,
    }), flush=True)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["diffusion"]:
        diffusion_main(argv[1:])
    else:
        autoencoder_main(argv[1:] if argv[:1] == ["autoencoder"] else argv)


if __name__ == "__main__":
    main()
