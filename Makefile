# Relay: one command runs the relay locally, one runs the tests.
.PHONY: demo test lint build tools clean-stack

## make demo: the whole relay on this machine (PostgreSQL + Tansu broker), with a report.
demo:
	bash scripts/demo.sh

## make test: the whole test suite (real PostgreSQL, real broker, real binaries).
test:
	bash scripts/test.sh

## make lint: formatting and clippy, warnings as errors.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

build:
	cargo build --release --locked --bins

## make tools: install the local broker (Tansu) once; later runs reuse it.
tools:
	bash -c 'source scripts/lib.sh && ensure_tansu'

clean-stack:
	rm -rf .stack
