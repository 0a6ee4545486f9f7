-- One writer's transaction in the steady scenario: messages $2..$3 of topic $1 over 1,000 keys,
-- enqueued in the order of their keys' lock slots (relay.enqueue's `hashtext(topic || chr(31) ||
-- key) & 1023`), so concurrent writers of many keys each take their slots in the same order and
-- never deadlock.
SELECT relay.enqueue($1, m.key, decode(repeat(md5(m.g::text), 8), 'hex'))
FROM (
    SELECT g, 'key-' || (g % 1000) AS key
    FROM generate_series($2::bigint, $3::bigint) AS g
    ORDER BY hashtext($1 || chr(31) || ('key-' || (g % 1000))) & 1023, g
) AS m
