#!/usr/bin/env python3
"""Write the PyTorch-pickle twin of the ldm parity fixture.

Reads   crates/ldm-train/tests/fixtures/parity/ldm_kl_first_stage.safetensors
writes  crates/ldm-train/tests/fixtures/parity/ldm_kl_first_stage.ckpt

The .ckpt is what a CompVis / Stable Diffusion training run saves:
`torch.save({"state_dict": {...}, "global_step": 0}, path)` in torch's default
zip format, with the very same tensors (float32, same names, same order).
`import --from ldm` on it must give exactly what it gives on the .safetensors.

Run make_parity_fixtures.py first (it writes the .safetensors), then:
    ~/.cache/ldm-train/ref-venv/bin/python scripts/make_ckpt_fixture.py

The output is deterministic (torch's zip writer stores no timestamps): a rerun
gives a byte-identical file. It stops if the file reaches 1,200,000 bytes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.dont_write_bytecode = True

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / "crates" / "ldm-train" / "tests" / "fixtures" / "parity"
SRC = DIR / "ldm_kl_first_stage.safetensors"
OUT = DIR / "ldm_kl_first_stage.ckpt"
SIZE_LIMIT = 1_200_000  # bytes


def main() -> None:
    state_dict = load_file(str(SRC))
    if any(t.dtype != torch.float32 for t in state_dict.values()):
        sys.exit(f"error: {SRC.name} holds non-float32 tensors")
    torch.save({"state_dict": state_dict, "global_step": 0}, str(OUT))
    os.chmod(OUT, 0o644)
    size = OUT.stat().st_size
    print(f"wrote {OUT.relative_to(ROOT)} ({size} bytes, {len(state_dict)} tensors)")
    if size >= SIZE_LIMIT:
        sys.exit(f"error: {OUT.name} takes {size} bytes, over the {SIZE_LIMIT}-byte budget")
    back = torch.load(str(OUT), weights_only=True)["state_dict"]
    if list(back) != list(state_dict) or any(
        not torch.equal(back[k], v) for k, v in state_dict.items()
    ):
        sys.exit(f"error: {OUT.name} does not load back to the tensors of {SRC.name}")


if __name__ == "__main__":
    main()
