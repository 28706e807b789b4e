# Two commands do all set-up on a fresh machine:
#   make demo   -- create/refresh .venv, then run the embedded demo
#   make test   -- create/refresh .venv, then run the default test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint test-slow bench schema aihwkit clean clean-kernels

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: a range admitting newer releases would pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "torch==2.13.*"
	$(BIN)/python -m pip install --quiet -e ".[dev,audio]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py --out demo_out

# lint (ruff: E, W, F, I, B, UP), format check, types (mypy on crossbar/ and rnn_models/), then the tests
test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q --run-slow

bench: $(STAMP)
	$(BIN)/python benchmarks/nladc_speed.py
	$(BIN)/python benchmarks/lstm_speed.py
	$(BIN)/python benchmarks/mc_throughput.py
	$(BIN)/python benchmarks/component_speed.py

# optional peers: aihwkit-lightning from PyPI, IBM aihwkit 1.2 built from source (~10 min; the
# agreement test tests/peers/ and the benchmark pick them up when present)
aihwkit: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[peers]"
	VENV=$(VENV) scripts/install_aihwkit.sh

schema: $(STAMP)
	$(BIN)/crossbar schema --out hw_configs/schema.json

# numba's on-disk caches of the compiled kernels: one folder per digest of the sources
# (crossbar.pointwise.kernel_cache_dir), so an edited or upgraded source never meets a stale kernel;
# the folders of earlier sources pile up (~13 MB each) -- this drops them all, those of every
# checkout of this user (and any numba cache in the tree)
clean-kernels:
	rm -rf "$${XDG_CACHE_HOME:-$$HOME/.cache}"/crossbar/kernels-*
	test -z "$$NUMBA_CACHE_DIR" || rm -rf "$$NUMBA_CACHE_DIR"/crossbar-kernels-*
	find crossbar rnn_models -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-kernels
	rm -rf $(VENV) demo_out .pytest_cache
