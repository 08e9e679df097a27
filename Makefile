# One-command setup, demo and tests. `setup` is idempotent: it installs only what is
# missing (system libsndfile, the .venv, the package) and re-installs the package only
# when pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fs2-semionline-installed

.PHONY: setup demo test tiny-assets clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if ! ldconfig -p 2>/dev/null | grep -q libsndfile.so.1; then \
		echo "installing libsndfile1 (fairseq2 needs it)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libsndfile1; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -c "import fairseq2, torch, ray, math_verify; print('fs2-semionline setup ok: torch', torch.__version__, 'fairseq2', fairseq2.__version__)"
	@touch $(STAMP)

demo: setup
	$(PY) -m fs2_semionline.demo demo_out

test: setup
	$(PY) -m pytest tests

# Rebuilds the shipped tiny tokenizer, data and SFT checkpoint from scratch (~20 min on 2 cores).
tiny-assets: setup
	$(PY) -m fs2_semionline.tiny.build_assets

clean:
	rm -rf demo_out
