# Relay: one command runs the relay locally, one runs the tests.
.PHONY: demo test lint build tools bench bench-long bench-reconcile chaos clean-stack fuzz schema-sql prometheus-rule

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

## make bench: throughput, latency and memory beside the machine's ceilings, then the reconciler.
bench:
	bash scripts/bench.sh

bench-reconcile:
	bash scripts/bench-reconcile.sh

## make bench-long: the long-lived outbox at 10,000,000 published rows, and the reconciler over them.
bench-long:
	BENCH_RECONCILE=0 bash scripts/bench.sh --scenarios long --long-rows 10000000
	BENCH_MESSAGES=10000000 bash scripts/bench-reconcile.sh

## make chaos: 100,000 messages through killed services, restarts, cut and slow connections.
chaos:
	bash scripts/chaos.sh

## make fuzz: every cargo-fuzz target for FUZZ_SECONDS (default 60) each; installs cargo-fuzz once.
fuzz:
	bash scripts/fuzz.sh

## make build: the product binaries only (crates/relay: the services and relay-admin), no tools.
build:
	cargo build --release --locked -p relay --bin outbox-poller --bin inbox-consumer --bin reconciler --bin relay-admin

## make tools: install the local broker (Tansu) once; later runs reuse it.
tools:
	bash -c 'source scripts/lib.sh && ensure_tansu'

## make schema-sql: regenerate the schema scripts the Python package ships (after adding a migration).
schema-sql:
	cargo run --quiet --locked -p relay --bin relay-admin -- schema sql --schema outbox > python/src/relay/sql/outbox.sql
	cargo run --quiet --locked -p relay --bin relay-admin -- schema sql --schema inbox > python/src/relay/sql/inbox.sql

## make prometheus-rule: regenerate the Prometheus Operator's PrometheusRule from deploy/prometheus/alerts.yml.
prometheus-rule:
	bash scripts/prometheus-rule.sh

clean-stack:
	rm -rf .stack
