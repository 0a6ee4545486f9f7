-- Whether the operator columns exist (migration V3__operator). $1 table, $2 column.
SELECT EXISTS (
    SELECT 1 FROM information_schema.columns
    WHERE table_schema = 'relay' AND table_name = $1 AND column_name = $2
)
