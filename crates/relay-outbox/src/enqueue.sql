SELECT relay.enqueue($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
