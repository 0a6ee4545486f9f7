-- Marks message $2 of inbox $1 processed, in the transaction of its business effect.
SELECT relay.done($1, $2)
