-- Records a failed attempt of message $2 of inbox $1 with error $3: 'retry' or 'parked'.
SELECT relay.failed($1, $2, $3)
