#!/usr/bin/env bash
# The test command: installs what the tests need, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt pytest ruff matplotlib lmdb opencv-python-headless
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python -m pytest -q tests "$@"
