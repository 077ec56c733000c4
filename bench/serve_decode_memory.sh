#!/bin/bash
# Peak RSS of `medfit serve` while one, then three concurrent, 13000x13000 16-bit PNG uploads
# decode (issue 17: decode memory through the server).
#
#     bench/serve_decode_memory.sh RUN        # RUN: any finished run directory
set -eu
RUN=${1:?usage: bench/serve_decode_memory.sh RUN}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=$REPO/.venv/bin/python
PORT=8765
PNG=$(mktemp --suffix=.png)
$PY -c "import sys; sys.path.insert(0, '$REPO/bench'); from pathlib import Path
from decode_memory import make_png; make_png(Path('$PNG'), 13000)"
echo "upload: $(stat -c %s "$PNG") bytes"
$PY -m medfit serve "$RUN" --port $PORT --max-upload-mb 20 > /dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -f "$PNG"' EXIT
for _ in $(seq 120); do curl -s localhost:$PORT/health > /dev/null && break; sleep 1; done
mem() { grep -E 'VmRSS|VmHWM' /proc/$SERVER/status | tr -s ' \t' ' ' | tr '\n' ' '; }
echo "baseline: $(mem)"
curl -s -o /dev/null -w "one upload: HTTP %{http_code} in %{time_total} s\n" -F "file=@$PNG" \
    localhost:$PORT/predict
echo "after one: $(mem)"
for _ in 1 2 3; do
    curl -s -o /dev/null -w "HTTP %{http_code}\n" -F "file=@$PNG" localhost:$PORT/predict &
done
wait $(jobs -p | grep -v "^$SERVER$") 2> /dev/null || true
echo "after three concurrent: $(mem)"
