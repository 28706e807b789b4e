#!/usr/bin/env bash
# Re-measure every accuracy table the README and docs/ report, after a change of definition (the
# project's rule: a changed definition is documented and every accuracy table re-measured).
#
#   bash recipes/remeasure_tables.sh [OUT]            # everything, one job at a time (~2.1 h here)
#   LANE=a bash recipes/remeasure_tables.sh [OUT] &   # or both lanes at once, one per core
#   LANE=b bash recipes/remeasure_tables.sh [OUT] &   #   (~1.1 h each when alone on its core)
#
# One thread per job. Each job's output (JSON, sweep folder, log) goes under OUT (default
# runs/remeasure_tables, git-ignored); OUT/queue.log says when each job started and ended and its
# exit status. A job whose OUT/<name>.done exists is skipped, so an interrupted queue resumes where
# it stopped (a sweep folder with a journal also continues inside). recipes/pcm_drift_kws.sh writes
# its JSONs into results/pcm_drift, as the docs say; the IR-drop scripts print their tables into
# their logs. The tables are copied into the docs by hand from these outputs; the commands are the
# ones the docs name.
# Durations in the comments: one thread on the 2-vCPU development VM, 2026-12-07.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
C=.venv/bin/crossbar
P=.venv/bin/python
GSC=../shared/data/speech_commands_v0.02_test
R=${1:-runs/remeasure_tables}
LANE=${LANE:-all}
case "$LANE" in all | a | b) ;; *) echo "error: LANE=$LANE: use a, b or all" >&2; exit 2 ;; esac
mkdir -p "$R"
log() { echo "[$(date +%H:%M:%S)] [lane $LANE] $*" | tee -a "$R/queue.log"; }
run() { # run LANE NAME COMMAND...
  local lane=$1 name=$2; shift 2
  [[ "$LANE" == all || "$LANE" == "$lane" ]] || return 0
  if [[ -e "$R/$name.done" ]]; then log "skip $name (done before)"; return 0; fi
  log "start $name: $*"
  local t0=$SECONDS
  "$@" > "$R/$name.log" 2>&1
  local rc=$?
  log "done $name rc=$rc in $((SECONDS - t0)) s"
  [[ $rc == 0 ]] && touch "$R/$name.done"
}
log "code: $(git rev-parse --short HEAD), $(git status --short | wc -l) uncommitted paths"

# lane a: the LM 528 sweep and the large IR-drop runs
run a lm528 $C evaluate lm --checkpoint checkpoints/lm_ptb_528_ft_hwa1.pt --data ../shared/data/ptb --config rram_nladc_5b --mc 5 --sweep bits=3,4,5,8 --out "$R/lm_ptb_528" --threads 1 # 47 min
run a ir_kws_256 $P scripts/ir_drop_kws.py --r 0,0.1,0.3,1,2,5,7.57/2.52 --mc 10 # 8.5 min
run a ir_kws_r1_all_bad $P scripts/ir_drop_kws.py --r 1 --mc 3 --r-driver 1000 --r-sense 100 --r-access 2500 # 8.6 min
run a ir_adc_256 $P scripts/ir_drop_adc_error.py --sizes 256 --mc 3 # 1.5 min
run a ir_adc_aware $P scripts/ir_drop_adc_error.py --sizes 64,128,256 --mc 3 --variants nladc_aware # 1.3 min
run a adc $C adc --config rram_nladc_5b --mc 10 --out "$R/adc" --json "$R/adc.json"
run a adc8 $C adc --config rram_nladc_8b --function sigmoid --mc 5 --out "$R/adc8" --json "$R/adc8.json"

# lane b: the LM per-input-block sweep, PCM drift, the GSC and FSDD tables, the other IR-drop runs
run b lm_ptb $C evaluate lm --checkpoint checkpoints/lm_ptb_hwa2.pt --data ../shared/data/ptb --config rram_nladc_5b --mc 5 --digital-output --sweep bits=3,4,5,8 --out "$R/lm_ptb" --threads 1 # 27 min
run b pcm_drift bash recipes/pcm_drift_kws.sh # 16 min
run b sweep_gsc $C sweep examples/sweeps/gsc_read_noise_bits.json --out "$R/sweep_gsc" --workers 1 # 7.5 min
run b kws_gsc12 $C evaluate kws --data $GSC --split dev --config rram_nladc_5b --mc 10 --sweep bits=3,4,5,8 --out "$R/kws_gsc12" --threads 1 # 2.5 min
run b kws_gsc12_digital $C evaluate kws --data $GSC --split dev --config rram_nladc_5b --mc 10 --digital-output --json "$R/kws_gsc12_nladc5_digital_output.json" --threads 1
run b kws_fsdd $C evaluate kws --checkpoint checkpoints/kws_fsdd.pt --data ../shared/data/fsdd --split dev --config rram_nladc_5b --mc 10 --sweep bits=3,4,5,8 --out "$R/kws_fsdd" --threads 1 # 1.7 min
run b device_fit_techB $C evaluate kws --data $GSC --split dev --config results/device_fit/rram_techB_1e4s.json --mc 5 --json "$R/kws_gsc_dev_techB_1e4s.json" --threads 1
run b device_fit_preset $C evaluate kws --data $GSC --split dev --config rram_nladc_5b --mc 5 --json "$R/kws_gsc_dev_preset.json" --threads 1
run b ir_kws_128 $P scripts/ir_drop_kws.py --size 128 --r 0,0.1,0.3,1,2,5 --mc 3 # 2.5 min
run b ir_kws_64 $P scripts/ir_drop_kws.py --size 64 --r 0,0.1,0.3,1,2,5 --mc 3 # 2.5 min
run b ir_kws_base3 $P scripts/ir_drop_kws.py --r 0 --mc 3
run b ir_kws_r1 $P scripts/ir_drop_kws.py --r 1 --mc 3
run b ir_kws_access $P scripts/ir_drop_kws.py --r 0 --mc 3 --r-access 2500
run b ir_kws_r1_access $P scripts/ir_drop_kws.py --r 1 --mc 3 --r-access 2500
run b ir_kws_r1_drv10 $P scripts/ir_drop_kws.py --r 1 --mc 3 --r-driver 10
run b ir_kws_r1_drv1000 $P scripts/ir_drop_kws.py --r 1 --mc 3 --r-driver 1000
run b ir_kws_r1_sense100 $P scripts/ir_drop_kws.py --r 1 --mc 3 --r-sense 100
run b ir_kws_r1_all_real $P scripts/ir_drop_kws.py --r 1 --mc 3 --r-driver 10 --r-sense 10 --r-access 2500 # 2.7 min
run b ir_kws_offset $P scripts/ir_drop_kws.py --mapping offset --r 0,0.1,0.3,1 --mc 3
run b ir_kws_offset_b $P scripts/ir_drop_kws.py --mapping offset --r 0.01,0.03,2,7.57/2.52 --mc 3
run b ir_kws_offset_64 $P scripts/ir_drop_kws.py --mapping offset --size 64 --r 0,0.3,1,5 --mc 3
run b ir_mapping $P scripts/ir_drop_mapping.py
run b ir_mapping_64 $P scripts/ir_drop_mapping.py --rows 64 --cols 63 --r 0.3,1,5
run b ir_adc_64_128 $P scripts/ir_drop_adc_error.py --sizes 64,128 --mc 3
run b ir_adc_shared $P scripts/ir_drop_adc_error.py --sizes 64,128,256 --mc 3 --variants shared_near,shared_far
run b ir_kws_shared_near $P scripts/ir_drop_kws.py --shared-ramp near_driver --r 0,1,2 --mc 3
run b ir_kws_shared_far $P scripts/ir_drop_kws.py --shared-ramp far_driver --r 0,1,2 --mc 3
run b ir_kws_r_03_1_2 $P scripts/ir_drop_kws.py --r 0.3,1,2 --mc 3
log "queue finished ($(ls "$R"/*.done 2> /dev/null | wc -l) jobs done in $R)"
