#!/usr/bin/env bash
# The writer's commit: one transaction = one account UPDATE + one outbox write, measured with
# pgbench. relay.enqueue beside a plain INSERT into a table shaped like relay.outbox, in
# alternating runs at each writer count, so both see the same machine; plus, for comparison,
# relay.enqueue followed by pg_notify (what it did before migration V6), and a function with
# relay.enqueue's language, security and search_path holding only the plain INSERT (what the
# call alone costs: the floor of an enqueue written as such a function).
#
# Usage: run.sh OUT_DIR. Settings (environment): COMMIT_WRITERS (default "1 16 64"),
# COMMIT_SECS per run (default 10), COMMIT_ROUNDS (default 3), COMMIT_DB (default
# relay_bench_commit, dropped and recreated). Writes OUT_DIR/commit.md and commit.csv.
source "$(dirname "${BASH_SOURCE[0]}")/../../../scripts/lib.sh"
here="$RELAY_ROOT/tools/relay-bench/pgbench"
out="${1:?usage: run.sh OUT_DIR}"
writers="${COMMIT_WRITERS:-1 16 64}"
secs="${COMMIT_SECS:-10}"
rounds="${COMMIT_ROUNDS:-3}"
db="${COMMIT_DB:-relay_bench_commit}"
mkdir -p "$out"
export PGOPTIONS="-c client_min_messages=warning"
command -v pgbench >/dev/null || PATH="$PATH:/usr/lib/postgresql/15/bin"

fresh_database "$db"
psql -q -v ON_ERROR_STOP=1 -d "$db" -f "$RELAY_ROOT/python/src/relay/sql/outbox.sql" >/dev/null
psql -q -v ON_ERROR_STOP=1 -d "$db" -f "$here/setup.sql" >/dev/null

# One run: prints committed transactions per second.
run() {
  local script="$1" clients="$2"
  psql -q -v ON_ERROR_STOP=1 -d "$db" -f "$here/reset.sql" >/dev/null
  pgbench -n -M prepared -c "$clients" -j 2 -T "$secs" -f "$here/$script.sql" "$db" 2>/dev/null |
    awk '/^tps = / { print $3 }'
}

csv="$out/commit.csv"
echo "writers,round,script,commits_per_sec" >"$csv"
for clients in $writers; do
  for round in $(seq 1 "$rounds"); do
    # Odd rounds run the scripts in one order, even rounds in the reverse order.
    if (( round % 2 )); then order="plain enqueue function_floor enqueue_notify"
    else order="enqueue_notify function_floor enqueue plain"; fi
    for script in $order; do
      tps="$(run "$script" "$clients")"
      log "commit: $clients writers, round $round, $script: $tps commits/s"
      echo "$clients,$round,$script,$tps" >>"$csv"
    done
  done
done

# What an idle poller costs the database: its scan (fetch_pending.sql, planned per execution as
# the poller does) over an outbox of 100,000 published rows: the server's planning and execution
# time, averaged over 200 scans (EXPLAIN ANALYZE; what the session spends, without the round trip).
psql -q -v ON_ERROR_STOP=1 -d "$db" -f "$here/probe_setup.sql" >/dev/null
probe="$(sed -e '/^--/d' -e "s/\$1::text\[\]/'{bench.payments}'::text[]/g" -e 's/LIMIT \$2/LIMIT 5000/' \
  -e 's/\$3/0/' -e "s/\$4::bigint\[\]/'{}'::bigint[]/" -e 's/\$5::boolean/true/' \
  -e "s/\$[678]::text\[\]/'{}'::text[]/g" "$RELAY_ROOT/crates/relay-poller/src/fetch_pending.sql")"
for _ in $(seq 1 200); do echo "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) $probe;"; done >"$out/probe.sql"
probe_ms="$(psql -d "$db" -f "$out/probe.sql" |
  awk '/(Planning|Execution) Time/ { sum += $3 } END { printf "%.3f", sum / 200 }')"
log "commit: an empty scan takes $probe_ms ms"
psql -q -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null

# Per writer count: mean commits/s of each script, the ratio of the means, and the range of the
# per-round ratios.
{
  echo "### The writer's commit: account UPDATE + outbox write ($rounds alternating rounds of ${secs} s)"
  echo
  echo "| writers | plain INSERT (commits/s) | relay.enqueue | enqueue / plain | median of rounds | per-round range | function with the INSERT alone | function / plain | enqueue + pg_notify (before V6) | notify / plain |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F, 'NR > 1 {
      sum[$1 "," $3] += $4; n[$1 "," $3]++; tps[$1 "," $2 "," $3] = $4; w[$1] = 1; r[$2] = 1
    }
    END {
      for (c in w) {
        lo = 1e9; hi = 0; m = 0
        for (k in r) {
          q = tps[c "," k ",enqueue"] / tps[c "," k ",plain"]
          if (q < lo) lo = q; if (q > hi) hi = q
          qs[++m] = q
        }
        for (i = 2; i <= m; i++) { v = qs[i]; for (j = i - 1; j >= 1 && qs[j] > v; j--) qs[j + 1] = qs[j]; qs[j + 1] = v }
        med = (m % 2) ? qs[(m + 1) / 2] : (qs[m / 2] + qs[m / 2 + 1]) / 2
        p = sum[c ",plain"] / n[c ",plain"]; e = sum[c ",enqueue"] / n[c ",enqueue"]
        x = sum[c ",enqueue_notify"] / n[c ",enqueue_notify"]
        f = sum[c ",function_floor"] / n[c ",function_floor"]
        printf "| %d | %.0f | %.0f | %.2fx | %.2fx | %.2f-%.2fx | %.0f | %.2fx | %.0f | %.2fx |\n", c, p, e, e / p, med, lo, hi, f, f / p, x, x / p
      }
    }' "$csv" | sort -t'|' -k2 -n
  echo
  echo "An empty scan of the outbox (the poller's idle probe; 100,000 published rows): $probe_ms ms of"
  echo "planning and execution in the server; at the idle bound of 10 ms (100 scans/s) that is"
  echo "$(awk -v p="$probe_ms" 'BEGIN { printf "%.1f", p * 10 }')% of one core, plus the round trips."
} >"$out/commit.md"
cat "$out/commit.md"
