-- Whether a workload transaction committed (its COMMIT's answer may have been lost).
SELECT EXISTS (SELECT 1 FROM chaos_app.batch WHERE chunk = $1)
