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
# Usage: bash examples/mini-study.sh            (OUT=study SEEDS=1)
#        OUT=/tmp/s SEEDS=3 OBJECTIVES="softmax cosine_softmax" EPOCHS=5 bash examples/mini-study.sh
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

epochs=()
[[ -n $EPOCHS ]] && epochs=(--epochs "$EPOCHS")
started=$SECONDS
for seed in $(seq 0 $((SEEDS - 1))); do
  for loss in $OBJECTIVES; do
    run=$OUT/runs/$loss-s$seed
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
  done
done

# CKA at every layer: each objective against softmax of the same seed, and each objective's
# seed s against its seed 0 (the "same objective, different seed" baseline).
for seed in $(seq 0 $((SEEDS - 1))); do
  for loss in $OBJECTIVES; do
    run=$OUT/runs/$loss-s$seed
    if [[ $loss != softmax && -e $OUT/runs/softmax-s$seed/source.h5 ]]; then
      step "$run/cka-softmax.json" "${LOSSXFER[@]}" cka "$run/source.h5" \
        "$OUT/runs/softmax-s$seed/source.h5" -o "$run/cka-softmax.json" -q
    fi
    if (( seed > 0 )); then
      step "$run/cka-seed0.json" "${LOSSXFER[@]}" cka "$run/source.h5" "$OUT/runs/$loss-s0/source.h5" \
        -o "$run/cka-seed0.json" -q
    fi
  done
done

# Every table into one markdown file, then the study's summary on the terminal: objective,
# source accuracy, transfer linear / kNN, R², CKA with softmax, and the correlation of R² with
# transfer accuracy.
"${LOSSXFER[@]}" report "$OUT/runs" --table all --format markdown -o "$OUT/report.md" --force -q \
  > /dev/null
"${LOSSXFER[@]}" report "$OUT/runs" --table summary --plots "$OUT/plots" --force
echo "mini study finished in $((SECONDS - started)) s; results in $OUT/" >&2
