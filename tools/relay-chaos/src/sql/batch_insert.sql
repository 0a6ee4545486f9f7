-- The business row of one workload transaction.
INSERT INTO chaos_app.batch (chunk, messages) VALUES ($1, $2)
