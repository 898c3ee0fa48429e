#!/usr/bin/env bash
# The main job end to end on embedded defaults, offline:
#   1. curate the real sample clips into a manifest labelled with ImageNet-1k classes;
# Outputs go under $1 (default out/demo). Run through `make demo`, which sets up .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/demo}
BIN=.venv/bin
SAMPLES=${VIDEONET_SAMPLES:-$HOME/.cache/videonet-curate/samples}
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/1 curate: videonet-curate build --source local --input $SAMPLES/videos --out $OUT/curated"
rc=0
$BIN/videonet-curate build --source local --input "$SAMPLES/videos" --out "$OUT/curated" || rc=$?
# exit 1 means "finished, some rows failed": the manifest is complete and usable.
[ "$rc" -le 1 ] || exit "$rc"

step "done: outputs under $OUT"
