-- Wakes the processing workers of inbox $1 (relay-processing, or any worker that LISTENs on
-- relay_inbox). Sent on its own after the batch committed, as one statement in its own implicit
-- transaction: the notification is delivered at that commit, which does not wait for its WAL
-- flush (set_config(..., true) lasts until the end of this transaction, where the commit reads it).
SELECT pg_notify('relay_inbox', $1) FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_flush_wait
