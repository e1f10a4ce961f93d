#!/usr/bin/env bash
# Stage 1 on CUDA: a few real training steps of the tiny KL and VQ configs,
# then images/s and peak GPU memory of the reference f8 network at batch
# 8 × 256², full loss (LPIPS + discriminator) and L1+KL only — the shapes of
# the PyTorch figures in the README.
#
# Meant for a GPU machine that only runs what it is given: build here with
#   cargo build --release -p ldm-train --features cuda
#   mkdir -p .device && cp target/release/ldm-train .device/ && cp -r ~/.cache/ldm-train/weights .device/
# (.device/ is gitignored), carry `.device` and `datasets/photos` to the GPU
# machine, and run there
#   BIN=.device/ldm-train LDM_TRAIN_CACHE=.device bash scripts/gpu-smoke.sh
# Needs nvidia-smi for the memory peak.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${BIN:-./target/release/ldm-train}"
steps="${STEPS:-5}"
out="${OUT:-runs/gpu-smoke}"
[[ -x "$bin" ]] || { echo "gpu-smoke: no binary at $bin (build with --features cuda)" >&2; exit 1; }
command -v nvidia-smi >/dev/null || { echo "gpu-smoke: nvidia-smi not found" >&2; exit 1; }
# Autotune on every new shape costs minutes on first use; smoke runs want answers.
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# Runs a command while sampling GPU memory; prints the peak (MiB) after it.
with_peak() {
  local log="$out/mem.$$"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$log" &
  local mon=$!
  local rc=0
  "$@" || rc=$?
  kill "$mon" 2>/dev/null || true
  wait "$mon" 2>/dev/null || true
  echo "peak GPU memory: $(sort -n "$log" | tail -1) MiB"
  rm -f "$log"
  return $rc
}

for cfg in tiny/kl-f4.toml tiny/vq-f4.toml; do
  echo "# train $cfg on cuda, $steps steps"
  rm -rf "$out/${cfg//\//-}"
  with_peak "$bin" autoencoder --config "$cfg" --device cuda --run-dir "$out/${cfg//\//-}" \
    --set "train.max_steps=$steps" --set logging.val_every=0 --set checkpoint.every=1000
done

bench() { echo "# $1"; shift; with_peak "$bin" bench autoencoder --device cuda --steps "$steps" --warmup 2 "$@"; }
# PyTorch eager + diffusers on an H200, same shapes: 52 img/s fp32 (L1+KL, AdamW).
bench "reference f8 (ch 128), L1+KL, 8x256²" --config f8.toml --batch 8 --size 256 --mode l1kl
bench "reference f8 (ch 128), full loss, 8x256²" --config f8.toml --batch 8 --size 256 --mode full
bench "tiny kl-f4, full loss, 16x64²" --config tiny/kl-f4.toml --batch 16 --size 64 --mode full
