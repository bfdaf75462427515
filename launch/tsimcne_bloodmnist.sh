#!/usr/bin/env bash
# t-SimCNE's three stages on BloodMNIST, then its 2-D map, kNN accuracy and silhouette.
# Needs: the package installed (pip install -e .) and bloodmnist.npz in $MEDSSL_DATA_DIR
# (or online access for the download).
# Usage: launch/tsimcne_bloodmnist.sh RUN_DIR [CONFIG [--config.KEY=VALUE ...]]
# CONFIG defaults to configs/tsimcne_bloodmnist.py (2 CPU cores: about 20 minutes);
# configs/tsimcne_resnet18.py is the full-scale recipe. Overrides after CONFIG go to all three
# stages (e.g. --config.seed=1 --config.augment.policy=simclr). Re-running resumes where it stopped.
# EVAL_ARGS: extra flags for the evaluation, e.g. EVAL_ARGS='--config.baselines=()' skips the
# baselines' t-SNE maps (1-5 minutes each on 2 cores, by load; the same for every seed of a study).
set -euo pipefail
run=${1:?usage: $0 RUN_DIR [CONFIG [--config.KEY=VALUE ...]]}
config=${2:-configs/tsimcne_bloodmnist.py}
shift $(($# < 2 ? $# : 2))
python=${PYTHON:-python}

"$python" -m medssl_jax.cli.train --config="$config:stage1" --workdir="$run/stage1" "$@"
"$python" -m medssl_jax.cli.train --config="$config:stage2" --workdir="$run/stage2" \
    --config.init_from="$run/stage1" "$@"
"$python" -m medssl_jax.cli.train --config="$config:stage3" --workdir="$run/stage3" \
    --config.init_from="$run/stage2" "$@"
"$python" -m medssl_jax.cli.evaluate --config=configs/eval/embedding_2d.py \
    --config.pretrain_workdir="$run/stage3" --workdir="$run/eval" ${EVAL_ARGS:-}
echo "2-D map: $run/eval/embedding_2d.png; figures: $run/eval/results.json"
