#!/usr/bin/env bash
# Recipe for the paper-scale character-level PTB LSTM (target of Table 1: 1.349 BPC at 5-bit NL-ADC).
# 2 layers x 1000 units (~12.5 MB of float weights; weight memory ~8x the paper's 623 kB at 8 bit --
# the paper's exact model is not published), dropout 0.25 between layers and before the decoder,
# bf16 autocast, float training then 3 epochs of hardware-aware fine-tuning for the 5-bit preset.
# Uses CUDA when present (--device auto). Expected: software valid BPC around 1.35-1.40 (typical of
# 2-layer 1000-unit char-LSTMs on PTB with dropout); NOT yet trained here (tens of CPU-hours).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/ptb}
.venv/bin/crossbar train lm --data "$DATA" --out checkpoints/lm_ptb_paper_scale.pt \
  --hidden 1000 --layers 2 --dropout 0.25 --epochs 60 --batch 128 --bptt 150 --lr 2e-3 \
  --bf16 --device auto --threads 2 \
  --config rram_nladc_5b --hwa-epochs 3 --hwa-lr 3e-4
