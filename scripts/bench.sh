#!/usr/bin/env bash
# `make bench`: the writer's commit (pgbench: relay.enqueue beside a plain INSERT), relay-bench
# (drain with its SQL-alone ceiling and a peer, steady latency, memory, ceilings, the long-lived
# outbox) on the local stack, then the reconciler benchmark (unless BENCH_RECONCILE=0).
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
# A peer relay from PyPI, installed into the tools cache (never into the repository), unless
# BENCH_PEERS=0.
if [ "${BENCH_PEERS:-1}" != 0 ]; then
  peer_env="$RELAY_TOOLS_DIR/peers/faststream-outbox-0.19.0"
  if [ ! -x "$peer_env/bin/python" ]; then
    log "installing the peer faststream-outbox 0.19.0 into $peer_env (once)"
    python3 -m venv "$peer_env"
    "$peer_env/bin/pip" install -q "faststream-outbox==0.19.0" "faststream[kafka]==0.7.8" "asyncpg==0.32.0"
  fi
  export BENCH_PEER_PYTHON="$peer_env/bin/python" BENCH_PEER_SCRIPT="$RELAY_ROOT/scripts/bench_peer_faststream.py"
fi
target/release/relay-bench --pg "$(pg_url)" --out-dir "$out" "$@"
kill "$broker_pid" 2>/dev/null || true
if [ "${BENCH_RECONCILE:-1}" != 0 ]; then bash "$RELAY_ROOT/scripts/bench-reconcile.sh"; fi
