#!/usr/bin/env bash
# Reads TensorBoard event files back with the real TensorBoard reader.
#
#   scripts/tensorboard_check.sh RUN_DIR [--expect-scalars a,b] \
#       [--expect-image TAG --image-size WxH] [--expect-histogram TAG]
#
# Creates (once) a venv at ${LDM_TRAIN_CACHE:-$HOME/.cache/ldm-train}/tb-venv
# with pinned packages, then runs scripts/check_tensorboard.py in it with the
# given arguments. Safe to run repeatedly: the venv is reused while its
# recorded pins match the ones below. Set PYTHON to choose the interpreter
# the venv is built from (default python3, 3.11 or newer).
set -euo pipefail

# Pinned so a new tensorboard/protobuf/numpy release cannot change what the
# check means; tensorboard 2.21.0 is the PyPI release this was tested with
# (on Python 3.11), the others are what it resolved to at the time.
PINS=(
  "tensorboard==2.21.0"
  "protobuf==7.36.2"
  "numpy==2.4.6"
  "pillow==13.0.0"
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LDM_TRAIN_CACHE:-$HOME/.cache/ldm-train}"
venv="$cache/tb-venv"
stamp="$venv/.ldm-train-pins"
python="${PYTHON:-python3}"
want="$(printf '%s\n' "${PINS[@]}")"

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "" 2>/dev/null \
   || [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$want" ]]; then
  echo "tensorboard_check: setting up $venv" >&2
  mkdir -p "$cache"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
  # Written last, so an interrupted install is redone next time.
  printf '%s\n' "$want" > "$stamp"
fi

exec "$venv/bin/python" "$here/check_tensorboard.py" "$@"
