# The project's commands. CI runs `make test` (through .ci/run) and nothing less.
# Every target installs what it needs: a .venv with maturin, pytest, ruff, httpx and
# schemathesis (the shared-mode server's HTTP tests) from PyPI.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
VENV_ABS := $(abspath $(VENV))
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
# maturin installs into the virtual environment named by VIRTUAL_ENV.
IN_VENV := VIRTUAL_ENV=$(VENV_ABS) PATH=$(VENV_ABS)/bin:$$PATH

.PHONY: test rust-test python-test lint develop demo example-fastapi bench crash-soak clean fuzz fuzz-smoke fuzz-seeds cargo-fuzz

test: lint rust-test python-test fuzz-smoke

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.7,<2" "pytest>=8" "pytest-asyncio>=0.23" "ruff>=0.6" "mypy>=1.13" \
		"httpx>=0.27,<1" "schemathesis>=4.1,<5" "pyyaml>=6" \
		"fastapi>=0.110" "starlette>=0.36" "uvicorn>=0.29" "slowapi>=0.1.9"
	touch $(DEPS)

# Builds the native module (release) and installs the package into .venv, editable.
develop: $(DEPS)
	$(IN_VENV) $(VENV)/bin/maturin develop --release --quiet

# The simulated power-loss suite runs on its own, uncaptured, so that its figures
# (simulated crashes, violations) show in the output.
rust-test:
	$(CARGO) test --workspace --lib --bins --tests --examples -- --skip every_power_loss_reopens
	$(CARGO) test --workspace --benches
	$(CARGO) test -p flint-core --test power_loss_keeps_every_durable_decision -- --nocapture every_power_loss_reopens
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

# The FastAPI example (examples/fastapi_app.py) under uvicorn on 127.0.0.1:8000, with
# an embedded limiter in .flint/; stop it with Ctrl-C.
example-fastapi: develop
	$(IN_VENV) $(PY) -m uvicorn --app-dir examples fastapi_app:app --host 127.0.0.1 --port 8000

bench: develop
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(CARGO) bench -p flint-core --bench targets
	$(CARGO) bench -p flint-core --bench template_burst
	$(CARGO) bench -p flint-core --bench check -- --noplot
	$(CARGO) bench -p flint-server --bench server
	$(IN_VENV) $(PY) bench/python_bench.py
	$(IN_VENV) $(PY) bench/shared_bench.py
	$(IN_VENV) $(PY) bench/fastapi_bench.py

# The long run of the simulated power-loss suite: CRASHES seeded crashes (100,000 by
# default), in two shards on the machine's two cores, optimized. Each shard prints its
# count of crashes and violations; any violation prints its seed and fails.
CRASHES ?= 100000
POWER_LOSS := $(CARGO) test --release -q -p flint-core --test power_loss_keeps_every_durable_decision every -- --nocapture
crash-soak:
	$(CARGO) test --release -p flint-core --test power_loss_keeps_every_durable_decision --no-run
	half=$$(( $(CRASHES) / 2 )); \
	FLINT_POWER_LOSS_CRASHES=$$half FLINT_POWER_LOSS_BASE=1000000 $(POWER_LOSS) & first=$$!; \
	FLINT_POWER_LOSS_CRASHES=$$(( $(CRASHES) - half )) FLINT_POWER_LOSS_BASE=$$(( 1000000 + half )) $(POWER_LOSS) & second=$$!; \
	wait $$first; a=$$?; wait $$second; b=$$?; test $$a -eq 0 && test $$b -eq 0

# Fuzzing (crates/flint-core/fuzz, its own workspace): record decoding, snapshot
# decoding, whole-directory recovery. cargo-fuzz needs nightly-only flags
# (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# The corpora start from seeds the current encoders write (`fuzz-seeds`) and grow in
# crates/flint-core/fuzz/corpus (ignored by git); crashes land in .../fuzz/artifacts.
FUZZ_DIR := crates/flint-core/fuzz
FUZZ_TARGETS := record_decode snapshot_decode recovery
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 20
CARGO_HOME_BIN := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
FUZZ_ENV := RUSTC_BOOTSTRAP=1 PATH=$(CARGO_HOME_BIN):$$PATH

cargo-fuzz:
	@$(FUZZ_ENV) command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz

fuzz-seeds:
	$(CARGO) run --quiet -p flint-core --example fuzz_seeds -- $(FUZZ_DIR)/corpus

# Each target for FUZZ_SECONDS seconds (inputs up to 4 KiB; one over 10 s is a hang).
fuzz: cargo-fuzz fuzz-seeds
	$(FUZZ_ENV) $(CARGO) fuzz build --fuzz-dir $(FUZZ_DIR)
	@for target in $(FUZZ_TARGETS); do \
		echo "fuzz: $$target for $(FUZZ_SECONDS) s"; \
		$(FUZZ_ENV) $(CARGO) fuzz run --fuzz-dir $(FUZZ_DIR) $$target -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -print_final_stats=1 \
			|| exit 1; \
	done

# The same, FUZZ_SMOKE_SECONDS (20) seconds per target: part of `make test`.
fuzz-smoke:
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

# The plot in docs/grafana/flint-dashboard.png, from real metrics of an embedded limiter
# (matplotlib is needed for this only, so it is not in the test dependencies).
plot-metrics: develop
	$(PY) -m pip install --quiet "matplotlib>=3.7"
	$(IN_VENV) $(PY) bench/plot_metrics.py

clean:
	$(CARGO) clean
	rm -rf $(FUZZ_DIR)/target
	rm -rf $(VENV) .flint
