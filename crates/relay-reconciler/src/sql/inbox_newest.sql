-- The newest sequence of source $2 that inbox $1 has held: its newest row, or the sequence just
-- below its purge marker when retention deleted every row up to there.
SELECT greatest(
    (SELECT coalesce(max(sequence), 0) FROM relay.inbox WHERE inbox = $1 AND source = $2),
    (SELECT coalesce(max(below_sequence) - 1, 0) FROM relay.inbox_purged WHERE inbox = $1 AND source = $2)
)::bigint
