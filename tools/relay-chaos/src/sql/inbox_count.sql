-- Messages of one topic stored in one logical inbox.
SELECT count(*) FROM relay.inbox WHERE inbox = $1 AND topic = $2
