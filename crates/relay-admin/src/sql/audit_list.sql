-- The operator audit trail, newest first. $1 target or NULL, $2 command or NULL, $3 limit.
SELECT id,
       to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at,
       db_role, session_role, operator, command, reason, target, before::text AS before, after::text AS after,
       count(*) OVER () AS total
FROM relay.operator_audit
WHERE ($1::text IS NULL OR target = $1) AND ($2::text IS NULL OR command = $2)
ORDER BY id DESC
LIMIT $3
