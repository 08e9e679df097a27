#!/bin/bash
# One GPU (e.g. one H200, ~10 minutes, only the package registries reachable): installs the
# CUDA extra and runs every GPU check CI cannot run (benchmarks/gpu_check.py), printing one
# JSON and writing benchmarks/results/gpu_check.json.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#   QUICK=1 bash benchmarks/gpu_check.sh    # smaller models (also runs on a CPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L; fi
make setup                                  # with CUDA: pip install -e ".[dev,vllm]" (vllm==0.16.0)
setup_s=$(( $(date +%s) - start ))
echo "setup took ${setup_s} s"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TORCH_DISABLE_ADDR2LINE=1
args=()
if [ "${QUICK:-0}" = 1 ]; then args+=(--quick); fi
timeout "${CHECK_TIMEOUT_S:-480}" .venv/bin/python benchmarks/gpu_check.py "${args[@]}"
echo "gpu_check.sh: setup ${setup_s} s, total $(( $(date +%s) - start )) s"
