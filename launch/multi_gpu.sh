#!/usr/bin/env bash
# Runs `vcoach train` (or `sft`) on several GPU hosts under SLURM, one process per host, each
# process driving all the GPUs of its host (JAX's one-process-per-host model).
#
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 \
#     launch/multi_gpu.sh train configs/visioncoach_7b.py /shared/runs/vc7b [more flags]
#
# The first host of the allocation is the coordinator. Without SLURM, run it by hand on each host
# with SLURM_JOB_NODELIST=<first host>, SLURM_NTASKS=<hosts> and SLURM_PROCID=<this host's index>.
# Every host runs the checkout this script is in, with its .venv (`pip install -e .`), so it must
# be at the same path on every host, as must WORKDIR (a shared filesystem). Every process reads
# the whole global batch (no per-host slice of the split yet): data.tfds_dir too must be readable
# from every host.
set -euo pipefail

[[ $# -ge 3 ]] || { sed -n '2,13p' "$0"; exit 2; }
action=$1 config=$2 workdir=$3
shift 3
if command -v scontrol >/dev/null; then
  head_host=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
else
  head_host=${SLURM_JOB_NODELIST:?set SLURM_JOB_NODELIST to the coordinator host}
fi
port=${VCOACH_COORDINATOR_PORT:-12355}
cd "$(dirname "$0")/.."
run() {
  .venv/bin/vcoach "$action" --config "$config" --workdir "$workdir" --distributed \
    --coordinator "$head_host:$port" --num-processes "$SLURM_NTASKS" \
    --process-id "$1" "${@:2}"
}
if [[ -n "${SLURM_STEP_ID:-}" || -z "${SLURM_JOB_ID:-}" ]]; then
  run "${SLURM_PROCID:?}" "$@"
else
  # Inside the batch script: start one task per host (every value quoted for the inner shell).
  q() { printf '%q ' "$@"; }
  srun --ntasks-per-node=1 bash -c "$(declare -f run); action=$(q "$action") \
    config=$(q "$config") workdir=$(q "$workdir") head_host=$(q "$head_host") port=$(q "$port"); \
    run \$SLURM_PROCID $([[ $# -eq 0 ]] || q "$@")"
fi
