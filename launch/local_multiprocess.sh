#!/usr/bin/env bash
# Starts N pretraining processes on this machine, as a multi-host run would (one per host),
# each with D simulated CPU devices (or its share of local GPUs), coordinator on 127.0.0.1.
# Needs: the package installed. Usage:
#   launch/local_multiprocess.sh N D PORT -- --config=configs/simclr_pneumoniamnist.py --workdir=runs/mp
# Logs go to WORKDIR-independent files mp_<i>.log in the current directory; exits non-zero
# if any process fails.
set -euo pipefail
n=${1:?usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS PORT -- ARGS...}
devices=${2:?}
port=${3:?}
shift 3
[ "${1:-}" = "--" ] && shift
python=${PYTHON:-python}
pids=()
for ((i = 0; i < n; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} \
    "$python" -m medssl_jax.cli.train --coordinator_address="127.0.0.1:$port" --num_processes="$n" \
    --process_id="$i" "$@" > "mp_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
