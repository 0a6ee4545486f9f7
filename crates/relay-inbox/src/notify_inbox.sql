-- Wakes the processing workers of inbox $1 (relay-processing, or any worker that LISTENs on
-- relay_inbox); delivered at COMMIT, so only for stored messages.
SELECT pg_notify('relay_inbox', $1)
