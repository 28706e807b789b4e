#!/usr/bin/env bash
# Issue 18: the char-LM at the cost model's `paper-lm` shape (one-hot 50 -> LSTM 528 -> decoder,
# 1.25 M weights), float training with AWD-style regularisation, then hardware-aware fine-tuning.
# Resumable: rerun the same script and each step continues where it stopped (state in the checkpoint).
# One thread, bf16 autocast on CPU (CUDA when present).  Log: runs/lm528.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/ptb}
.venv/bin/crossbar train lm --data "$DATA" --out checkpoints/lm_ptb_528.pt \
  --hidden 528 --layers 1 --dropout 0 --weight-drop 0.2 --locked-dropout 0.15 --weight-decay 0.01 \
  --ema 0.999 --epochs 30 --batch 64 --bptt 150 --lr 2e-3 --warmup 200 \
  --bf16 --device auto --threads 1 --save-every 10 ${MAX_MINUTES:+--max-minutes $MAX_MINUTES}
