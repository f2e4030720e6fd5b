#!/usr/bin/env bash
# issue 28, item 5: every GPU measurement in one call (< 8 min on one H100/H200, 16 cores).
# Usage: bash bench/gpu.sh            (GPU: writes bench/results/gpu.md)
#        bash bench/gpu.sh --tiny     (CPU smoke run, < 3 min: proves the script works)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
uptime
exec timeout 480 python bench/gpu.py "$@"
