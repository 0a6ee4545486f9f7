-- The outbox database's clock at the start of a pass. Every age the reconciler compares is
-- measured on the databases' clocks, never on the reconciler host's. $1 grace in seconds.
SELECT now() - make_interval(secs => $1) AS cutoff
