#!/usr/bin/env bash
# Keyword spotting on aihwkit's PCM-like device (crossbar pcm-like) read 1 s, 1 day and 1 year after
# programming: the 5-bit NL-ADC (its ramp devices drift with the weights: ratio-metric tracking, no
# digital compensation) vs the conventional 5-bit ADC without and with global drift compensation.
# Shipped checkpoints/kws_gsc12.pt (hardware-aware-trained for the RRAM preset, not for PCM), GSC v0.02
# dev split, 5 device instances each. Writes the configs to results/pcm_drift/configs and one JSON per
# run to results/pcm_drift (about 2 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/speech_commands_v0.02_test}
C=.venv/bin/crossbar
OUT=results/pcm_drift
mkdir -p "$OUT/configs"
for t in 1 86400 31536000; do
  $C pcm-like --base rram_nladc_5b --t-inference $t --out "$OUT/configs/nladc_$t.json" > /dev/null
  $C pcm-like --base rram_conventional_adc_5b --t-inference $t --out "$OUT/configs/conv_$t.json" > /dev/null
  $C pcm-like --base rram_conventional_adc_5b --t-inference $t --compensation --out "$OUT/configs/convcomp_$t.json" > /dev/null
  for k in nladc conv convcomp; do
    $C evaluate kws --data "$DATA" --split dev --config "$OUT/configs/${k}_$t.json" --mc 5 \
      --json "$OUT/${k}_$t.json" --threads 2 2>&1 | tail -1
  done
done
