#!/usr/bin/env bash
# MICLe vs SimCLR with same-image pairs on nih_cxr1000 split by patient (issue 19, item 4), one
# process at a time: for each seed S, pretrain configs/micle_nih_cxr.py (data.pairing=patient:
# two different images of one patient) and the same recipe as SimCLR (method=simclr,
# data.pairing=same_image: two views of one image), same budget (200 steps of 128, 32 px views),
# --config.seed=S; evaluate each with the linear probe (C chosen on validation) and the
# label-fraction probes on 1%, 10%, 100% of the training labels (drawn by patient, draw seeds
# 0, 1, 2); then the baselines (random init seed 0, raw pixels) once; then the table
# (launch/micle_vs_simclr_table.py). The patient split (60/20/20, split seed 0) is the same
# for every run.
# Usage: launch/micle_vs_simclr.sh OUT "SEEDS"   e.g. launch/micle_vs_simclr.sh /tmp/f19b/micle "0 1 2"
# Budget: about 6-7 min per run (pretraining and its evaluation) on 2 CPU cores, 6 runs for
# 3 seeds; the baselines about 1 min. Needs ../shared/data/nih_cxr1000 (DATA to change it).
# Produces OUT/{micle,simclr}_sS/eval/results.json, OUT/baselines/results.json and
# OUT/micle_vs_simclr.md. Seeds run in the outer loop; re-running skips runs already evaluated.
# PYTHON (default .venv/bin/python) and NICE (default "nice -n 5") as in launch/seed_study.sh;
# STOP_AFTER=HH:MM (same day) starts no new run after that time (the table of what is done).
set -euo pipefail
out=${1:?usage: $0 OUT \"SEEDS\"}
seeds=${2:?SEEDS}
data=${DATA:-../shared/data/nih_cxr1000}
python=${PYTHON:-.venv/bin/python}
read -r -a nice <<< "${NICE:-nice -n 5}"
evals=(--config=configs/eval/linear_probe.py "--config.evaluations=('linear_probe','label_fractions')"
       "--config.label_fractions.protocols=('linear_probe',)" "--config.label_fractions.seeds=(0,1,2)")
first=""
stopped=""
for seed in $seeds; do
  for arm in simclr micle; do
    run="$out/${arm}_s$seed"
    first=${first:-$run}
    [ -f "$run/eval/results.json" ] && continue
    if [ -n "${STOP_AFTER:-}" ] && [[ "$(date +%H:%M)" > "$STOP_AFTER" ]]; then
      echo "== $(date +%H:%M) is past STOP_AFTER=$STOP_AFTER: no new run"; stopped=1; break 2
    fi
    overrides=()
    [ "$arm" = simclr ] && overrides=(--config.method=simclr --config.data.pairing=same_image)
    echo "== $run ($(date +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
    "${nice[@]}" "$python" -m medssl_jax.cli.train --config=configs/micle_nih_cxr.py --workdir="$run" \
        --config.data.dir="$data" --config.seed="$seed" "${overrides[@]}"
    "${nice[@]}" "$python" -m medssl_jax.cli.evaluate "${evals[@]}" --config.pretrain_workdir="$run" \
        --workdir="$run/eval" "--config.baselines=()"
  done
done
if [ -z "$stopped" ] && [ ! -f "$out/baselines/results.json" ] && [ -f "$first/eval/results.json" ]; then
  echo "== baselines ($(date +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "${nice[@]}" "$python" -m medssl_jax.cli.evaluate "${evals[@]}" --config.pretrain_workdir="$first" \
      --workdir="$out/baselines" --config.feature_cache_dir="$first/eval/feature_cache"
fi
echo "== done ($(date +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$python" launch/micle_vs_simclr_table.py "$out"
