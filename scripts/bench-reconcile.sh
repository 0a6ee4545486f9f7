#!/usr/bin/env bash
# Reconciler benchmark: one outbox of N messages (default 1,000,000, 128-byte payloads, 1,000
# keys) against two inboxes holding copies, one of them with injected discrepancies. Reports
# wall time, rows and bytes read, peak memory, and checks the findings are exactly the injected
# ones. The schema is applied from the SQL files, as a DBA would (RELAY_MIGRATE=false path).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RELAY_ROOT"

n="${BENCH_MESSAGES:-1000000}"
out="$RELAY_ROOT/.stack/bench"
mkdir -p "$out"
ensure_postgres
cargo_with_progress "$out/build.log" "building the release binaries" build --release --locked --bins
base="$(pg_url)"

log "loading $n messages into an outbox and two inboxes"
for db in relay_bench_origin relay_bench_ledger relay_bench_audit; do fresh_database "$db"; done
for f in crates/relay-db/migrations/outbox/V*.sql; do psql -q -v ON_ERROR_STOP=1 -d relay_bench_origin -f "$f"; done
for db in relay_bench_ledger relay_bench_audit; do
  for f in crates/relay-db/migrations/inbox/V*.sql; do psql -q -v ON_ERROR_STOP=1 -d "$db" -f "$f"; done
done
# created_at one millisecond apart, the newest an hour old: every message is older than the
# reconciler's cutoff at any N (10,000,000 spans under three hours).
psql -q -v ON_ERROR_STOP=1 -d relay_bench_origin <<SQL
INSERT INTO relay.outbox (topic, key, payload, created_at, published_at, kafka_partition, kafka_offset)
SELECT 'payments', 'account-' || (i % 1000), decode(repeat(md5(i::text), 4), 'hex') || decode(repeat(md5((i+1)::text), 4), 'hex'),
       now() - interval '1 hour' - ($n - i) * interval '1 millisecond', now(), 0, i
FROM generate_series(1, $n) AS i;
VACUUM ANALYZE relay.outbox;
SQL
for inbox in ledger audit; do
  psql -q -d relay_bench_origin -c "COPY (SELECT '$inbox', message_id, 'payments-service', topic, key, msg_type, content_type,
      payload, headers, traceparent, tracestate, id, created_at, topic, 0, id FROM relay.outbox) TO STDOUT" |
    psql -q -d "relay_bench_$inbox" -c "COPY relay.inbox (inbox, message_id, source, topic, key, msg_type, content_type,
      payload, headers, traceparent, tracestate, sequence, created_at, kafka_topic, kafka_partition, kafka_offset) FROM STDIN"
  psql -q -d "relay_bench_$inbox" -c "VACUUM ANALYZE relay.inbox"
done
# Discrepancies in the audit inbox only: 10 missing and 5 corrupted, spread over the range.
psql -q -d relay_bench_audit -c "DELETE FROM relay.inbox WHERE sequence IN (SELECT (g * $n / 11)::bigint FROM generate_series(1, 10) g)"
psql -q -d relay_bench_audit -c "UPDATE relay.inbox SET payload = 'x' WHERE sequence IN (SELECT (g * $n / 7)::bigint + 3 FROM generate_series(1, 5) g)"

log "reconciling"
set +e
/usr/bin/time -f '%e %M' -o "$out/time.txt" target/release/reconciler \
  --outbox "payments-service=$base/relay_bench_origin" \
  --inbox "ledger=$base/relay_bench_ledger" --inbox "audit=$base/relay_bench_audit" \
  --subscription ledger=payments --subscription audit=payments \
  --grace-secs 0 --format json >"$out/reconcile.json"
code=$?
set -e
read -r seconds peak_kb < <(tail -n 1 "$out/time.txt")
python3 - "$out/reconcile.json" "$n" "$seconds" "$peak_kb" "$code" <<'PY'
import json, sys
report, n, seconds, peak_kb, code = json.load(open(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
pairs = {p["inbox"]: p for p in report["pairs"]}
print("| messages | inboxes | wall time (s) | rows read | bytes read | peak RSS (MiB) | buckets compared | buckets drilled |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| {n:,} | 2 | {seconds:.1f} | {report['stats']['rows_read']:,} | {report['stats']['bytes_read']:,} | {peak_kb/1024:.1f} | "
      f"{sum(p['buckets_compared'] for p in pairs.values())} | {sum(p['buckets_differing'] for p in pairs.values())} |")
ledger, audit = pairs["ledger"], pairs["audit"]
ok = (code == 1 and ledger["missing"]["count"] == 0 and ledger["mismatched"]["count"] == 0
      and audit["missing"]["count"] == 10 and audit["mismatched"]["count"] == 5 and audit["extra"]["count"] == 0)
print(f"findings: audit missing={audit['missing']['count']} mismatched={audit['mismatched']['count']}, "
      f"ledger clean={ledger['missing']['count'] + ledger['mismatched']['count'] == 0}, exit code {code}")
print("reconcile benchmark:", "findings are exactly the injected ones" if ok else "UNEXPECTED FINDINGS")
sys.exit(0 if ok else 1)
PY
