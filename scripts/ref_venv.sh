#!/usr/bin/env bash
# (Re)create the PyTorch reference venv used to regenerate the parity
# fixtures (scripts/make_parity_fixtures.py) and to check diffusers exports
# (scripts/check_diffusers_export.py); transformers is the reference for the
# MiniLM text encoder (scripts/make_text_fixture.py). Developers run it; CI
# never does: the fixtures are committed and the Rust tests need no Python.
#
#   venv:  ${LDM_TRAIN_CACHE:-~/.cache/ldm-train}/ref-venv
#   pins:  below. torchvision comes in because lpips imports it; it is pinned
#          to the release that goes with the pinned torch.
#
# Idempotent: a venv that already has exactly these versions is left alone;
# one with other versions is brought to the pins in place; a broken one is
# rebuilt. PyPI's default torch wheel pulls the CUDA runtime packages
# (a few GB); the fixtures only use the CPU.
#
# Usage: bash scripts/ref_venv.sh
set -Eeuo pipefail

die() { echo "ref_venv.sh: error: $*" >&2; exit 1; }
trap 'die "unexpected failure (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

CACHE="${LDM_TRAIN_CACHE:-$HOME/.cache/ldm-train}"
VENV="$CACHE/ref-venv"
PY="$VENV/bin/python"
LOGS="$CACHE/logs"
LOG="$LOGS/ref-venv.log"

PINS=(
  "torch==2.15.0"
  "torchvision==0.29.2"
  "diffusers==0.42.1"
  "safetensors==0.8.0"
  "numpy==2.4.6"
  "lpips==0.1.4"
  "transformers==5.25.0"
)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
mkdir -p "$LOGS" 2>/dev/null || die "cannot create $LOGS (set LDM_TRAIN_CACHE to a writable directory)"

# Prints nothing and succeeds iff every pin is installed at exactly its version.
pins_ok() {
  "$PY" - "${PINS[@]}" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if have.split("+")[0] != want:  # torch reports e.g. 2.15.0+cu132
        sys.exit(1)
import torch, torchvision, diffusers, safetensors, numpy, lpips, transformers  # noqa: F401
EOF
}

if [[ -x "$PY" ]] && pins_ok; then
  echo "ref-venv: $VENV is up to date (${PINS[*]})"
  exit 0
fi

if ! "$PY" -c 'import sys' >/dev/null 2>&1; then
  command -v python3 >/dev/null || die "python3 not found (install python3 and python3-venv)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >"$LOG" 2>&1 \
    || die "python3 -m venv $VENV failed (see $LOG; on Debian install python3-venv)"
  echo "ref-venv: created $VENV"
fi

echo "ref-venv: installing ${PINS[*]} (log: $LOG)"
"$PY" -m pip install -q "${PINS[@]}" >>"$LOG" 2>&1 \
  || die "pip install into $VENV failed (see $LOG)"
pins_ok || die "after pip install, $VENV still does not have ${PINS[*]} (see $LOG)"
echo "ref-venv: ready: $PY"
