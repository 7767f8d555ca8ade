-- Delivery: the send log gains what a replay needs to re-emit a receipt without re-sending (the address
-- the message went to, its channel instance), and a suppression list of addresses that failed for good.

ALTER TABLE messages ADD COLUMN IF NOT EXISTS address       text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS address_kind  text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS template      text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS category      text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS locale        text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS delivered_at  timestamptz;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS opened_at     timestamptz;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS clicked_at    timestamptz;
-- Provider callbacks name their own message id; this finds ours.
CREATE INDEX IF NOT EXISTS messages_provider_idx ON messages (provider, provider_message_id);

-- An address that bounced hard, is not a valid number, or is an unregistered push token is never tried
-- again (until someone deletes the row). Keyed like identities, so Greenplum co-locates the two.
CREATE TABLE IF NOT EXISTS suppressions (
    kind        text        NOT NULL,
    value       text        NOT NULL,
    channel     text,
    reason      text        NOT NULL,
    message_id  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
) /*gp: DISTRIBUTED BY (kind, value) */;
