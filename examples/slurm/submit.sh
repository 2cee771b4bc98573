#!/usr/bin/env bash
# Submit the whole study as a chain of job arrays: train → extract+probe → CKA shards → merge
# → report. Usage: OUT=/scratch/study DATA=imagefolder:/datasets/imagenet bash submit.sh
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
source "$here/common.sh"
mkdir -p logs

n_runs=$(( ${#OBJECTIVES[@]} * SEEDS ))
train=$(sbatch --parsable --array=0-$((n_runs - 1)) "$here/train.sbatch")
probe=$(sbatch --parsable --dependency=afterok:"$train" \
  --array=0-$((n_runs * ${#TRANSFER[@]} - 1)) "$here/extract_probe.sbatch")
cka=$(sbatch --parsable --dependency=afterok:"$probe" \
  --array=0-$((n_runs * CKA_SHARDS - 1)) "$here/cka.sbatch")
merge=$(sbatch --parsable --dependency=afterok:"$cka" --array=0-$((n_runs - 1)) \
  "$here/cka_merge.sbatch")
report=$(sbatch --parsable --dependency=afterok:"$merge" "$here/report.sbatch")
echo "submitted: train $train, probe $probe, cka $cka, merge $merge, report $report"
