-- Long chats (docs/adr/0011-bounded-chat-state.md).
--
-- A chat's folded state at a version of its stream, so activating a chat folds only the events
-- after it. A cache of the events, never the truth: a snapshot whose `format` is not the running
-- gateway's, or whose version the stream does not reach, is ignored, and deleting every row is
-- always safe.
CREATE TABLE chat_snapshots
(
    aggregate_id text        PRIMARY KEY,
    version      bigint      NOT NULL,
    format       integer     NOT NULL,
    state        text        NOT NULL,
    taken_at     timestamptz NOT NULL DEFAULT now()
);

-- A chat keeps only its newest message ids in memory; an older id (a redelivered message, a late
-- delivery status) is looked up here.
CREATE INDEX events_chat_message_id
    ON events (aggregate_id, json_extract_path_text(payload, event_type, 'message_id'))
    WHERE aggregate_type = 'chat'
      AND event_type IN ('MessageReceived', 'MessageSent', 'MessageStatusUpdated');
