#!/usr/bin/env bash
# `make bench`: the writer's commit (pgbench: relay.enqueue beside a plain INSERT), relay-bench
# (drain, steady latency, memory, ceilings) on the local stack, then the reconciler benchmark.
# Results: .stack/bench/commit.md, results.md and results.json.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RELAY_ROOT"

ensure_postgres
ensure_tansu
out="$RELAY_ROOT/.stack/bench"
mkdir -p "$out"
cargo_with_progress "$out/build.log" "building the release binaries" build --release --locked --bins
bash "$RELAY_ROOT/tools/relay-bench/pgbench/run.sh" "$out"
port="$(free_port)"
broker_pid="$(start_broker "$port" memory://tansu/ "$out/tansu.log")"
trap 'kill "$broker_pid" 2>/dev/null || true' EXIT
export KAFKA_BROKERS="127.0.0.1:$port"
target/release/relay-bench --pg "$(pg_url)" --out-dir "$out" "$@"
kill "$broker_pid" 2>/dev/null || true
bash "$RELAY_ROOT/scripts/bench-reconcile.sh"
