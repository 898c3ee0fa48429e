#!/usr/bin/env bash
# The main job end to end on embedded defaults, offline:
#   1. curate the real sample clips into a manifest labelled with ImageNet-1k classes (+ HTML report);
#   2. pretrain a small VITO encoder on the kept clips (cpu-smoke preset) and export it;
#   3. probe it on Fashion-MNIST next to a random ResNet-18 and the bundled ImageNet classifier.
# Outputs go under $1 (default out/demo). Run through `make demo`, which sets up .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/demo}
BIN=.venv/bin
SAMPLES=${VIDEONET_SAMPLES:-$HOME/.cache/videonet-curate/samples}
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/3 curate: videonet-curate build --source local --input $SAMPLES/videos --out $OUT/curated"
rc=0
$BIN/videonet-curate build --source local --input "$SAMPLES/videos" --out "$OUT/curated" || rc=$?
# exit 1 means "finished, some rows failed": the manifest is complete and usable.
[ "$rc" -le 1 ] || exit "$rc"
$BIN/videonet-curate report "$OUT/curated"

step "2/3 train: vito-train run --manifest $OUT/curated --out $OUT/run --preset cpu-smoke"
$BIN/vito-train run --manifest "$OUT/curated" --out "$OUT/run" --preset cpu-smoke ${DEMO_TRAIN_SET:-}
$BIN/vito-train export "$OUT/run" --format torchvision --out "$OUT/run/encoder.safetensors"

step "3/3 probe: vito-eval probe on Fashion-MNIST (2,000 train / 1,000 test images)"
$BIN/vito-eval probe \
    --encoder "$OUT/run" --encoder random:resnet18 --encoder efficientnet-lite0 \
    --dataset "fashion-mnist:$SAMPLES/fashion-mnist" --train-limit 2000 --test-limit 1000 \
    --out "$OUT/probe.json"

step "done"
cat <<MSG
  manifest:        $OUT/curated/manifest.parquet   (summary.json, class_histogram.png, report/index.html)
  training run:    $OUT/run                        (metrics.jsonl, loss.png, last.pt, encoder.safetensors)
  probe results:   $OUT/probe.json                 (and confusion-matrix PNGs beside it)
MSG
