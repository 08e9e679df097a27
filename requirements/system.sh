#!/bin/bash
# make setup's system check: what the machine must have before pip can build and run the
# project. Installs what is missing as root (apt-get); otherwise stops with one line that
# names it.
#
#   bash requirements/system.sh PYTHON cuda|cpu
#
# Always: libsndfile1 (import fairseq2) and a Python whose `-m venv` works (Debian and
# Ubuntu ship venv apart: python3-venv). With CUDA also a C compiler and the Python headers:
# vLLM compiles a Triton kernel for the sampler's log-probs even with enforce_eager, and a
# float32 model uses Triton attention; Triton builds with cc against Python.h.
set -uo pipefail
python=${1:?usage: system.sh PYTHON cuda|cpu}
kind=${2:?usage: system.sh PYTHON cuda|cpu}
missing=()
ldconfig -p 2>/dev/null | grep -q libsndfile.so.1 || missing+=(libsndfile1)
probe=$(mktemp -d)
"$python" -m venv --without-pip "$probe/venv" >/dev/null 2>&1 && "$python" -c 'import ensurepip' 2>/dev/null \
    || missing+=(python3-venv)
rm -rf "$probe"
if [[ $kind == cuda ]]; then
    command -v cc >/dev/null 2>&1 || missing+=(build-essential)
    include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
    [[ -n $include && -f $include/Python.h ]] || missing+=(python3-dev)
fi
(( ${#missing[@]} )) || exit 0
if [[ $(id -u) == 0 ]]; then
    echo "installing ${missing[*]} (system packages make setup needs)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" && exit 0
    echo "make setup: apt-get install ${missing[*]} failed" >&2
    exit 1
fi
if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "installing ${missing[*]} (system packages make setup needs)"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" && exit 0
fi
echo "make setup: missing system packages: ${missing[*]} (install them: sudo apt-get install ${missing[*]})" >&2
exit 1
