-- The floor of an enqueue written as a PL/pgSQL SECURITY DEFINER function with a fixed
-- search_path: the business change and a call to bench_insert_only (setup.sql), such a function
-- with nothing in it but the INSERT of plain.sql (no checks, no slot lock), into the same table.
\set aid random(1, 100000)
\set delta random(-5000, 5000)
BEGIN;
UPDATE bench_account SET balance = balance + :delta WHERE id = :aid;
SELECT bench_insert_only('bench.payments', 'account-' || :aid, decode(repeat(md5(:aid::text), 8), 'hex'));
END;
