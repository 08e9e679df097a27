#!/bin/bash
# One GPU (e.g. one H200, under 10 minutes with setup, only the package registries
# reachable): installs the CUDA extra and runs every GPU check CI cannot run
# (benchmarks/gpu_check.py), writing benchmarks/results/gpu_check.json after every check
# (a time limit keeps what was measured) and printing the elapsed time of each part.
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
# --kill-after: a check stuck in CUDA or NCCL that ignores SIGTERM is killed, not waited for.
check_start=$(date +%s)
status=0
timeout --kill-after=20 "${CHECK_TIMEOUT_S:-420}" .venv/bin/python benchmarks/gpu_check.py "${args[@]}" || status=$?
echo "gpu_check.sh: setup ${setup_s} s, checks $(( $(date +%s) - check_start )) s (exit ${status}), total $(( $(date +%s) - start )) s"
exit "$status"
