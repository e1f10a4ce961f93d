#!/usr/bin/env bash
# Training-step throughput on this machine, each case on every CPU backend
# of ldm-train (Flex always; libtorch when scripts/setup.sh provided it) and
# on PyTorch + diffusers (scripts/bench_torch.py in the pinned reference venv
# of scripts/ref_venv.sh, on the CPU) in the same run, then a table of medians, peak RSS
# and the ratio ours / PyTorch. Every case runs in a process of its own, so
# peak RSS is that case's.
#
#   bash scripts/bench.sh            # STEPS=N timed steps per case (default 5), after 1 warm-up
#   BACKENDS="libtorch" bash scripts/bench.sh   # a subset of flex libtorch
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${LDM_TRAIN_CACHE:-$HOME/.cache/ldm-train}"
steps="${STEPS:-5}"
backends="${BACKENDS:-flex libtorch}"
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

diff=(--config f8.toml --set model.ch=64 --set 'model.ch_mult=[1,2,4,4]')
case_ "diffusers-shaped f8, L1+KL step, 4x128²" diffusers-f8-l1kl "${diff[@]}" --batch 4 --size 128 --mode l1kl
case_ "diffusers-shaped f8, encode, 16x128²" diffusers-f8-encode "${diff[@]}" --batch 16 --size 128 --mode encode
case_ "tiny kl-f4, L1+KL step, 4x64²" tiny-l1kl --config tiny/kl-f4.toml --batch 4 --size 64 --mode l1kl
case_ "tiny kl-f4, full loss (LPIPS+GAN), 4x64²" - --config tiny/kl-f4.toml --batch 4 --size 64 --mode full
case_ "tiny kl-f4, quickstart step (LPIPS), 16x32²" - --config tiny/kl-f4.toml --batch 16 --size 32 --mode full --set loss.disc_start=100000

python3 scripts/bench_table.py "$lines"
