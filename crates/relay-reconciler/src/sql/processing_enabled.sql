-- Whether the inbox's receiving service processes messages through relay.claim (it has a
-- relay.processing row). Run only when relay.processing exists (inbox migration V6). $1 inbox.
SELECT EXISTS (SELECT 1 FROM relay.processing WHERE inbox = $1)
