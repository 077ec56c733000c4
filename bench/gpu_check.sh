#!/usr/bin/env bash
# GPU throughput check for a machine with a CUDA GPU: builds a synthetic cache and runs
# bench/gpu_throughput.py (resnet50 and tf_efficientnet_lite0 at 224 px, from the cache vs
# compute-only), printing its table. Installs nothing and contacts no network: it assumes this
# repository and its .venv (torch with CUDA, timm, kornia) are already there. Sized for under
# 5 minutes on one H100/H200-class GPU (8,192 generated 256 px PNGs, one cache build, then per
# model 2 x (10 warmup + 50 timed) steps of batch 256); a hard timeout stops it at 280 s.
#
#   bench/gpu_check.sh                  # the table; JSON to $OUT/gpu_throughput.json if $OUT is set
#   bench/gpu_check.sh --compile        # extra arguments go to gpu_throughput.py
#   bench/gpu_check.sh --smoke          # tiny, on a CPU: checks that the script itself works
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 # never reach for a model hub: models are created with random weights
PY=.venv/bin/python
[[ -x $PY ]] || { echo "gpu_check: $PWD/.venv not found; create it first (scripts/bootstrap.sh)" >&2; exit 2; }

if [[ " $* " != *" --smoke "* ]]; then
  $PY - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device; run with --smoke on a CPU")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
PYEOF
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/medfit_gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RESULT=${OUT:-$WORK}/gpu_throughput.json
# 280 s leaves room under the 5-minute budget for Python start-up and clean-up.
timeout 280 $PY bench/gpu_throughput.py --images "$WORK/images" --cache "$WORK/cache" \
  --json "$RESULT" "$@"
echo "gpu_check: done; JSON in $RESULT"
