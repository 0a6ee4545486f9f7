-- Whether a table exists yet (the services create their schema at start-up).
SELECT to_regclass($1) IS NOT NULL
