-- Claims the topics of lease $1 for this (its holder's) session; $2 lease time in seconds, $3
-- the configured topics (empty: every topic). One row per topic: led_by NULL when this lease
-- publishes it now, else the other lease that validly leads it (outbox migration V7).
SELECT topic, led_by FROM relay.outbox_claim_topics($1, $2::float8, $3::text[])
