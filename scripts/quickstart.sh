#!/usr/bin/env bash
# The quickstart: fetch the photos, LPIPS weights and the CPU libtorch, build
# with burn's LibTorch backend (the fastest CPU backend; `--device cpu` picks
# it), train the tiny KL-f4 autoencoder, and evaluate it on the held-out
# photos, writing input|reconstruction PNGs. Re-running continues (or just
# re-evaluates) the run. DEVICE=flex runs the same on the pure-Rust backend.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cargo build --release --features tch
device="${DEVICE:-cpu}"
bin="${CARGO_TARGET_DIR:-target}/release/ldm-train"
run="${RUN_DIR:-runs/quickstart}"
resume=()
[[ -f "$run/checkpoints/latest" ]] && resume=(--resume)
"$bin" autoencoder --config configs/tiny/kl-f4.toml --run-dir "$run" --device "$device" "${resume[@]}" "$@"
"$bin" eval autoencoder --checkpoint "$run" --data datasets/photos/val --out "$run/eval" --device "$device"
echo
echo "reconstructions: $run/eval/*.png and $run/samples/; TensorBoard: tensorboard --logdir runs/"
