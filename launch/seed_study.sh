#!/usr/bin/env bash
# A study of arms x seeds, run one process at a time: pretrain each, linear-probe it, probe the
# baselines (random init, raw pixels) once, then print the table (launch/study_table.py).
# Usage: launch/seed_study.sh OUT CONFIG "SEEDS" ARM [ARM ...]
#   ARM is NAME or NAME:OVERRIDES, OVERRIDES being --config flags separated by commas.
# E.g. a rotation study of issue 19 (docs/results.md), about 5.5 minutes per run on 2 idle cores:
#   MEDSSL_DATA_DIR=../shared/data/medmnist launch/seed_study.sh runs/rotation \
#       configs/simclr_bloodmnist.py "0 1 2" norot:--config.augment.policy=crop+flip+brightness_contrast rot
# Runs go to OUT/NAME_sSEED (probe in its eval/), the baselines to OUT/baselines. Seeds run in
# the outer loop, so a study cut short still has every arm at the seeds done. Re-running skips
# runs already evaluated and resumes an interrupted one. PYTHON (default .venv/bin/python) and
# NICE (default "nice -n 5") choose the interpreter and priority.
set -euo pipefail
out=${1:?usage: $0 OUT CONFIG \"SEEDS\" ARM [ARM ...]}
config=${2:?CONFIG}
seeds=${3:?SEEDS}
shift 3
[ $# -ge 1 ] || { echo "name at least one ARM" >&2; exit 2; }
python=${PYTHON:-.venv/bin/python}
read -r -a nice <<< "${NICE:-nice -n 5}"
probe=(--config=configs/eval/linear_probe.py "--config.evaluations=('linear_probe',)")
first=""
for seed in $seeds; do
  for arm in "$@"; do
    name=${arm%%:*}
    overrides=()
    [[ $arm == *:* ]] && IFS=, read -r -a overrides <<< "${arm#*:}"
    run="$out/${name}_s$seed"
    first=${first:-$run}
    [ -f "$run/eval/results.json" ] && continue
    echo "== $run ($(date +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
    "${nice[@]}" "$python" -m medssl_jax.cli.train --config="$config" --workdir="$run" \
        --config.seed="$seed" "${overrides[@]}"
    "${nice[@]}" "$python" -m medssl_jax.cli.evaluate "${probe[@]}" --config.pretrain_workdir="$run" \
        --workdir="$run/eval" "--config.baselines=()"
  done
done
if [ ! -f "$out/baselines/results.json" ]; then
  echo "== baselines ($(date +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "${nice[@]}" "$python" -m medssl_jax.cli.evaluate "${probe[@]}" --config.pretrain_workdir="$first" \
      --workdir="$out/baselines" --config.feature_cache_dir="$first/eval/feature_cache"
fi
"$python" launch/study_table.py "$out"
