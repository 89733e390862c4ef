#!/usr/bin/env bash
# The first run on a GPU (see scripts/gpu_check.py): CUDA tests, presets timed at 500×500 (fp32, bf16,
# compile), training steps/s and peak memory at paper scale, a one-process torchrun with NCCL; one table.
#   bash scripts/gpu_check.sh              # writes gpu_check.md
#   bash scripts/gpu_check.sh --dry-run    # no GPU: the same code paths on the CPU, tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gpu_check.py "$@"
