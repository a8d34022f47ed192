#!/usr/bin/env bash
# GPU readiness check, one script for a GPU machine (install the torch build for its CUDA first, then
# `pip install -e ".[dev]"`):
#
#   bash experiments/gpu_check.sh            # on the GPU: ~5-10 minutes
#   bash experiments/gpu_check.sh --dry-run  # the same steps on the CPU at tiny sizes (tests/test_gpu_check.py)
#
# Steps, each logged to $GPU_CHECK_DIR/<step>.log (default: a fresh /tmp/gpu_check.* folder):
#   tests   the GPU-relevant test subset on the device: every objective's step on the device, its sampling under
#           torch.cuda.set_sync_debug_mode("error") (no host round trip)
#   train   bench train in bf16 on the device: executed FLOPs, MFU against the matmul peak measured in the same
#           run, the share of the step spent building masks
#   decode  bench decode on the device (cache vs recompute, left to right vs transformers, parallel k=1/2/4)
#   e2e     a synthetic reversal task (prepare tsv) -> a short base-size seq2seq training -> generate -> BLEU
# and prints one summary; exit status 1 when a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "error: unknown argument ${1} (usage: experiments/gpu_check.sh [--dry-run])" >&2; exit 2 ;;
esac
WORK=${GPU_CHECK_DIR:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK"

if [[ $DRY == 1 ]]; then
  export CUDA_VISIBLE_DEVICES=""  # everything picks the CPU
  DEV=cpu ACC=cpu TRAIN_CFG=experiments/configs/tiny.yaml STEPS=1 DECODE_STEPS=3 DECODE_BATCH=2
  E2E_CFG=experiments/configs/finetune-tiny.yaml
  MODEL=(--model.d_model 32 --model.n_layer 2 --model.n_head 4 --model.d_inner 64 --model.vocab_size 200)
  E2E_STEPS=3 PAIRS=300
else
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: torch sees no CUDA device (install a CUDA build of torch; --dry-run checks the script on CPU)" >&2
    exit 2
  fi
  DEV=cuda ACC=gpu TRAIN_CFG=experiments/configs/pretrain-base-gpu.yaml STEPS=10 DECODE_STEPS=32 DECODE_BATCH=32
  E2E_CFG=experiments/configs/finetune-base-gpu.yaml  # XLNet-Base
  MODEL=(--model.vocab_size 2000 --data.num_workers 0 --train.warmup_steps 30 --train.lr 5.0e-4)
  E2E_STEPS=300 PAIRS=20000
fi

declare -A STATUS
run_step() {  # run_step NAME CMD...: run, log, record ok/FAILED and the seconds taken
  local name=$1 t0=$SECONDS
  shift
  if "$@" >"$WORK/$name.log" 2>&1; then STATUS[$name]=ok; else STATUS[$name]="FAILED (log: $WORK/$name.log)"; fi
  STATUS[$name]="${STATUS[$name]} $((SECONDS - t0)) s"
}
grab() { grep -m1 -oE "$1" "$WORK/$2.log" 2>/dev/null || echo "?"; }

run_step tests env PLMGEN_TEST_DEVICE=$DEV $PY -m pytest -q -p no:cacheprovider tests/objectives/test_device.py
run_step train $PY cli.py bench train --experiment "$TRAIN_CFG" --objectives plm --steps $STEPS --device $DEV
run_step decode $PY cli.py bench decode --device $DEV --precision fp32 --steps $DECODE_STEPS \
  --batch $DECODE_BATCH --out "$WORK/bench_decode.md"

e2e() {
  $PY - "$WORK/pairs.tsv" "$PAIRS" <<'EOF'
import random, sys
rng = random.Random(0)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 6))) for _ in range(300)]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for _ in range(int(sys.argv[2])):
        s = [rng.choice(words) for _ in range(rng.randint(3, 12))]
        f.write(" ".join(s) + "\t" + " ".join(reversed(s)) + "\n")
EOF
  $PY cli.py prepare tsv --path "$WORK/pairs.tsv" --out "$WORK/data" &&
    $PY cli.py train --config "$E2E_CFG" --data.path "$WORK/data" \
      --out_dir "$WORK/run" "${MODEL[@]}" --train.max_steps $E2E_STEPS --train.val_every $E2E_STEPS \
      --train.accelerator $ACC --train.devices 1 --train.precision bf16 --train.progress_bar false &&
    $PY cli.py generate --checkpoint "$WORK/run/checkpoints/last.ckpt" --split test --data "$WORK/data" \
      --limit 24 --order l2r --length predict --out "$WORK/hyp.txt" --evaluate true --quiet true
}
run_step e2e e2e

echo "gpu_check ($([[ $DRY == 1 ]] && echo "dry run, cpu" || echo "$DEV")): logs in $WORK"
echo "  tests   ${STATUS[tests]}"
echo "  train   ${STATUS[train]}: $(grab 'mfu bf16: [0-9.]+' train), $(grab 'mask share bf16: [0-9.]+' train)," \
  "$(grab 'peak [0-9.]+' train) TFLOP/s matmul"
echo "  decode  ${STATUS[decode]}: $(grab 'ratio cache_vs_recompute: [0-9.]+' decode)," \
  "$(grab 'ratio l2r_greedy_tokens_per_s_vs_hf: [0-9.]+' decode)"
echo "  e2e     ${STATUS[e2e]}: $(grab 'BLEU = [0-9.]+' e2e) (24 test sentences, $E2E_STEPS steps)"
for s in tests train decode e2e; do [[ ${STATUS[$s]} == ok* ]] || exit 1; done
echo "gpu_check: all steps ok"
