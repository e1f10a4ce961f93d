#!/usr/bin/env python3
"""Regenerate the reference-side parity fixtures of ldm-train.

Everything lands in crates/ldm-train/tests/fixtures/parity/ (see the README
there). The Rust tests read these files; CI never runs Python.

    diffusers_kl/                  AutoencoderKL.save_pretrained (config.json + weights)
    ae_kl_io.safetensors           its inputs, outputs and gradients
    diffusers_vq/                  VQModel.save_pretrained
    ae_vq_io.safetensors           its inputs, outputs and gradients
    ldm_kl_first_stage.safetensors the diffusers_kl weights under CompVis/SD names
    disc_bn_io.safetensors         taming NLayerDiscriminator, BatchNorm
    disc_actnorm_io.safetensors    taming NLayerDiscriminator, ActNorm
    lpips_io.safetensors           lpips==0.1.4 LPIPS(vgg) on our converted weights
    losses.safetensors             values of the ldm/taming autoencoder loss terms
    schedulers.safetensors         diffusers scheduler arithmetic (no network): schedules,
                                   add_noise / get_velocity, min-SNR-γ weights, and
                                   DDPM / DDIM / PLMS / DPM-Solver++(2M) steps on fixed
                                   model outputs; read by crates/ldm-diffusion/tests/
                                   scheduler_parity.rs
    diffusers_unet_<name>/         UNet2DConditionModel.save_pretrained, for <name> in
                                   xattn and class (section (h))
    unet_<name>_io.safetensors     its inputs, output and gradients; read by
                                   crates/ldm-train/tests/parity/unet.rs
    sd_tiny/                       StableDiffusionPipeline.save_pretrained, float16 weights
                                   (section (i)): CLIP tokenizer (1000 real merges), text
                                   encoder, UNet, VAE, DDIM scheduler
    sd_tiny.safetensors            the same as one CompVis / SD 1.x checkpoint (float16),
                                   with EMA (model_ema.*) and different raw UNet weights
    sd_tiny_ddim.safetensors       a text-to-image DDIM run of sd_tiny (float64 reference)

Conventions: every tensor is float32 (schedulers.safetensors stores its
timesteps as int64, sd_tiny_ddim.safetensors its token ids; the sd_tiny
weights are float16). Names are `input.*`, `output.*`,
`grad.*` (and `weights.*` for the discriminators, whose weights live nowhere
else; the ldm and sd_tiny files use checkpoint key names). The `__metadata__` key
`config` holds a JSON description: shapes, hyper-parameters, what each
tensor is and the exact formula. Networks run in float64 on the float32
weights (upcast exactly), so the stored outputs are the rounded exact values
of the float32-weight network, not one float32 evaluation of it. The
sampler steps of schedulers.safetensors follow the same rule (diffusers'
step code in float64 on its float32 schedule); its schedules and training
quantities are diffusers' own float32 values.

All weights are perturbed after construction with seeded noise (every
parameter and floating buffer: norm scales/shifts, running stats, ActNorm
loc/scale), so a tensor loaded into the wrong slot, or not loaded at all,
cannot pass by sitting at its default value.

Usage:
    bash scripts/ref_venv.sh
    ~/.cache/ldm-train/ref-venv/bin/python scripts/make_parity_fixtures.py
    # only schedulers.safetensors (section (g)); every other file stays as it is:
    ~/.cache/ldm-train/ref-venv/bin/python scripts/make_parity_fixtures.py --only schedulers
    # only the UNet fixtures (section (h)):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/make_parity_fixtures.py --only unet
    # only the Stable Diffusion pipeline fixtures (section (i)):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/make_parity_fixtures.py --only pipeline
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
from pathlib import Path

sys.dont_write_bytecode = True

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, VQModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "crates" / "ldm-train" / "tests" / "fixtures" / "parity"
CACHE = Path(os.environ.get("LDM_TRAIN_CACHE", Path.home() / ".cache" / "ldm-train"))
LPIPS_WEIGHTS = CACHE / "weights" / "lpips_vgg16.safetensors"
SIZE_LIMIT = 4_000_000  # bytes, "< 4 MB" for what sections (a)-(g) write
# (make_ckpt_fixture.py adds a ~1 MB .ckpt beside them, not counted here.)
# Section (h) has its own budget: with GroupNorm32 no UNet is smaller than
# ~0.6 MB (see UNET_CONFIGS); its files are not counted in SIZE_LIMIT.
UNET_SIZE_LIMIT = 2_500_000
# Section (i) (sd_tiny*) has its own budget too, PIPELINE_SIZE_LIMIT below.
SEED = 20251126

torch.set_num_threads(1)  # reproducible reductions
torch.use_deterministic_algorithms(True)


def die(msg: str) -> None:
    print(f"make_parity_fixtures.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def versions() -> dict:
    import lpips  # noqa: F401
    import safetensors
    import torchvision
    from importlib.metadata import version
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "lpips": version("lpips"),
    }


VERSIONS = None  # filled in main()


# ---- helpers ----------------------------------------------------------------

def gen(offset: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(SEED + offset)
    return g


def randn(g: torch.Generator, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def image_like(g: torch.Generator, shape) -> torch.Tensor:
    """Smooth noise plus fine noise, squashed into [-1, 1] (float32)."""
    n, c, h, w = shape
    coarse = torch.randn(n, c, max(h // 4, 1), max(w // 4, 1), generator=g, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    fine = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    return (0.9 * torch.tanh(1.2 * smooth) + 0.1 * fine).clamp(-1, 1).to(torch.float32)


def shape_of(t: torch.Tensor) -> list:
    return list(t.shape)


def perturb_(module: nn.Module, g: torch.Generator, rel: float = 0.3) -> list[str]:
    """Add seeded noise to every floating parameter and buffer, in place.

    Tensors that are constant at construction (norm scales = 1, shifts = 0,
    ActNorm loc/scale, BN running stats) get absolute noise (0.2 around a
    non-zero constant, 0.1 around zero); randomly initialised tensors get
    noise of `rel` times their own standard deviation, which keeps the
    activations at the scale of the default initialisation.
    Returns the names touched (for the metadata)."""
    touched = []
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            t64 = t.double()
            std = t64.std().item() if t.numel() > 1 else 0.0
            noise = torch.randn(t.shape, generator=g, dtype=torch.float64)
            if std < 1e-12:
                sigma = 0.2 if t64.abs().max().item() > 0 else 0.1
            else:
                sigma = rel * std
            new = t64 + sigma * noise
            if name.endswith("running_var"):
                new = t64 * torch.exp(0.2 * noise)  # stays positive
            t.copy_(new.to(t.dtype))
            touched.append(name)
    return touched


def assert_all_changed(perturbed: nn.Module, default: nn.Module) -> None:
    d = dict(default.state_dict())
    for k, v in perturbed.state_dict().items():
        if not v.is_floating_point():
            continue
        if (v == d[k]).any():
            die(f"perturbation left an element of {k} at its default value")


def save_fixture(path: Path, tensors: dict, config: dict, int64_ok: bool = False) -> None:
    """Writes `tensors` as float32 (int64 ones stay int64 where `int64_ok`:
    timesteps are indices, not values)."""
    for k in tensors:
        if not (k.startswith(("input.", "output.", "grad.", "weights."))):
            die(f"bad fixture tensor name {k}")

    def stored(v: torch.Tensor) -> torch.Tensor:
        keep = int64_ok and v.dtype == torch.int64
        return v.detach().to(v.dtype if keep else torch.float32).contiguous().clone()
    flat = {k: stored(v) for k, v in tensors.items()}
    config = dict(config)
    config["versions"] = VERSIONS
    config["seed"] = SEED
    config["generator"] = "scripts/make_parity_fixtures.py"
    config["tensors_stored"] = {k: shape_of(v) for k, v in sorted(flat.items())}
    save_file(flat, str(path), metadata={"config": json.dumps(config, sort_keys=False)})
    os.chmod(path, 0o644)
    print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes, {len(flat)} tensors)")


def jsonable_config(cfg) -> dict:
    out = {}
    for k, v in dict(cfg).items():
        if k.startswith("_"):
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def save_pretrained_clean(model, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(str(folder), safe_serialization=True)
    for p in folder.iterdir():
        os.chmod(p, 0o644)
    names = sorted(p.name for p in folder.iterdir())
    if names != ["config.json", "diffusion_pytorch_model.safetensors"]:
        die(f"unexpected files from save_pretrained in {folder}: {names}")
    with safe_open(str(folder / "diffusion_pytorch_model.safetensors"), "pt") as f:
        for k in f.keys():
            if f.get_slice(k).get_dtype() != "F32":
                die(f"{folder.name}: {k} is not float32")


def reload_f64(cls, folder: Path, reference: nn.Module) -> nn.Module:
    """Load the saved folder back and check it holds exactly `reference`."""
    m = cls.from_pretrained(str(folder))
    a, b = m.state_dict(), reference.state_dict()
    if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
        die(f"{folder.name}: from_pretrained does not give back the saved weights")
    return m.double().eval()


GROUPNORM_FACTS = {
    "group_norm": "GroupNorm(norm_num_groups, C, eps=1e-6, affine) everywhere in encoder/decoder (resnets, attention group_norm, conv_norm_out)",
    "resnet": "h = conv1(silu(norm1(x))); h = conv2(dropout(silu(norm2(h)))) (dropout 0); out = (conv_shortcut(x) if C_in != C_out else x) + h; conv_shortcut is a 1x1 conv with bias; output_scale_factor 1.0; no time embedding",
    "attention": "single head (heads = C // attention_head_dim = 1, dim_head = C): hn = group_norm(x) as [B, H*W, C]; q = to_q(hn), k = to_k(hn), v = to_v(hn) (Linear C->C with bias, weight [C, C]); a = softmax(q k^T * C^-0.5) (softmax in float32 or higher, upcast_softmax); out = to_out.0(a v) (Linear C->C with bias; to_out.1 is Dropout(0)); result = out reshaped to [B, C, H, W] + x (residual_connection, rescale_output_factor 1.0)",
    "downsample": "between levels (not after the last): F.pad(x, (0, 1, 0, 1)) [right and bottom by one zero] then conv3x3 stride 2 padding 0 (diffusers Downsample2D padding=0)",
    "upsample": "between decoder levels (not after the last): F.interpolate(scale_factor=2, mode='nearest') then conv3x3 stride 1 padding 1",
    "conv_in/conv_out": "conv3x3 padding 1; encoder/decoder end in conv_norm_out (GroupNorm eps 1e-6) -> silu -> conv_out",
    "mid_block": "resnets.0 -> attentions.0 -> resnets.1 (encoder and decoder)",
    "decoder_order": "conv_in -> mid_block -> up_blocks.0 (lowest resolution, block_out_channels reversed) ... -> conv_norm_out -> silu -> conv_out; each up block has layers_per_block+1 resnets",
}


# ---- (a) AutoencoderKL ------------------------------------------------------

KL_KW = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 16, 32),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
    mid_block_add_attention=True,
)
KL_GRAD_KEYS = [
    "encoder.conv_in.weight",
    "encoder.mid_block.attentions.0.to_q.weight",
    "encoder.down_blocks.1.resnets.0.norm1.weight",
    "quant_conv.weight",
    "decoder.up_blocks.0.resnets.0.conv1.weight",
    "decoder.conv_out.weight",
]


def build_kl() -> AutoencoderKL:
    torch.manual_seed(SEED + 1)
    default = AutoencoderKL(**KL_KW).eval()
    model = copy.deepcopy(default)
    perturb_(model, gen(2))
    assert_all_changed(model, default)
    return model


def kl_forward(m: AutoencoderKL, x: torch.Tensor):
    """The exact forward that check_diffusers_export.py repeats (kind kl)."""
    posterior = m.encode(x).latent_dist
    decoded = m.decode(posterior.mode()).sample
    return posterior, decoded


def make_kl(model: AutoencoderKL) -> None:
    folder = OUT / "diffusers_kl"
    save_pretrained_clean(model, folder)
    m = reload_f64(AutoencoderKL, folder, model)

    g = gen(3)
    x = image_like(g, (2, 3, 24, 32))
    with torch.no_grad():
        posterior, decoded = kl_forward(m, x.double())
    probe = randn(g, *decoded.shape)

    xg = x.double().requires_grad_(True)
    m.zero_grad(set_to_none=True)
    _, dec_g = kl_forward(m, xg)
    loss = (dec_g * probe.double()).sum()
    loss.backward()
    if not torch.allclose(dec_g.detach(), decoded, rtol=0, atol=1e-12):
        die("KL: forward with and without autograd differ")
    params = dict(m.named_parameters())

    tensors = {
        "input.x": x,
        "input.probe": probe,
        "output.mean": posterior.mean,
        "output.logvar": posterior.logvar,
        "output.kl": posterior.kl(),
        "output.decoded": decoded,
        "grad.x": xg.grad,
    }
    for k in KL_GRAD_KEYS:
        tensors[f"grad.{k}"] = params[k].grad
    cfg = {
        "fixture": "ae_kl_io",
        "model": "diffusers.AutoencoderKL",
        "model_dir": "diffusers_kl",
        "diffusers_config": jsonable_config(m.config),
        "ldm_ddconfig_equivalent": {
            "ch": 16, "ch_mult": [1, 1, 2], "num_res_blocks": 2, "attn_resolutions": [],
            "z_channels": 4, "double_z": True, "embed_dim": 4, "in_channels": 3, "out_ch": 3,
            "dropout": 0.0, "resolution": 32,
            "norm_num_groups": 8,
            "note": "ldm's Normalize hard-codes 32 groups; these tiny weights need 8 groups. block_out_channels = ch * ch_mult, which needs ch_mult[0] == 1",
        },
        "compute": "float64 forward on the float32 weights of diffusers_kl/ (upcast exactly), eval mode, results rounded to float32",
        "architecture": GROUPNORM_FACTS,
        "shapes": {"x": [2, 3, 24, 32], "latent": [2, 4, 6, 8], "moments_after_quant_conv": [2, 8, 6, 8], "decoded": [2, 3, 24, 32]},
        "tensors": {
            "input.x": "image batch in [-1, 1]",
            "input.probe": "random N(0,1) tensor, shape of output.decoded",
            "output.mean": "posterior mean: first latent_channels channels of quant_conv(encoder(x))",
            "output.logvar": "posterior logvar: last latent_channels channels of quant_conv(encoder(x)), clamped to [-30, 20]",
            "output.kl": "posterior.kl() = 0.5 * sum_{c,h,w}(mean^2 + exp(logvar) - 1 - logvar), per image [B]",
            "output.decoded": "decode(posterior.mode()) = decoder(post_quant_conv(mean))",
            "grad.x": "dL/dx, L = sum(decoded * probe), decoded as in output.decoded",
            "grad.<diffusers key>": "dL/dW for the same L, for: " + ", ".join(KL_GRAD_KEYS),
        },
    }
    save_fixture(OUT / "ae_kl_io.safetensors", tensors, cfg)


# ---- (c) CompVis/ldm names for the same weights -----------------------------

# diffusers -> ldm, for the AutoencoderKL/VQModel Encoder/Decoder. Built as the
# inverse of diffusers.loaders.single_file_utils.convert_ldm_vae_checkpoint
# (and the DIFFUSERS_TO_LDM_MAPPING["vae"] table it uses); verified below by
# running that converter on the result.
LDM_ATTN_RENAME = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def diffusers_to_ldm_key(key: str, n_levels: int) -> str:
    parts = key.split(".")
    top = parts[0]
    if top in ("quant_conv", "post_quant_conv", "quantize"):
        return key
    assert top in ("encoder", "decoder"), key
    rest = parts[1:]
    if rest[0] == "conv_norm_out":
        return ".".join([top, "norm_out"] + rest[1:])
    if rest[0] in ("conv_in", "conv_out"):
        return key
    if rest[0] in ("down_blocks", "up_blocks"):
        i = int(rest[1])
        lvl = i if rest[0] == "down_blocks" else n_levels - 1 - i
        head = [top, "down" if rest[0] == "down_blocks" else "up", str(lvl)]
        kind = rest[2]
        if kind == "resnets":
            tail = rest[4:]
            tail = ["nin_shortcut" if t == "conv_shortcut" else t for t in tail]
            return ".".join(head + ["block", rest[3]] + tail)
        if kind == "downsamplers":
            return ".".join(head + ["downsample"] + rest[4:])
        if kind == "upsamplers":
            return ".".join(head + ["upsample"] + rest[4:])
        if kind == "attentions":  # in-level attention (not covered by diffusers' converter)
            sub = ".".join(rest[4:-1])
            return ".".join(head + ["attn", rest[3], LDM_ATTN_RENAME[sub], rest[-1]])
        raise KeyError(key)
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            tail = ["nin_shortcut" if t == "conv_shortcut" else t for t in rest[3:]]
            return ".".join([top, "mid", f"block_{int(rest[2]) + 1}"] + tail)
        if rest[1] == "attentions":
            sub = ".".join(rest[3:-1])
            return ".".join([top, "mid", "attn_1", LDM_ATTN_RENAME[sub], rest[-1]])
    raise KeyError(key)


def to_ldm_state_dict(sd: dict, n_levels: int) -> dict:
    out = {}
    for k, v in sd.items():
        lk = diffusers_to_ldm_key(k, n_levels)
        if lk in out:
            die(f"ldm name clash: {lk}")
        if ".attn" in lk and lk.endswith(".weight") and not lk.endswith("norm.weight"):
            assert v.ndim == 2, (k, v.shape)
            v = v[:, :, None, None]  # Linear [C, C] -> 1x1 conv [C, C, 1, 1]
        out[lk] = v.clone()
    return out


LDM_RENAME_TABLE = [
    ["{enc,dec}.conv_in.*", "{enc,dec}.conv_in.*", ""],
    ["{enc,dec}.conv_out.*", "{enc,dec}.conv_out.*", ""],
    ["{enc,dec}.conv_norm_out.*", "{enc,dec}.norm_out.*", ""],
    ["encoder.down_blocks.{i}.resnets.{j}.{norm1,conv1,norm2,conv2}.*", "encoder.down.{i}.block.{j}.{same}.*", ""],
    ["encoder.down_blocks.{i}.resnets.{j}.conv_shortcut.*", "encoder.down.{i}.block.{j}.nin_shortcut.*", "1x1 conv both sides"],
    ["encoder.down_blocks.{i}.downsamplers.0.conv.*", "encoder.down.{i}.downsample.conv.*", ""],
    ["decoder.up_blocks.{k}.resnets.{j}.*", "decoder.up.{L-1-k}.block.{j}.*", "level order reversed; conv_shortcut -> nin_shortcut"],
    ["decoder.up_blocks.{k}.upsamplers.0.conv.*", "decoder.up.{L-1-k}.upsample.conv.*", "level order reversed"],
    ["{enc,dec}.mid_block.resnets.{0,1}.*", "{enc,dec}.mid.block_{1,2}.*", "index + 1"],
    ["{enc,dec}.mid_block.attentions.0.group_norm.*", "{enc,dec}.mid.attn_1.norm.*", ""],
    ["{enc,dec}.mid_block.attentions.0.to_q.weight [C,C]", "{enc,dec}.mid.attn_1.q.weight [C,C,1,1]", "Linear <-> 1x1 conv: add/drop two trailing unit dims"],
    ["{enc,dec}.mid_block.attentions.0.to_k.weight [C,C]", "{enc,dec}.mid.attn_1.k.weight [C,C,1,1]", "same"],
    ["{enc,dec}.mid_block.attentions.0.to_v.weight [C,C]", "{enc,dec}.mid.attn_1.v.weight [C,C,1,1]", "same"],
    ["{enc,dec}.mid_block.attentions.0.to_out.0.weight [C,C]", "{enc,dec}.mid.attn_1.proj_out.weight [C,C,1,1]", "same"],
    ["...attentions.0.{to_q,to_k,to_v,to_out.0}.bias", "...attn_1.{q,k,v,proj_out}.bias", ""],
    ["quant_conv.*, post_quant_conv.*", "same", ""],
    ["(whole checkpoint)", "prefix first_stage_model. (SD2/SDXL single files may use vae.)", "other prefixes are not the autoencoder"],
]


def make_ldm(model: AutoencoderKL) -> None:
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n_levels = len(model.config.block_out_channels)
    ldm = to_ldm_state_dict(sd, n_levels)
    full = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    g = gen(4)
    full["model.diffusion_model.dummy"] = randn(g, 2, 3)
    full["cond_stage_model.dummy"] = randn(g, 4)

    # Verification: diffusers' own single-file converter must give back
    # exactly the diffusers state dict.
    back = convert_ldm_vae_checkpoint(dict(full), dict(model.config))
    if set(back) != set(sd):
        die("convert_ldm_vae_checkpoint(ldm names) key set differs from the diffusers state dict: "
            f"missing {sorted(set(sd) - set(back))[:5]}, extra {sorted(set(back) - set(sd))[:5]}")
    for k in sd:
        if back[k].shape != sd[k].shape or not torch.equal(back[k], sd[k]):
            die(f"convert_ldm_vae_checkpoint(ldm names)[{k}] differs from the diffusers tensor")
    print(f"  verified: convert_ldm_vae_checkpoint(ldm dict) == diffusers state dict ({len(sd)} tensors)")

    cfg = {
        "fixture": "ldm_kl_first_stage",
        "what": "the weights of diffusers_kl/ under the CompVis latent-diffusion / Stable Diffusion single-file key names",
        "prefix": "first_stage_model.",
        "ignore": ["model.diffusion_model.dummy", "cond_stage_model.dummy"],
        "ddconfig": {
            "double_z": True, "z_channels": 4, "resolution": 32, "in_channels": 3, "out_ch": 3,
            "ch": 16, "ch_mult": [1, 1, 2], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
        },
        "embed_dim": 4,
        "norm_num_groups": 8,
        "channels": "diffusers block_out_channels = [ch * m for m in ch_mult]; only ch_mult[0] == 1 maps (diffusers' conv_in outputs block_out_channels[0], ldm's outputs ch, and ldm's level 0 goes ch -> ch*ch_mult[0])",
        "note": "ldm's Normalize hard-codes GroupNorm(32, eps=1e-6); these tiny weights need 8 groups",
        "verified_with": f"diffusers {diffusers.__version__} diffusers.loaders.single_file_utils.convert_ldm_vae_checkpoint(checkpoint, config) maps this file back to exactly diffusers_kl/ ({len(sd)} tensors, bit-identical)",
        "rename_diffusers_to_ldm": LDM_RENAME_TABLE,
        "key_map": {k: diffusers_to_ldm_key(k, n_levels) for k in sd},
    }
    path = OUT / "ldm_kl_first_stage.safetensors"
    flat = {k: v.to(torch.float32).contiguous() for k, v in full.items()}
    cfg["versions"] = VERSIONS
    cfg["generator"] = "scripts/make_parity_fixtures.py"
    save_file(flat, str(path), metadata={"config": json.dumps(cfg)})
    os.chmod(path, 0o644)
    print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes, {len(flat)} tensors)")


# ---- (b) VQModel ------------------------------------------------------------

VQ_KW = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(16, 32),
    layers_per_block=1,
    act_fn="silu",
    latent_channels=3,
    sample_size=32,
    num_vq_embeddings=64,
    norm_num_groups=8,
    vq_embed_dim=3,
)
VQ_GRAD_KEYS = ["encoder.conv_in.weight", "decoder.conv_out.weight"]


def vq_forward(m: VQModel, x: torch.Tensor):
    """The exact forward that check_diffusers_export.py repeats (kind vq)."""
    h = m.encode(x).latents
    out = m.decode(h)  # quantizes h first (force_not_quantize=False)
    return h, out.sample, out.commit_loss


def sq_dist_gap(h: torch.Tensor, codebook: torch.Tensor) -> tuple[float, float]:
    """Smallest (second nearest - nearest) squared distance over all latent
    vectors, and the mean nearest squared distance."""
    z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).double()
    d = ((z[:, None, :] - codebook.double()[None]) ** 2).sum(-1)
    s, _ = d.sort(dim=1)
    return (s[:, 1] - s[:, 0]).min().item(), s[:, 0].mean().item()


def build_vq(x: torch.Tensor) -> VQModel:
    torch.manual_seed(SEED + 10)
    default = VQModel(**VQ_KW).eval()
    model = copy.deepcopy(default)
    perturb_(model, gen(11))
    assert_all_changed(model, default)
    # The default codebook (uniform +-1/n) sits in a tiny ball: every latent
    # would pick the same few codes. Spread it over the latent distribution:
    # 40 codes near actual latent vectors of x, 24 drawn from a Gaussian of
    # the latents' mean/std; retry seeds until the nearest code is clear.
    with torch.no_grad():
        h = model.double().encode(x.double()).latents
        model.float()
        z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        mu, sd = z.mean(0), z.std(0)
        best = None
        for attempt in range(64):  # keep the codebook whose nearest code is clearest
            g = gen(100 + attempt)
            pick = torch.randperm(z.shape[0], generator=g)[:40]
            near = z[pick] + 0.05 * sd * torch.randn(40, z.shape[1], generator=g, dtype=torch.float64)
            far = mu + sd * torch.randn(24, z.shape[1], generator=g, dtype=torch.float64)
            cb = torch.cat([near, far])[torch.randperm(64, generator=g)].float()
            gap, mean_d = sq_dist_gap(h, cb)
            if best is None or gap > best[0]:
                best = (gap, cb)
        gap, cb = best
        if gap < 1e-4:
            die(f"VQ: no codebook with a clear nearest code found (best gap {gap:.3g})")
        model.quantize.embedding.weight.copy_(cb)
    return model


def make_vq() -> None:
    g = gen(12)
    x = image_like(g, (2, 3, 16, 24))
    model = build_vq(x)
    folder = OUT / "diffusers_vq"
    save_pretrained_clean(model, folder)
    m = reload_f64(VQModel, folder, model)
    if not m.quantize.legacy or m.quantize.beta != 0.25:
        die("VQ: expected diffusers VectorQuantizer legacy=True, beta=0.25")

    with torch.no_grad():
        h, decoded, commit = vq_forward(m, x.double())
        z_q, loss, (_, _, idx) = m.quantize(h)
        manual = m.decoder(m.post_quant_conv(z_q))
        if not torch.equal(manual, decoded):
            die("VQ: decode(h) is not decoder(post_quant_conv(quantize(h)))")
        if not torch.equal(loss, commit):
            die("VQ: commit_loss differs from quantize(h) loss")
        gap, mean_d = sq_dist_gap(h, m.quantize.embedding.weight)
    probe = randn(g, *decoded.shape)

    xg = x.double().requires_grad_(True)
    m.zero_grad(set_to_none=True)
    _, dec_g, _ = vq_forward(m, xg)
    (dec_g * probe.double()).sum().backward()
    if not torch.allclose(dec_g.detach(), decoded, rtol=0, atol=1e-12):
        die("VQ: forward with and without autograd differ")
    params = dict(m.named_parameters())
    B, C, H, W = h.shape
    indices = idx.reshape(B, H, W).to(torch.float32)
    n_used = int(torch.unique(idx).numel())

    tensors = {
        "input.x": x,
        "input.probe": probe,
        "output.h": h,
        "output.z_q": z_q,
        "output.indices": indices,
        "output.commit_loss": commit.reshape(1),
        "output.decoded": decoded,
        "grad.x": xg.grad,
    }
    for k in VQ_GRAD_KEYS:
        tensors[f"grad.{k}"] = params[k].grad
    arch = dict(GROUPNORM_FACTS)
    arch["in_level_attention"] = ("AttnDownEncoderBlock2D: resnet_j then attentions.j (same attention as the mid block, 1 head of C channels, GroupNorm eps 1e-6), for every j; "
                                  "AttnUpDecoderBlock2D likewise with layers_per_block+1 resnet/attention pairs; here encoder level 1 (8x12) and decoder up_blocks.0 (8x12) have attention")
    cfg = {
        "fixture": "ae_vq_io",
        "model": "diffusers.VQModel",
        "model_dir": "diffusers_vq",
        "diffusers_config": jsonable_config(m.config),
        "ldm_ddconfig_equivalent": {
            "ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
            "z_channels": 3, "double_z": False, "embed_dim": 3, "n_embed": 64,
            "in_channels": 3, "out_ch": 3, "dropout": 0.0, "resolution": 16, "norm_num_groups": 8,
            "note": "attn_resolutions in ldm compare with the current square resolution; 16x24 input is non-square, attention is at level 1 (f=2)",
        },
        "quantizer": {
            "class": "diffusers.models.autoencoders.vae.VectorQuantizer",
            "n_e": 64, "vq_embed_dim": 3, "beta": 0.25, "legacy": True, "remap": None, "sane_index_shape": False,
            "nearest": "argmin over codes of torch.cdist(z, codebook) (Euclidean distance), z = h permuted to [B*H*W, C] in (b, h, w) order",
            "commit_loss_formula": "legacy=True: mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2); its VALUE equals (1 + beta) * mean((z_q - z)^2) (legacy only moves beta between the gradient paths)",
            "straight_through": "z_q_out = z + sg(z_q - z)",
            "codebook": "set by this script: 40 codes near actual latents of input.x, 24 Gaussian around them",
            "min_sq_distance_gap": gap,
            "mean_nearest_sq_distance": mean_d,
            "distinct_indices_used": n_used,
        },
        "compute": "float64 forward on the float32 weights of diffusers_vq/ (upcast exactly), eval mode, results rounded to float32",
        "architecture": arch,
        "shapes": {"x": [2, 3, 16, 24], "h": [B, C, H, W], "decoded": list(decoded.shape)},
        "tensors": {
            "input.x": "image batch in [-1, 1]",
            "input.probe": "random N(0,1), shape of output.decoded",
            "output.h": "encode(x).latents = quant_conv(encoder(x)), the pre-quantization latent",
            "output.z_q": "quantize(h)[0]: nearest codebook vectors (straight-through form, value = codebook rows), [B, C, H, W]",
            "output.indices": "quantize(h)[2][2] reshaped [B, H, W] (flattened (b, h, w) order in diffusers), code indices as float32",
            "output.commit_loss": "decode(h).commit_loss (scalar, stored as [1]); diffusers VectorQuantizer legacy=True, beta=0.25",
            "output.decoded": "decode(h).sample = decoder(post_quant_conv(quantize(h)[0])): decode re-quantizes h",
            "grad.x": "dL/dx, L = sum(decoded * probe), gradient through the straight-through estimator",
            "grad.<diffusers key>": "dL/dW for the same L, for: " + ", ".join(VQ_GRAD_KEYS),
        },
    }
    save_fixture(OUT / "ae_vq_io.safetensors", tensors, cfg)


# ---- (d) taming NLayerDiscriminator -----------------------------------------
# Written after taming-transformers taming/modules/discriminator/model.py
# (NLayerDiscriminator, itself from pix2pix) and taming/modules/util.py
# (ActNorm), CompVis/taming-transformers commit 3ba01b24. Same module layout,
# so the state-dict keys are the original ones (main.0.weight, ...).

class TamingActNorm(nn.Module):
    """y = scale * (x + loc), per channel; loc/scale [1, C, 1, 1].
    In training mode an uninitialised layer (initialized == 0) first sets
    loc = -mean(x), scale = 1 / (std(x) + 1e-6) over (N, H, W), std with
    Bessel's correction, then marks itself initialised."""

    def __init__(self, num_features: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def forward(self, x):
        if self.training and int(self.initialized.item()) == 0:
            with torch.no_grad():
                per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
                mean = per_channel.mean(dim=1).view(1, -1, 1, 1)
                std = per_channel.std(dim=1).view(1, -1, 1, 1)
                self.loc.data.copy_(-mean)
                self.scale.data.copy_(1.0 / (std + 1e-6))
                self.initialized.fill_(1)
        return self.scale * (x + self.loc)


class TamingNLayerDiscriminator(nn.Module):
    """PatchGAN: conv4 s2 + LReLU(0.2); for n in 1..n_layers-1: conv4 s2
    (bias only with ActNorm) + norm + LReLU, width ndf*min(2^n, 8); conv4 s1
    (same bias rule) + norm + LReLU, width ndf*min(2^n_layers, 8); conv4 s1 ->
    1 channel. All convs padding 1."""

    def __init__(self, input_nc=3, ndf=64, n_layers=3, use_actnorm=False):
        super().__init__()
        norm = TamingActNorm if use_actnorm else nn.BatchNorm2d
        bias = use_actnorm  # BatchNorm has its own shift
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                       norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
                   norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


def disc_layer_table(d: TamingNLayerDiscriminator) -> list:
    rows = []
    for i, mod in enumerate(d.main):
        if isinstance(mod, nn.Conv2d):
            rows.append({"index": i, "type": "Conv2d", "in": mod.in_channels, "out": mod.out_channels,
                         "kernel": 4, "stride": mod.stride[0], "padding": 1, "bias": mod.bias is not None})
        elif isinstance(mod, nn.BatchNorm2d):
            rows.append({"index": i, "type": "BatchNorm2d", "channels": mod.num_features, "eps": mod.eps,
                         "momentum": mod.momentum})
        elif isinstance(mod, TamingActNorm):
            rows.append({"index": i, "type": "ActNorm", "channels": mod.loc.shape[1]})
        else:
            rows.append({"index": i, "type": "LeakyReLU", "negative_slope": 0.2})
    return rows


def make_disc(use_actnorm: bool) -> None:
    n_layers = 2 if use_actnorm else 3
    name = "disc_actnorm_io" if use_actnorm else "disc_bn_io"
    off = 30 if use_actnorm else 20
    torch.manual_seed(SEED + off)
    default = TamingNLayerDiscriminator(3, 8, n_layers, use_actnorm).eval()
    d = copy.deepcopy(default)
    g = gen(off + 1)
    x = image_like(g, (2, 3, 32, 32))

    if not use_actnorm:
        # Realistic running stats: the batch statistics of x at each BN input
        # (PyTorch default init, train mode), then perturbed.
        stats = {}

        def hook(mod, inp, _out):
            t = inp[0].detach().double()
            stats[mod] = (t.mean(dim=(0, 2, 3)), t.var(dim=(0, 2, 3), unbiased=False))

        probe_d = copy.deepcopy(d).double().train()
        hs = [m.register_forward_hook(hook) for m in probe_d.main if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            probe_d(x.double())
        for hd in hs:
            hd.remove()
        bns_probe = [m for m in probe_d.main if isinstance(m, nn.BatchNorm2d)]
        bns = [m for m in d.main if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            for bn, bp in zip(bns, bns_probe):
                mean, var = stats[bp]
                bn.running_mean.copy_(mean.float())
                bn.running_var.copy_(var.float())
                bn.num_batches_tracked.fill_(7)
    else:
        # Realistic loc/scale: taming's own data-dependent init on x (train
        # mode, initialized = 0), then perturbed like everything else.
        init_d = copy.deepcopy(d).double().train()
        with torch.no_grad():
            init_d(x.double())
            for mod, src in zip(d.main, init_d.main):
                if isinstance(mod, TamingActNorm):
                    mod.loc.copy_(src.loc.float())
                    mod.scale.copy_(src.scale.float())
    perturb_(d, g)
    if use_actnorm:
        for mod in d.main:
            if isinstance(mod, TamingActNorm):
                mod.initialized.fill_(1)
    assert_all_changed(d, default)

    weights = {f"weights.{k}": v.detach().to(torch.float32) for k, v in d.state_dict().items()}
    d64 = copy.deepcopy(d).double().eval()
    with torch.no_grad():
        out_eval = d64(x.double())
    probe = randn(g, *out_eval.shape)
    xg = x.double().requires_grad_(True)
    d64.zero_grad(set_to_none=True)
    (d64(xg) * probe.double()).sum().backward()

    d_train = copy.deepcopy(d).double().train()
    with torch.no_grad():
        out_train = d_train(x.double())
    tensors = {"input.x": x, "input.probe": probe, "output.eval": out_eval, "output.train": out_train,
               "grad.x": xg.grad,
               "grad.main.0.weight": d64.main[0].weight.grad,
               f"grad.main.{len(d64.main) - 1}.weight": d64.main[-1].weight.grad}
    tensors.update(weights)
    desc = {
        "input.x": "image batch in [-1, 1]",
        "input.probe": "random N(0,1), shape of output.eval",
        "output.eval": "D(x) in eval mode",
        "output.train": "D(x) in train mode, from the stored weights",
        "grad.x": "dL/dx, L = sum(D_eval(x) * probe)",
        "grad.main.0.weight / grad.main.<last>.weight": "dL/dW of the first and last conv for the same L",
        "weights.<taming key>": "the network's state_dict under taming's names (integer buffers stored as float32)",
    }
    if use_actnorm:
        fresh = copy.deepcopy(d).double().train()
        for mod in fresh.main:
            if isinstance(mod, TamingActNorm):
                mod.initialized.fill_(0)
        with torch.no_grad():
            out_init = fresh(x.double())
        tensors["output.train_init"] = out_init
        for i, mod in enumerate(fresh.main):
            if isinstance(mod, TamingActNorm):
                tensors[f"output.init.main.{i}.loc"] = mod.loc
                tensors[f"output.init.main.{i}.scale"] = mod.scale
        desc["output.train"] = "D(x) in train mode: every ActNorm has initialized = 1, so no data-dependent init happens and this equals output.eval"
        desc["output.train_init"] = ("D(x) in train mode from the stored weights but with every ActNorm's initialized set to 0: "
                                      "each ActNorm, in forward order, first sets loc = -mean, scale = 1/(std + 1e-6) from its own input "
                                      "(per channel over N,H,W; std unbiased), then applies scale * (x + loc)")
        desc["output.init.main.<i>.loc/scale"] = "the loc/scale each ActNorm set during output.train_init"
        norm_desc = "ActNorm (taming.modules.util): y = scale * (x + loc), loc/scale [1,C,1,1] parameters, buffer initialized (uint8; 1 here)"
    else:
        for i, mod in enumerate(d_train.main):
            if isinstance(mod, nn.BatchNorm2d):
                tensors[f"output.train_running_mean.main.{i}"] = mod.running_mean
                tensors[f"output.train_running_var.main.{i}"] = mod.running_var
        desc["output.train"] = ("D(x) in train mode: every BatchNorm normalizes with the batch's own mean and biased variance "
                                "(over N,H,W), eps 1e-5, then weight * . + bias")
        desc["output.train_running_mean.main.<i> / output.train_running_var.main.<i>"] = (
            "BN running stats after that one train-mode forward: r = 0.9 * r + 0.1 * batch_stat, "
            "with the UNBIASED batch variance for running_var")
        norm_desc = "BatchNorm2d(C, eps=1e-5, momentum=0.1, affine, track_running_stats); eval mode uses running_mean/running_var"
    cfg = {
        "fixture": name,
        "model": "taming NLayerDiscriminator (taming/modules/discriminator/model.py), re-implemented in scripts/make_parity_fixtures.py",
        "hyper": {"input_nc": 3, "ndf": 8, "n_layers": n_layers, "use_actnorm": use_actnorm},
        "norm": norm_desc,
        "layers": disc_layer_table(d),
        "init": "PyTorch default init (not taming's weights_init N(0, 0.02)), then seeded perturbation of every tensor"
                + ("; ActNorm loc/scale first set by taming's data-dependent init on input.x, then perturbed" if use_actnorm else "; BN running stats set to the batch statistics of x, then perturbed; num_batches_tracked = 7 (irrelevant with momentum 0.1)"),
        "compute": "float64 on the stored float32 weights, rounded to float32",
        "shapes": {"x": list(x.shape), "out": list(out_eval.shape)},
        "tensors": desc,
    }
    save_fixture(OUT / f"{name}.safetensors", tensors, cfg)


# ---- (e) LPIPS --------------------------------------------------------------

def make_lpips() -> None:
    import lpips
    if not LPIPS_WEIGHTS.exists():
        die(f"{LPIPS_WEIGHTS} not found: run scripts/setup.sh first")
    ours = load_file(str(LPIPS_WEIGHTS))
    net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    for k in range(5):
        pkg = net.lins[k].model[1].weight.detach()
        if not torch.equal(pkg, ours[f"lin{k}.weight"]):
            die(f"lin{k}.weight of {LPIPS_WEIGHTS.name} differs from lpips {lpips.__version__ if hasattr(lpips, '__version__') else '0.1.4'}'s head")
    convs = [m for m in net.net.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != 13:
        die(f"expected 13 VGG16 convs in lpips' net, found {len(convs)}")
    with torch.no_grad():
        for k, conv in enumerate(convs):
            w, b = ours[f"vgg.conv{k}.weight"], ours[f"vgg.conv{k}.bias"]
            if conv.weight.shape != w.shape:
                die(f"vgg.conv{k}: shape {tuple(w.shape)} vs {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    net = net.double().eval()

    g = gen(40)
    a = image_like(g, (2, 3, 32, 32))
    b0 = image_like(g, (2, 3, 32, 32))
    # pair 0: a small distortion of a; pair 1: an unrelated image
    b = torch.stack([(a[0] + 0.15 * randn(g, 3, 32, 32)).clamp(-1, 1), b0[1]])
    with torch.no_grad():
        d, per_tap = net(a.double(), b.double(), retPerLayer=True, normalize=False)
    ag = a.double().requires_grad_(True)
    dg = net(ag, b.double(), normalize=False)
    dg.sum().backward()
    tensors = {
        "input.a": a,
        "input.b": b,
        "output.d": d,
        "output.per_tap": torch.cat([t.reshape(-1, 1) for t in per_tap], dim=1),
        "grad.a": ag.grad,
    }
    cfg = {
        "fixture": "lpips_io",
        "model": "lpips.LPIPS(net='vgg', version='0.1', pretrained=True, pnet_rand=True, lpips=True, spatial=False), eval mode, "
                 "VGG16 convs loaded from $LDM_TRAIN_CACHE/weights/lpips_vgg16.safetensors (vgg.conv{k}.weight/bias, k = 0..12 in features order); "
                 "linear heads from the lpips wheel, checked equal to lin{k}.weight of that file",
        "formula": "z = (x - shift) / scale, shift = [-.030, -.088, -.188], scale = [.458, .448, .450]; VGG16 features with taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; "
                   "per tap: f / (sqrt(sum_c f^2) + 1e-10), squared difference, 1x1 conv (lin_k, no bias, dropout inactive in eval), mean over H, W; d = sum of taps",
        "compute": "float64 on the float32 weights, rounded to float32",
        "tensors": {
            "input.a": "images in [-1, 1], [2,3,32,32]",
            "input.b": "pair 0: a + 0.15 N(0,1) clamped; pair 1: unrelated image",
            "output.d": "net(a, b, normalize=False), shape [2,1,1,1] as the package returns it",
            "output.per_tap": "the 5 tap contributions [2,5] (retPerLayer=True), summing to d",
            "grad.a": "d(sum(d))/da",
        },
        "weights_not_stored": "VGG16 weights are the ones scripts/setup.sh converts (sha256 pinned in scripts/_assets.py)",
    }
    save_fixture(OUT / "lpips_io.safetensors", tensors, cfg)


# ---- (f) loss terms ---------------------------------------------------------
# Written after latent-diffusion ldm/modules/losses/contperceptual.py
# (LPIPSWithDiscriminator), taming-transformers
# taming/modules/losses/vqperceptual.py (VQLPIPSWithDiscriminator,
# hinge_d_loss, vanilla_d_loss, adopt_weight, calculate_adaptive_weight),
# ldm/modules/losses/vqperceptual.py (measure_perplexity) and
# taming/modules/vqvae/quantize.py VectorQuantizer2 (legacy flag).

def adopt_weight(weight, global_step, threshold=0, value=0.0):
    return value if global_step < threshold else weight


def hinge_d_loss(logits_real, logits_fake):
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real, logits_fake):
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def adaptive_weight(nll_grads, g_grads, disc_weight):
    w = torch.linalg.vector_norm(nll_grads) / (torch.linalg.vector_norm(g_grads) + 1e-4)
    return torch.clamp(w, 0.0, 1e4).detach() * disc_weight


def make_losses() -> None:
    g = gen(50)
    f32 = {
        "x": image_like(g, (2, 3, 8, 8)),
        "xrec": image_like(g, (2, 3, 8, 8)),
        "p_loss": (0.1 + 0.4 * torch.rand(2, 1, 1, 1, generator=g, dtype=torch.float64)).float(),
        "nll_weights": (0.5 + torch.rand(2, 1, 1, 1, generator=g, dtype=torch.float64)).float(),
        "posterior_mean": randn(g, 2, 4, 2, 2),
        "posterior_logvar": (-1.0 + 0.8 * randn(g, 2, 4, 2, 2, dtype=torch.float64)).float(),
        "logits_real": (0.5 + randn(g, 2, 1, 3, 3, dtype=torch.float64)).float(),
        "logits_fake": (-0.3 + randn(g, 2, 1, 3, 3, dtype=torch.float64)).float(),
        "logvar": torch.tensor([0.3], dtype=torch.float32),
        "nll_grads": 0.01 * randn(g, 3, 16, 3, 3),
        "g_grads": 0.03 * randn(g, 3, 16, 3, 3),
        "z": randn(g, 2, 3, 4, 4),
        "z_q": randn(g, 2, 3, 4, 4),
        "indices": torch.randint(0, 12, (2, 4, 4), generator=g).float(),
    }
    t = {k: v.double() for k, v in f32.items()}
    H = {"perceptual_weight": 1.0, "pixelloss_weight": 1.0, "kl_weight": 1e-6, "disc_weight": 0.5,
         "disc_factor": 1.0, "disc_start": 100, "global_step": 100, "global_step_before": 99,
         "codebook_weight": 1.0, "beta": 0.25, "n_embed": 16}
    B = t["x"].shape[0]

    rec = (t["x"] - t["xrec"]).abs() + H["perceptual_weight"] * t["p_loss"]
    lv = t["logvar"][0]
    nll = rec / torch.exp(lv) + lv
    nll_loss = nll.sum() / B
    weighted_nll_loss = (t["nll_weights"] * nll).sum() / B
    mean, plv = t["posterior_mean"], t["posterior_logvar"].clamp(-30.0, 20.0)
    kl = 0.5 * (mean.pow(2) + plv.exp() - 1.0 - plv).sum(dim=[1, 2, 3])
    kl_loss = kl.sum() / B
    g_loss = -t["logits_fake"].mean()
    d_weight = adaptive_weight(t["nll_grads"], t["g_grads"], H["disc_weight"])
    df = adopt_weight(H["disc_factor"], H["global_step"], threshold=H["disc_start"])
    df0 = adopt_weight(H["disc_factor"], H["global_step_before"], threshold=H["disc_start"])
    assert df == 1.0 and df0 == 0.0
    loss_kl = weighted_nll_loss + H["kl_weight"] * kl_loss + d_weight * df * g_loss
    loss_kl0 = weighted_nll_loss + H["kl_weight"] * kl_loss + d_weight * df0 * g_loss
    d_hinge = df * hinge_d_loss(t["logits_real"], t["logits_fake"])
    d_vanilla = df * vanilla_d_loss(t["logits_real"], t["logits_fake"])

    nll_vq = rec.mean()
    beta = H["beta"]
    grads = {}
    cb = {}
    for legacy in (True, False):
        z = t["z"].clone().requires_grad_(True)
        zq = t["z_q"].clone().requires_grad_(True)
        if legacy:
            loss = ((zq.detach() - z) ** 2).mean() + beta * ((zq - z.detach()) ** 2).mean()
        else:
            loss = beta * ((zq.detach() - z) ** 2).mean() + ((zq - z.detach()) ** 2).mean()
        loss.backward()
        tag = "codebook_loss_legacy" if legacy else "codebook_loss_nonlegacy"
        cb[tag] = loss.detach()
        grads[f"grad.{tag}.z"] = z.grad
        grads[f"grad.{tag}.z_q"] = zq.grad
    loss_vq = nll_vq + d_weight * df * g_loss + H["codebook_weight"] * cb["codebook_loss_legacy"]

    onehot = F.one_hot(t["indices"].long(), H["n_embed"]).double().reshape(-1, H["n_embed"])
    avg = onehot.mean(0)
    perplexity = torch.exp(-(avg * torch.log(avg + 1e-10)).sum())
    cluster_use = (avg > 0).sum().double()

    outs = {
        "rec_loss": rec.mean(),
        "nll_loss": nll_loss,
        "weighted_nll_loss": weighted_nll_loss,
        "kl_loss": kl_loss,
        "g_loss": g_loss,
        "d_weight": d_weight,
        "loss_kl": loss_kl,
        "loss_kl_before_disc_start": loss_kl0,
        "d_loss_hinge": d_hinge,
        "d_loss_vanilla": d_vanilla,
        "nll_loss_vq": nll_vq,
        "codebook_loss_legacy": cb["codebook_loss_legacy"],
        "codebook_loss_nonlegacy": cb["codebook_loss_nonlegacy"],
        "loss_vq": loss_vq,
        "perplexity": perplexity,
        "cluster_use": cluster_use,
    }
    tensors = {f"input.{k}": v for k, v in f32.items()}
    tensors.update({f"output.{k}": v.reshape(1) for k, v in outs.items()})
    tensors.update(grads)
    cfg = {
        "fixture": "losses",
        "sources": [
            "latent-diffusion ldm/modules/losses/contperceptual.py LPIPSWithDiscriminator (KL)",
            "taming-transformers taming/modules/losses/vqperceptual.py VQLPIPSWithDiscriminator, hinge_d_loss, vanilla_d_loss, adopt_weight, calculate_adaptive_weight",
            "latent-diffusion ldm/modules/losses/vqperceptual.py measure_perplexity",
            "taming-transformers taming/modules/vqvae/quantize.py VectorQuantizer2 (legacy flag)",
        ],
        "hyper": H,
        "compute": "float64 from the float32 inputs as stored, rounded to float32; every output is one scalar stored as shape [1]",
        "inputs": {
            "input.x / input.xrec": "inputs and reconstructions [2,3,8,8]",
            "input.p_loss": "given LPIPS value per image [2,1,1,1] (broadcast over pixels)",
            "input.nll_weights": "per-image `weights` argument of LPIPSWithDiscriminator.forward [2,1,1,1]",
            "input.posterior_mean / input.posterior_logvar": "[2,4,2,2]",
            "input.logits_real / input.logits_fake": "D(x), D(xrec) [2,1,3,3]",
            "input.logvar": "the loss' logvar parameter, [1] (value 0.3)",
            "input.nll_grads / input.g_grads": "stand-ins for d nll/dW and d g_loss/dW of the last decoder layer W [3,16,3,3]",
            "input.z / input.z_q": "encoder output and its quantized version [2,3,4,4]",
            "input.indices": "code indices [2,4,4] (float32), n_embed 16",
        },
        "formulas": {
            "rec": "rec = |x - xrec| + perceptual_weight * p_loss  (tensor [2,3,8,8])",
            "rec_loss": "mean(rec) (the logged value)",
            "nll_loss": "sum(rec / exp(logvar) + logvar) / B   (KL variant: summed over C,H,W, then divided by the batch size)",
            "weighted_nll_loss": "sum(nll_weights * (rec / exp(logvar) + logvar)) / B  (equals nll_loss when weights=None, the default)",
            "kl_loss": "sum_b 0.5 * sum_{c,h,w}(mean^2 + exp(lv) - 1 - lv) / B, lv = clamp(posterior_logvar, -30, 20)",
            "g_loss": "-mean(logits_fake)",
            "d_weight": "clamp(||nll_grads||_2 / (||g_grads||_2 + 1e-4), 0, 1e4) * disc_weight (Frobenius norms over the whole tensor; detached)",
            "disc_factor": "adopt_weight(disc_factor, global_step, threshold=disc_start) = 0 if global_step < disc_start else disc_factor",
            "loss_kl": "weighted_nll_loss + kl_weight * kl_loss + d_weight * disc_factor * g_loss, global_step = 100 (disc_factor 1)",
            "loss_kl_before_disc_start": "the same at global_step = 99 (disc_factor 0)",
            "d_loss_hinge": "disc_factor * 0.5 * (mean(relu(1 - logits_real)) + mean(relu(1 + logits_fake)))",
            "d_loss_vanilla": "disc_factor * 0.5 * (mean(softplus(-logits_real)) + mean(softplus(logits_fake)))",
            "nll_loss_vq": "mean(rec)  (VQ variant: a plain mean, not sum/B)",
            "codebook_loss_legacy": "mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2)  (legacy=True, the default of taming/ldm/diffusers)",
            "codebook_loss_nonlegacy": "beta * mean((sg[z_q] - z)^2) + mean((z_q - sg[z])^2)",
            "note_on_legacy": "both codebook values are equal ((1 + beta) * mean((z_q - z)^2)); legacy only changes which path gets beta: see the grad.* tensors",
            "grad.codebook_loss_*.z / .z_q": "gradients of that codebook loss w.r.t. z and z_q (z_q treated as the codebook rows)",
            "loss_vq": "nll_loss_vq + d_weight * disc_factor * g_loss + codebook_weight * codebook_loss_legacy (global_step 100)",
            "perplexity": "exp(-sum_k p_k log(p_k + 1e-10)), p_k = frequency of code k among all indices",
            "cluster_use": "number of codes with p_k > 0",
        },
    }
    save_fixture(OUT / "losses.safetensors", tensors, cfg)


# ---- (g) schedulers ---------------------------------------------------------
# Pure arithmetic of diffusers' noise schedulers (no network): schedules, the
# forward process and training targets, min-SNR-γ weights, and every sampler
# step driven by fixed model outputs. Schedules and training quantities are
# diffusers' own float32 numbers; the sampler steps run diffusers' code in
# float64 on those float32 schedules (see exact_arithmetic).

SCHED_T = 1000
SCHED_STEPS = 10  # divides T: DDIM/PLMS take prev = t - T // S, see below
SCHED_SHAPE = (1, 4, 6, 6)  # one latent; the arithmetic is elementwise
SCHED_GAMMA = 5.0
SCHED_TRAIN_T = [0, 1, 17, 250, 499, 731, 998, 999]

# name -> (diffusers scheduler kwargs, our ldm_diffusion schedule)
SCHEDULES = {
    "sd": ({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
           "BetaSchedule::ScaledLinear { start: 0.00085, end: 0.012 } (the SD / txt2img \"linear\")"),
    "ldm": ({"beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.0195},
            "BetaSchedule::ScaledLinear { start: 0.0015, end: 0.0195 } (the LDM configs' \"linear\")"),
    "linear": ({"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
               "BetaSchedule::Linear { start: 1e-4, end: 0.02 } (DDPM's linear)"),
    "cosine": ({"beta_schedule": "squaredcos_cap_v2"},
               "BetaSchedule::Cosine { s: 8e-3 }: the reference's cosine (s = 8e-3, β clipped at 0.999) is exactly "
               "squaredcos_cap_v2 (alpha_bar(t) = cos((t + 0.008)/1.008 · π/2)², max_beta 0.999); no intentional difference"),
    "sd_zsnr": ({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                 "rescale_betas_zero_snr": True},
                "the sd schedule, then NoiseSchedule::rescale_zero_terminal_snr()"),
    "linear_zsnr": ({"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                     "rescale_betas_zero_snr": True},
                    "the linear schedule, then NoiseSchedule::rescale_zero_terminal_snr()"),
}

# The reference's DDIM/PLMS conventions (ldm make_ddim_timesteps "uniform":
# range(0, T, T/S) + 1; the last step lands on ᾱ_0, not 1), which diffusers
# reaches with these settings.
REFERENCE_DDIM = {"timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False}

# name -> what the run is; `ours` says how the Rust test calls ldm_diffusion.
SAMPLER_RUNS = {
    "ddpm_eps_ldm_leading": {
        "sampler": "ddpm", "schedule": "ldm", "prediction_type": "epsilon",
        "diffusers": {"timestep_spacing": "leading", "steps_offset": 0, "clip_sample": False},
        "ours": {"spacing": "Leading", "clip_x0": None},
    },
    "ddpm_v_sd_trailing_clip": {
        "sampler": "ddpm", "schedule": "sd", "prediction_type": "v_prediction",
        "diffusers": {"timestep_spacing": "trailing", "clip_sample": True, "clip_sample_range": 1.0},
        "ours": {"spacing": "Trailing", "clip_x0": 1.0},
    },
    "ddim_eps_ldm_eta0": {
        "sampler": "ddim", "schedule": "ldm", "prediction_type": "epsilon", "eta": 0.0,
        "diffusers": dict(REFERENCE_DDIM, clip_sample=False),
        "ours": {"spacing": "Uniform", "eta": 0.0},
    },
    "ddim_eps_ldm_eta1": {
        "sampler": "ddim", "schedule": "ldm", "prediction_type": "epsilon", "eta": 1.0,
        "diffusers": dict(REFERENCE_DDIM, clip_sample=False),
        "ours": {"spacing": "Uniform", "eta": 1.0},
    },
    "ddim_v_sdzsnr_trailing_eta0": {
        "sampler": "ddim", "schedule": "sd_zsnr", "prediction_type": "v_prediction", "eta": 0.0,
        "diffusers": {"timestep_spacing": "trailing", "set_alpha_to_one": False, "clip_sample": False,
                      "rescale_betas_zero_snr": True},
        "ours": {"spacing": "Trailing", "eta": 0.0},
    },
    "ddim_x0_cosine_trailing_eta1": {
        "sampler": "ddim", "schedule": "cosine", "prediction_type": "sample", "eta": 1.0,
        "diffusers": {"timestep_spacing": "trailing", "set_alpha_to_one": False, "clip_sample": False},
        "ours": {"spacing": "Trailing", "eta": 1.0},
    },
    "plms_eps_ldm": {
        "sampler": "plms", "schedule": "ldm", "prediction_type": "epsilon",
        "diffusers": dict(REFERENCE_DDIM, skip_prk_steps=True),
        "ours": {"spacing": "Uniform"},
    },
    "plms_v_sd": {
        "sampler": "plms", "schedule": "sd", "prediction_type": "v_prediction",
        # PNDMScheduler(prediction_type="v_prediction") extrapolates the raw v
        # outputs and turns the mix into ε with the current x_t only; ours
        # turns each output into ε at its own x_t and ᾱ_t first (plms.rs), so
        # diffusers runs in epsilon mode on ε_k = √ᾱ_k·v_k + √(1−ᾱ_k)·x_k.
        "diffusers": dict(REFERENCE_DDIM, skip_prk_steps=True, prediction_type="epsilon"),
        "ours": {"spacing": "Uniform"},
    },
    "dpmpp2m_eps_sd": {
        "sampler": "dpm_solver_pp_2m", "schedule": "sd", "prediction_type": "epsilon",
        "diffusers": {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min", "lower_order_final": True},
        "ours": {"spacing": "Trailing", "lower_order_final": True},
    },
    "dpmpp2m_x0_sd": {
        "sampler": "dpm_solver_pp_2m", "schedule": "sd", "prediction_type": "sample",
        "diffusers": {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min", "lower_order_final": True},
        "ours": {"spacing": "Trailing", "lower_order_final": True},
    },
    "dpmpp2m_v_sd": {
        "sampler": "dpm_solver_pp_2m", "schedule": "sd", "prediction_type": "v_prediction",
        "diffusers": {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min", "lower_order_final": True},
        "ours": {"spacing": "Trailing", "lower_order_final": True},
    },
    "dpmpp2m_eps_ldm_second_order_final": {
        "sampler": "dpm_solver_pp_2m", "schedule": "ldm", "prediction_type": "epsilon",
        "diffusers": {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min", "lower_order_final": False},
        "ours": {"spacing": "Trailing", "lower_order_final": False},
    },
}

OUR_PARAMETERIZATION = {"epsilon": "Eps", "sample": "X0", "v_prediction": "V"}


def diffusers_scheduler(sampler: str, schedule: str, extra: dict):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, PNDMScheduler
    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "plms": PNDMScheduler,
           "dpm_solver_pp_2m": DPMSolverMultistepScheduler}[sampler]
    kw = dict(SCHEDULES[schedule][0], num_train_timesteps=SCHED_T, **extra)
    if sampler == "dpm_solver_pp_2m":
        kw.update(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint")
    return cls(**kw)


def strict_json(value):
    """`value` with non-finite floats as strings ("-inf"): JSON has no
    Infinity (DPMSolverMultistepScheduler's lambda_min_clipped is -inf), and
    strict parsers such as Rust's serde_json refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    return value


def scheduler_kwargs(run: dict) -> dict:
    """The run's prediction type, unless its `diffusers` settings override it."""
    return dict({"prediction_type": run["prediction_type"]}, **run["diffusers"])


class FixedDdpmNoise:
    """Replaces DDPMScheduler.step's randn_tensor (it has no noise argument)
    by the stored noise of the step being taken, in order."""

    def __init__(self, noise: torch.Tensor):
        import diffusers.schedulers.scheduling_ddpm as module
        self.module, self.noise, self.calls = module, noise, 0

    def __enter__(self):
        self.original = self.module.randn_tensor

        def fixed(shape, **_kw):
            if tuple(shape) != tuple(self.noise.shape[1:]):
                die(f"DDPM asked for noise of shape {tuple(shape)}")
            self.calls += 1
            return self.noise[self.calls - 1].clone()
        self.module.randn_tensor = fixed
        return self

    def __exit__(self, *exc):
        self.module.randn_tensor = self.original


def exact_arithmetic(sched) -> None:
    """Makes the scheduler's steps run in float64 on its own float32
    schedule (upcast exactly), once set_timesteps has run.

    In float32 diffusers' step formulas cancel: DDIM's √(1 − ᾱ_prev − σ²)
    at η = 1 subtracts O(1) numbers to get ~ᾱ/ᾱ_prev (1e-7 on the cosine
    schedule's first step), and x̂0 = (x − √(1−ᾱ)·ε)/√ᾱ at ᾱ = 1.4e-4 loses
    two digits. Its float32 results then differ from float64 ones by up to
    3e-5 (relative), i.e. they carry diffusers' own rounding, not the
    arithmetic we compare; the stored samples are the float64 results,
    rounded. Step tensors are float64 where the caller passes float64; the
    schedule scalars have to be upcast here. DPMSolverMultistepScheduler
    keeps σ = √((1−ᾱ)/ᾱ) of the visited timesteps (and ᾱ_0 for
    final_sigmas_type "sigma_min") rounded to float32 by set_timesteps: the
    same formula is redone in float64. (Its step() also casts the sample to
    float32 on entry, which stays: our samples are float32 too.)"""
    from diffusers import DPMSolverMultistepScheduler
    for attr in ("alphas_cumprod", "final_alpha_cumprod", "one"):
        value = getattr(sched, attr, None)
        if torch.is_tensor(value):
            setattr(sched, attr, value.double())
    if isinstance(sched, DPMSolverMultistepScheduler):
        if sched.config.final_sigmas_type != "sigma_min":
            die("exact_arithmetic: only final_sigmas_type='sigma_min' is redone in float64")
        ac = sched.alphas_cumprod
        sigma = ((1 - ac) / ac) ** 0.5
        exact = torch.cat([sigma[sched.timesteps], sigma[:1]])
        if not torch.allclose(exact, sched.sigmas.double(), rtol=4 * 2.0**-24, atol=0):
            die("exact_arithmetic: σ in float64 is not diffusers' float32 σ")
        sched.sigmas = exact


def drive(sched, x_T, model, step_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline loop without a network, in float64 (see
    exact_arithmetic): one model call per entry of sched.timesteps,
    `model(k, t, x)` gives call k's output. Returns the timesteps and the
    sample after every step."""
    x = x_T.double()
    samples = []
    for k, t in enumerate(sched.timesteps):
        out = model(k, int(t), x)
        x = sched.step(out, t, x, **step_kwargs(k)).prev_sample
        if x.dtype != torch.float64 or not torch.isfinite(x).all():
            die(f"{type(sched).__name__}: step {k} gave {x.dtype} / non-finite values")
        samples.append(x)
    return sched.timesteps.clone(), torch.stack(samples)


def oracle_output(pred: str, alpha: torch.Tensor, x: torch.Tensor, x0: torch.Tensor,
                  wobble: torch.Tensor) -> torch.Tensor:
    """What a model that knows the clean sample `x0` would output for `x` at
    level ᾱ = `alpha`, plus `wobble`: ε̂ = (x − √ᾱ·x0)/√(1−ᾱ), then the
    target of `pred`; float64, rounded to float32 (the stored output, which
    the run then uses upcast). A model that points at a
    fixed x0 keeps the samples O(1), as in a real run, also when a sampler
    injects noise; outputs unrelated to x would drive them to O(100)."""
    a = alpha.double()
    clean, xt = x0.double(), x.double()
    eps = (xt - a.sqrt() * clean) / (1 - a).sqrt()
    target = {
        "epsilon": eps,
        "sample": clean,
        "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * clean,
    }[pred]
    return (target + wobble.double()).float()


def make_sampler_run(name: str, run: dict, offset: int, schedule_ac: dict, x_T: torch.Tensor,
                     x0: torch.Tensor) -> tuple[dict, dict]:
    sched = diffusers_scheduler(run["sampler"], run["schedule"], scheduler_kwargs(run))
    if not torch.equal(sched.alphas_cumprod, schedule_ac[run["schedule"]]):
        die(f"{name}: the scheduler's alphas_cumprod is not the stored {run['schedule']} schedule")
    sched.set_timesteps(SCHED_STEPS)
    exact_arithmetic(sched)
    n_calls = len(sched.timesteps)
    g = gen(offset)
    pred = run["prediction_type"]
    ac = sched.alphas_cumprod
    wobble = 0.1 * randn(g, n_calls, *SCHED_SHAPE)
    noise = randn(g, n_calls, *SCHED_SHAPE)
    model_eps = run["sampler"] == "plms" and pred == "v_prediction"
    outputs = []

    def model(k, t, x):
        if k == len(outputs):  # a rerun (clip check) replays the stored outputs
            outputs.append(oracle_output(pred, ac[t], x, x0, wobble[k]))
        out = outputs[k].double()
        if model_eps:  # the v-model's ε at its own point (see SAMPLER_RUNS)
            return ac[t] ** 0.5 * out + (1 - ac[t]) ** 0.5 * x
        return out

    notes = {}
    tensors = {}
    if run["sampler"] == "ddpm":
        with FixedDdpmNoise(noise.double()) as fixed:
            timesteps, samples = drive(sched, x_T, model, lambda k: {})
        tensors[f"input.{name}.noise"] = noise
        notes["noise"] = (f"DDPMScheduler.step draws randn_tensor only when t > 0; it was replaced by input.{name}.noise[k] "
                          f"for the k-th call ({fixed.calls} calls). A last step at t > 0 (trailing) draws noise "
                          "but scales it by sqrt(clamp(β̃ = 0, min=1e-20)) = 1e-10; ours draws none there")
    elif run["sampler"] == "ddim" and run["eta"] > 0:
        timesteps, samples = drive(sched, x_T, model, lambda k: {"eta": run["eta"], "variance_noise": noise[k].double()})
        tensors[f"input.{name}.noise"] = noise
        notes["noise"] = f"variance_noise = input.{name}.noise[k] at step k (every step, the last one too: σ > 0 down to ᾱ_0)"
    elif run["sampler"] == "ddim":
        timesteps, samples = drive(sched, x_T, model, lambda k: {"eta": run["eta"]})
    else:
        timesteps, samples = drive(sched, x_T, model, lambda k: {})
    if run["sampler"] in ("ddim", "plms"):
        visited = torch.unique_consecutive(timesteps)
        if not (visited[:-1] - visited[1:] == SCHED_T // SCHED_STEPS).all():
            die(f"{name}: DDIM/PNDM step to t - T // S, which is the next visited timestep only on an even grid")
    tensors[f"input.{name}.model_outputs"] = torch.stack(outputs)
    tensors[f"output.{name}.timesteps"] = timesteps
    tensors[f"output.{name}.samples"] = samples
    if run["sampler"] == "ddpm" and run["diffusers"].get("clip_sample"):
        unclipped = diffusers_scheduler("ddpm", run["schedule"], dict(scheduler_kwargs(run), clip_sample=False))
        unclipped.set_timesteps(SCHED_STEPS)
        exact_arithmetic(unclipped)
        with FixedDdpmNoise(noise.double()):
            _, free = drive(unclipped, x_T, model, lambda k: {})
        effect = (free - samples).abs().max().item()
        if effect < 1e-2:
            die(f"{name}: clip_sample does not bind (max effect {effect})")
        notes["clipping"] = (f"x̂0 is clamped to [-1, 1] before the posterior mean (clip_sample); it binds: the same run "
                             f"without clipping ends up to {effect:.3g} away")
    desc = {
        "sampler": run["sampler"],
        "schedule": run["schedule"],
        "prediction_type": pred,
        "our_parameterization": OUR_PARAMETERIZATION[pred],
        "ours": run["ours"],
        "diffusers_class": type(sched).__name__,
        "diffusers_config": strict_json(jsonable_config(sched.config)),
        "steps": SCHED_STEPS,
        "model_calls": n_calls,
        "notes": notes,
    }
    if "eta" in run:
        desc["eta"] = run["eta"]
    return tensors, desc


def make_schedulers() -> None:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    tensors, sched_desc, schedule_ac = {}, {}, {}
    for name, (kw, ours) in SCHEDULES.items():
        s = DDPMScheduler(num_train_timesteps=SCHED_T, **kw)
        tensors[f"output.schedule.{name}.betas"] = s.betas
        tensors[f"output.schedule.{name}.alphas_cumprod"] = s.alphas_cumprod
        schedule_ac[name] = s.alphas_cumprod
        sched_desc[name] = {"diffusers": dict(kw, num_train_timesteps=SCHED_T), "ours": ours}

    # Training: the forward process, v target and min-SNR-γ weights at a
    # spread of timesteps (both ends included), for a plain and a
    # zero-terminal-SNR schedule.
    g = gen(61)
    x0 = image_like(g, (len(SCHED_TRAIN_T), 4, 4, 4))
    noise = randn(g, len(SCHED_TRAIN_T), 4, 4, 4)
    ts = torch.tensor(SCHED_TRAIN_T, dtype=torch.int64)
    tensors.update({"input.train.x0": x0, "input.train.noise": noise, "input.train.timesteps": ts})
    for name in ("sd", "sd_zsnr"):
        s = DDPMScheduler(num_train_timesteps=SCHED_T, **SCHEDULES[name][0])
        snr = compute_snr(s, ts)
        # diffusers' examples/text_to_image/train_text_to_image.py (--snr_gamma):
        capped = torch.stack([snr, SCHED_GAMMA * torch.ones_like(ts)], dim=1).min(dim=1)[0]
        tensors[f"output.train.{name}.noisy"] = s.add_noise(x0, noise, ts)
        tensors[f"output.train.{name}.v"] = s.get_velocity(x0, noise, ts)
        tensors[f"output.train.{name}.snr"] = snr
        tensors[f"output.train.{name}.min_snr_eps"] = capped / snr
        tensors[f"output.train.{name}.min_snr_v"] = capped / (snr + 1)

    g = gen(60)
    x_T = randn(g, *SCHED_SHAPE)
    # Latent-like: beyond [-1, 1] in places, so DDPM's clip_sample binds.
    x0 = 1.5 * image_like(g, SCHED_SHAPE)
    tensors.update({"input.x_T": x_T, "input.x0": x0})
    runs = {}
    for i, (name, run) in enumerate(SAMPLER_RUNS.items()):
        t, d = make_sampler_run(name, run, 70 + i, schedule_ac, x_T, x0)
        tensors.update(t)
        runs[name] = d

    cfg = {
        "fixture": "schedulers",
        "what": "diffusers scheduler arithmetic on fixed inputs, no network: schedules, add_noise / get_velocity, "
                "min-SNR-γ weights, and DDPM / DDIM / PLMS / DPM-Solver++(2M) sampling driven by fixed model outputs",
        "compute": {
            "schedules": "diffusers' own float32 betas and alphas_cumprod, as its schedulers hold them",
            "train": "diffusers' own float32 arithmetic (add_noise, get_velocity, compute_snr and the weights on float32 "
                     "tensors), as in its training scripts",
            "samplers": "diffusers' step() code run in float64 on the float32 schedule upcast exactly (float64 samples, model "
                        "outputs and noise; DPM-Solver's σ redone in float64 by set_timesteps' formula), stored rounded to "
                        "float32: in float32 its formulas cancel (DDIM's sqrt(1 − ᾱ_prev − σ²) at η = 1, (x − σ·ε)/α at "
                        "small ᾱ) and its results move by up to 3e-5 relative. DPMSolverMultistepScheduler.step casts the "
                        "sample to float32 on entry itself",
            "inputs": "drawn in float64 and rounded to float32",
        },
        "dtypes": "float32, except input.train.timesteps and output.<run>.timesteps (int64)",
        "T": SCHED_T,
        "schedules": sched_desc,
        "train": {
            "timesteps": SCHED_TRAIN_T,
            "gamma": SCHED_GAMMA,
            "schedules": ["sd", "sd_zsnr"],
            "targets": "ε target = input.train.noise and x0 target = input.train.x0 (what diffusers' training scripts use for "
                       "prediction_type epsilon / sample); the v target is output.train.<s>.v",
        },
        "runs": runs,
        "conventions": {
            "final_alpha": "DDIM and PLMS: set_alpha_to_one=False (the last step lands on ᾱ_0, as the reference and ours); "
                           "DPM-Solver++: final_sigmas_type='sigma_min' (also ᾱ_0; diffusers' default 'zero' ends at ᾱ = 1 with a forced "
                           "first-order step); DDPM: ᾱ_prev = 1 on the last step in diffusers and in ours",
            "timesteps": "DDIM / PLMS 'leading' + steps_offset 1 = the reference's uniform spacing (1, 101, …, 901) = our Spacing::Uniform; "
                         "DDPM 'leading' with offset 0 = our Spacing::Leading; 'trailing' = our Spacing::Trailing. DDIM and PNDM step "
                         "from t to t − T // S (not to the next visited timestep): equal here because S divides T, checked",
            "lower_order_final": "diffusers' rule (last step first order when fewer than 15 steps) is ours; one run turns it off",
            "clip": "clip_sample off everywhere (latents are unbounded) except ddpm_v_sd_trailing_clip (ours: clip_x0 = Some(1.0))",
            "plms_v": "PNDMScheduler(prediction_type='v_prediction') mixes the raw v outputs of different x_t and converts the mix "
                      "with the current x_t; ours converts each output to ε at its own x_t and ᾱ_t first (so ε-, x0- and v-models "
                      "give one sampler). plms_v_sd therefore runs PNDM in epsilon mode on ε_k = √ᾱ_k·v_k + √(1−ᾱ_k)·x_k "
                      "(float64, at call k's timestep and input); model_outputs holds the v_k",
            "zero_snr_dpm": "not covered: DPMSolverMultistepScheduler with rescale_betas_zero_snr replaces ᾱ_{T−1} = 0 by 2^-24 "
                            "(so its σ stays finite); ours keeps 0 and takes the IEEE limits",
            "min_snr_zero_snr": "at ᾱ = 0 (sd_zsnr, t = 999) diffusers' ε weight is 0/0 = NaN (stored as is); ours returns the limit 1",
        },
        "tensors": {
            "output.schedule.<s>.betas / .alphas_cumprod": "DDPMScheduler(**schedules[s].diffusers).betas / .alphas_cumprod, [T]",
            "input.train.x0": "clean latents [8,4,4,4] in [-1, 1]",
            "input.train.noise": "N(0, 1) [8,4,4,4]",
            "input.train.timesteps": "int64 [8], one per batch element",
            "output.train.<s>.noisy": "DDPMScheduler.add_noise(x0, noise, timesteps) = √ᾱ_t·x0 + √(1−ᾱ_t)·noise",
            "output.train.<s>.v": "DDPMScheduler.get_velocity(x0, noise, timesteps) = √ᾱ_t·noise − √(1−ᾱ_t)·x0",
            "output.train.<s>.snr": "diffusers.training_utils.compute_snr(scheduler, timesteps) = (√ᾱ / √(1−ᾱ))², [8]",
            "output.train.<s>.min_snr_eps": "torch.stack([snr, γ·ones], dim=1).min(dim=1)[0] / snr, [8]",
            "output.train.<s>.min_snr_v": "the same min / (snr + 1), [8]",
            "input.x0": "[1,4,6,6] 1.5 · image-like (in [-1.5, 1.5]): the clean sample the fixed model outputs point to",
            "input.<run>.model_outputs": "[calls, 1,4,6,6]: the model's output at call k, to be replayed as fixed tensors. Made "
                                         "during the diffusers run by an oracle pointing at input.x0: for the call's input x "
                                         "and level ᾱ, ε̂ = (x − √ᾱ·x0)/√(1−ᾱ), then the target (ε̂, x0 or √ᾱ·ε̂ − √(1−ᾱ)·x0) "
                                         "plus 0.1 N(0, 1); float64, rounded to float32. It keeps the samples O(1)",
            "input.<run>.noise": "[calls, 1,4,6,6]: fresh noise of step k (DDPM, DDIM with η > 0)",
            "output.<run>.timesteps": "int64 [calls]: scheduler.timesteps after set_timesteps(10), descending; one model call each "
                                      "(PLMS: S + 1 calls, the second one at the first entry's successor, repeated)",
            "input.x_T": "[1,4,6,6] N(0, 1): the starting sample of every run (init_noise_sigma is 1 for all four schedulers)",
            "output.<run>.samples": "[calls, 1,4,6,6]: prev_sample returned by step k, i.e. the input of call k + 1 (PLMS step 0: "
                                    "the provisional sample the Heun call sees); the last one is the result",
        },
    }
    json.dumps(cfg, allow_nan=False)  # fails here rather than in a strict reader
    save_fixture(OUT / "schedulers.safetensors", tensors, cfg, int64_ok=True)


# ---- (h) UNet2DConditionModel -----------------------------------------------
# Two small random UNets in the layouts our UNet implements (the LDM
# openaimodel one), read by crates/ldm-train/tests/parity/unet.rs through the UNet rename table
# (crates/ldm-train/src/interop/unet_key_map.rs). GroupNorm has 32 groups in
# our UNet (GroupNorm32), so every width is 32 and the nets stay ~1.4 MB and
# ~0.9 MB: the smallest that still carry what each one tests (any UNet with a
# 64-wide level, the next width GroupNorm32 allows, takes ~3 MB).

UNET_CONFIGS = {
    # SD 1.x-like: 1×1 conv proj_in/proj_out, attention at level 1 only (so
    # level 0 has none), 4 heads of 8, a 7-token context, resampling between
    # the two levels, a 6×10 latent whose lowest level is 3×5.
    "xattn": dict(
        kwargs=dict(
            sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 32), layers_per_block=1,
            attention_head_dim=4, cross_attention_dim=24, norm_num_groups=32,
        ),
        offset=200,
        shapes=dict(sample=(2, 4, 6, 10), context=(2, 7, 24)),
        timesteps=[17.0, 803.0],
        grad_keys=[
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "up_blocks.0.attentions.1.proj_out.weight",
            "up_blocks.1.resnets.1.conv_shortcut.weight",
        ],
        # GroupNorm(32) over 32 channels normalizes each channel on its own, so
        # the per-channel time embedding a default ResBlock adds before norm2
        # cancels exactly: this net's output does not depend on the timesteps
        # (checked below). "class" carries the time path (scale-shift applies
        # it after the norm); a 64-wide level would lift this but costs >3 MB.
        time_inert=True,
    ),
    # SD 2.x-like transformer (Linear proj_in/proj_out, upcast_attention) of
    # depth 2 with 2 heads of 16, in a one-level UNet (attention only in the
    # middle; no resampling, so an odd 5×7 latent), plus what the `adm` path
    # has: a class-label table added to the time embedding, and scale-shift
    # ResBlocks. 5 input channels (latent + a concatenated condition), 3 out.
    "class": dict(
        kwargs=dict(
            sample_size=7, in_channels=5, out_channels=3,
            down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
            block_out_channels=(32,), layers_per_block=1,
            attention_head_dim=[2], transformer_layers_per_block=2, cross_attention_dim=16,
            use_linear_projection=True, upcast_attention=True, num_class_embeds=5,
            resnet_time_scale_shift="scale_shift", norm_num_groups=32,
        ),
        offset=210,
        shapes=dict(sample=(2, 5, 5, 7), context=(2, 3, 16)),
        timesteps=[981.0, 3.0],
        class_labels=[3, 0],
        grad_keys=[
            "class_embedding.weight",
            "mid_block.attentions.0.proj_in.weight",
            "mid_block.attentions.0.transformer_blocks.1.norm3.weight",
        ],
    ),
}

UNET_FACTS = {
    "timestep": "time_proj: [cos(t f_i), sin(t f_i)], f_i = exp(-ln(10000) i / half), half = block_out_channels[0] / 2 "
                "(flip_sin_to_cos, freq_shift 0); time_embedding: linear_1 -> silu -> linear_2; class_embedding(label) "
                "added to it",
    "resnet": "h = conv1(silu(norm1(x))) + time_emb_proj(silu(emb)) (default); scale_shift: time_emb_proj gives 2C, "
              "(scale, shift) = chunk(2), h = norm2(h) * (1 + scale) + shift; then conv2(dropout(silu(.))); out = "
              "(conv_shortcut(x) if C_in != C_out else x) + h. GroupNorm(32, eps 1e-5)",
    "transformer": "Transformer2DModel: GroupNorm(32, eps 1e-6) -> proj_in (1x1 conv, or Linear over tokens with "
                   "use_linear_projection) -> depth x BasicTransformerBlock [x + attn1(norm1 x); x + attn2(norm2 x, "
                   "context); x + ff(norm3 x)], LayerNorm eps 1e-5, q/k/v bias-free, scale dim_head^-0.5, ff = GEGLU "
                   "(proj to 2 * 4C, a * gelu(b), exact gelu) -> Linear -> proj_out, + x",
    "resampling": "Downsample2D: conv3x3 stride 2 padding 1; Upsample2D: nearest x2 then conv3x3",
    "skips": "conv_in output and every resnet/attention/downsampler output of the down blocks, popped in reverse, "
             "concatenated after the hidden state (cat([h, skip], 1)) before each up-block resnet",
}


def exact_time_proj(m: nn.Module) -> None:
    """Replace m.time_proj by the same formula in float64.

    diffusers' get_timestep_embedding computes in float32 whatever the model
    dtype (its arange is float32 and it calls timesteps.float()), which moves
    cos/sin by up to |t|·2^-24; the reference here is the exact float64 value."""
    old = m.time_proj
    half = old.num_channels // 2
    if (not old.flip_sin_to_cos) or old.downscale_freq_shift != 0 or old.num_channels % 2:
        die("exact_time_proj: only flip_sin_to_cos=True, freq_shift=0, even width")

    class ExactTimesteps(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
            args = t.double()[:, None] * freqs[None, :]
            return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    probe = torch.tensor([0.0, 1.0, 999.0])
    diff = (ExactTimesteps()(probe) - old(probe).double()).abs().max().item()
    if diff > 1e3 * 2.0 ** -24:
        die(f"exact_time_proj: differs from diffusers' float32 embedding by {diff}")
    m.time_proj = ExactTimesteps()


def unet_run(m, inputs: dict) -> torch.Tensor:
    """Forward of UNet2DConditionModel on `inputs` (which may require grad)."""
    return m(inputs["sample"], inputs["timesteps"], encoder_hidden_states=inputs["context"],
             class_labels=inputs.get("class_labels")).sample


def unet_backward(m, inputs: dict, probe: torch.Tensor, grad_keys: list) -> tuple:
    """Output, then d/d(sample, context, weights) of L = sum(output * probe)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items() if k in ("sample", "context")}
    m.zero_grad(set_to_none=True)
    out = unet_run(m, {**inputs, **leaves})
    (out * probe.to(out.dtype)).sum().backward()
    params = dict(m.named_parameters())
    grads = {f"grad.{k}": leaves[k].grad for k in ("sample", "context")}
    grads.update({f"grad.{k}": params[k].grad for k in grad_keys})
    return out.detach(), grads


def rel_drift(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def make_unet(name: str, spec: dict) -> int:
    from diffusers import UNet2DConditionModel
    off = spec["offset"]
    torch.manual_seed(SEED + off)
    default = UNet2DConditionModel(**spec["kwargs"]).eval()
    model = copy.deepcopy(default)
    perturb_(model, gen(off + 1))
    assert_all_changed(model, default)
    folder = OUT / f"diffusers_unet_{name}"
    save_pretrained_clean(model, folder)
    m = reload_f64(UNet2DConditionModel, folder, model)
    m32 = copy.deepcopy(model).eval()  # diffusers' own float32 evaluation, for the drift figures
    exact_time_proj(m)

    g = gen(off + 2)
    shapes = spec["shapes"]
    inputs = {
        "sample": randn(g, *shapes["sample"]),
        "timesteps": torch.tensor(spec["timesteps"], dtype=torch.float32),
        "context": randn(g, *shapes["context"]),
    }
    if "class_labels" in spec:
        inputs["class_labels"] = torch.tensor(spec["class_labels"], dtype=torch.int64)
    f64 = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    with torch.no_grad():
        out = unet_run(m, f64)
    probe = randn(g, *out.shape)
    out_g, grads = unet_backward(m, f64, probe, spec["grad_keys"])
    if not torch.allclose(out_g, out, rtol=0, atol=1e-12):
        die(f"unet {name}: forward with and without autograd differ")
    for k, v in grads.items():
        if v.abs().max().item() < 1e-3:
            die(f"unet {name}: {k} is ~0 (max {v.abs().max().item():.1e}); a test against it could not fail")
    with torch.no_grad():
        other_t = unet_run(m, {**f64, "timesteps": f64["timesteps"].flip(0) + 100.0})
    t_effect = (other_t - out).abs().max().item()
    if spec.get("time_inert", False) != (t_effect < 1e-9 * out.abs().max().item()):
        die(f"unet {name}: timesteps change the output by {t_effect:.1e}, against time_inert")
    out32, grads32 = unet_backward(m32, inputs, probe, spec["grad_keys"])
    drift = {"output.sample": rel_drift(out32, out)}
    drift.update({k: rel_drift(grads32[k], v) for k, v in grads.items()})

    tensors = {f"input.{k}": (v.float() if k == "class_labels" else v) for k, v in inputs.items()}
    tensors.update({"input.probe": probe, "output.sample": out, **grads})
    cfg = {
        "fixture": f"unet_{name}_io",
        "model": "diffusers.UNet2DConditionModel",
        "model_dir": folder.name,
        "diffusers_config": jsonable_config(m.config),
        "compute": "float64 forward and backward on the float32 weights of the folder (upcast exactly), eval mode, "
                   "inputs float32 upcast, results rounded to float32. time_proj replaced by the same formula in "
                   "float64 (diffusers computes it in float32 whatever the model dtype)",
        "float32_drift": {
            "what": "max |diffusers float32 evaluation - stored reference| / max |reference|, per tensor: a guide for "
                    "float32 tolerances",
            **drift,
        },
        "architecture": UNET_FACTS,
        "timestep_effect": {
            "max |output(other timesteps) - output|": t_effect,
            "note": "0 up to rounding when every ResBlock is default (not scale_shift) and 32 channels wide: "
                    "GroupNorm(32) then normalizes each channel alone and removes the per-channel time embedding "
                    "added before norm2" if spec.get("time_inert") else "the timesteps matter",
        },
        "tensors": {
            "input.sample": f"{list(shapes['sample'])} N(0, 1) noisy latent",
            "input.timesteps": "[2] one timestep per sample (float, integer-valued)",
            "input.context": f"{list(shapes['context'])} N(0, 1) encoder_hidden_states",
            "input.class_labels": "[2] class indices stored as float (only with num_class_embeds)",
            "input.probe": "N(0, 1), the shape of output.sample",
            "output.sample": "UNet2DConditionModel(sample, timesteps, encoder_hidden_states=context, class_labels).sample",
            "grad.sample / grad.context": "dL/d input, L = sum(output.sample * probe)",
            "grad.<diffusers key>": "dL/dW in diffusers' layout (Linear [out, in]) for: " + ", ".join(spec["grad_keys"]),
        },
    }
    save_fixture(OUT / f"unet_{name}_io.safetensors", tensors, cfg)
    print(f"  float32 drift of diffusers itself: {json.dumps({k: f'{v:.1e}' for k, v in drift.items()})}")
    files = [OUT / f"unet_{name}_io.safetensors", *folder.iterdir()]
    return sum(p.stat().st_size for p in files)


def is_unet_fixture(p: Path) -> bool:
    """Whether `p` is one of section (h)'s files (they have their own budget)."""
    rel = p.relative_to(OUT).parts
    return rel[0].startswith(("diffusers_unet_", "unet_"))


def make_unets() -> None:
    total = sum(make_unet(name, spec) for name, spec in UNET_CONFIGS.items())
    print(f"  (h) takes {total} bytes")
    if total >= UNET_SIZE_LIMIT:
        die(f"the UNet fixtures take {total} bytes, over their {UNET_SIZE_LIMIT}-byte budget")


# ---- (i) a tiny Stable Diffusion 1.x pipeline -------------------------------
# A random StableDiffusionPipeline in the SD 1.x layout (CLIP text encoder with
# a real CLIP BPE vocabulary cut to 1000 merges, UNet with cross-attention at
# the high-resolution level, AutoencoderKL with f = 2, DDIM), saved as a
# diffusers folder (sd_tiny/, float16 like real SD releases), as one CompVis
# single file (sd_tiny.safetensors, float16, with EMA weights), and a reference
# text-to-image run (sd_tiny_ddim.safetensors). Read by the import/sample/export
# tests of ldm-train; scripts/check_diffusers_export.py --pipeline/--single-file
# repeats the reference run on an exported pipeline.

PIPELINE_SIZE_LIMIT = 1_600_000  # bytes, all files of section (i)
SD_DIR = "sd_tiny"
SD_SINGLE = "sd_tiny.safetensors"
SD_IO = "sd_tiny_ddim.safetensors"
CLIP_BPE_MERGES = CACHE / "text" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
SD_N_MERGES = 1000
SD_PROMPTS = ["a red fox on a hill", "two blue birds"]
SD_GUIDANCE = 5.0
SD_STEPS = 10
SD_ETA = 0.0
SD_LATENT_SHAPE = (2, 4, 8, 8)
SD_SCALING_FACTOR = 0.18215
SD_EMA_DECAY = 0.9999
SD_EMA_NUM_UPDATES = 4321
SD_TEXT_KW = dict(
    vocab_size=1514, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=1512, eos_token_id=1513, pad_token_id=1513,
)
# block_out_channels (8, 16) in 4 groups: our UNet needs every level a
# multiple of the first (model_channels · channel_mult); the UNet is stored
# three times (sd_tiny/unet, and the EMA and raw copies of the single file),
# and (16, 32) takes 1.85 MB, over the budget; (8, 16) takes 0.95 MB. Two
# channels per group keep the time embedding alive at both levels.
SD_UNET_KW = dict(
    sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=32, attention_head_dim=2,
    norm_num_groups=4,
)
SD_VAE_KW = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
)
SD_SCHED_KW = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    timestep_spacing="leading",
)
# What save_pretrained may leave in sd_tiny/ (everything else is removed).
SD_FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
]
SD_CLIP_PREFIX = "cond_stage_model.transformer.text_model."


def bytes_to_unicode() -> dict:
    """OpenAI CLIP's byte -> printable character table (simple_tokenizer.py),
    in its order: the 188 printable bytes first, then the rest mapped to
    U+0100 and up."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_bpe_table(n_merges: int) -> tuple[list, list]:
    """The vocabulary and merges of OpenAI CLIP's SimpleTokenizer with only
    the first `n_merges` merges of bpe_simple_vocab_16e6.txt.gz: 256 byte
    characters, the same with "</w>", one token per merge, then
    <|startoftext|>, <|endoftext|>."""
    import gzip
    if not CLIP_BPE_MERGES.is_file():
        die(f"{CLIP_BPE_MERGES} not found (bash scripts/setup.sh provides it)")
    lines = gzip.open(CLIP_BPE_MERGES).read().decode("utf-8").split("\n")
    # line 0 is the "#version" header (OpenAI skips it: merges[1:...])
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
    if len(merges) != n_merges or any(len(m) != 2 for m in merges):
        die(f"{CLIP_BPE_MERGES}: unexpected merge lines")
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(set(vocab)) != len(vocab):
        die("CLIP vocabulary has duplicates")
    return vocab, merges


class SimpleClipBpe:
    """OpenAI CLIP's simple_tokenizer.SimpleTokenizer (pure Python BPE), the
    reference for the token ids; without ftfy.fix_text, a no-op on the
    ASCII prompts used here."""

    def __init__(self, vocab: list, merges: list):
        import regex
        self.byte_encoder = bytes_to_unicode()
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)

    def bpe(self, token: str) -> str:
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        return " ".join(word)

    def ids(self, text: str, length: int = 77) -> list:
        import html
        import regex
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r"\s+", " ", text).strip().lower()
        out = [self.encoder["<|startoftext|>"]]
        for token in regex.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            out.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        out = out[:length - 1] + [self.encoder["<|endoftext|>"]]
        return out + [self.encoder["<|endoftext|>"]] * (length - len(out))  # pad = eot


def write_clip_tokenizer(folder: Path, vocab: list, merges: list) -> None:
    """vocab.json + merges.txt (transformers' CLIP format), and the two small
    json files of a transformers 4.x save."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def f16_away_from_default_(model: nn.Module, default: nn.Module) -> int:
    """Round every floating parameter/buffer to float16 (kept in float32), so
    the float16 files hold these values exactly. An element that rounds back
    onto its default value (a norm scale of 1 + tiny noise) moves one float16
    step further from it. Returns how many moved."""
    d = dict(default.state_dict())
    moved = 0
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            key = name if name in d else None
            r = t.detach().to(torch.float16).numpy().copy()
            if key is not None:
                dflt = d[key].to(torch.float32).numpy()
                hit = r.astype(np.float32) == dflt
                if hit.any():
                    toward = np.where(t.detach().numpy() >= dflt, np.float16(np.inf), np.float16(-np.inf))
                    r[hit] = np.nextafter(r[hit], toward[hit].astype(np.float16))
                    moved += int(hit.sum())
            t.copy_(torch.from_numpy(r.astype(np.float32)))
    return moved


def assert_all_differ(a: dict, b: dict, what: str) -> None:
    for k, v in a.items():
        if v.is_floating_point() and (v == b[k]).any():
            die(f"{what}: an element of {k} is equal in both")


# UNet: diffusers -> CompVis openaimodel names (the inverse of
# diffusers.loaders.single_file_utils.convert_ldm_unet_checkpoint, verified
# below by running it).
UNET_RESNET_RENAME = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}
UNET_TOP_RENAME = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
}


def diffusers_unet_to_ldm_key(key: str, layers_per_block: int, up_attention: list) -> str:
    """`up_attention[b]`: whether up block b has attentions (then its
    upsampler sits at index 2 of the last output block, else at 1)."""
    n = layers_per_block
    parts = key.split(".")
    for d, ldm in UNET_TOP_RENAME.items():
        if key.startswith(d + "."):
            return ldm + key[len(d):]

    def resnet(tail):
        return [UNET_RESNET_RENAME[tail[0]]] + tail[1:] if tail[0] in UNET_RESNET_RENAME else None

    if parts[0] == "down_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "resnets":
            return ".".join(["input_blocks", str(1 + b * (n + 1) + int(parts[3])), "0"] + resnet(parts[4:]))
        if kind == "attentions":
            return ".".join(["input_blocks", str(1 + b * (n + 1) + int(parts[3])), "1"] + parts[4:])
        if kind == "downsamplers" and parts[4] == "conv":
            return ".".join(["input_blocks", str(1 + b * (n + 1) + n), "0", "op"] + parts[5:])
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return ".".join(["middle_block", str(2 * int(parts[2]))] + resnet(parts[3:]))
        if parts[1] == "attentions" and parts[2] == "0":
            return ".".join(["middle_block", "1"] + parts[3:])
    if parts[0] == "up_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "resnets":
            return ".".join(["output_blocks", str(b * (n + 1) + int(parts[3])), "0"] + resnet(parts[4:]))
        if kind == "attentions":
            return ".".join(["output_blocks", str(b * (n + 1) + int(parts[3])), "1"] + parts[4:])
        if kind == "upsamplers" and parts[4] == "conv":
            return ".".join(["output_blocks", str(b * (n + 1) + n), "2" if up_attention[b] else "1", "conv"]
                            + parts[5:])
    raise KeyError(key)


def ldm_ema_key(ldm_unet_key: str) -> str:
    """CompVis LitEma's buffer name for model.diffusion_model.<key>: the
    name inside the LatentDiffusion module ("diffusion_model.<key>") with
    every dot removed, under model_ema."""
    return "model_ema." + ("diffusion_model." + ldm_unet_key).replace(".", "")


UNET_LDM_RENAME_TABLE = [
    ["time_embedding.linear_{1,2}.*", "time_embed.{0,2}.*", ""],
    ["conv_in.*", "input_blocks.0.0.*", ""],
    ["down_blocks.{b}.resnets.{j}.*", "input_blocks.{1 + b(L+1) + j}.0.*", "L = layers_per_block"],
    ["down_blocks.{b}.attentions.{j}.*", "input_blocks.{1 + b(L+1) + j}.1.*", "SpatialTransformer: same inner names"],
    ["down_blocks.{b}.downsamplers.0.conv.*", "input_blocks.{1 + b(L+1) + L}.0.op.*", ""],
    ["mid_block.resnets.{0,1}.*", "middle_block.{0,2}.*", ""],
    ["mid_block.attentions.0.*", "middle_block.1.*", ""],
    ["up_blocks.{b}.resnets.{j}.*", "output_blocks.{b(L+1) + j}.0.*", "L + 1 resnets per up block"],
    ["up_blocks.{b}.attentions.{j}.*", "output_blocks.{b(L+1) + j}.1.*", ""],
    ["up_blocks.{b}.upsamplers.0.conv.*", "output_blocks.{b(L+1) + L}.{2 if the block has attentions else 1}.conv.*", ""],
    ["conv_norm_out.*, conv_out.*", "out.0.*, out.2.*", ""],
    ["resnet norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut", "in_layers.0, in_layers.2, emb_layers.1, out_layers.0, out_layers.3, skip_connection", ""],
    ["(whole UNet)", "prefix model.diffusion_model.", "EMA copy: model_ema.<'diffusion_model.' + ldm key, dots removed>"],
]


def sd_components() -> dict:
    """The five components, perturbed and rounded to float16 values."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    comps = {}
    specs = [
        ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**SD_TEXT_KW)), 301),
        ("unet", lambda: UNet2DConditionModel(**SD_UNET_KW), 303),
        ("vae", lambda: AutoencoderKL(**SD_VAE_KW, scaling_factor=SD_SCALING_FACTOR), 305),
    ]
    moved = {}
    for name, build, off in specs:
        torch.manual_seed(SEED + off)
        default = build().eval()
        model = copy.deepcopy(default)
        perturb_(model, gen(off + 1))
        moved[name] = f16_away_from_default_(model, default)
        assert_all_changed(model, default)
        comps[name] = model
    # The "raw" (non-EMA) UNet of the single file: the pipeline's UNet plus
    # other noise, so every element differs from the EMA copy.
    raw = copy.deepcopy(comps["unet"])
    perturb_(raw, gen(307))
    f16_away_from_default_(raw, comps["unet"])
    assert_all_differ(raw.state_dict(), comps["unet"].state_dict(), "raw vs EMA UNet")
    comps["unet_raw"] = raw
    comps["scheduler"] = DDIMScheduler(**SD_SCHED_KW)
    comps["f16_moved"] = moved
    return comps


def sd_pipeline_run(pipe, latents: torch.Tensor, guidance: float, prompts=SD_PROMPTS,
                    steps: int = SD_STEPS, eta: float = SD_ETA, negative_prompt=None) -> dict:
    """The reference call (see SD_RUN_FACTS), recording the guided noise
    prediction of the first step and the latents after the last step.
    scripts/check_diffusers_export.py repeats it on exported pipelines."""
    import functools
    rec = {"timesteps": []}
    sched = pipe.scheduler
    orig_step = sched.step

    @functools.wraps(orig_step)
    def step(model_output, timestep, sample, *a, **kw):
        if "eps_first" not in rec:
            rec["eps_first"] = model_output.detach().clone()
        rec["timesteps"].append(int(timestep))
        return orig_step(model_output, timestep, sample, *a, **kw)

    def on_step_end(_pipe, _i, _t, kw):
        rec["latents"] = kw["latents"].detach().clone()
        return {}

    sched.step = step
    try:
        out = pipe(prompt=list(prompts), negative_prompt=negative_prompt, guidance_scale=guidance,
                   num_inference_steps=steps, eta=eta, latents=latents.clone(), output_type="np",
                   callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
    finally:
        del sched.step
    rec["images"] = torch.from_numpy(np.ascontiguousarray(out.images)).permute(0, 3, 1, 2).contiguous()
    return rec


def sd_text(pipe, prompts: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (as the pipeline's encode_prompt pads them) and the text
    encoder's last_hidden_state."""
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    with torch.no_grad():
        ctx = pipe.text_encoder(tok.input_ids)[0]
    return tok.input_ids, ctx


def sd_exact(pipe) -> None:
    """float64 everywhere: the weights upcast exactly, time_proj and the DDIM
    schedule scalars in float64 (see exact_time_proj, exact_arithmetic)."""
    pipe.to(torch.float64)
    exact_time_proj(pipe.unet)
    exact_arithmetic(pipe.scheduler)


def state_dicts_equal(a: nn.Module, b: nn.Module, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        die(f"{what}: key sets differ: {sorted(set(sa) ^ set(sb))[:5]}")
    for k in sa:
        if sa[k].shape != sb[k].shape or not torch.equal(sa[k].to(sb[k].dtype), sb[k]):
            die(f"{what}: {k} differs")


def clean_sd_folder(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), reverse=True):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel not in SD_FILES:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    have = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if have != sorted(SD_FILES):
        die(f"{folder.name}: expected files {SD_FILES}, have {have}")
    for p in folder.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    for p in folder.rglob("*.safetensors"):
        with safe_open(str(p), "pt") as f:
            for k in f.keys():
                if f.get_slice(k).get_dtype() != "F16":
                    die(f"{p.relative_to(folder)}: {k} is not float16")


SD_RUN_FACTS = {
    "tokenize": "CLIP BPE (lowercase, whitespace collapsed), ids = [<|startoftext|>=1512] + tokens + "
                "[<|endoftext|>=1513], padded with <|endoftext|> (pad_token) to 77, truncated to 77",
    "text_encoder": "context = CLIPTextModel(ids).last_hidden_state [B, 77, 32] (final_layer_norm applied, "
                    "causal mask, no attention mask, quick_gelu, no clip_skip)",
    "uncond": "negative_prompt None: the empty prompt '' for each prompt (ids [1512, 1513, 1513, ...])",
    "timesteps": "DDIM leading spacing: t_i = (9 - i) * (1000 // 10) + steps_offset 1 = 901, 801, ..., 1",
    "step": "x_in = cat([x, x]); e = unet(x_in, t, encoder_hidden_states=cat([uncond, context])); "
            "(e_u, e_c) = e.chunk(2); eps = e_u + 5.0 (e_c - e_u); x <- DDIM(eta 0): "
            "x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t), x = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, "
            "a = alphas_cumprod of the scaled_linear schedule (beta 0.00085 -> 0.012, float32), "
            "a_prev = alphas_cumprod[t - 100], or alphas_cumprod[0] after t = 1 (set_alpha_to_one False); "
            "no clipping; init_noise_sigma 1, scale_model_input identity",
    "decode": "images = clamp(vae.decode(x / 0.18215) / 2 + 0.5, 0, 1) (no quant_conv; decode uses "
              "post_quant_conv then the decoder)",
}


def make_sd_pipeline() -> int:
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint
    import transformers
    from transformers import CLIPTokenizer
    folder = OUT / SD_DIR
    if folder.exists():
        shutil.rmtree(folder)
    tmp = OUT / (SD_DIR + ".tmp-tokenizer")
    if tmp.exists():
        shutil.rmtree(tmp)

    # -- tokenizer: the first 1000 merges of the real CLIP BPE table
    vocab, merges = clip_bpe_table(SD_N_MERGES)
    write_clip_tokenizer(tmp, vocab, merges)
    tokenizer = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=77)
    if (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) != (1512, 1513, 1513):
        die(f"tokenizer special ids {(tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)}")
    if len(tokenizer) != SD_TEXT_KW["vocab_size"]:
        die(f"tokenizer has {len(tokenizer)} tokens, the text encoder {SD_TEXT_KW['vocab_size']}")
    simple = SimpleClipBpe(vocab, merges)

    comps = sd_components()
    pipe = StableDiffusionPipeline(
        vae=comps["vae"], text_encoder=comps["text_encoder"], tokenizer=tokenizer, unet=comps["unet"],
        scheduler=comps["scheduler"], safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    pipe.to(torch.float32)  # exact: the values are float16 ones
    write_clip_tokenizer(folder / "tokenizer", vocab, merges)  # vocab.json/merges.txt as transformers 4.x wrote them
    # transformers >= 5.6 saves CLIPTextModel without the "text_model." prefix
    # (the model was flattened); every SD 1.x release has it (transformers 4.x
    # wrote text_model.embeddings...), and transformers 5 loads both: store the
    # released form.
    te_file = folder / "text_encoder" / "model.safetensors"
    te = load_file(str(te_file))
    if any(k.startswith("text_model.") for k in te):
        die("text_encoder: transformers already wrote text_model.* keys")
    save_file({"text_model." + k: v for k, v in te.items()}, str(te_file), metadata={"format": "pt"})
    shutil.rmtree(tmp)
    clean_sd_folder(folder)

    # -- reload: every component must hold exactly the float16 values
    ref = StableDiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    for name in ("text_encoder", "unet", "vae"):
        state_dicts_equal(getattr(ref, name), comps[name], f"{SD_DIR}/{name} reloaded")
    if jsonable_config(ref.scheduler.config) != jsonable_config(DDIMScheduler(**SD_SCHED_KW).config):
        die(f"scheduler config does not reload: {dict(ref.scheduler.config)}")
    if ref.vae.config.scaling_factor != SD_SCALING_FACTOR:
        die("vae scaling_factor does not reload")
    if ref.tokenizer.model_max_length != 77 or ref.tokenizer.pad_token != "<|endoftext|>":
        die("tokenizer does not reload with model_max_length 77 / pad <|endoftext|>")
    heads = {m.heads for n, m in ref.unet.named_modules() if type(m).__name__ == "Attention"}
    if heads != {2}:
        die(f"unet attention heads {heads}")

    # -- token ids: OpenAI's BPE, the tokenizer built from the files and the
    # reloaded one must agree
    ids_c, _ = sd_text(ref, SD_PROMPTS)
    ids_u, _ = sd_text(ref, [""])
    for prompt, ids in zip(SD_PROMPTS + [""], torch.cat([ids_c, ids_u]).tolist()):
        if simple.ids(prompt) != ids or tokenizer(prompt, padding="max_length", max_length=77).input_ids != ids:
            die(f"token ids of {prompt!r} differ between OpenAI's BPE and CLIPTokenizer")
    if ids_u[0, :3].tolist() != [1512, 1513, 1513]:
        die("the empty prompt does not tokenize to [bos, eos, pad...]")

    # -- reference run, float64
    latents = randn(gen(308), *SD_LATENT_SHAPE)
    sd_exact(ref)
    _, ctx = sd_text(ref, SD_PROMPTS)
    _, uctx = sd_text(ref, [""])
    with torch.no_grad():
        pe, ne = ref.encode_prompt(list(SD_PROMPTS), torch.device("cpu"), 1, True, None)
    if not (torch.equal(pe, ctx) and torch.equal(ne, uctx.expand(2, -1, -1))):
        die("encode_prompt does not give the text encoder's last_hidden_state")
    run = sd_pipeline_run(ref, latents.double(), SD_GUIDANCE)
    expect_t = [(SD_STEPS - 1 - i) * (1000 // SD_STEPS) + 1 for i in range(SD_STEPS)]
    if run["timesteps"] != expect_t:
        die(f"DDIM timesteps {run['timesteps']}, expected {expect_t}")
    if run["latents"].dtype != torch.float64:
        die(f"the reference run is not float64 ({run['latents'].dtype})")
    images = run["images"]  # float32 (output_type np rounds), computed in float64
    with torch.no_grad():
        img64 = (ref.vae.decode(run["latents"] / SD_SCALING_FACTOR).sample / 2 + 0.5).clamp(0, 1)
    if not torch.equal(img64.float(), images):
        die("the pipeline's images are not decode(latents / scaling_factor) / 2 + 0.5, clamped")

    # -- not degenerate
    with torch.no_grad():
        t_a = ref.unet(latents.double(), 901, encoder_hidden_states=ctx).sample
        t_b = ref.unet(latents.double(), 101, encoder_hidden_states=ctx).sample
    t_effect = (t_a - t_b).abs().max().item()
    if t_effect < 1e-2 * t_a.abs().max().item():
        die(f"unet: the timestep barely changes the output ({t_effect:.1e})")
    g1 = sd_pipeline_run(ref, latents.double(), 1.0)
    guidance_effect = (g1["images"] - images).abs().max().item()
    clamped = ((images == 0) | (images == 1)).float().mean().item()
    img_std = images.double().std(dim=(2, 3)).min().item()
    prompt_effect = (images[0] - images[1]).abs().max().item()
    if guidance_effect < 1e-2 or clamped > 0.2 or img_std < 1e-2 or prompt_effect < 1e-2:
        die(f"degenerate images: guidance effect {guidance_effect:.1e}, clamped {clamped:.2f}, "
            f"min per-channel std {img_std:.1e}, prompt effect {prompt_effect:.1e}")
    print(f"  images: min per-channel std {img_std:.3f}, {100 * clamped:.1f}% clamped, guidance 5 vs 1 "
          f"{guidance_effect:.3f}, prompt 0 vs 1 {prompt_effect:.3f}; unet t 901 vs 101 {t_effect:.3f}")

    # -- float32 drift of diffusers itself
    p32 = StableDiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    _, ctx32 = sd_text(p32, SD_PROMPTS)
    _, uctx32 = sd_text(p32, [""])
    run32 = sd_pipeline_run(p32, latents, SD_GUIDANCE)
    drift = {
        "images": (run32["images"].double() - images.double()).abs().max().item(),
        "latents": (run32["latents"].double() - run["latents"].float().double()).abs().max().item(),
        "eps_first": (run32["eps_first"].double() - run["eps_first"].float().double()).abs().max().item(),
        "context": (ctx32.double() - ctx.float().double()).abs().max().item(),
        "uncond_context": (uctx32.double() - uctx.float().double()).abs().max().item(),
    }
    scale = {
        "images": images.abs().max().item(), "latents": run["latents"].abs().max().item(),
        "eps_first": run["eps_first"].abs().max().item(), "context": ctx.abs().max().item(),
        "uncond_context": uctx.abs().max().item(),
    }
    print(f"  float32 drift (max abs): {json.dumps({k: f'{v:.1e}' for k, v in drift.items()})}")

    # -- single file, CompVis names
    n_levels = len(SD_UNET_KW["block_out_channels"])
    up_attn = [t.startswith("CrossAttn") for t in SD_UNET_KW["up_block_types"]]
    unet_sd = comps["unet"].state_dict()
    raw_sd = comps["unet_raw"].state_dict()
    unet_map = {k: diffusers_unet_to_ldm_key(k, SD_UNET_KW["layers_per_block"], up_attn) for k in unet_sd}
    if len(set(unet_map.values())) != len(unet_map):
        die("UNet ldm names clash")
    full = {}
    for k, lk in unet_map.items():
        full[f"model.diffusion_model.{lk}"] = raw_sd[k]
        full[ldm_ema_key(lk)] = unet_sd[k]
    vae_sd = comps["vae"].state_dict()
    for k, v in to_ldm_state_dict(vae_sd, len(SD_VAE_KW["block_out_channels"])).items():
        full[f"first_stage_model.{k}"] = v
    te_sd = comps["text_encoder"].state_dict()
    for k, v in te_sd.items():
        full[SD_CLIP_PREFIX + k] = v
    flat = {k: v.to(torch.float16).contiguous() for k, v in full.items()}
    # Not float16, as in CompVis checkpoints: LitEma's two buffers (0.9999 is
    # 1.0 in float16) and the int64 position_ids that transformers < 4.31
    # saved with CLIPTextModel (SD 1.x files carry them).
    flat["model_ema.decay"] = torch.tensor(SD_EMA_DECAY, dtype=torch.float32)
    flat["model_ema.num_updates"] = torch.tensor(SD_EMA_NUM_UPDATES, dtype=torch.int32)
    flat[SD_CLIP_PREFIX + "embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]

    # Verification with diffusers' converters, on the float16 tensors.
    def same(back: dict, want: dict, what: str) -> None:
        if set(back) != set(want):
            die(f"{what}: key set differs: missing {sorted(set(want) - set(back))[:5]}, "
                f"extra {sorted(set(back) - set(want))[:5]}")
        for k in want:
            if back[k] is None or back[k].shape != want[k].shape or not torch.equal(back[k].float(), want[k].float()):
                die(f"{what}: {k} differs")
    unet_cfg = dict(comps["unet"].config)
    same(convert_ldm_unet_checkpoint(dict(flat), unet_cfg, extract_ema=True), unet_sd,
         "convert_ldm_unet_checkpoint(extract_ema=True) vs the pipeline UNet")
    same(convert_ldm_unet_checkpoint(dict(flat), unet_cfg, extract_ema=False), raw_sd,
         "convert_ldm_unet_checkpoint(extract_ema=False) vs the raw UNet")
    same(convert_ldm_vae_checkpoint(dict(flat), dict(comps["vae"].config)), vae_sd, "convert_ldm_vae_checkpoint")
    clip_back = convert_ldm_clip_checkpoint(dict(flat))
    clip_back = {k.removeprefix("text_model."): v for k, v in clip_back.items()}  # as create_diffusers_clip_model_from_ldm
    pos = clip_back.pop("embeddings.position_ids", None)
    if pos is None or not torch.equal(pos, torch.arange(77)[None]):
        die("convert_ldm_clip_checkpoint lost position_ids")
    same(clip_back, te_sd, "convert_ldm_clip_checkpoint")
    print(f"  verified: diffusers' converters give back the UNet (EMA and raw), VAE and text encoder exactly")

    path = OUT / SD_SINGLE
    cfg_single = {
        "fixture": "sd_tiny",
        "what": "the sd_tiny/ pipeline as one CompVis / Stable Diffusion 1.x checkpoint (float16)",
        "prefixes": {
            "model.diffusion_model.": "the RAW (non-EMA) UNet: the pipeline's UNet plus other seeded noise; every element differs from the EMA copy",
            "model_ema.": "LitEma: model_ema.<'diffusion_model.' + ldm UNet key with every '.' removed> = the pipeline's UNet (sd_tiny/unet), e.g. model_ema.diffusion_modelinput_blocks00weight; plus model_ema.decay (float32 [], 0.9999) and model_ema.num_updates (int32 [], 4321)",
            "first_stage_model.": "the VAE (sd_tiny/vae), section (c) names",
            "cond_stage_model.transformer.text_model.": "CLIPTextModel (sd_tiny/text_encoder), FrozenCLIPEmbedder names; embeddings.position_ids is int64 [1, 77] = arange(77) (ignore it)",
        },
        "dtypes": "float16 except model_ema.decay (float32), model_ema.num_updates (int32), position_ids (int64)",
        "ldm_unet_config": {
            "image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 16,
            "attention_resolutions": [1], "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 2,
            "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": 32, "use_linear_in_transformer": False,
            "legacy": False, "norm_num_groups": 8,
            "note": "ldm's normalization() hard-codes GroupNorm(32); these weights need 8 groups. num_heads 2 everywhere "
                    "(diffusers' attention_head_dim=2 is the number of heads): head dim 8 at level 0, 12 in the middle",
        },
        "ldm_first_stage_config": {
            "embed_dim": 4, "double_z": True, "z_channels": 4, "resolution": 16, "in_channels": 3, "out_ch": 3,
            "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "norm_num_groups": 4,
        },
        "scale_factor": SD_SCALING_FACTOR,
        "verified_with": f"diffusers {diffusers.__version__} single_file_utils: convert_ldm_unet_checkpoint(file, unet config, "
                         "extract_ema=True) == sd_tiny/unet and (extract_ema=False) == the raw UNet; "
                         "convert_ldm_vae_checkpoint == sd_tiny/vae; convert_ldm_clip_checkpoint == sd_tiny/text_encoder "
                         "(+ position_ids); all bit-identical",
        "unet_rename_diffusers_to_ldm": UNET_LDM_RENAME_TABLE,
        "vae_rename_diffusers_to_ldm": LDM_RENAME_TABLE,
        "versions": VERSIONS,
        "generator": "scripts/make_parity_fixtures.py",
    }
    save_file(flat, str(path), metadata={"config": json.dumps(cfg_single)})
    os.chmod(path, 0o644)
    print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes, {len(flat)} tensors)")

    single_ok = sd_from_single_file_check(path, folder, comps, images, latents)

    # -- the io file
    tensors = {
        "input.latents": latents,
        "input.ids": ids_c,
        "input.uncond_ids": ids_u,
        "output.context": ctx,
        "output.uncond_context": uctx,
        "output.eps_first": run["eps_first"],
        "output.latents": run["latents"],
        "output.images": images,
    }
    cfg = {
        "fixture": "sd_tiny_ddim",
        "model": "diffusers.StableDiffusionPipeline",
        "model_dir": SD_DIR,
        "single_file": SD_SINGLE,
        "prompts": SD_PROMPTS,
        "negative_prompt": None,
        "guidance_scale": SD_GUIDANCE,
        "num_inference_steps": SD_STEPS,
        "eta": SD_ETA,
        "height": 16, "width": 16,
        "output_type": "np",
        "timesteps": run["timesteps"],
        "call": "StableDiffusionPipeline.from_pretrained(sd_tiny)(prompt=prompts, guidance_scale=5.0, "
                "num_inference_steps=10, eta=0.0, latents=input.latents, output_type='np'); images NHWC -> NCHW",
        "compute": "float64: the float16 weights upcast exactly, inputs float32 upcast, UNet time_proj and the DDIM "
                   "schedule scalars (alphas_cumprod, final_alpha_cumprod) in float64 (diffusers computes the "
                   "timestep embedding in float32 whatever the dtype); results rounded to float32",
        "formulas": SD_RUN_FACTS,
        "scheduler_config": jsonable_config(ref.scheduler.config),
        "unet_config": jsonable_config(ref.unet.config),
        "vae_config": jsonable_config(ref.vae.config),
        "text_encoder_config": {k: SD_TEXT_KW[k] for k in SD_TEXT_KW},
        "tokenizer": f"CLIP BPE, the first {SD_N_MERGES} merges of OpenAI's bpe_simple_vocab_16e6.txt.gz: ids 0-255 the "
                     "bytes_to_unicode characters (OpenAI order), 256-511 the same + '</w>', 512-1511 the merges, 1512 "
                     "<|startoftext|>, 1513 <|endoftext|> (= pad); checked against OpenAI's SimpleTokenizer BPE",
        "float32_drift": {
            "what": "max |diffusers float32 run of the same pipeline (from_pretrained torch_dtype float32, its own "
                    "time_proj and schedule) - stored reference|: a guide for float32 tolerances",
            **drift,
            "max_abs_reference": scale,
        },
        "checks": {
            "unet_timestep_effect": f"max |unet(x, 901) - unet(x, 101)| = {t_effect:.4f} (max |unet| {t_a.abs().max().item():.3f})",
            "guidance_effect": f"max |images(guidance 5) - images(guidance 1)| = {guidance_effect:.4f}",
            "prompt_effect": f"max |images[0] - images[1]| = {prompt_effect:.4f}",
            "clamped_fraction": clamped,
            "from_single_file": single_ok,
        },
        "float16_rounding": "every weight was perturbed in float32, then rounded to float16; elements that rounded "
                            f"back onto their default value moved one float16 step ({json.dumps(comps['f16_moved'])})",
        "tensors": {
            "input.latents": "[2, 4, 8, 8] N(0, 1) initial latents (init_noise_sigma 1)",
            "input.ids": "[2, 77] int64 token ids of the prompts",
            "input.uncond_ids": "[1, 77] int64 token ids of ''",
            "output.context": "[2, 77, 32] text encoder last_hidden_state of input.ids",
            "output.uncond_context": "[1, 77, 32] the same for input.uncond_ids",
            "output.eps_first": "[2, 4, 8, 8] guided noise prediction at the first step (t = 901)",
            "output.latents": "[2, 4, 8, 8] latents after the last DDIM step (before / scaling_factor)",
            "output.images": "[2, 3, 16, 16] the pipeline's images in [0, 1], NCHW",
        },
    }
    cfg["versions_extra"] = {"transformers": transformers.__version__}
    save_fixture(OUT / SD_IO, tensors, cfg, int64_ok=True)
    return sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file() and is_pipeline_fixture(p))


def sd_from_single_file_check(path: Path, folder: Path, comps: dict, images: torch.Tensor,
                              latents: torch.Tensor) -> str:
    """StableDiffusionPipeline.from_single_file offline, with the fixture
    folder as config; must give the same weights and the same images."""
    from diffusers import StableDiffusionPipeline
    try:
        sf = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True,
                                                      extract_ema=True, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        die(f"from_single_file failed offline: {type(e).__name__}: {e}")
    for name in ("text_encoder", "unet", "vae"):
        state_dicts_equal(getattr(sf, name), comps[name], f"from_single_file {name}")
    sd_exact(sf)
    run = sd_pipeline_run(sf, latents.double(), SD_GUIDANCE)
    if not torch.equal(run["images"], images):
        die(f"from_single_file images differ by {(run['images'] - images).abs().max().item():.1e}")
    raw = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True,
                                                   dtype=torch.float32)
    state_dicts_equal(raw.unet, comps["unet_raw"], "from_single_file without extract_ema: unet")
    print("  verified: from_single_file(config=sd_tiny, local_files_only, extract_ema=True) gives the same "
          "weights and images; without extract_ema it loads the raw UNet")
    return ("StableDiffusionPipeline.from_single_file(sd_tiny.safetensors, config=sd_tiny/, local_files_only=True, "
            "extract_ema=True) loads offline with the same weights and gives the same images (bit-identical); "
            "without extract_ema=True it loads model.diffusion_model.* (the raw UNet)")


def is_pipeline_fixture(p: Path) -> bool:
    """Whether `p` is one of section (i)'s files (they have their own budget)."""
    rel = p.relative_to(OUT).parts
    return rel[0] in (SD_DIR, SD_SINGLE, SD_IO)


def make_pipeline() -> None:
    total = make_sd_pipeline()
    print(f"  (i) takes {total} bytes")
    if total >= PIPELINE_SIZE_LIMIT:
        die(f"the pipeline fixtures take {total} bytes, over their {PIPELINE_SIZE_LIMIT}-byte budget")


def make_networks_and_losses() -> None:
    """Sections (a)-(f), always regenerated together."""
    print("(a) AutoencoderKL")
    kl = build_kl()
    make_kl(kl)
    print("(c) ldm names")
    make_ldm(kl)
    print("(b) VQModel")
    make_vq()
    print("(d) discriminators")
    make_disc(use_actnorm=False)
    make_disc(use_actnorm=True)
    print("(e) LPIPS")
    make_lpips()
    print("(f) losses")
    make_losses()


def parse_args():
    import argparse
    p = argparse.ArgumentParser(description="Regenerate the parity fixtures of ldm-train (see the module docstring).")
    p.add_argument("--only", choices=["schedulers", "unet", "pipeline"],
                   help="regenerate only this section and leave every other fixture file untouched")
    return p.parse_args()


def main() -> None:
    global VERSIONS
    args = parse_args()
    VERSIONS = versions()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"writing parity fixtures to {OUT.relative_to(ROOT)} ({VERSIONS})")
    if args.only is None:
        make_networks_and_losses()
    if args.only in (None, "schedulers"):
        print("(g) schedulers")
        make_schedulers()
    if args.only in (None, "unet"):
        print("(h) UNet2DConditionModel")
        make_unets()
    if args.only in (None, "pipeline"):
        print("(i) StableDiffusionPipeline")
        make_pipeline()
    total = sum(
        p.stat().st_size for p in OUT.rglob("*")
        if p.is_file() and p.suffix != ".ckpt" and not is_unet_fixture(p) and not is_pipeline_fixture(p)
    )
    print(f"total size of {OUT.relative_to(ROOT)}: {total} bytes")
    if total >= SIZE_LIMIT:
        die(f"fixtures take {total} bytes, over the {SIZE_LIMIT}-byte budget")


if __name__ == "__main__":
    main()
