#!/usr/bin/env bash
# Throughput on this machine, each case on every CPU backend of ldm-train
# (Flex always; libtorch when scripts/setup.sh provided it) and on PyTorch +
# diffusers (scripts/bench_torch.py in the pinned reference venv of
# scripts/ref_venv.sh, on the CPU) in the same run, then tables of medians,
# peak RSS and the ratio ours / PyTorch. Every case runs in a process of its
# own, so peak RSS is that case's. Two suites: autoencoder training steps
# (`ldm-train bench autoencoder`) and the diffusion UNet's training step and
# DDIM sampling loop (`ldm-train bench diffusion`).
#
#   bash scripts/bench.sh            # STEPS=N timed iterations per case (default 5), after 1 warm-up
#   BACKENDS="libtorch" bash scripts/bench.sh   # a subset of flex libtorch
#   SUITES="diffusion" bash scripts/bench.sh    # a subset of autoencoder diffusion
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${LDM_TRAIN_CACHE:-$HOME/.cache/ldm-train}"
steps="${STEPS:-5}"
backends="${BACKENDS:-flex libtorch}"
suites="${SUITES:-autoencoder diffusion}"
for s in $suites; do
  [[ "$s" == autoencoder || "$s" == diffusion ]] || { echo "bench: SUITES: unknown suite $s (autoencoder, diffusion)" >&2; exit 2; }
done
if [[ -f .libtorch/lib/libtorch_cpu.so ]]; then
  cargo build --release -q -p ldm-train --features tch
else
  echo "bench: no libtorch (run bash scripts/setup.sh): Flex only" >&2
  backends="flex"
  cargo build --release -q -p ldm-train
fi
b="${CARGO_TARGET_DIR:-target}/release/ldm-train"
bash scripts/ref_venv.sh
py="$CACHE/ref-venv/bin/python"
lines="$(mktemp)"
trap 'rm -f "$lines"' EXIT

# case <label> <bench_torch.py case or -> <ldm-train bench args...>
case_() {
  local label="$1" torch_case="$2"
  shift 2
  for dev in $backends; do
    echo "# $label on $dev" >&2
    printf '%s\t%s\n' "$label" "$("$b" bench autoencoder --device "$dev" --steps "$steps" --warmup 1 "$@")" >>"$lines"
  done
  if [[ "$torch_case" != - ]]; then
    echo "# $label on pytorch" >&2
    printf '%s\t%s\n' "$label" "$("$py" scripts/bench_torch.py --case "$torch_case" --steps "$steps" --warmup 1)" >>"$lines"
  fi
}

# dcase <label> <bench_torch.py diffusion --shape> <args both take...>: the
# shape's config for ldm-train is SHAPE_CONFIG's; the other arguments
# (--batch --size --mode --context-len --sample-steps --guidance) go to both.
declare -A SHAPE_CONFIG=([tiny]=tiny/cin-fashion.toml [compass]=bench/compass.toml)
dcase_() {
  local label="$1" shape="$2"
  shift 2
  for dev in $backends; do
    echo "# $label on $dev" >&2
    printf '%s\t%s\n' "$label" "$("$b" bench diffusion --device "$dev" --steps "$steps" --warmup 1 --config "${SHAPE_CONFIG[$shape]}" "$@")" >>"$lines"
  done
  echo "# $label on pytorch" >&2
  printf '%s\t%s\n' "$label" "$("$py" scripts/bench_torch.py diffusion --shape "$shape" --steps "$steps" --warmup 1 "$@")" >>"$lines"
}

if [[ " $suites " == *" autoencoder "* ]]; then
  diff=(--config f8.toml --set model.ch=64 --set 'model.ch_mult=[1,2,4,4]')
  case_ "diffusers-shaped f8, L1+KL step, 4x128²" diffusers-f8-l1kl "${diff[@]}" --batch 4 --size 128 --mode l1kl
  case_ "diffusers-shaped f8, encode, 16x128²" diffusers-f8-encode "${diff[@]}" --batch 16 --size 128 --mode encode
  case_ "tiny kl-f4, L1+KL step, 4x64²" tiny-l1kl --config tiny/kl-f4.toml --batch 4 --size 64 --mode l1kl
  case_ "tiny kl-f4, full loss (LPIPS+GAN), 4x64²" - --config tiny/kl-f4.toml --batch 4 --size 64 --mode full
  case_ "tiny kl-f4, quickstart step (LPIPS), 16x32²" - --config tiny/kl-f4.toml --batch 16 --size 32 --mode full --set loss.disc_start=100000
fi
if [[ " $suites " == *" diffusion "* ]]; then
  dcase_ "tiny cin-fashion UNet, train step, 64x4x8², 1 token" tiny --batch 64 --size 8 --mode train
  dcase_ "compass UNet, train step, 8x4x16², 77x256 context" compass --batch 8 --size 16 --mode train --context-len 77
  dcase_ "compass UNet, train step, 8x4x32², 77x256 context" compass --batch 8 --size 32 --mode train --context-len 77
  dcase_ "compass UNet, DDIM 50 + CFG 7.5, 4x4x16², 77x256 context" compass --batch 4 --size 16 --mode sample \
    --context-len 77 --sample-steps 50 --guidance 7.5
fi

python3 scripts/bench_table.py "$lines"
