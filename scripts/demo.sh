#!/usr/bin/env bash
# `make demo`: the whole relay on this machine, no Docker. One origin service database with its
# outbox-poller, two receiving services' databases with their inbox-consumers, a generator of
# payment messages, and a report per inbox. Exits 0 only if every message arrived exactly once.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RELAY_ROOT"

messages="${DEMO_MESSAGES:-20000}"
stack="$RELAY_ROOT/.stack/demo"
rm -rf "$stack" && mkdir -p "$stack"

ensure_postgres
ensure_tansu
cargo_with_progress "$stack/build.log" "building the release binaries (first time: about 10 minutes on 2 cores)" \
  build --release --locked --bins
bin="$RELAY_ROOT/target/release"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

port="$(free_port)"
pids+=("$(start_broker "$port" memory://tansu/ "$stack/tansu.log")")
export KAFKA_BROKERS="127.0.0.1:$port"
log "broker (Tansu) on $KAFKA_BROKERS"

base="$(pg_url)"
for db in relay_demo_origin relay_demo_ledger relay_demo_notifications; do fresh_database "$db"; done
"$bin/relay-demo" topics --partitions 6 payments

start() { # name binary env...
  local name="$1" binary="$2"; shift 2
  env "$@" KAFKA_BROKERS="$KAFKA_BROKERS" RUST_LOG="${RUST_LOG:-info}" "$bin/$binary" >"$stack/$name.log" 2>&1 &
  pids+=("$!")
  log "started $name (pid $!), log: .stack/demo/$name.log"
}
start outbox-poller outbox-poller DATABASE_URL="$base/relay_demo_origin" OUTBOX_SOURCE=payments-service
for inbox in ledger notifications; do
  start "inbox-$inbox" inbox-consumer DATABASE_URL="$base/relay_demo_$inbox" INBOX_NAME="$inbox" \
    INBOX_TOPICS=payments KAFKA_PROPERTY_SESSION_TIMEOUT_MS=6000 KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS=500 \
    KAFKA_PROPERTY_FETCH_WAIT_MAX_MS=10 # Tansu answers a fetch only when this wait runs out
done

"$bin/relay-demo" generate --database-url "$base/relay_demo_origin" --messages "$messages" --keys 500 --concurrency 8
"$bin/relay-demo" report --origin "$base/relay_demo_origin" \
  --inbox "ledger=$base/relay_demo_ledger" --inbox "notifications=$base/relay_demo_notifications" \
  --timeout-secs "${DEMO_TIMEOUT_SECS:-180}"

log "reconciler: every outbox against every inbox"
"$bin/reconciler" --outbox "payments-service=$base/relay_demo_origin" \
  --inbox "ledger=$base/relay_demo_ledger" --inbox "notifications=$base/relay_demo_notifications" \
  --subscription ledger=payments --subscription notifications=payments --grace-secs 0
