# Shared settings for the SLURM recipes. Every value can be overridden from the environment, so
# the same scripts run a tiny local smoke test (tests/test_study.py) and a full ImageNet study.
# shellcheck shell=bash

OUT=${OUT:-$PWD/study}                         # where runs, stores and results go
DATA=${DATA:-imagefolder:/datasets/imagenet}  # source data (ImageNet layout: train/ val/)
ARCH=${ARCH:-resnet50}
read -r -a OBJECTIVES <<< "${OBJECTIVES:-softmax label_smoothing sigmoid extra_final_layer_l2 dropout \
logit_penalty logit_normalization cosine_softmax squared_error}"
SEEDS=${SEEDS:-8}
EPOCHS=${EPOCHS:-90}
BATCH_SIZE=${BATCH_SIZE:-256}                  # per process
read -r -a TRANSFER <<< "${TRANSFER:-food101:/datasets/food101 cifar10:/datasets/cifar10 \
cifar100:/datasets/cifar100 sun397:/datasets/sun397 stanford-cars:/datasets/cars \
oxford-pets:/datasets/pets flowers102:/datasets/flowers}"
CKA_SHARDS=${CKA_SHARDS:-8}
# How to start a training process. On a GPU node: torchrun, one process per GPU, rendezvous on
# the first node of the allocation (srun starts one torchrun per node: --ntasks-per-node=1).
# Set LAUNCH="" to run a plain single process (local tests). See README.md in this folder.
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
RDZV_PORT=${RDZV_PORT:-29500}
if [[ -z ${LAUNCH+set} ]]; then
  HEAD_NODE=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n 1)
  LAUNCH="srun torchrun --nnodes=${SLURM_NNODES:-1} --nproc-per-node=$GPUS_PER_NODE \
--rdzv-backend=c10d --rdzv-id=${SLURM_JOB_ID:-0} \
--rdzv-endpoint=${HEAD_NODE:-localhost}:$RDZV_PORT -m lossxfer"
fi
# torchrun forwards these signals to every rank (USR1 too, in case it is sent to the job steps
# rather than to the batch shell) and waits this long for rank 0 to save its state.
export TORCHELASTIC_SIGNALS_TO_HANDLE=${TORCHELASTIC_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-90}
read -r -a LOSSXFER <<< "${LOSSXFER:-lossxfer}"

# launch VERB ARGS...: a training verb, under torchrun when LAUNCH is set.
launch() {
  # shellcheck disable=SC2086  # LAUNCH is a command line to split
  if [[ -n $LAUNCH ]]; then $LAUNCH "$@"; else "${LOSSXFER[@]}" "$@"; fi
}

# launch_preemptible VERB ARGS...: `launch` in the background. A USR1 that reaches the batch
# shell (sbatch --signal=B:USR1@120 before the time limit, scancel --signal=USR1 --batch) is
# passed on as SIGTERM: srun forwards it to torchrun, torchrun to every rank; the ranks agree on
# a step, rank 0 saves state.safetensors and they exit 143. (A TERM, as at preemption or the
# time limit, reaches the job steps from SLURM itself and is only noted here.) The job then
# requeues itself, and the requeued task continues with --resume. A plain process exits 143
# itself; torchrun exits 1 after a forwarded signal, hence the PREEMPTED flag. Returns the
# launcher's exit status.
launch_preemptible() {
  local cmd pid status=0
  if [[ -n $LAUNCH ]]; then read -r -a cmd <<< "$LAUNCH"; else cmd=("${LOSSXFER[@]}"); fi
  PREEMPTED=0
  trap 'PREEMPTED=1; kill -TERM "$pid" 2>/dev/null || true' USR1
  trap 'PREEMPTED=1' TERM
  "${cmd[@]}" "$@" &
  pid=$!
  while :; do
    wait "$pid" && status=0 || status=$?
    kill -0 "$pid" 2>/dev/null || break  # still running: `wait` was interrupted by the trap
  done
  trap - USR1 TERM
  if (( PREEMPTED || status == 143 )) && [[ -n ${SLURM_JOB_ID:-} ]]; then
    echo "lossxfer: preempted (status $status); requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID" || true
  fi
  return "$status"
}

# run_name OBJECTIVE SEED → the run directory of one trained network.
run_dir() { echo "$OUT/runs/$1-s$2"; }

# task_index N: this array task's index (0-based) among N tasks; refuses an index out of range.
task_index() {
  local i=${SLURM_ARRAY_TASK_ID:?set SLURM_ARRAY_TASK_ID (sbatch --array sets it)}
  if (( i < 0 || i >= $1 )); then echo "array task $i out of range 0..$(($1 - 1))" >&2; exit 2; fi
  echo "$i"
}
