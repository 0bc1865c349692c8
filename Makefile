# The project's commands. CI runs `make test` (through .ci/run) and nothing less.
# Every target installs what it needs: a .venv with maturin, pytest and ruff from PyPI.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
VENV_ABS := $(abspath $(VENV))
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
# maturin installs into the virtual environment named by VIRTUAL_ENV.
IN_VENV := VIRTUAL_ENV=$(VENV_ABS) PATH=$(VENV_ABS)/bin:$$PATH

.PHONY: test rust-test python-test lint develop demo bench clean

test: lint rust-test python-test

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.7,<2" "pytest>=8" "pytest-asyncio>=0.23" "ruff>=0.6" "mypy>=1.13"
	touch $(DEPS)

# Builds the native module (release) and installs the package into .venv, editable.
develop: $(DEPS)
	$(IN_VENV) $(VENV)/bin/maturin develop --release --quiet

rust-test:
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

# The tests, then the types: the stub of the native module against the built module,
# and the Python layer under mypy --strict.
python-test: develop
	$(IN_VENV) $(PY) -m pytest -q
	$(IN_VENV) $(PY) -m mypy.stubtest flint._native --allowlist python/stubtest-allowlist.txt
	$(IN_VENV) $(PY) -m mypy --strict python/flint

lint: $(DEPS)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests bench examples
	$(VENV)/bin/ruff format --check python tests bench examples

# The quick start, run twice on the same .flint/ directory: the second run continues
# where the first stopped.
demo: develop
	rm -rf .flint
	$(IN_VENV) $(PY) examples/quickstart.py
	$(IN_VENV) $(PY) examples/quickstart.py

bench: develop
	$(CARGO) bench -p flint-core --bench targets
	$(CARGO) bench -p flint-core --bench check -- --noplot
	$(IN_VENV) $(PY) bench/python_bench.py

clean:
	$(CARGO) clean
	rm -rf $(VENV) .flint
