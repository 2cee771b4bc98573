#!/usr/bin/env bash
# The paper's question on real data: does a better training objective give less transferable
# features? Fashion-MNIST, every objective, two transfer protocols (docs/evidence.md):
#
#   c2f    coarse-to-fine: train on 5 superclasses of 2 classes each (MAP below), then probe
#          the penultimate features on the 10 fine classes;
#   split  split-class: train on classes 0-4, probe on the unseen classes 5-9.
#
# For each protocol, objective and seed: train smallcnn, extract the source test split (with
# the training labels) and the transfer task's train and test splits, probe (linear, the
# paper's 45-point L-BFGS sweep, and kNN), class separation R² of the source. Then the paper's
# hyperparameter sweeps (label smoothing α, logit-normalisation τ) on c2f, a convergence check
# (softmax on c2f at other epoch counts), and the reports.
#
# Data: Debian's dataset-fashion-mnist (`sudo apt-get install dataset-fashion-mnist`; files in
# /usr/share/datasets/fashion-mnist), or any folder of the four idx files (FASHION=...).
# By default the study is CPU-sized: images averaged down to SIZE=14 px and the first
# PER_CLASS=100 training and TEST_PER_CLASS=100 test images of each class, written once as an
# idx folder under $OUT/data. SIZE=28 PER_CLASS=0 TEST_PER_CLASS=0 uses the whole dataset as is.
#
# Usage:  nice -n 15 bash examples/fashion-study.sh                    (OUT=fashion-study)
#         OUT=/tmp/f SEEDS=5 EPOCHS=30 ARCH=resnet18 SIZE=28 PER_CLASS=0 TEST_PER_CLASS=0 \
#           DEVICE=cuda bash examples/fashion-study.sh
# Runs go seed by seed (all of seed 0, then the ladder and the sweeps, then seeds 1, 2, ...) so
# a study stopped early still has complete seeds. Re-running skips finished steps (outputs are
# atomic). Invocations can share the work, e.g. SEED_LIST=1 LADDER= SWEEP_SEEDS= in one and
# SEED_LIST=0 in another. An empty PROTOCOLS, ALPHAS, TAUS, LADDER or SWEEP_SEEDS skips that part.
set -euo pipefail

FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-fashion-study}
SIZE=${SIZE:-14}
PER_CLASS=${PER_CLASS:-100}
TEST_PER_CLASS=${TEST_PER_CLASS:-100}
SEEDS=${SEEDS:-3}
EPOCHS=${EPOCHS:-5}
LADDER=${LADDER-2 10}  # other epoch counts for the convergence check (softmax, c2f, seed 0)
ARCH=${ARCH:-smallcnn}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-1}
OBJECTIVES=${OBJECTIVES:-softmax label_smoothing sigmoid extra_final_layer_l2 dropout \
logit_penalty logit_normalization cosine_softmax squared_error}
ALPHAS=${ALPHAS-0.2 0.4}  # label smoothing (0 = softmax and 0.1 = default run anyway)
TAUS=${TAUS-0.02 0.1}  # logit normalisation (0.04 = default run anyway)
SWEEP_SEEDS=${SWEEP_SEEDS-0}    # seeds that also run the sweeps
PROTOCOLS=${PROTOCOLS-c2f split}
SEED_LIST=${SEED_LIST:-$(seq -s ' ' 0 $((SEEDS - 1)))}
# T-shirt+Shirt, Trouser+Dress, Pullover+Coat, Sandal+Sneaker, Bag+Ankle boot
MAP='0,6:0;1,3:1;2,4:2;5,7:3;8,9:4'

if [[ $SIZE == 28 && $PER_CLASS == 0 && $TEST_PER_CLASS == 0 ]]; then
  DATA=fashion-mnist:$FASHION
else
  folder=$OUT/data/fashion-${SIZE}px-${PER_CLASS}-${TEST_PER_CLASS}
  if [[ ! -e $folder/t10k-labels-idx1-ubyte ]]; then
    mkdir -p "$folder"
    python3 - "$FASHION" "$folder" "$SIZE" "$PER_CLASS" "$TEST_PER_CLASS" <<'EOF'
"""The first N images of each class (0: all), averaged down to SIZE px, as idx files."""
import gzip, struct, sys
from pathlib import Path
import numpy as np

src, dst, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for prefix, n in (("train", int(sys.argv[4])), ("t10k", int(sys.argv[5]))):
    arrays = {}
    for kind in ("images-idx3", "labels-idx1"):
        path = next(p for p in (src / f"{prefix}-{kind}-ubyte.gz", src / f"{prefix}-{kind}-ubyte")
                    if p.exists())
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
        dims = struct.unpack(f">{raw[3]}I", raw[4 : 4 + 4 * raw[3]])
        arrays[kind] = np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)
    x, y = arrays["images-idx3"], arrays["labels-idx1"]
    if n:
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in range(10)]))
        x, y = x[keep], y[keep]
    f = x.shape[1] // size
    x = x[:, : size * f, : size * f].reshape(len(x), size, f, size, f).mean((2, 4))
    for kind, a in (("images-idx3", x.round().astype(np.uint8)), ("labels-idx1", y)):
        head = b"\0\0\x08" + bytes([a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
        (Path(dst) / f"{prefix}-{kind}-ubyte").write_bytes(head + a.tobytes())
EOF
  fi
  DATA=idx:$folder
fi

# The runs, in one Python process per invocation (examples/fashion_study.py lists the CLI
# commands each run amounts to): seed by seed, the convergence ladder and the sweeps after seed 0.
export OUT DATA MAP ARCH DEVICE THREADS EPOCHS OBJECTIVES PROTOCOLS LADDER ALPHAS TAUS \
  SWEEP_SEEDS SEED_LIST
started=$SECONDS
"${PYTHON:-python3}" "$(dirname "$0")/fashion_study.py"

# Reports: one per protocol (the sweeps beside the c2f runs they extend), plots included.
for proto in c2f split; do
  [[ -d $OUT/runs/$proto ]] || continue
  dirs=("$OUT/runs/$proto")
  [[ $proto == c2f && -d $OUT/runs/sweep ]] && dirs+=("$OUT/runs/sweep")
  lossxfer report "${dirs[@]}" --table all --format markdown -o "$OUT/report-$proto.md" \
    --plots "$OUT/plots-$proto" --force -q > /dev/null
done
echo "fashion study finished in $((SECONDS - started)) s; results in $OUT/" >&2
