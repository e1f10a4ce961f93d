#!/usr/bin/env bash
# The quickstart: fetch the photos and LPIPS weights, build, train the tiny
# KL-f4 autoencoder on CPU, and evaluate it on the held-out photos, writing
# input|reconstruction PNGs. Re-running continues (or just re-evaluates) the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cargo build --release
run="${RUN_DIR:-runs/quickstart}"
resume=()
[[ -f "$run/checkpoints/latest" ]] && resume=(--resume)
./target/release/ldm-train autoencoder --config configs/tiny/kl-f4.toml --run-dir "$run" "${resume[@]}" "$@"
./target/release/ldm-train eval autoencoder --checkpoint "$run" --data datasets/photos/val --out "$run/eval"
echo
echo "reconstructions: $run/eval/*.png and $run/samples/; TensorBoard: tensorboard --logdir runs/"
