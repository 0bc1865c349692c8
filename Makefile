# The project's commands. CI runs `make test` (through .ci/run) and nothing less.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test rust-test lint bench demo clean

test: lint rust-test

rust-test:
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	$(CARGO) bench -p flint-core --bench targets
	$(CARGO) bench -p flint-core --bench check -- --noplot

clean:
	$(CARGO) clean
