#!/usr/bin/env bash
# Create (or reuse) ./.venv with medfit installed. Usage: scripts/bootstrap.sh [EXTRAS]
# torch/torchvision are pinned and installed by pip alone (never by uv/poetry, which would pull GBs).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-lite,dicom,dev}"
python="${PYTHON:-python3}"
stamp=".venv/.medfit-$(sha256sum pyproject.toml | cut -c1-12)-${extras//,/_}"
if [ ! -x .venv/bin/python ]; then
  echo "set-up: creating ./.venv ($("$python" --version 2>&1))"
  "$python" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  # pip runs quietly; a line per step says where set-up is.
  echo "set-up: [1/3] pip"
  .venv/bin/pip install -q --upgrade pip
  echo "set-up: [2/3] torch==2.14.1, torchvision==0.29.1 (the largest step)"
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
  echo "set-up: [3/3] medfit and its dependencies (-e .[$extras])"
  .venv/bin/pip install -q -e ".[$extras]"
  touch "$stamp"
fi
