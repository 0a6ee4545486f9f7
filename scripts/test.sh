#!/usr/bin/env bash
# `make test`: the whole suite against real PostgreSQL and a real Kafka-protocol broker.
# Uses $KAFKA_BROKERS when set (for example Apache Kafka from docker-compose); otherwise installs
# Tansu once and runs it in memory for the duration of the suite.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RELAY_ROOT"

ensure_postgres
ensure_pgbouncer
ensure_faketime
ensure_promtool
stack="$RELAY_ROOT/.stack/test"
mkdir -p "$stack"

drop_test_databases() {
  psql -Atq -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'relay_it_%'" |
    while read -r db; do psql -q -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null || true; done
}

broker_pid=""
cleanup() {
  if [[ -n "$broker_pid" ]]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  drop_test_databases
}
trap cleanup EXIT
drop_test_databases

if [[ -z "${KAFKA_BROKERS:-}" ]]; then
  ensure_tansu
  port="$(free_port)"
  broker_pid="$(start_broker "$port" memory://tansu/ "$stack/tansu.log")"
  export KAFKA_BROKERS="127.0.0.1:$port"
  log "Tansu (memory storage) on $KAFKA_BROKERS, pid $broker_pid"
else
  log "using the brokers in KAFKA_BROKERS=$KAFKA_BROKERS"
fi
export TANSU_BIN RELAY_TEST_PG="${RELAY_TEST_PG:-$(pg_url)}"

# The integration tests mostly wait on I/O, so more threads than cores is right.
set +e
cargo test --workspace --locked --no-fail-fast -- --test-threads "${RELAY_TEST_THREADS:-6}" 2>&1 | tee "$stack/cargo-test.log"
status=${PIPESTATUS[0]}
# The Python package (python/), on the same PostgreSQL and broker, with the binaries just built.
bash "$RELAY_ROOT/scripts/python-test.sh" 2>&1 | tee "$stack/python-test.log"
py_status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary, pytest one more).
{
  grep -E '^test result:' "$stack/cargo-test.log" | awk '{ print $4 + 0, $6 + 0 }' || true
  grep -E '^python: [0-9]+ passed, [0-9]+ failed$' "$stack/python-test.log" | tail -n 1 | awk '{ print $2 + 0, $4 + 0 }' || true
} | awk '{ passed += $1; failed += $2 } END { printf "relay: %d passed, %d failed\n", passed, failed }'
if [[ $status -ne 0 ]]; then exit "$status"; fi
exit "$py_status"
