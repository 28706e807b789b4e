#!/usr/bin/env bash
# Issue 18, step 2: hardware-aware fine-tuning of the paper-lm-shape LM (recipes/lm_paper_shape.sh
# must have finished its 30 float epochs) for rram_nladc_5b, decoder digital (off-chip), in the two
# stages that gave the shipped 364-unit model its +0.038 BPC (docs/tasks.md), then the evaluation
# on valid at 3/4/5/8 bits with 5 chips, the conventional baseline, the cost report and the plot.
# Two threads (as the 364-unit model was fine-tuned); in the background: nohup recipes/lm_paper_shape_hwa.sh >> runs/lm528_hwa.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/ptb}
CB=.venv/bin/crossbar
$CB train lm --data "$DATA" --init checkpoints/lm_ptb_528.pt --config rram_nladc_5b \
  --out checkpoints/lm_ptb_528_hwa1.pt --hwa-epochs 1 --hwa-max-steps 300 --hwa-lr 5e-4 --digital-output \
  --bf16 --threads 2
$CB train lm --data "$DATA" --init checkpoints/lm_ptb_528_hwa1.pt --config rram_nladc_5b \
  --out checkpoints/lm_ptb_528_hwa.pt --hwa-epochs 1 --hwa-max-steps 600 --hwa-lr 3e-4 --digital-output \
  --bf16 --threads 2
$CB evaluate lm --checkpoint checkpoints/lm_ptb_528_hwa.pt --data "$DATA" --config rram_nladc_5b --mc 5 \
  --sweep bits=3,4,5,8 --out results/lm_ptb_528
$CB report --config rram_nladc_5b --model checkpoints/lm_ptb_528_hwa.pt --bits 3,4,5,8 --out results/cost/lm528
.venv/bin/python scripts/plot_learning_curve.py checkpoints/lm_ptb_528.pt --out docs/lm528_learning_curve.png
