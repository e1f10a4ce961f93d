#!/usr/bin/env bash
# The quickstart: fetch the offline assets (Fashion-MNIST, LPIPS, the FID
# Inception, the CPU libtorch), build with burn's LibTorch backend (the fastest
# CPU backend; `--device cpu` picks it), then the product's two stages on real
# data: train the tiny KL-f4 autoencoder on Fashion-MNIST, train the tiny
# class-conditional latent diffusion model on its cached latents, and sample a
# grid with a row per class (runs/quickstart-samples/grid.png). Re-running
# continues (or just re-samples) the runs. DEVICE=flex runs it on pure Rust.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cargo build --release --features tch
device="${DEVICE:-cpu}"
bin="${CARGO_TARGET_DIR:-target}/release/ldm-train"
ae="${AE_RUN_DIR:-runs/kl-f4-fashion}"
dm="${RUN_DIR:-runs/cin-fashion}"
out="${OUT_DIR:-runs/quickstart-samples}"
resume() { [[ -f "$1/checkpoints/latest" ]] && echo --resume || true; }
# shellcheck disable=SC2046
"$bin" autoencoder --config configs/tiny/kl-f4-fashion.toml --run-dir "$ae" --device "$device" $(resume "$ae")
# shellcheck disable=SC2046
"$bin" diffusion --config configs/tiny/cin-fashion.toml --run-dir "$dm" --device "$device" \
  --set "autoencoder.checkpoint=\"$ae\"" $(resume "$dm") "$@"
"$bin" sample --checkpoint "$dm" --n 8 --sampler ddim --steps 50 --guidance 3 --seed 1 \
  --out "$out" --device "$device"
echo
echo "samples: $out/grid.png (a row per class) and $out/<class>/; TensorBoard: tensorboard --logdir runs/"
