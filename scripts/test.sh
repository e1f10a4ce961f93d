#!/usr/bin/env bash
# Everything the tests need, then the tests: assets, the Rust test suite on
# the pure-Rust Flex build (unit, parity and end-to-end), the LibTorch
# backend's agreement with Flex and a short libtorch training run, the CUDA
# build check, the TensorBoard read-back with the real reader, and the
# SIGKILL crash test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cargo test --release --workspace
# burn's LibTorch backend on the CPU libtorch that setup.sh assembled.
cargo test --release -p ldm-train --features tch --test libtorch
# The CUDA backend must compile without a CUDA toolkit.
cargo check --release -p ldm-train --features cuda
# The checks below run the plain (Flex, no native dependency) binary.
cargo build --release -p ldm-train
# TensorBoard: a short run read back by the real reader, non-square image included.
tb="$(mktemp -d)"
trap 'rm -rf "$tb"' EXIT
data="$PWD/datasets/photos"
"${CARGO_TARGET_DIR:-target}/release/ldm-train" autoencoder --config tiny/kl-f4.toml --run-dir "$tb/run" \
  --set "data.root=\"$data/train\"" --set "data.val_root=\"$data/val\"" \
  --set data.size=32 --set data.resize=32 --set model.resolution=32 --set train.batch_size=4 --set train.max_steps=6 \
  --set loss.disc_start=3 --set logging.every=1 --set logging.image_every=3 --set logging.val_every=3
# 4 tiles of 32 px per row, 2 rows (inputs over reconstructions), 2 px padding: 138×70.
bash scripts/tensorboard_check.sh "$tb/run" \
  --expect-scalars train/loss,train/rec_loss,train/p_loss,train/kl_loss,train/g_loss,train/disc_loss,train/d_weight,train/logits_real,train/logits_fake,train/lr,perf/images_per_sec,perf/step_time,val/psnr,val/psnr_y,val/rfid \
  --expect-image train/reconstructions --image-size 138x70
# The diffusion stage's event files: an unconditional model on that
# autoencoder's latents of the photos, with a sample grid.
"${CARGO_TARGET_DIR:-target}/release/ldm-train" diffusion --config tiny/uncond-fashion.toml --run-dir "$tb/diffusion" \
  --set "autoencoder.checkpoint=\"$tb/run\"" --set "data.root=\"$data/train\"" --set 'data.fit="crop"' \
  --set model.unet.in_channels=8 --set model.unet.out_channels=8 --set model.unet.model_channels=32 \
  --set model.unet.num_head_channels=16 --set train.batch_size=4 --set train.max_steps=4 \
  --set logging.every=1 --set logging.sample_every=2 --set logging.sample_steps=3
bash scripts/tensorboard_check.sh "$tb/diffusion" \
  --expect-scalars train/loss,train/lr,train/grad_norm,train/ema_decay,train/scale_factor,perf/samples_per_sec,perf/step_time \
  --expect-image samples/ema --image-size 274x36
bash scripts/crash_test.sh
echo "all tests passed"
