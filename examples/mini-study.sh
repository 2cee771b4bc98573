#!/usr/bin/env bash
# The paper in miniature on scikit-learn's bundled digits (real data, no download):
#
#   1. train smallcnn on digits 0-4 with each objective (SEEDS seeds each);
#   2. extract every layer on the source test split, and penultimate features of the transfer
#      task, digits 5-9 (train and test);
#   3. linear (L-BFGS) and kNN probes on the transfer task; class separation R² on the source;
#      CKA of every objective with softmax at every layer (and across seeds when SEEDS > 1);
#   4. lossxfer report: the paper-style table and plots.
#
# Usage: bash examples/mini-study.sh            (OUT=study SEEDS=1 JOBS=number of CPUs)
#        OUT=/tmp/s SEEDS=3 OBJECTIVES="softmax cosine_softmax" EPOCHS=5 bash examples/mini-study.sh
# JOBS objectives run at once, each with one torch thread (OMP_NUM_THREADS=1 unless set): the
# networks are small, so one thread each uses the cores better than two threads on one run.
# Interrupt it at any point (Ctrl-C, SIGTERM) and run the same command again: training is
# `train --resume` (continues a run from its saved state, starts it, or does nothing when it is
# complete: a model file means a finished run), and every other step is skipped when its output
# exists (outputs are written atomically, so an output that exists is complete).
set -euo pipefail

OUT=${OUT:-study}
SEEDS=${SEEDS:-1}
OBJECTIVES=${OBJECTIVES:-softmax label_smoothing sigmoid extra_final_layer_l2 dropout \
logit_penalty logit_normalization cosine_softmax squared_error}
EPOCHS=${EPOCHS:-}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 1)}
if [[ ! $JOBS =~ ^[1-9][0-9]*$ ]]; then
  echo "mini-study: JOBS=$JOBS: expected a positive whole number" >&2
  exit 2
fi
(( JOBS > 1 )) && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
read -r -a LOSSXFER <<< "${LOSSXFER:-lossxfer}"  # e.g. LOSSXFER="python -m lossxfer"
# Every objective trains at its default learning rate: 0.1 × batch/256 times the objective's
# lr scale (`lossxfer objectives`; squared error's loss is ~10⁵× cross-entropy's at the start).
SOURCE=(--data digits --classes 0-4)
TRANSFER=(--data digits --classes 5-9)

# step OUTPUT COMMAND...: run COMMAND unless OUTPUT exists already.
step() {
  local output=$1
  shift
  if [[ -e $output ]]; then
    echo "skip  $output (exists)" >&2
  else
    echo "run   $*" >&2
    "$@"
  fi
}

# spawn COMMAND...: run COMMAND in the background, at most JOBS at once; drain: wait for them
# all. The first failure stops the other steps (SIGTERM) and the study, with its status.
# Ctrl-C or SIGTERM reach every step (a terminal, SLURM and kill -- -PGID signal the whole
# process group): training saves its state, nothing partial is left, and the same command
# resumes.
pids=()
tree() {  # the processes under $1, deepest first
  local child
  for child in $(pgrep -P "$1" || true); do
    tree "$child"
    echo "$child"
  done
}
fail() {
  trap '' INT TERM
  # shellcheck disable=SC2046  # one word per pid
  kill -TERM $(tree $$) 2> /dev/null || true
  wait
  exit "$1"
}
trap 'trap "" INT TERM; wait; exit 130' INT
trap 'trap "" INT TERM; wait; exit 143' TERM
spawn() {
  while (( $(jobs -pr | wc -l) >= JOBS )); do
    local status=0
    wait -n || status=$?
    (( status == 0 )) || fail "$status"
  done
  "$@" &
  pids+=($!)
}
drain() {
  local pid status
  for pid in "${pids[@]}"; do
    status=0
    wait "$pid" || status=$?
    (( status == 0 )) || fail "$status"
  done
  pids=()
}

epochs=()
[[ -n $EPOCHS ]] && epochs=(--epochs "$EPOCHS")

# One objective and seed: train, extract the source test split (every layer) and the transfer
# task's penultimate features, probe them, class separation of the source.
run_one() {
  local loss=$1 seed=$2
  local run=$OUT/runs/$loss-s$seed
  echo "train $run" >&2
  "${LOSSXFER[@]}" train "${SOURCE[@]}" --loss "$loss" --seed "$seed" "${epochs[@]}" \
    -o "$run" --resume -q
  step "$run/source.h5" "${LOSSXFER[@]}" extract "$run/model.safetensors" "${SOURCE[@]}" \
    --split test --layers all -o "$run/source.h5" -q
  step "$run/transfer.h5" "${LOSSXFER[@]}" extract "$run/model.safetensors" "${TRANSFER[@]}" \
    --split train --split test --layers penultimate -o "$run/transfer.h5" -q
  step "$run/probe.json" "${LOSSXFER[@]}" probe "$run/transfer.h5" --layer penultimate \
    --method linear --method knn -o "$run/probe.json" -q
  step "$run/separation.json" "${LOSSXFER[@]}" separation "$run/source.h5" --layer penultimate \
    -o "$run/separation.json" -q
}

started=$SECONDS
for seed in $(seq 0 $((SEEDS - 1))); do
  for loss in $OBJECTIVES; do
    spawn run_one "$loss" "$seed"
  done
done
drain

# CKA at every layer: each objective against softmax of the same seed, and each objective's
# seed s against its seed 0 (the "same objective, different seed" baseline).
for seed in $(seq 0 $((SEEDS - 1))); do
  for loss in $OBJECTIVES; do
    run=$OUT/runs/$loss-s$seed
    if [[ $loss != softmax && -e $OUT/runs/softmax-s$seed/source.h5 ]]; then
      spawn step "$run/cka-softmax.json" "${LOSSXFER[@]}" cka "$run/source.h5" \
        "$OUT/runs/softmax-s$seed/source.h5" -o "$run/cka-softmax.json" -q
    fi
    if (( seed > 0 )); then
      spawn step "$run/cka-seed0.json" "${LOSSXFER[@]}" cka "$run/source.h5" \
        "$OUT/runs/$loss-s0/source.h5" -o "$run/cka-seed0.json" -q
    fi
  done
done
drain

# Every table into one markdown file, then the study's summary on the terminal: objective,
# source accuracy, transfer linear / kNN, R², CKA with softmax, and the correlation of R² with
# transfer accuracy.
"${LOSSXFER[@]}" report "$OUT/runs" --table all --format markdown -o "$OUT/report.md" --force -q \
  > /dev/null
"${LOSSXFER[@]}" report "$OUT/runs" --table summary --plots "$OUT/plots" --force
echo "mini study finished in $((SECONDS - started)) s; results in $OUT/" >&2
