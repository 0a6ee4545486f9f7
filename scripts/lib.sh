#!/usr/bin/env bash
# Shared helpers for the local stack: tool install (cached), PostgreSQL, the Tansu broker.
# Sourced by demo.sh, test.sh and .ci/run; every function is idempotent.
#
# PostgreSQL is reached with libpq's own variables, as psql does: PGHOST (default 127.0.0.1),
# PGPORT (5432), PGUSER (postgres) and PGPASSWORD (none). The relay binaries are given the same
# server as a URL (pg_url), and the tests as RELAY_TEST_PG unless that is set itself.
set -euo pipefail

RELAY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RELAY_TOOLS_DIR="${RELAY_TOOLS_DIR:-$HOME/.cache/relay/tools}"
TANSU_VERSION="0.6.0"
TANSU_BIN="${TANSU_BIN:-$RELAY_TOOLS_DIR/bin/tansu}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
export PGHOST PGPORT PGUSER TANSU_BIN
if [[ -n "${PGPASSWORD:-}" ]]; then export PGPASSWORD; fi

log() { printf '[relay] %s\n' "$*" >&2; }

# postgres://USER[:PASSWORD]@HOST:PORT[/DATABASE] from PGUSER, PGPASSWORD, PGHOST and PGPORT,
# user and password percent-encoded; an IPv6 address gets its brackets, a socket directory
# (PGHOST=/var/run/postgresql) is percent-encoded.
pg_url() {
  python3 - "${1:-}" <<'PY'
import os, sys
from urllib.parse import quote
user = quote(os.environ["PGUSER"], safe="")
password = os.environ.get("PGPASSWORD", "")
auth = f"{user}:{quote(password, safe='')}" if password else user
host = os.environ["PGHOST"]
if host.startswith("/"):  # a Unix socket directory, percent-encoded as libpq and tokio-postgres read it
    host = quote(host, safe="")
elif ":" in host and not host.startswith("["):
    host = f"[{host}]"
database = f"/{sys.argv[1]}" if sys.argv[1] else ""
print(f"postgres://{auth}@{host}:{os.environ['PGPORT']}{database}")
PY
}

# Runs a cargo command (its arguments) and, instead of cargo's hundreds of lines, prints one
# progress line every RELAY_PROGRESS_SECS (default 20): build units (crates, build scripts) done
# of the total, and the time so far. Cargo's whole output goes to the log file $1; on failure its
# tail is shown. Usage: cargo_with_progress LOGFILE WHAT cargo-arguments...
cargo_with_progress() {
  local logfile="$1" what="$2"; shift 2
  local every="${RELAY_PROGRESS_SECS:-20}" started=$SECONDS status
  mkdir -p "$(dirname "$logfile")"
  log "$what: cargo $*; full output in ${logfile#"$RELAY_ROOT"/}"
  # Cargo's progress bar even without a terminal ("Building [===>  ] 12/345: crate, ..."), one
  # line per redraw once \r becomes \n; it is read for its counts. tr writes line by line
  # (stdbuf -oL), else its block buffer would hold the lines back; and the reader waits at most
  # $every seconds for a line, so a line is printed every $every seconds even while cargo prints
  # nothing (one crate compiling for minutes).
  set +e
  CARGO_TERM_PROGRESS_WHEN=always CARGO_TERM_PROGRESS_WIDTH=100 CARGO_TERM_COLOR=never cargo "$@" 2>&1 |
    stdbuf -oL tr '\r' '\n' | tee "$logfile" | {
      last=$SECONDS counts="0/?"
      while :; do
        line=""
        IFS= read -r -t "$every" line
        read_status=$?
        # > 128: the wait timed out (a partial line may be in $line); other non-zero: end of input.
        if (( read_status != 0 && read_status <= 128 )); then break; fi
        if [[ "$line" =~ Building\ \[.*\]\ ([0-9]+/[0-9]+) ]]; then counts="${BASH_REMATCH[1]}"; fi
        if (( read_status > 128 || SECONDS - last >= every )); then
          last=$SECONDS
          log "$what: still compiling, ${counts%/*} of ${counts#*/} build units done ($(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s)"
        fi
      done
    }
  status=${PIPESTATUS[0]}
  set -e
  if [[ $status -ne 0 ]]; then
    grep -v '^ *Building \[' "$logfile" | tail -n 30 >&2 || true
    log "$what failed (exit $status); full output in $logfile"
    return "$status"
  fi
  log "$what: done in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"
}

# Installs the Tansu broker once (15-20 minutes on 2 cores, about 600 crates), printing its
# progress; later calls reuse the binary. TANSU_BIN names a broker binary to use instead.
ensure_tansu() {
  local stamp="$RELAY_TOOLS_DIR/tansu-$TANSU_VERSION.installed"
  if [[ -x "$TANSU_BIN" && ( -f "$stamp" || "$TANSU_BIN" != "$RELAY_TOOLS_DIR/bin/tansu" ) ]]; then return 0; fi
  log "installing the Kafka-compatible broker Tansu $TANSU_VERSION into $RELAY_TOOLS_DIR"
  log "(once; compiling it takes 15-20 minutes on 2 cores, later runs reuse it)"
  mkdir -p "$RELAY_TOOLS_DIR"
  cargo_with_progress "$RELAY_TOOLS_DIR/tansu-install.log" "installing Tansu" \
    install tansu --version "$TANSU_VERSION" --locked --no-default-features \
    --features libsql,dynostore --root "$RELAY_TOOLS_DIR"
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

# Makes sure PostgreSQL answers on $PGHOST:$PGPORT, starting the local Debian cluster if needed
# (only when PGHOST is this machine; a remote server must be up already).
ensure_postgres() {
  if pg_isready -q -h "$PGHOST" -p "$PGPORT"; then return 0; fi
  case "$PGHOST" in
    127.0.0.1 | localhost | ::1 | /*) ;;
    *) log "PostgreSQL does not answer on $PGHOST:$PGPORT (PGHOST, PGPORT)"; return 1 ;;
  esac
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
