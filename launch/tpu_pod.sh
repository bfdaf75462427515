#!/usr/bin/env bash
# Cloud TPU VM pod launcher: create a slice, put this code on every worker, install it, start
# the same training command on every worker, follow a worker's log, stop, delete.
#
# Needs: the gcloud SDK, logged in (`gcloud auth login`); a project and zone with TPU quota
# (spot or preemptible quota for --spot / --preemptible); a GCS bucket, ideally in the same
# region, for the workdir. Each worker runs ONE process driving its local chips; `run` adds
# --coordinator_address=auto, with which medssl_jax/cli/train.py calls jax.distributed.initialize() and jax
# finds the other workers from the TPU metadata, so no ranks or addresses are passed here.
#
# The workdir must be ONE place that all workers see: a gs://BUCKET/PATH (Orbax writes
# checkpoints to gs:// directly) or a filesystem mounted on every worker. A local path gives
# each worker its own partial checkpoint. The data (--config.data.dir) must be readable from
# every worker as well: best in the same bucket (gs://BUCKET/shards from medssl-convert
# --out=gs://..., or .npz files), else a copy on each worker or a mounted filesystem. Every
# path the code opens may be gs:// (README, "Runs in a bucket").
#
# Usage: launch/tpu_pod.sh [OPTIONS] COMMAND [ARGS]
#   create           gcloud compute tpus tpu-vm create (with --spot or --preemptible if given)
#   copy             put the code on every worker, in REMOTE_DIR: `git clone` of REPO_URL at
#                    REPO_REF when REPO_URL is set (the workers need access to it), otherwise
#                    this checkout's files (tracked and untracked, not git-ignored) sent by scp
#   install          on every worker: a venv in REMOTE_DIR/.venv, pip install -e . "jax[tpu]"
#   run [--] ARGS    on every worker: nohup python -m medssl_jax.cli.train ARGS, logging to
#                    REMOTE_DIR/logs/train-HOSTNAME.log (one log per worker); ARGS must hold
#                    --workdir (gs:// or a shared filesystem). Everything after `run` is passed
#                    to the binary unchanged.
#   logs [WORKER]    tail -F the log of one worker (default 0); LOG_LINES=100 lines first
#   stop             SIGTERM the training on every worker: it saves a checkpoint and exits 0
#   delete           delete the TPU VM (the gs:// workdir stays)
# Options (each has an environment variable; the option wins):
#   --name=NAME               TPU_NAME          required
#   --zone=ZONE               ZONE              required
#   --project=PROJECT         PROJECT           default: gcloud's configured project
#   --accelerator-type=TYPE   ACCELERATOR_TYPE  default v4-32 (4 workers x 4 chips)
#   --version=VERSION         TPU_VERSION       software version, default tpu-ubuntu2204-base
#                                               (v4); v5e: v2-alpha-tpuv5-lite, v5p:
#                                               v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e
#   --spot | --preemptible    SPOT=1 | PREEMPTIBLE=1   (create only)
#   --repo=URL --ref=REF      REPO_URL, REPO_REF  (copy; REF default HEAD: the default branch)
#   --remote-dir=DIR          REMOTE_DIR        default medssl-jax (relative to the home dir)
#   JAX_SPEC (environment only): what install pip-installs for jax, default "jax[tpu]"
# DRY_RUN=1 prints every command, shell-quoted, one per line, instead of running it.
#
# Example (v4-32: 4 workers; rerunning `run` with the same arguments resumes from the workdir,
# also on a new slice after a spot preemption: delete, create, copy, install, run):
#   export TPU_NAME=ssl-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32
#   launch/tpu_pod.sh create --spot
#   launch/tpu_pod.sh copy && launch/tpu_pod.sh install
#   launch/tpu_pod.sh run --config=configs/simclr_resnet50.py --workdir=gs://BUCKET/simclr_r50 \
#       --config.data.name=array_record --config.data.dir=gs://BUCKET/cxr_shards
#   launch/tpu_pod.sh logs 0
#   launch/tpu_pod.sh delete
set -euo pipefail

usage() {
  # The header comment, from "Usage:" to the end of the options.
  sed -n '/^# Usage:/,/^# DRY_RUN=1/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "tpu_pod.sh: $*" >&2
  exit 2
}

name=${TPU_NAME:-}
zone=${ZONE:-}
project=${PROJECT:-}
accelerator_type=${ACCELERATOR_TYPE:-v4-32}
version=${TPU_VERSION:-tpu-ubuntu2204-base}
spot=${SPOT:-0}
preemptible=${PREEMPTIBLE:-0}
repo_url=${REPO_URL:-}
repo_ref=${REPO_REF:-HEAD}
remote_dir=${REMOTE_DIR:-medssl-jax}
jax_spec=${JAX_SPEC:-jax[tpu]}
log_lines=${LOG_LINES:-100}

command=""
positional=()
train_args=()
while [ $# -gt 0 ]; do
  if [ "$command" = run ]; then
    # Everything after `run` belongs to the training binary, untouched.
    [ "$1" = "--" ] && shift
    train_args=("$@")
    break
  fi
  case "$1" in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --accelerator-type=*) accelerator_type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) spot=1 ;;
    --preemptible) preemptible=1 ;;
    --repo=*) repo_url=${1#*=} ;;
    --ref=*) repo_ref=${1#*=} ;;
    --remote-dir=*) remote_dir=${1#*=} ;;
    -h | --help) usage ;;
    -*) die "unknown option $1 (options take the form --name=VALUE; see --help)" ;;
    *)
      if [ -z "$command" ]; then command=$1; else positional+=("$1"); fi
      ;;
  esac
  shift
done

[ -n "$command" ] || usage
[ -n "$name" ] || die "no TPU name: set TPU_NAME or pass --name=NAME"
[ -n "$zone" ] || die "no zone: set ZONE or pass --zone=ZONE"

# Prints a command shell-quoted (DRY_RUN=1) or runs it.
run_cmd() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    local line
    line=$(printf '%q ' "$@")
    echo "${line% }"
  else
    "$@"
  fi
}

# Words quoted for the remote shell (bash on the workers), joined by spaces.
quote_words() {
  local line
  line=$(printf '%q ' "$@")
  echo "${line% }"
}

gcloud_tpu() {
  local scope=(--zone="$zone")
  [ -n "$project" ] && scope+=(--project="$project")
  run_cmd gcloud compute tpus tpu-vm "$@" "${scope[@]}"
}

# Runs a shell command string on every worker of the slice.
on_all_workers() {
  gcloud_tpu ssh "$name" --worker=all --command="$1"
}

dir_q=$(quote_words "$remote_dir")

cmd_create() {
  local extra=()
  if [ "$spot" = 1 ] && [ "$preemptible" = 1 ]; then
    die "--spot and --preemptible exclude each other"
  fi
  [ "$spot" = 1 ] && extra+=(--spot)
  [ "$preemptible" = 1 ] && extra+=(--preemptible)
  gcloud_tpu create "$name" --accelerator-type="$accelerator_type" --version="$version" \
    ${extra[@]+"${extra[@]}"}
}

cmd_copy() {
  if [ -n "$repo_url" ]; then
    local url_q ref_q
    url_q=$(quote_words "$repo_url")
    ref_q=$(quote_words "$repo_ref")
    # fetch + detached checkout of FETCH_HEAD works for a branch, a tag or a commit, and on
    # a second copy into an existing clone.
    on_all_workers "{ [ -d $dir_q/.git ] || git clone --quiet $url_q $dir_q; } \
&& git -C $dir_q fetch --quiet origin $ref_q \
&& git -C $dir_q checkout --quiet --detach FETCH_HEAD && git -C $dir_q log -1 --oneline"
    return
  fi
  local root tarball remote_tar
  root=$(cd "$(dirname "$0")/.." && pwd)
  remote_tar=medssl-jax-code.tar.gz
  if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "# tar -czf TARBALL of the files of $root listed by: git ls-files -co --exclude-standard"
    tarball=TARBALL
  else
    copy_tmp=$(mktemp -d)  # global: the EXIT trap runs after this function returns
    trap 'rm -rf "$copy_tmp"' EXIT
    tarball=$copy_tmp/$remote_tar
    # Tracked and untracked files but not ignored ones (.venv, runs/); skips deleted files.
    (cd "$root" && git ls-files -z -co --exclude-standard |
      while IFS= read -r -d '' f; do
        if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
      done | tar --null -T - -czf "$tarball")
    echo "code: $(du -h "$tarball" | cut -f1) from $root" >&2
  fi
  gcloud_tpu scp "$tarball" "$name:$remote_tar" --worker=all
  on_all_workers "mkdir -p $dir_q && tar -xzf $remote_tar -C $dir_q && rm -f $remote_tar"
}

cmd_install() {
  local spec_q
  spec_q=$(quote_words "$jax_spec")
  # Ubuntu images may lack python3-venv; install it only when creating the venv fails.
  on_all_workers "cd $dir_q && { python3 -m venv .venv || { sudo apt-get -qq update \
&& sudo apt-get -qq install -y python3-venv && python3 -m venv .venv; }; } \
&& .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e . $spec_q \
&& .venv/bin/python -c 'import jax; print(\"jax\", jax.__version__)'"
}

# Exits unless the training arguments name a workdir; warns when it is not on GCS.
check_workdir() {
  local workdir="" i
  for ((i = 0; i < ${#train_args[@]}; i++)); do
    case "${train_args[$i]}" in
      --workdir=*) workdir=${train_args[$i]#--workdir=} ;;
      --workdir) workdir=${train_args[$((i + 1))]:-} ;;
    esac
  done
  [ -n "$workdir" ] ||
    die "run needs --workdir=gs://BUCKET/PATH (one workdir that every worker sees)"
  case "$workdir" in
    gs://*) ;;
    *) echo "tpu_pod.sh: warning: workdir $workdir is not gs://;" \
      "it must be a filesystem mounted on every worker" >&2 ;;
  esac
}

# Single-quoted parts are expanded on the worker ($host, $log, $pidfile, $!). Remote commands
# stay on one line, so that DRY_RUN prints one line per command.
# shellcheck disable=SC2016
cmd_run() {
  [ ${#train_args[@]} -gt 0 ] ||
    die "usage: tpu_pod.sh run [--] --config=FILE --workdir=gs://BUCKET/PATH [--config.key=...]"
  check_workdir
  local remote="cd $dir_q || exit 1; mkdir -p logs; "
  remote+='host=$(hostname); log=logs/train-$host.log; pidfile=logs/train-$host.pid; '
  # Refuses to start a second copy on a worker: two writers would corrupt the workdir.
  remote+='if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then '
  remote+='echo "training already running on $host (pid $(cat "$pidfile")); use stop first" >&2; '
  remote+='exit 1; fi; '
  # stdin, stdout and stderr all redirected, so that ssh returns while training goes on.
  # 'auto': every worker joins the pod's other workers from the TPU metadata.
  remote+="PYTHONUNBUFFERED=1 nohup .venv/bin/python -m medssl_jax.cli.train --coordinator_address=auto "
  remote+=$(quote_words "${train_args[@]}")
  remote+=' > "$log" 2>&1 < /dev/null & echo $! > "$pidfile"; echo "$host: started, log $PWD/$log"'
  on_all_workers "$remote"
}

cmd_logs() {
  local worker=${positional[0]:-0}
  case "$worker" in
    '' | *[!0-9]*) die "logs takes a worker number, got '$worker'" ;;
  esac
  gcloud_tpu ssh "$name" --worker="$worker" \
    --command="cd $dir_q && tail -n $(quote_words "$log_lines") -F \"logs/train-\$(hostname).log\""
}

# SIGTERM: the binary saves a checkpoint at a step that every process reaches, then exits.
# shellcheck disable=SC2016
cmd_stop() {
  local remote="cd $dir_q || exit 1; "
  remote+='host=$(hostname); pidfile=logs/train-$host.pid; '
  remote+='if [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null; '
  remote+='then echo "$host: SIGTERM sent"; else echo "$host: no training running"; fi'
  on_all_workers "$remote"
}

cmd_delete() {
  gcloud_tpu delete "$name" --quiet
}

case "$command" in
  create) cmd_create ;;
  copy) cmd_copy ;;
  install) cmd_install ;;
  run) cmd_run ;;
  logs) cmd_logs ;;
  stop) cmd_stop ;;
  delete) cmd_delete ;;
  *) die "unknown command '$command' (create, copy, install, run, logs, stop, delete; --help)" ;;
esac
