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
# the first node of the allocation. Set LAUNCH="" to run a plain single process (local tests).
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
if [[ -z ${LAUNCH+set} ]]; then
  HEAD_NODE=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n 1)
  LAUNCH="srun torchrun --nnodes=${SLURM_NNODES:-1} --nproc-per-node=$GPUS_PER_NODE \
--rdzv-backend=c10d --rdzv-id=${SLURM_JOB_ID:-0} --rdzv-endpoint=${HEAD_NODE:-localhost}:29500 \
-m lossxfer"
fi
read -r -a LOSSXFER <<< "${LOSSXFER:-lossxfer}"

# launch VERB ARGS...: a training verb, under torchrun when LAUNCH is set.
launch() {
  # shellcheck disable=SC2086  # LAUNCH is a command line to split
  if [[ -n $LAUNCH ]]; then $LAUNCH "$@"; else "${LOSSXFER[@]}" "$@"; fi
}

# run_name OBJECTIVE SEED → the run directory of one trained network.
run_dir() { echo "$OUT/runs/$1-s$2"; }

# task_index N: this array task's index (0-based) among N tasks; refuses an index out of range.
task_index() {
  local i=${SLURM_ARRAY_TASK_ID:?set SLURM_ARRAY_TASK_ID (sbatch --array sets it)}
  if (( i < 0 || i >= $1 )); then echo "array task $i out of range 0..$(($1 - 1))" >&2; exit 2; fi
  echo "$i"
}
