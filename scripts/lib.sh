#!/usr/bin/env bash
# Shared helpers for the local stack: tool install (cached), PostgreSQL, the Tansu broker.
# Sourced by demo.sh, test.sh and .ci/run; every function is idempotent.
set -euo pipefail

RELAY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RELAY_TOOLS_DIR="${RELAY_TOOLS_DIR:-$HOME/.cache/relay/tools}"
TANSU_VERSION="0.6.0"
TANSU_BIN="${TANSU_BIN:-$RELAY_TOOLS_DIR/bin/tansu}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
export PGHOST PGPORT PGUSER TANSU_BIN

log() { printf '[relay] %s\n' "$*" >&2; }

# Installs the Tansu broker once (15-20 minutes on 2 cores); later calls reuse the binary.
ensure_tansu() {
  local stamp="$RELAY_TOOLS_DIR/tansu-$TANSU_VERSION.installed"
  if [[ -x "$TANSU_BIN" && -f "$stamp" ]]; then return 0; fi
  log "installing Tansu $TANSU_VERSION into $RELAY_TOOLS_DIR (once; takes 15-20 minutes)"
  mkdir -p "$RELAY_TOOLS_DIR"
  cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features \
    --features libsql,dynostore --root "$RELAY_TOOLS_DIR" --quiet
  touch "$stamp"
}

# Installs PgBouncer from the Debian package once (the tests start their own instances with their
# own configuration; the packaged service is not used).
ensure_pgbouncer() {
  if command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]]; then return 0; fi
  log "installing PgBouncer (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
}

# Installs faketime (Debian's package) once: the reconciler's clock tests run the real binary
# with its clock moved ahead and behind the databases' (LD_PRELOAD libfaketime).
ensure_faketime() {
  if command -v faketime >/dev/null 2>&1; then return 0; fi
  log "installing faketime (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
}

# Installs promtool (Debian's prometheus package) once: the suite checks the alert rules
# (deploy/prometheus/tests) and each service's /metrics with it. The packaged server is not used.
ensure_promtool() {
  if command -v promtool >/dev/null 2>&1 || [[ -x /usr/bin/promtool ]]; then return 0; fi
  log "installing promtool (Debian package prometheus)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

# Makes sure PostgreSQL answers on $PGHOST:$PGPORT, starting the local cluster if needed.
ensure_postgres() {
  if pg_isready -q -h "$PGHOST" -p "$PGPORT"; then return 0; fi
  log "starting PostgreSQL"
  local version
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -z "$version" ]]; then
    log "no PostgreSQL cluster found: install postgresql (Debian) or set PGHOST/PGPORT"
    return 1
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    pg_isready -q -h "$PGHOST" -p "$PGPORT" && return 0
    sleep 0.5
  done
  log "PostgreSQL did not become ready on $PGHOST:$PGPORT"
  return 1
}

# (Re)creates an empty database.
fresh_database() {
  local name="$1"
  psql -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" \
    -c "CREATE DATABASE \"$name\"" >/dev/null
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Starts Tansu on 127.0.0.1:$1 with storage $2 (memory://tansu/ or sqlite://PATH); logs to $3.
# Prints the broker's PID.
start_broker() {
  local port="$1" storage="$2" logfile="$3"
  "$TANSU_BIN" broker \
    --kafka-cluster-id relay-local \
    --kafka-listener-url "tcp://127.0.0.1:$port" \
    --kafka-advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" >"$logfile" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$pid"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "Tansu did not start; see $logfile"
  tail -n 20 "$logfile" >&2 || true
  return 1
}
