#!/usr/bin/env bash
# Runs a vcoach command on every worker of a Cloud TPU VM pod slice (one process per host).
#
#   launch/tpu_pod.sh setup  NAME ZONE [REF]           # this checkout at REF (default HEAD) + venv
#   VCOACH_REPO=URL launch/tpu_pod.sh setup NAME ZONE [REF]   # or a clone of your repository
#   launch/tpu_pod.sh train  NAME ZONE CONFIG WORKDIR [more vcoach train flags]
#   launch/tpu_pod.sh sft    NAME ZONE CONFIG WORKDIR [more vcoach sft flags]
#
# setup puts the code in ~/vcoach_jax on every worker: by default `git archive REF` of the
# checkout this script is in, copied with `gcloud ... scp` (commit first: uncommitted changes are
# not copied); with VCOACH_REPO, a clone of that URL at REF. Then a venv with jax[tpu].
# WORKDIR must be visible to every host (a gs:// bucket or a shared filesystem): orbax writes one
# checkpoint from all hosts. On TPU, `jax.distributed.initialize()` finds the coordinator and the
# process ids by itself, so `--distributed` is all the command needs. Data: every process reads
# the whole global batch (no per-host slice of the split yet), so data.tfds_dir must be on a path
# every host can read.
set -euo pipefail

usage() { sed -n '2,17p' "$0"; exit 2; }
[[ $# -ge 3 ]] || usage
action=$1 name=$2 zone=$3
shift 3
jax_tpu="jax[tpu]==0.10.2"  # the jax pin of setup.py
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}
install="cd vcoach_jax && python3 -m venv .venv && .venv/bin/pip install -q -e . '$jax_tpu'"

case "$action" in
  setup)
    ref=${1:-HEAD}
    if [[ -n "${VCOACH_REPO:-}" ]]; then
      ssh_all "set -e; [ -d vcoach_jax ] || git clone -q $(printf %q "$VCOACH_REPO") vcoach_jax; \
        git -C vcoach_jax fetch -q origin; git -C vcoach_jax checkout -q $(printf %q "$ref"); \
        $install"
    else
      root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
      tarball=$(mktemp --suffix=.tar.gz)
      trap 'rm -f "$tarball"' EXIT
      git -C "$root" archive --format=tar.gz -o "$tarball" "$ref"
      gcloud compute tpus tpu-vm scp "$tarball" "$name":vcoach_jax.tar.gz --zone "$zone" \
        --worker=all
      # Replace the code, keep an existing venv.
      ssh_all "set -e; mkdir -p vcoach_jax; \
        find vcoach_jax -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +; \
        tar -xzf vcoach_jax.tar.gz -C vcoach_jax; rm vcoach_jax.tar.gz; $install"
    fi
    ;;
  train|sft)
    [[ $# -ge 2 ]] || usage
    config=$1 workdir=$2
    shift 2
    extra=""
    [[ $# -eq 0 ]] || extra=$(printf '%q ' "$@")  # quoted for the remote shell
    ssh_all "cd vcoach_jax && .venv/bin/vcoach $action --config $(printf %q "$config") \
      --workdir $(printf %q "$workdir") --distributed $extra"
    ;;
  *) usage ;;
esac
