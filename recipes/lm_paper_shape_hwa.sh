#!/usr/bin/env bash
# Issue 18, step 2 (after recipes/lm_paper_shape.sh's 30 float epochs): float fine-tuning with half
# the regularisation, hardware-aware fine-tuning for rram_nladc_5b with the decoder digital
# (off-chip), then the evaluation on valid at 3/4/5/8 bits with 5 chips against the conventional
# ADC, the cost report of the same checkpoint and the learning curve.  Each training step resumes
# when rerun (state in its checkpoint).  Measured: 20 + 48 min of training, ~25 min of evaluation
# on one thread each (docs/tasks.md).  In the background:
#   nohup recipes/lm_paper_shape_hwa.sh >> runs/lm528_hwa.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/ptb}
CB=.venv/bin/crossbar
$CB train lm --data "$DATA" --init checkpoints/lm_ptb_528.pt --finetune-epochs 8 --out checkpoints/lm_ptb_528_ft.pt \
  --dropout 0 --weight-drop 0.1 --locked-dropout 0.1 --weight-decay 0.01 --ema 0.999 --batch 64 --bptt 150 \
  --lr 1e-3 --warmup 100 --bf16 --device auto --threads 1 --save-every 10
$CB train lm --data "$DATA" --init checkpoints/lm_ptb_528_ft.pt --config rram_nladc_5b \
  --out checkpoints/lm_ptb_528_ft_hwa1.pt --hwa-epochs 1 --hwa-max-steps 300 --hwa-lr 5e-4 --digital-output \
  --bf16 --threads 1
$CB evaluate lm --checkpoint checkpoints/lm_ptb_528_ft_hwa1.pt --data "$DATA" --config rram_nladc_5b --mc 5 \
  --sweep bits=3,4,5,8 --out results/lm_ptb_528 --threads 1
$CB report --config rram_nladc_5b --model checkpoints/lm_ptb_528_ft_hwa1.pt --bits 3,4,5,8 --out results/cost/lm528
.venv/bin/python scripts/plot_learning_curve.py checkpoints/lm_ptb_528_ft_hwa1.pt --out docs/lm528_learning_curve.png
