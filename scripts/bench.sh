#!/usr/bin/env bash
# `make bench`: relay-bench (drain, steady latency, memory, ceilings) on the local stack, then the
# reconciler benchmark (unless BENCH_RECONCILE=0). Results: .stack/bench/results.md and
# results.json; with `--only <scenarios>`, .stack/bench/results-only.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RELAY_ROOT"

ensure_postgres
ensure_tansu
cargo build --release --locked --bins --quiet
out="$RELAY_ROOT/.stack/bench"
mkdir -p "$out"
port="$(free_port)"
broker_pid="$(start_broker "$port" memory://tansu/ "$out/tansu.log")"
trap 'kill "$broker_pid" 2>/dev/null || true' EXIT
export KAFKA_BROKERS="127.0.0.1:$port"
target/release/relay-bench --pg "postgres://$PGUSER@$PGHOST:$PGPORT" --out-dir "$out" "$@"
kill "$broker_pid" 2>/dev/null || true
if [ "${BENCH_RECONCILE:-1}" != 0 ]; then bash "$RELAY_ROOT/scripts/bench-reconcile.sh"; fi
