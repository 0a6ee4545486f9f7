#!/usr/bin/env bash
# `make chaos`: the chaos suite at full size. 100,000 messages over 1,000 keys into two inboxes
# while 50 faults of each kind are injected: pollers and consumers killed, the broker and
# PostgreSQL restarted, connections cut and slowed. Everything runs on a private PostgreSQL
# cluster and a private broker; the report goes to .stack/chaos/ (report.md, report.json).
# Exits 0 only when nothing was lost, duplicated or reordered and the reconciler is clean.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RELAY_ROOT"

# The suite runs a private cluster of its own, so it needs the server binaries (initdb, pg_ctl).
if [[ ! -x "$(pg_config --bindir 2>/dev/null)/initdb" && ! -x /usr/lib/postgresql/15/bin/initdb ]]; then
  if [[ "$(id -u)" != 0 ]]; then log "PostgreSQL 15 server binaries missing: install postgresql-15"; exit 2; fi
  log "installing PostgreSQL 15"
  apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null
fi
ensure_tansu
out="$RELAY_ROOT/.stack/chaos"
rm -rf "$out" && mkdir -p "$out"
cargo_with_progress "$out/build.log" "building the release binaries" build --release --locked --bins
log "chaos run; logs in .stack/chaos/ (takes 30-60 minutes on 2 cores)"
RUST_LOG="${RUST_LOG:-info}" "$RELAY_ROOT/target/release/relay-chaos" \
  --messages "${CHAOS_MESSAGES:-100000}" --keys "${CHAOS_KEYS:-1000}" \
  --faults-per-kind "${CHAOS_FAULTS_PER_KIND:-50}" --seed "${CHAOS_SEED:-1}" \
  --out "$out" 2> >(tee "$out/relay-chaos.log" >&2)
