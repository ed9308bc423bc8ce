-- pgbench reference: the same INSERT storage_bench makes, one message per
-- transaction (pgbench autocommits each statement), durable on commit.
\set seq random(1, 9000000000000000000)
INSERT INTO messages (tenant_id, conversation_id, seq, sender, agent_id, kind, body, client_msg_id, at)
VALUES ('pgbench', 'c' || :client_id, :seq, 'visitor', NULL, 'text', 'benchmark message body, about sixty bytes long....', 'k' || :seq, 1750000000000)
ON CONFLICT DO NOTHING;
