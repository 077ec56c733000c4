#!/usr/bin/env bash
# The test command: lint, type-check, then the whole test suite (unit + integration on ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh lite,dicom,dev
export HF_HUB_OFFLINE=1  # tests never download weights
.venv/bin/ruff check medfit tests bench
.venv/bin/ruff format --check medfit tests bench
.venv/bin/mypy medfit
.venv/bin/lint-imports  # the layer contracts in pyproject.toml
.venv/bin/pytest -q "$@"
