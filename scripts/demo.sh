#!/usr/bin/env bash
# The main job, with no network: set-up, then PneumoniaMNIST (bundled inside medfit) trained on
# offline ImageNet EfficientNet-Lite0 weights, evaluated on its 624 test images, report.html.
# Usage: scripts/demo.sh [--data PATH] [--epochs N] [--out DIR]   (all optional)
# Set-up installs packages from the machine's configured package index; air-gapped, point pip
# at a wheelhouse first (README: PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
# Measured on the 2-core reference machine (README, "Set up and run").
ref_setup="about 1.5 min"
ref_demo="about 3 min"
echo "medfit demo on this machine ($(nproc 2>/dev/null || echo '?') CPU cores):"
echo "  1. set-up: ./.venv with PyTorch and medfit; first run only ($ref_setup on the 2-core"
echo "     reference machine from a local package index; longer over a slow network)"
echo "  2. train EfficientNet-Lite0 on the bundled PneumoniaMNIST, test on 624 images, write"
echo "     report.html: $ref_demo on a 2-core CPU; timed for this machine before training starts"
if ! scripts/bootstrap.sh demo; then
  echo "demo.sh: set-up failed (see pip's message above). With no network, install from a" >&2
  echo "wheelhouse: README, 'Set up and run' (PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR)." >&2
  exit 1
fi
echo "set-up: ready after $((SECONDS - started)) s"
exec .venv/bin/medfit demo "$@"
