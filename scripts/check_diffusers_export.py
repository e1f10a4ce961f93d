#!/usr/bin/env python3
"""Check what `ldm-train export` wrote, with diffusers as the reference.

Autoencoder mode (`--model DIR`): loads AutoencoderKL / VQModel
.from_pretrained(DIR), reads `input.x` and `output.decoded` from FILE (a
safetensors written by the Rust exporter's test, same convention as the
parity fixtures), runs the reference forward and compares:

    kl:  decoded = decode(posterior.mode())      (= decoder(post_quant_conv(mean)))
    vq:  decoded = decode(h), h = encode(x).latents  (decode quantizes h first)

The reference forward runs in float64 on the float32 weights, exactly as
scripts/make_parity_fixtures.py computes its fixtures, so running this on
those fixtures reports an error of 0 (the reference is rounded to float32
before comparing, as the fixtures are).

Prints the max abs error, the max relative error (|a - r| / max(|r|, 1e-6)
per element) and the max abs error relative to max|r|; exits 1 when
max abs error > 1e-4 * max|r| (r = this script's decoded), 2 on bad input.

Pipeline mode (`--pipeline DIR` or `--single-file FILE`): loads a Stable
Diffusion pipeline, either a diffusers folder
(DiffusionPipeline.from_pretrained(DIR, local_files_only=True)) or a CompVis
single file (StableDiffusionPipeline.from_single_file(FILE, config=CONFIG,
local_files_only=True); CONFIG is a diffusers folder that gives the
component configs, the tokenizer and the scheduler: by default the
reference folder below), and repeats the text-to-image run stored in the io
file (sd_tiny_ddim.safetensors; prompts, negative prompt, guidance scale,
steps and eta from its metadata, initial latents `input.latents`):

    images = pipe(prompt=prompts, guidance_scale, num_inference_steps, eta,
                  latents=input.latents, output_type="np")  -> NCHW

It then compares with the io file: the token ids of the prompts and of ""
(`input.ids`, `input.uncond_ids`; must be equal), the text encoder's
last_hidden_state (`output.context`, `output.uncond_context`), the guided
noise prediction of the first step (`output.eps_first`), the latents after
the last step (`output.latents`) and the images (`output.images`). The run
uses the io file's precision: for the fixture, float64 on the exported
weights (upcast exactly), with the UNet's timestep embedding and the
scheduler's alphas_cumprod in float64, as make_parity_fixtures.py computed
it; so the fixture folder itself, and any export holding the same weights
(float16 -> float32 is exact), report an error of 0. Exits 1 when a token id
differs or when, for a tensor r of the io file, max |a - r| > 1e-4 * max|r|.
That is 5x or more above the drift of diffusers' own float32 run of the
same pipeline, which the fixture records (float32_drift: images 4.5e-7,
latents 2.1e-5 of max 27.4, eps_first 4.9e-6 of 1.49, context 1.3e-6 of
2.88, i.e. at most 3.3e-6 relative); an export with misplaced or wrongly
converted weights is off by O(1).

It also compares each component's weights (unet, vae, text_encoder) with a
reference pipeline folder, by default the io file's `model_dir` next to it
(the fixture sd_tiny/): max abs difference per component, expected 0; exits
1 on a key set or shape mismatch or a difference above 0 (every float format
the exporter may use holds the float16 fixture values exactly). Give
`--reference none` to skip this (an io file of your own).

Single files with EMA weights: diffusers loads `model.diffusion_model.*`
unless extract_ema=True, and takes `model_ema.*` only when there are more
than 100 such keys. `--ema auto` (default) passes extract_ema=True when the
file has model_ema.* keys. The fixture's sd_tiny/ pipeline holds the EMA
UNet; sd_tiny.safetensors's model.diffusion_model.* is a different (raw) UNet.

Usage:
    PY=~/.cache/ldm-train/ref-venv/bin/python
    $PY scripts/check_diffusers_export.py --model DIR --io FILE [--kind kl|vq]
    $PY scripts/check_diffusers_export.py --pipeline DIR --io sd_tiny_ddim.safetensors
    $PY scripts/check_diffusers_export.py --single-file FILE --io sd_tiny_ddim.safetensors \\
        [--config DIR] [--ema auto|yes|no]
    # common pipeline options: [--reference DIR|none] [--scheduler exported|reference]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.dont_write_bytecode = True

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

REL_TOL = 1e-4
WEIGHT_TOL = 0.0


def fail(msg: str, code: int = 2) -> None:
    print(f"check_diffusers_export.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


# ---- autoencoder mode ---------------------------------------------------------

def check_autoencoder(args) -> None:
    cfg_path = args.model / "config.json"
    if not cfg_path.is_file():
        fail(f"{cfg_path} not found")
    class_name = json.loads(cfg_path.read_text()).get("_class_name")
    kind = args.kind or {"AutoencoderKL": "kl", "VQModel": "vq"}.get(class_name)
    if kind is None:
        fail(f"cannot tell the kind from _class_name={class_name!r}; pass --kind kl|vq")

    from diffusers import AutoencoderKL, VQModel

    cls = AutoencoderKL if kind == "kl" else VQModel
    if class_name not in (None, cls.__name__):
        fail(f"--kind {kind} but config.json says {class_name}")
    try:
        model = cls.from_pretrained(str(args.model))
    except Exception as e:  # noqa: BLE001 - one readable line
        fail(f"cannot load {args.model} as {cls.__name__}: {type(e).__name__}: {e}")
    model = model.double().eval()

    io = load_file(str(args.io))
    for k in ("input.x", "output.decoded"):
        if k not in io:
            fail(f"{args.io} has no tensor {k!r} (has {sorted(io)})")
    x = io["input.x"].double()
    theirs = io["output.decoded"].double()

    with torch.no_grad():
        if kind == "kl":
            posterior = model.encode(x).latent_dist
            ref = model.decode(posterior.mode()).sample
        else:
            h = model.encode(x).latents
            ref = model.decode(h).sample
    # Round the reference to float32, the precision of FILE (and of the
    # fixtures, which store this same computation rounded to float32).
    ref = ref.float().double()
    if ref.shape != theirs.shape:
        fail(f"shape mismatch: reference {list(ref.shape)}, {args.io.name} {list(theirs.shape)}", 1)

    err = (theirs - ref).abs()
    max_abs = err.max().item()
    scale = ref.abs().max().item()
    max_rel = (err / ref.abs().clamp_min(1e-6)).max().item()
    ok = max_abs <= REL_TOL * scale
    print(f"kind {kind}  shape {list(ref.shape)}  max|ref| {scale:.6g}")
    print(f"max abs error {max_abs:.6g}  max rel error {max_rel:.6g}  max abs / max|ref| {max_abs / max(scale, 1e-30):.6g}")
    print(f"{'PASS' if ok else 'FAIL'} (threshold: max abs error <= {REL_TOL:g} * max|ref| = {REL_TOL * scale:.6g})")
    sys.exit(0 if ok else 1)


# ---- pipeline mode ------------------------------------------------------------
# The reference run and its float64 changes are the fixture generator's own
# (exact_time_proj, exact_arithmetic, sd_pipeline_run), imported from it.

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_parity_fixtures import exact_arithmetic, exact_time_proj, sd_pipeline_run  # noqa: E402


def read_io(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        fail(f"{path} not found")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("config", "{}"))
        io = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        fail(f"cannot read {path}: {type(e).__name__}: {e}")
    need = ["input.latents", "input.ids", "input.uncond_ids", "output.context", "output.uncond_context",
            "output.eps_first", "output.latents", "output.images"]
    missing = [k for k in need if k not in io]
    if missing:
        fail(f"{path} has no tensors {missing} (has {sorted(io)})")
    for k in ("prompts", "guidance_scale", "num_inference_steps", "eta"):
        if k not in meta:
            fail(f"{path}: its metadata config has no {k!r}")
    return io, meta


def load_pipeline(args, io_meta: dict, reference: Path | None):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    try:
        if args.pipeline is not None:
            if not (args.pipeline / "model_index.json").is_file():
                fail(f"{args.pipeline}/model_index.json not found")
            pipe = DiffusionPipeline.from_pretrained(str(args.pipeline), local_files_only=True, dtype=torch.float32)
            how = f"DiffusionPipeline.from_pretrained({args.pipeline}, local_files_only=True)"
        else:
            if not args.single_file.is_file():
                fail(f"{args.single_file} not found")
            config = args.config or reference
            if config is None or not (config / "model_index.json").is_file():
                fail("--single-file needs --config DIR (a diffusers folder with the component configs, "
                     "tokenizer and scheduler), or a reference folder")
            with safe_open(str(args.single_file), "pt") as f:
                n_ema = sum(k.startswith("model_ema.") for k in f.keys())
            extract_ema = {"yes": True, "no": False, "auto": n_ema > 0}[args.ema]
            if extract_ema and n_ema <= 100:
                print(f"warning: {n_ema} model_ema.* keys; diffusers only extracts EMA weights from more than 100, "
                      "so it will load model.diffusion_model.*")
            pipe = StableDiffusionPipeline.from_single_file(
                str(args.single_file), config=str(config), local_files_only=True, extract_ema=extract_ema,
                dtype=torch.float32)
            how = (f"StableDiffusionPipeline.from_single_file({args.single_file}, config={config}, "
                   f"local_files_only=True, extract_ema={extract_ema}) ({n_ema} model_ema.* keys)")
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - one readable line
        fail(f"cannot load the pipeline: {type(e).__name__}: {e}")
    for name in ("tokenizer", "text_encoder", "unet", "vae", "scheduler"):
        if getattr(pipe, name, None) is None:
            fail(f"the loaded pipeline has no {name}")
    if args.scheduler == "reference":
        from diffusers import DDIMScheduler
        if "scheduler_config" not in io_meta:
            fail("--scheduler reference: the io file's metadata has no scheduler_config")
        pipe.scheduler = DDIMScheduler.from_config(io_meta["scheduler_config"])
    return pipe, how


def compare_weights(pipe, reference: Path) -> bool:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    ok = True
    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}
    for name, cls in classes.items():
        try:
            want = cls.from_pretrained(str(reference / name), local_files_only=True, dtype=torch.float32).state_dict()
        except Exception as e:  # noqa: BLE001
            fail(f"cannot load the reference {reference / name}: {type(e).__name__}: {e}")
        have = getattr(pipe, name).state_dict()
        if set(have) != set(want):
            print(f"weights {name}: key sets differ: missing {sorted(set(want) - set(have))[:5]}, "
                  f"extra {sorted(set(have) - set(want))[:5]}  FAIL")
            ok = False
            continue
        worst, worst_key = 0.0, None
        for k, w in want.items():
            h = have[k]
            if h.shape != w.shape:
                print(f"weights {name}: {k} has shape {list(h.shape)}, the reference {list(w.shape)}  FAIL")
                ok = False
                worst = math.inf
                continue
            if not w.is_floating_point():
                d = 0.0 if torch.equal(h, w) else math.inf
            else:
                d = (h.double() - w.double()).abs().max().item() if w.numel() else 0.0
            if d > worst:
                worst, worst_key = d, k
        good = worst <= WEIGHT_TOL
        ok &= good
        where = f" (at {worst_key})" if worst_key else ""
        print(f"weights {name}: {len(want)} tensors, max abs difference {worst:.6g}{where}  {'ok' if good else 'FAIL'}")
    return ok


def run_pipeline(pipe, meta: dict, latents: torch.Tensor) -> dict:
    """The io file's reference call (prompts, guidance, steps, η from its
    metadata) on `pipe`."""
    return sd_pipeline_run(pipe, latents, meta["guidance_scale"], prompts=meta["prompts"],
                           steps=meta["num_inference_steps"], eta=meta["eta"],
                           negative_prompt=meta.get("negative_prompt"))


def check_pipeline(args) -> None:
    io, meta = read_io(args.io)
    if args.reference == "none":
        reference = None
    elif args.reference is not None:
        reference = Path(args.reference)
        if not (reference / "model_index.json").is_file():
            fail(f"--reference {reference}: no model_index.json")
    else:
        guess = args.io.parent / meta.get("model_dir", "")
        reference = guess if "model_dir" in meta and (guess / "model_index.json").is_file() else None

    precision = args.precision
    if precision == "auto":
        precision = "float64" if str(meta.get("compute", "")).startswith("float64") else "float32"

    pipe, how = load_pipeline(args, meta, reference)
    print(f"loaded: {how}")
    print(f"scheduler: {type(pipe.scheduler).__name__} ({'the io file' if args.scheduler == 'reference' else 'exported'})")
    if "scheduler_config" in meta and args.scheduler == "exported":
        ours = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
        diff = sorted(k for k, v in meta["scheduler_config"].items()
                      if k in ours and (list(ours[k]) if isinstance(ours[k], tuple) else ours[k]) != v)
        if diff or type(pipe.scheduler).__name__ != "DDIMScheduler":
            print(f"warning: the exported scheduler differs from the reference run's DDIMScheduler in {diff} "
                  "(the run will not match; --scheduler reference uses the io file's)")

    weights_ok = True
    if reference is not None:
        print(f"reference weights: {reference}")
        weights_ok = compare_weights(pipe, reference)
    else:
        print("reference weights: none (skipped)")

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if precision == "float64":
        pipe.to(torch.float64)
        exact_time_proj(pipe.unet)
        exact_arithmetic(pipe.scheduler)
    dtype = torch.float64 if precision == "float64" else torch.float32
    print(f"precision: {precision}")

    tok = pipe.tokenizer
    ids_ok = True
    results = {}
    with torch.no_grad():
        for key, prompts in (("ids", list(meta["prompts"])), ("uncond_ids", [""])):
            ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            want = io[f"input.{key}"]
            same = ids.shape == want.shape and torch.equal(ids.long(), want.long())
            ids_ok &= same
            print(f"token ids {key}: {'equal' if same else 'DIFFER'}"
                  + ("" if same else f" (ours {ids.tolist()[0][:12]}..., io {want.tolist()[0][:12]}...)"))
            ctx_key = "context" if key == "ids" else "uncond_context"
            results[ctx_key] = pipe.text_encoder(want.long())[0]
    run = run_pipeline(pipe, meta, io["input.latents"].to(dtype))
    results.update(eps_first=run["eps_first"], latents=run["latents"], images=run["images"])
    if "timesteps" in meta and run["timesteps"] != meta["timesteps"]:
        print(f"warning: timesteps {run['timesteps']}, the io file's {meta['timesteps']}")

    ok = ids_ok and weights_ok
    print(f"{'tensor':<16} {'max abs error':>14} {'max|ref|':>10} {'abs/max|ref|':>13}")
    for name in ("context", "uncond_context", "eps_first", "latents", "images"):
        theirs = io[f"output.{name}"].double()
        ours = results[name].float().double()  # rounded to float32, as the io file is
        if ours.shape != theirs.shape:
            print(f"{name:<16} shape {list(ours.shape)} vs io {list(theirs.shape)}  FAIL")
            ok = False
            continue
        err = (ours - theirs).abs().max().item()
        scale = theirs.abs().max().item()
        good = err <= REL_TOL * scale
        ok &= good
        print(f"{name:<16} {err:>14.6g} {scale:>10.4g} {err / max(scale, 1e-30):>13.3g}  {'ok' if good else 'FAIL'}")
    print(f"{'PASS' if ok else 'FAIL'} (thresholds: token ids equal; per tensor max abs error <= {REL_TOL:g} * "
          f"max|io tensor|; weights max abs difference <= {WEIGHT_TOL:g})")
    sys.exit(0 if ok else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", type=Path, help="diffusers autoencoder folder (config.json + weights)")
    what.add_argument("--pipeline", type=Path, help="diffusers pipeline folder (model_index.json, unet/, vae/, ...)")
    what.add_argument("--single-file", type=Path, help="CompVis / SD single-file checkpoint (.safetensors)")
    ap.add_argument("--io", required=True, type=Path,
                    help="autoencoder: safetensors with input.x and output.decoded; pipeline: sd_tiny_ddim.safetensors")
    ap.add_argument("--kind", choices=["kl", "vq"], help="autoencoder kind; default: from config.json _class_name")
    ap.add_argument("--config", type=Path, help="--single-file: diffusers folder giving the configs, tokenizer and "
                                                "scheduler (default: the reference folder)")
    ap.add_argument("--reference", help="pipeline folder whose weights the loaded ones must equal; default: the io "
                                        "file's model_dir next to it; 'none' skips the comparison")
    ap.add_argument("--ema", choices=["auto", "yes", "no"], default="auto",
                    help="--single-file: pass extract_ema=True (auto: when the file has model_ema.* keys)")
    ap.add_argument("--scheduler", choices=["exported", "reference"], default="exported",
                    help="run with the loaded pipeline's scheduler, or a DDIMScheduler from the io file's config")
    ap.add_argument("--precision", choices=["auto", "float64", "float32"], default="auto",
                    help="pipeline run precision; auto: the io file's (float64 for the fixture)")
    args = ap.parse_args()

    if args.model is not None:
        for flag in ("config", "reference"):
            if getattr(args, flag) is not None:
                fail(f"--{flag} belongs to --pipeline / --single-file")
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        check_autoencoder(args)
    else:
        if args.kind is not None:
            fail("--kind belongs to --model")
        if args.config is not None and args.single_file is None:
            fail("--config belongs to --single-file")
        check_pipeline(args)


if __name__ == "__main__":
    main()
