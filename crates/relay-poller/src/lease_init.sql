-- The lease row of one topic selection ($1), created free the first time any poller of it starts.
INSERT INTO relay.outbox_leader (name) VALUES ($1) ON CONFLICT (name) DO NOTHING
