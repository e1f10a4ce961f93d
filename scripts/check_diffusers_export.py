#!/usr/bin/env python3
"""Check a diffusers folder written by `ldm-train export --to diffusers`.

Loads AutoencoderKL / VQModel.from_pretrained(DIR), reads `input.x` and
`output.decoded` from FILE (a safetensors written by the Rust exporter's
test, same convention as the parity fixtures), runs the reference forward
and compares:

    kl:  decoded = decode(posterior.mode())      (= decoder(post_quant_conv(mean)))
    vq:  decoded = decode(h), h = encode(x).latents  (decode quantizes h first)

The reference forward runs in float64 on the float32 weights, exactly as
scripts/make_parity_fixtures.py computes its fixtures, so running this on
those fixtures reports an error of 0 (the reference is rounded to float32
before comparing, as the fixtures are).

Prints the max abs error, the max relative error (|a - r| / max(|r|, 1e-6)
per element) and the max abs error relative to max|r|; exits 1 when
max abs error > 1e-4 * max|r| (r = this script's decoded), 2 on bad input.

Usage:
    ~/.cache/ldm-train/ref-venv/bin/python scripts/check_diffusers_export.py \
        --model DIR --io FILE [--kind kl|vq]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

REL_TOL = 1e-4


def fail(msg: str, code: int = 2) -> None:
    print(f"check_diffusers_export.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, help="diffusers model folder (config.json + weights)")
    ap.add_argument("--io", required=True, type=Path, help="safetensors with input.x and output.decoded")
    ap.add_argument("--kind", choices=["kl", "vq"], help="default: from config.json _class_name")
    args = ap.parse_args()

    cfg_path = args.model / "config.json"
    if not cfg_path.is_file():
        fail(f"{cfg_path} not found")
    class_name = json.loads(cfg_path.read_text()).get("_class_name")
    kind = args.kind or {"AutoencoderKL": "kl", "VQModel": "vq"}.get(class_name)
    if kind is None:
        fail(f"cannot tell the kind from _class_name={class_name!r}; pass --kind kl|vq")

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
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


if __name__ == "__main__":
    main()
