#!/usr/bin/env bash
# Sets up everything in .venv/ at the repository root, idempotently:
#   system tools (ffmpeg), torch first (so nothing pulls another build), the three packages editable,
#   test tools, then the sample media (real clips and labelled images, cached under ~/.cache).
# Usage: scripts/setup.sh            (everything)
#        SKIP_SAMPLES=1 scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q || { echo "apt-get update failed: is the Debian mirror reachable?" >&2; exit 3; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PY"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
stamp=.venv/.setup-stamp
want=$(cat packages/*/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing torch 2.14.1 + torchvision 0.29.1 first"
  "${PIP[@]}" torch==2.14.1 torchvision==0.29.1 2> >(grep -v "is ignored" >&2)
  log "installing the three packages (editable) and test tools"
  # boto3 (moto's) must match the botocore that aiobotocore (s3fs's) pins: without the bound pip walks
  # back through boto3 releases for minutes (a fresh resolve: >7 min without it, 3.5 min with it)
  "${PIP[@]}" -e packages/videonet-curate -e packages/vito-train -e packages/vito-eval \
      pytest pytest-timeout pytest-xdist "moto[server]>=5.0" "boto3<1.43.118" "webdataset>=0.2.90" \
      2> >(grep -v "is ignored" >&2)
  echo "$want" > "$stamp"
else
  log ".venv is up to date"
fi

if [ "${SKIP_SAMPLES:-0}" != 1 ]; then
  log "fetching sample media"
  .venv/bin/videonet-curate samples fetch
fi
log "done"
