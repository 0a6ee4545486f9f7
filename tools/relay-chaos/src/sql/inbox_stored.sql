-- Progress of one inbox: messages stored so far.
SELECT count(*) FROM relay.inbox WHERE inbox = $1
