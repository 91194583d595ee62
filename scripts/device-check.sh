#!/usr/bin/env bash
# The check to run on a machine with an NVIDIA GPU (driver R580+ for CUDA 13), in under 8 minutes:
# installs the CUDA provider (`npm run gpu:setup`), compares CUDA against the CPU provider (logits of
# the bench preset ≤ 1e-3, one SFT step's weights ≤ 1e-4), runs `npm run bench -- --providers cuda
# --quick --json` and a smoke run with `providers: [cuda]`, and prints one JSON line with the figures
# (scripts/device-check.ts). Exit status 0 when every check holds.
#   bash scripts/device-check.sh [providers]     (default cuda; `cpu` checks the script on any machine)
# Needs the npm registry and PyPI (or node_modules and the CUDA install already in place).
set -euo pipefail
cd "$(dirname "$0")/.."
providers="${1:-cuda}"
{
  [ -d node_modules ] || ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
  if [[ ",$providers," == *",cuda,"* ]]; then
    npm run --silent gpu:setup
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  fi
} >&2
exec timeout 450 node --import tsx scripts/device-check.ts --providers "$providers"
