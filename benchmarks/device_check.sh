#!/usr/bin/env bash
# One command on an accelerator: SimCLR ResNet-50 224 px bf16, JAX against PyTorch.
#
# On a machine with one GPU whose image has jax (CUDA), flax, optax, orbax, chex and torch
# but not grain, ml_collections, array_record or this package, in at most 8 minutes:
#   1. installs what is missing from wheels carried in .device_carry/wheels (pip, no index);
#   2. benchmarks/pytorch_reference.py, bf16, batch 256, data on the device (torch.compile;
#      eager if that fails or runs out of its time);
#   3. benchmarks/device_check.py: the JAX step at the same per-device batch with data on
#      the device, then with real data (ArrayRecord shards of chest X-rays at 224 px,
#      .device_carry/data/nih_cxr1000_224) through grain, the peak device memory, and
#      step_cost on this device's compiler;
#   4. writes $OUT/device_check.json and $OUT/device_check.md (a table for BENCHMARKS.md),
#      plus torch.log and jax.log.
#
# Prepare once, here (needs pip's registry and ../shared/data; writes only .device_carry/,
# which .gitignore ignores, about 23 MB):
#   bash benchmarks/device_check.sh --prepare
# It runs `python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
# --implementation cp --platform manylinux_2_28_x86_64 ... -d .device_carry/wheels` for
# grain, ml_collections, array_record and portpicker (grain's one dependency missing there),
# and medssl-convert of ../shared/data/nih_cxr1000 at 224 px into .device_carry/data.
#
# Then, from the session's tools (the device tool's `run`; .device_carry travels by `carry`):
#   run(command="bash benchmarks/device_check.sh", carry=[".device_carry"], timeout_s=540)
# and copy the table from $OUT/device_check.md into BENCHMARKS.md.
#
# Check it here first, on the CPU at toy size (no install, no GPU; seconds):
#   bash benchmarks/device_check.sh --dry-run      # OUT defaults to a new temporary folder
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=device
case "${1:-}" in
  --prepare) MODE=prepare ;;
  --dry-run) MODE=dry-run ;;
  "") ;;
  *) echo "usage: $0 [--prepare | --dry-run]" >&2; exit 2 ;;
esac

CARRY=${DEVICE_CHECK_CARRY:-.device_carry}
WHEELS=(grain==0.2.18 ml_collections==1.1.0 array_record==0.8.6 portpicker==1.6.0)
DATA=${DEVICE_CHECK_DATA:-$CARRY/data/nih_cxr1000_224}
BUDGET_S=470  # of the 8 minutes: the rest is start-up and copying $OUT back
START=$SECONDS

left() { echo $((BUDGET_S - (SECONDS - START))); }

if [[ $MODE == prepare ]]; then
  set -e
  PYTHON=${PYTHON:-.venv/bin/python}
  mkdir -p "$CARRY/wheels" "$CARRY/data"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$CARRY/wheels" "${WHEELS[@]}"
  "$PYTHON" -m medssl_jax.cli.convert --config=configs/micle_nih_cxr.py --splits=train \
    --config.data.dir=../shared/data/nih_cxr1000 --config.data.image_size=224 \
    --config.data.split.by=file --config.data.split.allow_leakage=True --out="$CARRY/data/nih_cxr1000_224"
  du -sh "$CARRY"
  exit 0
fi

if [[ $MODE == dry-run ]]; then
  OUT=${OUT:-$(mktemp -d)}
  PYTHON=${PYTHON:-.venv/bin/python}
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS=${XLA_FLAGS:---xla_backend_optimization_level=0}  # compiles faster; same HLO
  TORCH_ARGS=(--device=cpu --batch=2 --size=16 --source-size=32 --steps=1 --warmup=0 --no-compile)
  JAX_ARGS=(--tiny --batch=8 --steps=1 --warmup=1)
else
  : "${OUT:?OUT must name the folder for the results}"
  PYTHON=${PYTHON:-python3}
  TORCH_ARGS=(--device=cuda --batch=256 --size=224 --source-size=224 --steps=20 --warmup=5)
  JAX_ARGS=(--batch=256 --steps=20 --warmup=3)
  nvidia-smi -L || true
fi

# Install only the carried wheels whose module is missing (a dry run only lists them).
missing=()
for module in grain ml_collections array_record portpicker; do
  "$PYTHON" -c "import $module" 2>/dev/null && continue
  wheel=$(compgen -G "$CARRY/wheels/$module-*.whl" | head -n 1)
  [[ -n $wheel ]] || { echo "$module is missing and $CARRY/wheels has no wheel of it: run $0 --prepare" >&2; exit 1; }
  missing+=("$wheel")
done
if ((${#missing[@]})); then
  if [[ $MODE == dry-run ]]; then
    echo "would install: ${missing[*]}"
  else
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "${missing[@]}" || { echo "installing ${missing[*]} failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
export PYTHONPATH=$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
echo "device_check ($MODE): results in $OUT"

# Fail in seconds, not minutes, if an import is missing.
"$PYTHON" -c "import grain, array_record, ml_collections, medssl_jax.loop.pretrain, device_check" \
  || { echo "imports failed: see above" >&2; exit 1; }
[[ -f $DATA/metadata.json ]] || { echo "no shards in $DATA: run $0 --prepare first" >&2; exit 1; }

# PyTorch first: its process ends before JAX takes the device's memory.
timeout "$(( $(left) / 2 ))" "$PYTHON" benchmarks/pytorch_reference.py "${TORCH_ARGS[@]}" \
  --channels=1 --dtype=bf16 --json="$OUT/torch.json" >"$OUT/torch.log" 2>&1
if [[ ! -f $OUT/torch.json && $MODE == device ]]; then
  echo "torch.compile run failed or timed out; eager instead" | tee -a "$OUT/torch.log"
  timeout 90 "$PYTHON" benchmarks/pytorch_reference.py "${TORCH_ARGS[@]}" --no-compile \
    --channels=1 --dtype=bf16 --json="$OUT/torch.json" >>"$OUT/torch.log" 2>&1
fi
tail -n 8 "$OUT/torch.log"

timeout "$(left)" "$PYTHON" benchmarks/device_check.py "${JAX_ARGS[@]}" --out="$OUT" \
  --data_dir="$DATA" --torch_json="$OUT/torch.json" --deadline="$(( $(date +%s) + $(left) ))" \
  >"$OUT/jax.log" 2>&1
status=$?
grep -v "^[IW][0-9]" "$OUT/jax.log" | tail -n 40
echo "device_check: exit $status after $((SECONDS - START)) s"
exit $status
