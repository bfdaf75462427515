#!/usr/bin/env bash
# Label efficiency on PneumoniaMNIST (MoCo-CXR; issue 19, item 5), one process at a time:
# for each seed S, pretrain SimCLR and MoCo (configs/{simclr,moco}_pneumoniamnist.py,
# --config.seed=S), then fine-tune each pretrained backbone on 1%, 10%, 100% of the training
# labels (label-fraction draw and fine-tune seed S, eval --config.seed=S), and in SimCLR's eval
# also the same network from random initialisation (supervised from scratch, seed S) and
# linear probes on the frozen features (pretrained, random init seeded S, raw pixels); then the
# table and plot (launch/label_efficiency_table.py).
# Usage: MEDSSL_DATA_DIR=../shared/data/medmnist launch/label_efficiency.sh OUT "SEEDS" [FT_STEPS]
#   e.g. launch/label_efficiency.sh /tmp/f19b/le "0 1 2"
# Budget (2 CPU cores, 2026-12-02): about 5 min per pretraining run and FT_STEPS (default 300,
# configs/eval/linear_probe.py's finetune.steps) fine-tuning steps per fraction and arm;
# BENCHMARKS.md ("Label efficiency on PneumoniaMNIST") has the measured times.
# Produces OUT/{simclr,moco}_sS (pretraining), OUT/{simclr,moco}_sS/eval_le/results.json and
# label_fractions_*.png, OUT/label_efficiency.md and OUT/label_efficiency.png. Seeds run in the
# outer loop, so a study cut short has both methods at the seeds done; re-running skips evals
# already written. PYTHON (default .venv/bin/python) and NICE (default "nice -n 5") as in
# launch/seed_study.sh. The test split is only reported: every choice (fine-tune checkpoint,
# probe C) is made on validation AUROC.
set -euo pipefail
out=${1:?usage: $0 OUT \"SEEDS\" [FT_STEPS]}
seeds=${2:?SEEDS}
steps=${3:-300}
python=${PYTHON:-.venv/bin/python}
read -r -a nice <<< "${NICE:-nice -n 5}"
for seed in $seeds; do
  for method in simclr moco; do
    run="$out/${method}_s$seed"
    [ -f "$run/eval_le/results.json" ] && continue
    baselines="()"
    [ "$method" = simclr ] && baselines="('random_init','raw_pixels')"
    echo "== $run pretraining ($(date +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
    "${nice[@]}" "$python" -m medssl_jax.cli.train --config="configs/${method}_pneumoniamnist.py" \
        --workdir="$run" --config.seed="$seed"
    echo "== $run fine-tuning ($(date +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
    "${nice[@]}" "$python" -m medssl_jax.cli.evaluate --config=configs/eval/linear_probe.py \
        "--config.evaluations=('label_fractions',)" \
        "--config.label_fractions.protocols=('finetune','linear_probe')" \
        "--config.label_fractions.seeds=($seed,)" --config.seed="$seed" \
        --config.finetune.steps="$steps" "--config.baselines=$baselines" \
        --config.pretrain_workdir="$run" --workdir="$run/eval_le"
  done
done
echo "== done ($(date +%H:%M:%S), load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$python" launch/label_efficiency_table.py "$out"
