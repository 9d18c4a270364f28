-- Webhook deliveries: one row per (subscription, event, type), written by the fan-out in the same
-- transaction that advances its checkpoint, so a crash between an event's commit and its
-- delivery never loses the delivery. `id` is the `webhook-id` header, stable across retries.
-- Times are Unix epoch milliseconds (the same code serves SQLite).
CREATE TABLE webhook_deliveries
(
    id              text PRIMARY KEY,
    webhook_id      text    NOT NULL,
    event_position  integer  NOT NULL,
    event_type      text    NOT NULL,
    body            text    NOT NULL,
    -- pending | delivered | dead | cancelled
    status          text    NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    -- attempts since the last (re)delivery request: the index into the retry schedule
    round_attempts  integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    next_attempt_at integer,
    created_at      integer  NOT NULL,
    updated_at      integer  NOT NULL,
    delivered_at    integer,
    UNIQUE (webhook_id, event_position, event_type)
) STRICT;

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, event_position);

-- Durable positions of consumers of the event history.
CREATE TABLE checkpoints
(
    name     text PRIMARY KEY,
    position integer NOT NULL
) STRICT;
