#!/usr/bin/env bash
# Crash safety: kills a training run with SIGKILL at random moments — a
# checkpoint is written every step, so many kills land inside a write — and
# after every kill checks that `checkpoints/latest` names a whole checkpoint
# that loads (`ldm-train eval` verifies every file's size and hash and the
# weights) and that training resumes from it. Ends with a resume to completion.
#
#   bash scripts/crash_test.sh            # 12 kills (KILLS=N to change, SEED=N to vary)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${LDM_TRAIN_BIN:-${CARGO_TARGET_DIR:-target}/release/ldm-train}"
kills="${KILLS:-12}"
RANDOM="${SEED:-7}"
[[ -x "$bin" ]] || { echo "crash_test: $bin not built (cargo build --release)" >&2; exit 1; }
data="$PWD/datasets/photos"
[[ -d "$data/train" ]] || { echo "crash_test: $data missing: run bash scripts/setup.sh" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
run="$work/run"
args=(autoencoder --config tiny/kl-f4.toml --run-dir "$run"
  --set "data.root=\"$data/train\"" --set "data.val_root=\"$data/val\""
  --set data.size=32 --set data.resize=32 --set model.resolution=32 --set train.batch_size=2
  --set train.max_steps=100000 --set loss.perceptual_weight=0 --set loss.disc_start=3
  --set checkpoint.every=1 --set checkpoint.keep_last=2
  --set logging.val_every=0 --set logging.image_every=0 --set logging.every=1)

verified=0
last_step=0
for i in $(seq 1 "$kills"); do
  resume=()
  [[ -f "$run/checkpoints/latest" ]] && resume=(--resume)
  "$bin" "${args[@]}" "${resume[@]}" >"$work/train.log" 2>&1 &
  pid=$!
  # 0.4 … 3.0 s: start-up, steps and checkpoint writes all get hit.
  sleep "$(( RANDOM % 27 / 10 )).$(( RANDOM % 10 ))"
  sleep 0.4
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" && status=0 || status=$?
    echo "crash_test: run $i exited by itself (status $status) before the kill:" >&2
    tail -3 "$work/train.log" >&2
    exit 1
  fi
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  if [[ ! -f "$run/checkpoints/latest" ]]; then
    echo "kill $i: before the first checkpoint"
    continue
  fi
  name="$(cat "$run/checkpoints/latest")"
  if ! "$bin" eval autoencoder --checkpoint "$run" --data "$data/val" --limit 1 \
      --out "$work/eval" >"$work/eval.log" 2>&1; then
    echo "crash_test: after kill $i, latest ($name) does not load:" >&2
    cat "$work/eval.log" >&2
    exit 1
  fi
  step="${name#step-}"; step=$((10#$step))
  echo "kill $i: latest = $name, loads"
  verified=$((verified + 1))
  last_step=$step
done
(( verified >= 10 )) || { echo "crash_test: only $verified kills left a checkpoint to verify (need 10)" >&2; exit 1; }
# Finally, resume and finish cleanly a few steps later.
target=$((last_step + 3))
"$bin" "${args[@]}" --set "train.max_steps=$target" --resume >"$work/final.log" 2>&1 \
  || { echo "crash_test: final resume failed:" >&2; tail -3 "$work/final.log" >&2; exit 1; }
grep -q "done: step $target" "$work/final.log" || { echo "crash_test: final run did not reach step $target" >&2; exit 1; }
echo "crash_test: $kills kills, $verified verified checkpoints, resumed to step $target: OK"
