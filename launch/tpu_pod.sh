#!/usr/bin/env bash
# Runs a vcoach command on every worker of a Cloud TPU VM pod slice (one process per host).
#
#   launch/tpu_pod.sh setup  NAME ZONE                 # clone + venv + jax[tpu] on every worker
#   launch/tpu_pod.sh train  NAME ZONE CONFIG WORKDIR [more vcoach train flags]
#   launch/tpu_pod.sh sft    NAME ZONE CONFIG WORKDIR [more vcoach sft flags]
#
# WORKDIR must be visible to every host (a gs:// bucket or a shared filesystem): orbax writes one
# checkpoint from all hosts. On TPU, `jax.distributed.initialize()` finds the coordinator and the
# process ids by itself, so `--distributed` is all the command needs. Data: each host reads its
# own slice of the TFDS split (data.tfds_dir must be on a path every host can read).
set -euo pipefail

usage() { sed -n '2,12p' "$0"; exit 2; }
[[ $# -ge 3 ]] || usage
action=$1 name=$2 zone=$3
shift 3
repo=${VCOACH_REPO:-https://github.com/vcoach-jax/vcoach_jax.git}
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case "$action" in
  setup)
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
