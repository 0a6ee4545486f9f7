-- Opts inbox $1 in, with max attempts $2 and backoff from $3 ms up to $4 ms (idempotent).
SELECT relay.enable_processing($1, $2, $3, $4)
