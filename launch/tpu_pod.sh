#!/usr/bin/env bash
# Runs a vcoach command on every worker of a Cloud TPU VM pod slice (one process per host).
#
#   VCOACH_REPO=URL launch/tpu_pod.sh setup NAME ZONE  # clone URL + venv + jax[tpu] everywhere
#   launch/tpu_pod.sh train  NAME ZONE CONFIG WORKDIR [more vcoach train flags]
#   launch/tpu_pod.sh sft    NAME ZONE CONFIG WORKDIR [more vcoach sft flags]
#
# VCOACH_REPO is the git URL of your copy of this repository (there is no default). WORKDIR must
# be visible to every host, normally a gs:// bucket: checkpoints, metrics, TensorBoard files and
# the exported policy are all written there (docs/checkpoints.md), orbax writing one checkpoint
# from all hosts. On TPU, `jax.distributed.initialize()` finds the coordinator and the process
# ids by itself, so `--distributed` is all the command needs. Data: every host reads the whole
# global batch from data.tfds_dir (a path every host can read); per-host slices are not done.
set -euo pipefail

usage() { sed -n '2,13p' "$0"; exit 2; }
[[ $# -ge 3 ]] || usage
action=$1 name=$2 zone=$3
shift 3
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case "$action" in
  setup)
    repo=${VCOACH_REPO:?set VCOACH_REPO to the git URL of your copy of this repository}
    ssh_all "set -e; [ -d vcoach_jax ] || git clone -q $repo vcoach_jax; cd vcoach_jax; \
      python3 -m venv .venv; .venv/bin/pip install -q -e . 'jax[tpu]==0.10.2'"
    ;;
  train|sft)
    [[ $# -ge 2 ]] || usage
    config=$1 workdir=$2
    shift 2
    ssh_all "cd vcoach_jax && .venv/bin/vcoach $action --config $config --workdir $workdir \
      --distributed $*"
    ;;
  *) usage ;;
esac
