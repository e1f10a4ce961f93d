#!/usr/bin/env python3
"""PyTorch/diffusers reference run of the tiny class-conditional LDM recipe.

Calibrates the bar for ldm-train's class-conditional diffusion on
Fashion-MNIST: the same recipe, in the reference semantics, trained and
sampled with PyTorch + diffusers, so "our samples score X" can be read
against "the reference recipe scores Y at the same budget".

  first stage  a frozen diffusers AutoencoderKL folder (`ldm-train export
               --to diffusers`), or --random-vae (random init of the tiny
               KL-f4 shape: channels 32,64,64, 1 res block, z 4, GroupNorm 32)
               for smoke tests. The 60k training images (28² gray -> RGB,
               padded centred to 32² with black, x/127.5 - 1) are encoded
               once; posterior mean and std are kept and every batch draws
               z = scale_factor * (mean + std * eps), as posterior.sample().
  scale        --scale-by-std (default: 1/std of the first batch's sampled
               latents, as the reference), --scale-factor F, or
               --scale-factor config (the folder's scaling_factor).
  UNet         the reference openaimodel, as diffusers UNet2DConditionModel:
               model channels 64, mult 1,2, 1 res block, a SpatialTransformer
               (depth 1, 32 channels per head, context 64, GEGLU x4, 1x1 conv
               proj_in/out) at downsampling factors 1 and 2 and in the middle,
               [cos, sin] timestep embedding, the reference zero inits.
               Condition: ClassEmbedder, nn.Embedding(10 + 1, 64) trained
               jointly, one context token; index 10 is the null class.
  training     DDPM eps-prediction, T 1000, scaled-linear betas 0.0015..0.0195,
               uniform t, l2 mean; AdamW (0.9, 0.999, eps 1e-8, wd 0.01) with
               the reference LambdaLinear warm-up; condition dropout to the
               null class; EMA (decay min(0.9999, (1+n)/(10+n))) of the UNet
               and the class embedding, every step.
  sampling     EMA weights, DDIM (LDM timesteps range(0, T, T/S) + 1, last
               alpha_prev = alphabar[0]), eta 0, classifier-free guidance
               batched [uncond, cond] -> e_u + s (e_c - e_u) for each
               --guidance; PNGs OUT/guidance-<s>/<class dir>/<k>.png (32x32
               RGB) and OUT/grid-guidance-<s>.png (a row per class); --score
               scores them with scripts/fashion_classifier.py's model.

Writes OUT/train-log.jsonl (every --log-every steps), OUT/ema/ (EMA UNet as a
diffusers folder + class embedding) and OUT/result.json (config, parameter
counts, losses, wall time, s/step, scale_factor, outputs, accuracies).

Usage (the reference venv of scripts/ref_venv.sh; data from scripts/setup.sh):
    $CACHE/ref-venv/bin/python scripts/calibrate_diffusion.py \\
        --vae EXPORTED_DIR --out runs/calib --steps 20000 --guidance 1 3 \\
        --samples-per-class 100 --score
    # smoke test:
    $CACHE/ref-venv/bin/python scripts/calibrate_diffusion.py --random-vae \\
        --out /tmp/calib-smoke --steps 20 --train-subset 512 --samples-per-class 2
($CACHE is ${LDM_TRAIN_CACHE:-~/.cache/ldm-train}.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import fashion_classifier as fc  # noqa: E402

PROG = "calibrate_diffusion.py"
T = 1000
NUM_CLASSES = len(fc.CLASSES)
NULL_CLASS = NUM_CLASSES


class InputError(Exception):
    """Bad input; main() prints it as one line and exits 2."""


def fail(msg: str, code: int = 2) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def add_recipe_args(ap: argparse.ArgumentParser, context_dim: int) -> None:
    """The UNet, training and sampling options of the reference recipe, shared
    with scripts/calibrate_txt2img.py (which resets some defaults)."""
    g = ap.add_argument_group("UNet (reference openaimodel names)")
    g.add_argument("--model-channels", type=int, default=64)
    g.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2])
    g.add_argument("--num-res-blocks", type=int, default=1)
    g.add_argument("--attention-resolutions", type=int, nargs="*", default=[1, 2],
                   help="downsampling factors with a SpatialTransformer (the middle always has one)")
    g.add_argument("--num-head-channels", type=int, default=32, help="channels per attention head")
    g.add_argument("--transformer-depth", type=int, default=1)
    g.add_argument("--context-dim", type=int, default=context_dim,
                   help="conditioning width = cross_attention_dim (default: %(default)s)")
    g.add_argument("--diffusers-init", action="store_true",
                   help="keep diffusers' init (default: zero-init the ResBlock out convs, transformer "
                        "proj_out and the output conv, as the reference)")

    g = ap.add_argument_group("training")
    g.add_argument("--out", type=Path, required=True, help="run directory")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=2e-4)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--warmup-steps", type=int, default=1000,
                   help="LambdaLinear warm-up length (the reference configs use 10000)")
    g.add_argument("--warmup-start", type=float, default=1e-6, help="lr factor at step 0")
    g.add_argument("--cond-dropout", type=float, default=0.1,
                   help="probability of a condition -> null class / empty prompt")
    g.add_argument("--beta-start", type=float, default=0.0015)
    g.add_argument("--beta-end", type=float, default=0.0195)
    g.add_argument("--ema-decay", type=float, default=0.9999)
    g.add_argument("--log-every", type=int, default=100)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    g = ap.add_argument_group("sampling")
    g.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (must divide 1000)")
    g.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    g.add_argument("--sample-batch", type=int, default=250, help="latents per UNet call (x2 with guidance)")
    g.add_argument("--sample-seed", type=int, default=None, help="default: --seed")


def check_recipe_args(a: argparse.Namespace) -> None:
    """Validates what add_recipe_args adds; raises InputError."""
    positive = ["steps", "batch_size", "log_every", "threads", "sample_steps", "sample_batch", "model_channels",
                "num_res_blocks", "num_head_channels", "transformer_depth", "context_dim"]
    for k in positive:
        if getattr(a, k) < 1:
            raise InputError(f"--{k.replace('_', '-')} must be >= 1")
    if a.warmup_steps < 0 or not 0 <= a.cond_dropout < 1 or a.lr <= 0:
        raise InputError("--warmup-steps must be >= 0, --cond-dropout in [0, 1), --lr > 0")
    if T % a.sample_steps:
        raise InputError(f"--sample-steps {a.sample_steps}: must divide {T} (the reference's uniform "
                         "spacing and diffusers' 'leading' agree only then)")
    if a.sample_seed is None:
        a.sample_seed = a.seed


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    g = ap.add_argument_group("first stage and data")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--vae", type=Path, help="diffusers AutoencoderKL folder (ldm-train export --to diffusers)")
    src.add_argument("--random-vae", action="store_true",
                     help="random-init tiny KL-f4 AutoencoderKL (smoke tests; saved to OUT/random-vae)")
    g.add_argument("--data", type=Path, default=fc.DEFAULT_DATA, help="Fashion-MNIST folder (default: %(default)s)")
    g.add_argument("--train-subset", type=int, default=0, help="use the first N training images only (smoke tests)")
    g.add_argument("--encode-batch", type=int, default=500)
    sc = g.add_mutually_exclusive_group()
    sc.add_argument("--scale-by-std", action="store_true",
                    help="scale_factor = 1/std of the first batch's sampled latents (the default)")
    sc.add_argument("--scale-factor", help="a float, or 'config' for the folder's scaling_factor")

    add_recipe_args(ap, context_dim=64)
    g = ap.add_argument_group("sampling (Fashion-MNIST)")
    g.add_argument("--samples-per-class", type=int, default=10)
    g.add_argument("--grid-cols", type=int, default=10, help="samples per class in the grid")
    g.add_argument("--score", action="store_true", help="score the samples with the Fashion-MNIST classifier")
    g.add_argument("--classifier", type=Path, default=fc.DEFAULT_OUT / "model.pt", help="default: %(default)s")
    return ap


# What build_unet and check_schedulers read, for importers (scripts/bench_torch.py).
UNET_ARGS = ("model_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "num_head_channels",
             "transformer_depth", "context_dim", "diffusers_init")
SCHEDULE_ARGS = ("beta_start", "beta_end", "sample_steps")


def unet_defaults(**overrides) -> argparse.Namespace:
    """The default recipe's UNet and schedule settings (this script's defaults)
    as the namespace build_unet / check_schedulers take, with `overrides`."""
    ap = build_parser()
    a = argparse.Namespace(**{k: ap.get_default(k) for k in UNET_ARGS + SCHEDULE_ARGS})
    for k, v in overrides.items():
        if not hasattr(a, k):
            raise TypeError(f"unet_defaults: unknown setting {k!r}")
        setattr(a, k, v)
    return a


def parse_args() -> argparse.Namespace:
    a = build_parser().parse_args()

    check_recipe_args(a)
    for k in ["samples_per_class", "encode_batch", "grid_cols"]:
        if getattr(a, k) < 1:
            raise InputError(f"--{k.replace('_', '-')} must be >= 1")
    if a.train_subset < 0:
        raise InputError("--train-subset must be >= 0")
    if a.scale_factor not in (None, "config"):
        try:
            a.scale_factor = float(a.scale_factor)
        except ValueError:
            raise InputError(f"--scale-factor {a.scale_factor!r}: expected a float or 'config'") from None
        if not (a.scale_factor > 0 and math.isfinite(a.scale_factor)):
            raise InputError(f"--scale-factor {a.scale_factor}: must be a positive finite float")
    if a.vae is not None and not (a.vae / "config.json").is_file():
        raise InputError(f"--vae {a.vae}: no config.json there (expected a diffusers AutoencoderKL folder)")
    if a.score and not a.classifier.is_file():
        raise InputError(f"--classifier {a.classifier} not found (run scripts/fashion_classifier.py train first)")
    return a


# ---------------------------------------------------------------- model

def build_unet(a, UNet2DConditionModel, latent_ch: int, latent_hw: int):
    levels = len(a.channel_mult)
    chans = [a.model_channels * m for m in a.channel_mult]
    for c in chans:
        if c % 32 or c % a.num_head_channels:
            raise InputError(f"--model-channels x --channel-mult gives {c} channels: must be a multiple of "
                             f"32 (GroupNorm) and of --num-head-channels {a.num_head_channels}")
    if latent_hw % (2 ** (levels - 1)):
        raise InputError(f"latent {latent_hw}x{latent_hw} cannot be downsampled {levels - 1} times")
    bad = [d for d in a.attention_resolutions if d not in [2 ** i for i in range(levels)]]
    if bad:
        raise InputError(f"--attention-resolutions {bad}: not a downsampling factor of these levels "
                         f"({[2 ** i for i in range(levels)]})")
    attn = set(a.attention_resolutions)
    down = [("CrossAttnDownBlock2D" if 2 ** i in attn else "DownBlock2D") for i in range(levels)]
    up = [("CrossAttnUpBlock2D" if 2 ** (levels - 1 - i) in attn else "UpBlock2D") for i in range(levels)]
    unet = UNet2DConditionModel(
        sample_size=latent_hw, in_channels=latent_ch, out_channels=latent_ch,
        flip_sin_to_cos=True, freq_shift=0,  # [cos, sin], exponent / half: the reference embedding
        down_block_types=tuple(down), mid_block_type="UNetMidBlock2DCrossAttn", up_block_types=tuple(up),
        block_out_channels=tuple(chans), layers_per_block=a.num_res_blocks,
        downsample_padding=1, mid_block_scale_factor=1.0, dropout=0.0, act_fn="silu",
        norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=a.context_dim,
        transformer_layers_per_block=a.transformer_depth,
        # diffusers' historical misnomer: `attention_head_dim` is the number of
        # heads per level (its `num_attention_heads` argument is refused);
        # verify_unet checks the resulting head width.
        attention_head_dim=tuple(c // a.num_head_channels for c in chans),
        use_linear_projection=False, upcast_attention=False, resnet_time_scale_shift="default",
        time_embedding_type="positional", time_embedding_dim=4 * a.model_channels,
    )
    if not a.diffusers_init:
        import torch
        from diffusers.models.resnet import ResnetBlock2D
        from diffusers.models.transformers.transformer_2d import Transformer2DModel
        zero = [unet.conv_out]
        for m in unet.modules():
            if isinstance(m, ResnetBlock2D):
                zero.append(m.conv2)
            elif isinstance(m, Transformer2DModel):
                zero.append(m.proj_out)
        with torch.no_grad():
            for m in zero:
                for p in m.parameters():
                    p.zero_()
    return unet


def verify_unet(a, unet) -> list[dict]:
    """Check the reference semantics on the built modules (head width, norms,
    projections, GEGLU width) and return a per-block summary."""
    import torch.nn as nn
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    def check(ok: bool, what: str) -> None:
        if not ok:
            raise AssertionError(f"UNet check failed: {what}")

    summary = []
    blocks = [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)] + [("mid_block", unet.mid_block)] \
        + [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    n_st = 0
    for name, block in blocks:
        entry = {"block": name, "type": type(block).__name__, "resnets": 0, "transformers": 0}
        for m in block.modules():
            if isinstance(m, ResnetBlock2D):
                entry["resnets"] += 1
                entry["channels"] = m.out_channels
                check(m.norm1.eps == 1e-5 and m.norm2.eps == 1e-5 and m.norm1.num_groups == 32,
                      f"{name} ResnetBlock GroupNorm 32 / eps 1e-5")
            elif isinstance(m, Transformer2DModel):
                entry["transformers"] += 1
                n_st += 1
                check(m.norm.eps == 1e-6 and m.norm.num_groups == 32, f"{name} transformer GroupNorm 32 / eps 1e-6")
                check(isinstance(m.proj_in, nn.Conv2d) and m.proj_in.kernel_size == (1, 1)
                      and isinstance(m.proj_out, nn.Conv2d), f"{name} 1x1 conv proj_in/proj_out")
                check(len(m.transformer_blocks) == a.transformer_depth, f"{name} transformer depth")
            elif isinstance(m, BasicTransformerBlock):
                dim = m.norm1.normalized_shape[0]
                for attn, cross in ((m.attn1, False), (m.attn2, True)):
                    head_dim = attn.to_q.out_features // attn.heads
                    check(head_dim == a.num_head_channels, f"{name} head width {head_dim} != {a.num_head_channels}")
                    check(attn.to_q.bias is None and attn.to_k.bias is None and attn.to_v.bias is None,
                          f"{name} bias-free q/k/v")
                    check(abs(attn.scale - head_dim ** -0.5) < 1e-12, f"{name} attention scale d_head^-0.5")
                    check(attn.to_k.in_features == (a.context_dim if cross else dim), f"{name} k input width")
                    check(attn.is_cross_attention == cross, f"{name} attn1 self / attn2 cross")
                geglu = m.ff.net[0]
                check(isinstance(geglu, GEGLU) and geglu.proj.out_features == 2 * 4 * dim, f"{name} GEGLU x4")
                check(all(n.eps == 1e-5 for n in (m.norm1, m.norm2, m.norm3)), f"{name} LayerNorm eps 1e-5")
                entry["heads"] = m.attn1.heads
                entry["head_dim"] = m.attn1.to_q.out_features // m.attn1.heads
        summary.append(entry)
    levels = len(a.channel_mult)
    want = sum(a.num_res_blocks for i in range(levels) if 2 ** i in a.attention_resolutions) + 1 \
        + sum(a.num_res_blocks + 1 for i in range(levels) if 2 ** i in a.attention_resolutions)
    check(n_st == want, f"{n_st} SpatialTransformers, expected {want}")
    check(unet.time_proj.flip_sin_to_cos and unet.time_proj.downscale_freq_shift == 0, "[cos, sin] embedding")
    check(unet.time_embedding.linear_2.out_features == 4 * a.model_channels, "time embedding 4 x mc")
    return summary


# ---------------------------------------------------------------- schedules

def reference_alphas_cumprod(beta_start: float, beta_end: float) -> np.ndarray:
    """The reference make_beta_schedule("linear"): float64, scaled-linear."""
    betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def check_schedulers(a, torch, DDPMScheduler, DDIMScheduler, ref_ac: np.ndarray):
    """Build diffusers' DDPM (training) and DDIM (sampling) schedulers and
    check them against the reference formulas; returns (ddim, checks)."""
    ddpm = DDPMScheduler(num_train_timesteps=T, beta_schedule="scaled_linear",
                         beta_start=a.beta_start, beta_end=a.beta_end, prediction_type="epsilon")
    ac_diff = float(np.abs(ddpm.alphas_cumprod.double().numpy() - ref_ac).max())
    # diffusers computes in float32, the reference in float64 (then float32 buffers).
    assert ac_diff < 1e-5, f"DDPMScheduler alphas_cumprod differs from the formula by {ac_diff}"
    ddim = DDIMScheduler(num_train_timesteps=T, beta_schedule="scaled_linear",
                         beta_start=a.beta_start, beta_end=a.beta_end, prediction_type="epsilon",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         timestep_spacing="leading")
    ddim.set_timesteps(a.sample_steps)
    ref_ts = [t + 1 for t in range(0, T, T // a.sample_steps)]  # make_ddim_timesteps("uniform")
    got = ddim.timesteps.tolist()
    assert got == ref_ts[::-1], f"DDIM timesteps {got[:3]}...{got[-3:]} != reference {ref_ts[::-1][:3]}..."
    # One reference DDIM update (eta 0) per timestep against scheduler.step,
    # including the last one whose alpha_prev is alphabar[0].
    ac32 = ref_ac.astype(np.float32).astype(np.float64)
    g = torch.Generator().manual_seed(0)
    step_err = 0.0
    for i, t in enumerate(ref_ts):
        x, e = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64).unbind(0)
        a_t = ac32[t]
        a_prev = ac32[ref_ts[i - 1]] if i else ac32[0]
        x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        ref = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e
        got_x = ddim.step(e.float(), t, x.float(), eta=0.0).prev_sample.double()
        step_err = max(step_err, float((got_x - ref).abs().max() / ref.abs().max()))
    assert step_err < 1e-4, f"DDIMScheduler.step differs from the reference update by {step_err} (relative)"
    return ddim, {"alphas_cumprod_max_abs_diff": ac_diff, "ddim_timesteps": f"{got[0]}, {got[1]}, ..., {got[-1]}",
                  "ddim_step_max_rel_err": step_err}


# ---------------------------------------------------------------- first stage

def tiny_vae(AutoencoderKL):
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=32)


def to_pixels(torch, x_u8: np.ndarray) -> "torch.Tensor":
    """uint8 [N, 28, 28] -> float [N, 3, 32, 32] in [-1, 1], padded with black."""
    x = torch.tensor(x_u8, dtype=torch.float32) / 127.5 - 1
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return x[:, None].expand(-1, 3, -1, -1)


def encode_all(torch, vae, x_u8: np.ndarray, batch: int, device) -> tuple:
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            post = vae.encode(to_pixels(torch, x_u8[i:i + batch]).to(device)).latent_dist
            means.append(post.mean.float())
            stds.append(post.std.float())
    return torch.cat(means), torch.cat(stds)


# ---------------------------------------------------------------- training

class Noiser:
    """q(x_t | x_0) of the reference schedule, t uniform over [0, T)."""

    def __init__(self, torch, ref_ac: np.ndarray, device):
        self.torch = torch
        self.sqrt_ac = torch.tensor(np.sqrt(ref_ac), dtype=torch.float32, device=device)
        self.sqrt_1mac = torch.tensor(np.sqrt(1 - ref_ac), dtype=torch.float32, device=device)

    def noised(self, z, gen) -> tuple:
        """(x_t, t, noise) for clean latents z, drawn from `gen`."""
        torch = self.torch
        t = torch.randint(0, T, (len(z),), generator=gen).to(z.device)
        noise = torch.randn(z.shape, generator=gen).to(z.device)
        x_t = self.sqrt_ac[t].view(-1, 1, 1, 1) * z + self.sqrt_1mac[t].view(-1, 1, 1, 1) * noise
        return x_t, t, noise


def train_loop(a, torch, device, params: list, loss_of_step, t_start: float) -> tuple:
    """a.steps steps of AdamW (0.9, 0.999, eps 1e-8) with the reference
    LambdaLinear warm-up and LitEma over `params`; `loss_of_step(step)` returns
    the step's loss. Logs to OUT/train-log.jsonl every --log-every steps.
    Returns (losses, seconds in steps, ema, log path)."""
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=a.weight_decay)
    warm = a.warmup_steps

    def lr_factor(n: int) -> float:  # the reference LambdaLinearScheduler, one cycle
        return a.warmup_start + (1 - a.warmup_start) * n / warm if n < warm else 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = Ema(params, a.ema_decay)
    log_path = a.out / "train-log.jsonl"
    losses: list[float] = []
    win_loss, win_t, train_s = [], 0.0, 0.0
    with log_path.open("w") as log:
        for step in range(1, a.steps + 1):
            ts = time.perf_counter()
            loss = loss_of_step(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lr_used = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            ema.update(torch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - ts
            train_s += dt
            win_t += dt
            losses.append(loss.item())
            win_loss.append(losses[-1])
            if not math.isfinite(losses[-1]):
                fail(f"loss is {losses[-1]} at step {step} (lower --lr?)", 1)
            if step % a.log_every == 0 or step == a.steps:
                rec = {"step": step, "loss": sum(win_loss) / len(win_loss), "loss_last": losses[-1],
                       "lr": lr_used, "s_per_step": win_t / len(win_loss),
                       "elapsed_s": round(time.time() - t_start, 2)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                print(f"step {step}: loss {rec['loss']:.4f}  lr {rec['lr']:.3g}  "
                      f"{rec['s_per_step'] * 1e3:.1f} ms/step", flush=True)
                win_loss, win_t = [], 0.0
    return losses, train_s, ema, log_path


def guided_ddim(torch, unet, ddim, x, ctx, null_ctx, s: float):
    """DDIM (eta 0) from x_T with classifier-free guidance s, batched
    [uncond, cond] as the reference; scale 1 skips the unconditional pass."""
    for t in ddim.timesteps:
        tt = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
        if s == 1.0:
            e = unet(x, tt, encoder_hidden_states=ctx).sample
        else:
            e_u, e_c = unet(torch.cat([x, x]), torch.cat([tt, tt]),
                            encoder_hidden_states=torch.cat([null_ctx, ctx])).sample.chunk(2)
            e = e_u + s * (e_c - e_u)
        x = ddim.step(e, t, x, eta=0.0).prev_sample
    return x


# ---------------------------------------------------------------- EMA

class Ema:
    """The reference LitEma rule on a list of parameters."""

    def __init__(self, params, decay: float):
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.updates = decay, 0

    def update(self, torch) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params):
                s.lerp_(p.detach(), 1 - d)

    def copy_to_params(self, torch) -> None:
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params):
                p.copy_(s)


# ---------------------------------------------------------------- outputs

def guidance_tag(s: float) -> str:
    return f"guidance-{s:g}"


def to_u8(torch, x: "torch.Tensor") -> np.ndarray:
    """Decoded [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())


def write_samples(images: np.ndarray, labels: list[int], out: Path, grid: Path, cols: int) -> None:
    from PIL import Image
    k_of = {}
    for im, c in zip(images, labels):
        k = k_of.get(c, 0)
        k_of[c] = k + 1
        d = out / fc.class_dir_name(c)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im, "RGB").save(d / f"{k}.png")
    h, w = images.shape[1:3]
    cols = min(cols, max(k_of.values()))
    sheet = Image.new("RGB", (cols * w, NUM_CLASSES * h))
    seen = {}
    for im, c in zip(images, labels):
        k = seen.get(c, 0)
        seen[c] = k + 1
        if k < cols:
            sheet.paste(Image.fromarray(im, "RGB"), (k * w, c * h))
    sheet.save(grid)


# ---------------------------------------------------------------- main

def run(a) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
        from diffusers.utils import logging as diffusers_logging
    except Exception as e:  # noqa: BLE001
        fail(f"cannot import torch and diffusers ({type(e).__name__}: {e}); run bash scripts/ref_venv.sh "
             "and use $CACHE/ref-venv/bin/python")
    diffusers_logging.set_verbosity_error()
    torch.set_num_threads(a.threads)
    try:
        device = torch.device(a.device)
        torch.empty(1, device=device)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"--device {a.device}: {type(e).__name__}: {e}") from None
    a.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    # Schedules first: a mismatch should stop the run before any work.
    ref_ac = reference_alphas_cumprod(a.beta_start, a.beta_end)
    ddim, sched_checks = check_schedulers(a, torch, DDPMScheduler, DDIMScheduler, ref_ac)
    print(f"schedules: alphas_cumprod vs formula {sched_checks['alphas_cumprod_max_abs_diff']:.2g}, "
          f"DDIM timesteps {sched_checks['ddim_timesteps']}, step vs reference "
          f"{sched_checks['ddim_step_max_rel_err']:.2g} (relative)", flush=True)

    torch.manual_seed(a.seed)
    if a.random_vae:
        vae = tiny_vae(AutoencoderKL)
        vae_path = a.out / "random-vae"
        vae.save_pretrained(str(vae_path))
    else:
        vae_path = a.vae
        try:
            vae = AutoencoderKL.from_pretrained(str(a.vae))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"--vae {a.vae}: cannot load as AutoencoderKL ({type(e).__name__}: {e})") from None
    vae = vae.to(device).eval().requires_grad_(False)
    if vae.config.in_channels != 3 or vae.config.out_channels != 3:
        raise InputError(f"--vae {vae_path}: expected 3 in/out channels, has "
                         f"{vae.config.in_channels}/{vae.config.out_channels}")

    # Latent shape from one black image, so a bad architecture fails before
    # the (minute-long) encoding of the training set.
    with torch.no_grad():
        probe = vae.encode(to_pixels(torch, np.zeros((1, 28, 28), np.uint8)).to(device)).latent_dist.mean
    latent_ch, latent_hw = probe.shape[1], probe.shape[2]
    if probe.shape[2] != probe.shape[3]:
        raise InputError(f"--vae {vae_path}: non-square latent {list(probe.shape[1:])} for 32x32 input")
    unet = build_unet(a, UNet2DConditionModel, latent_ch, latent_hw).to(device)
    summary = verify_unet(a, unet)
    class_emb = torch.nn.Embedding(NUM_CLASSES + 1, a.context_dim).to(device)
    n_unet = sum(p.numel() for p in unet.parameters())
    n_emb = sum(p.numel() for p in class_emb.parameters())
    print(f"UNet: {n_unet} parameters (+ class embedding {n_emb} = {n_unet + n_emb})")
    for e in summary:
        attn = f", {e['transformers']} transformer(s), {e['heads']} heads x {e['head_dim']} ch" \
            if e["transformers"] else ""
        print(f"  {e['block']:<14} {e['type']:<24} {e.get('channels', '?')} ch, {e['resnets']} resnet(s){attn}")

    fc.class_names(a.data)
    x_u8, y = fc.load_split(a.data, "train")
    if a.train_subset:
        if a.train_subset > len(x_u8):
            raise InputError(f"--train-subset {a.train_subset}: only {len(x_u8)} images")
        x_u8, y = x_u8[:a.train_subset], y[:a.train_subset]
    if len(x_u8) < a.batch_size:
        raise InputError(f"--batch-size {a.batch_size} is more than the {len(x_u8)} training images")
    t0 = time.time()
    lat_mean, lat_std = encode_all(torch, vae, x_u8, a.encode_batch, device)
    encode_s = time.time() - t0
    print(f"encoded {len(x_u8)} images to latents {list(lat_mean.shape[1:])} in {encode_s:.1f} s "
          f"(mean std {lat_std.mean():.3g}, mean |mean| {lat_mean.abs().mean():.3g})", flush=True)
    labels = torch.as_tensor(y, device=device)

    # Scale factor: the reference measures it on the first training batch.
    gen = torch.Generator().manual_seed(a.seed)
    perm = torch.randperm(len(x_u8), generator=gen).to(device)
    if a.scale_factor == "config":
        scale = float(vae.config.scaling_factor)
        scale_rule = "config"
    elif isinstance(a.scale_factor, float):
        scale, scale_rule = a.scale_factor, "fixed"
    else:
        idx = perm[:a.batch_size]
        z0 = lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen).to(device)
        scale, scale_rule = float(1.0 / z0.flatten().std()), "scale_by_std"
    print(f"scale_factor {scale:.6g} ({scale_rule}; the folder says {vae.config.scaling_factor})", flush=True)

    params = list(unet.parameters()) + list(class_emb.parameters())
    noiser = Noiser(torch, ref_ac, device)
    pos = 0

    def loss_of_step(step: int) -> "torch.Tensor":
        nonlocal perm, pos
        if pos + a.batch_size > len(perm):  # next epoch (drop the last partial batch)
            perm = torch.randperm(len(x_u8), generator=gen).to(device)
            pos = 0
        idx = perm[pos:pos + a.batch_size]
        pos += a.batch_size
        b = len(idx)
        eps_post = torch.randn((b, latent_ch, latent_hw, latent_hw), generator=gen).to(device)
        z = scale * (lat_mean[idx] + lat_std[idx] * eps_post)
        x_t, t, noise = noiser.noised(z, gen)
        c = labels[idx].clone()
        c[(torch.rand(b, generator=gen) < a.cond_dropout).to(device)] = NULL_CLASS
        pred = unet(x_t, t, encoder_hidden_states=class_emb(c)[:, None, :]).sample
        return torch.nn.functional.mse_loss(pred, noise)

    unet.train()
    losses, train_s, ema, log_path = train_loop(a, torch, device, params, loss_of_step, t_start)

    # Sampling with the EMA weights (the training weights are not needed after).
    ema.copy_to_params(torch)
    unet.eval()
    ema_dir = a.out / "ema"
    unet.save_pretrained(str(ema_dir / "unet"))
    from safetensors.torch import save_file
    save_file({"weight": class_emb.weight.detach().cpu().contiguous()}, str(ema_dir / "class_embedding.safetensors"))
    fc.write_json(ema_dir / "ldm.json", {"scale_factor": scale, "null_class": NULL_CLASS,
                                         "classes": fc.CLASSES, "vae": str(vae_path)})

    n = a.samples_per_class
    sample_labels = [c for c in range(NUM_CLASSES) for _ in range(n)]
    sgen = torch.Generator().manual_seed(a.sample_seed)
    # One x_T for every guidance value, so the sets differ only by guidance.
    x_T = torch.randn((len(sample_labels), latent_ch, latent_hw, latent_hw), generator=sgen)
    outputs, t_sample = {}, time.time()
    with torch.no_grad():
        null_ctx = class_emb(torch.tensor([NULL_CLASS], device=device))[:, None, :]
        for s in a.guidance:
            decoded = []
            for i in range(0, len(sample_labels), a.sample_batch):
                x = x_T[i:i + a.sample_batch].to(device)
                ctx = class_emb(torch.tensor(sample_labels[i:i + a.sample_batch], device=device))[:, None, :]
                x = guided_ddim(torch, unet, ddim, x, ctx, null_ctx.expand(len(x), -1, -1), s)
                decoded.append(vae.decode(x / scale).sample.float())
            images = to_u8(torch, torch.cat(decoded))
            d = a.out / guidance_tag(s)
            grid = a.out / f"grid-{guidance_tag(s)}.png"
            write_samples(images, sample_labels, d, grid, a.grid_cols)
            outputs[f"{s:g}"] = {"samples": str(d), "grid": str(grid)}
            print(f"guidance {s:g}: {len(images)} samples -> {d}, grid {grid}", flush=True)
    sample_s = time.time() - t_sample

    scores = {}
    if a.score:
        ctorch = torch
        model, ck = fc.load_model(ctorch, a.classifier)
        for s in a.guidance:
            r = fc.score_dir(ctorch, model, ck, a.out / guidance_tag(s))
            fc.print_score(r)
            scores[f"{s:g}"] = {k: r[k] for k in ("accuracy", "ratio_to_real", "real_test_accuracy",
                                                   "per_class_accuracy")}

    tail = losses[-max(1, math.ceil(len(losses) / 10)):]
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "vae": {"path": str(vae_path), "random": bool(a.random_vae), "config_scaling_factor": vae.config.scaling_factor,
                "latent_shape": [latent_ch, latent_hw, latent_hw]},
        "params": {"unet": n_unet, "class_embedding": n_emb, "total": n_unet + n_emb},
        "unet_summary": summary,
        "schedule_checks": sched_checks,
        "train_images": len(x_u8),
        "steps": a.steps,
        "final_loss": losses[-1],
        "mean_loss_last_10pct": sum(tail) / len(tail),
        "scale_factor": scale, "scale_rule": scale_rule,
        "encode_s": round(encode_s, 2), "train_s": round(train_s, 2), "s_per_step": train_s / a.steps,
        "sample_s": round(sample_s, 2), "wall_s": round(time.time() - t_start, 2),
        "torch": torch.__version__, "threads": a.threads, "device": str(device),
        "outputs": {"log": str(log_path), "ema": str(ema_dir), "guidance": outputs},
        "classifier": {"model": str(a.classifier), "scores": scores} if a.score else None,
    }
    fc.write_json(a.out / "result.json", result)
    print(json.dumps({k: result[k] for k in ("steps", "final_loss", "mean_loss_last_10pct", "s_per_step",
                                             "scale_factor", "wall_s")}
                     | {"params": result["params"]["total"],
                        "accuracy": {g: v["accuracy"] for g, v in scores.items()}}))
    print(f"wrote {a.out / 'result.json'}")


def main() -> None:
    try:
        run(parse_args())
    except (InputError, fc.InputError) as e:
        fail(str(e))


if __name__ == "__main__":
    main()
