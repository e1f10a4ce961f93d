#!/usr/bin/env bash
# Training-step throughput on this machine (CPU, Flex): the tiny quickstart
# config, the reference f8 network at batch 4 × 128², and the shapes of the
# PyTorch/diffusers comparison in the README. One JSON line per case:
# median seconds per step, images/s, peak RSS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q
b=./target/release/ldm-train
steps="${STEPS:-3}"
run() { echo "# $1"; shift; "$b" bench autoencoder --steps "$steps" --warmup 1 "$@"; }
run "tiny kl-f4, full loss, 4x64²" --config tiny/kl-f4.toml --batch 4 --size 64 --mode full
run "tiny kl-f4, L1+KL, 4x64²" --config tiny/kl-f4.toml --batch 4 --size 64 --mode l1kl
# diffusers AutoencoderKL(64,128,256,256), 2 res blocks, z 4: PyTorch 1.94 s (L1+KL+AdamW), 0.80 s (encode 16x128²)
diff=(--config f8.toml --set model.ch=64 --set 'model.ch_mult=[1,2,4,4]')
run "diffusers-shaped f8, L1+KL, 4x128²" "${diff[@]}" --batch 4 --size 128 --mode l1kl
run "diffusers-shaped f8, encode, 16x128²" "${diff[@]}" --batch 16 --size 128 --mode encode
run "reference f8 (ch 128), L1+KL, 4x128²" --config f8.toml --batch 4 --size 128 --mode l1kl
run "reference f8 (ch 128), full loss, 4x128²" --config f8.toml --batch 4 --size 128 --mode full
