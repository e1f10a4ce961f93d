#!/usr/bin/env bash
# Tiny KL-f4 against tiny VQ-f4 (the reference quantizer, then with dead-code
# restarts as the tiny config has them, then restarts plus the EMA codebook), each trained with the same budget
# on the same photos and evaluated on the same held-out photos. Prints one
# markdown table: PSNR, SSIM, LPIPS, rFID and (VQ) code usage.
#
# Usage: bash scripts/compare_tiny.sh            (STEPS=1600 by default: the configs' budget)
#        STEPS=100 bash scripts/compare_tiny.sh  (a quicker, rougher look)
# Runs land in runs/compare-<steps>/; an existing finished run is re-evaluated,
# not retrained.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps="${STEPS:-1600}"
root="runs/compare-$steps"
bash scripts/setup.sh
cargo build --release -p ldm-train
bin="${CARGO_TARGET_DIR:-target}/release/ldm-train"

# name | config | extra overrides
variants=(
  "kl|tiny/kl-f4.toml|"
  "vq-reference|tiny/vq-f4.toml|train.restart_dead_codes_every=0"
  "vq-restart|tiny/vq-f4.toml|"
  "vq-restart-ema|tiny/vq-f4.toml|model.ema_decay=0.99"
)
for v in "${variants[@]}"; do
  IFS='|' read -r name config extra <<<"$v"
  run="$root/$name"
  sets=(--set "train.max_steps=$steps" --set logging.val_every=0)
  [[ -n "$extra" ]] && sets+=(--set "$extra")
  if [[ ! -f "$run/checkpoints/latest" ]]; then
    echo "== training $name ($config ${extra:-reference settings}, $steps steps)"
    "$bin" autoencoder --config "$config" --run-dir "$run" "${sets[@]}"
  fi
  "$bin" eval autoencoder --checkpoint "$run" --data datasets/photos/val --out "$run/eval" >/dev/null
done

python3 - "$root" "${variants[@]}" <<'EOF'
import json, sys
root, variants = sys.argv[1], sys.argv[2:]
print(f"\n| model | PSNR dB | SSIM | LPIPS | rFID | codes used | perplexity |")
print("|---|---|---|---|---|---|---|")
base = None
for v in variants:
    name = v.split("|")[0]
    r = json.load(open(f"{root}/{name}/eval/eval.json"))
    base = (r["baseline_psnr"], r["baseline_ssim"])
    c = r.get("codes")
    codes = f'{c["used"]}/{c["n_embed"]}' if c else "–"
    perp = f'{c["perplexity"]:.1f}' if c else "–"
    lp = f'{r["lpips"]:.3f}' if r.get("lpips") is not None else "n/a"
    fid = f'{r["rfid"]:.1f}' if r.get("rfid") is not None else "n/a"
    print(f'| {name} | {r["psnr"]:.2f} | {r["ssim"]:.3f} | {lp} | {fid} | {codes} | {perp} |')
print(f"| baseline (avg-pool + bilinear) | {base[0]:.2f} | {base[1]:.3f} | | | | |")
EOF
