-- Autovacuum for an outbox that keeps its published rows (retention is off by default), so that
-- the poller's scan stays flat however large the table grows.
--
-- Every mark leaves a dead entry in the partial indexes of pending rows (outbox_pending,
-- outbox_pending_topic). The poller's scans mark such entries dead as they pass them, but only
-- VACUUM removes them and frees their index pages; until then the empty scan walks every page
-- a burst or a backlog left behind (after 40,000 messages passed under a long-running snapshot:
-- about 110 index pages per scan instead of 1). PostgreSQL's defaults suit neither a table that
-- grows forever nor these small indexes:
-- - autovacuum_vacuum_scale_factor = 0.2 waits for dead rows worth a fifth of the table: 2
--   million on an outbox of 10 million rows. A fixed threshold vacuums after every 10,000
--   marks, whatever the table's size.
-- - With few dead rows against a large table (under 2% of its pages), VACUUM skips the indexes
--   (index cleanup "auto"), which is exactly when the pending indexes need it.
--   vacuum_index_cleanup = on makes every vacuum clean them.
-- - Inserts alone (the outbox is mostly appended) trigger a vacuum every 100,000 rows rather
--   than every fifth of the table, keeping the visibility map current for index-only reads.
-- A snapshot held open on the origin database (a long report, a forgotten BEGIN, a replica with
-- hot_standby_feedback) keeps every entry since it started alive; no setting helps until it
-- ends. See README "Retention": long-running snapshots.
ALTER TABLE relay.outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 100000,
    vacuum_index_cleanup = on
);
