-- The AI log's history: the chat events that open or change an AI-log row, by position. Pages of
-- `GET /v1/ai/logs` older than the rows the read model keeps in memory (ADR 0013) scan only these;
-- without this index such a scan went through every message of the history first (4.3 s for the
-- first page of a store of 1,900,000 events, 1,000,000 of them messages).
-- Only chat streams have these event types. The predicate is written exactly as
-- `store::AI_LOG_HISTORY` writes it in queries (with an `aggregate_type` term too, SQLite would
-- pick the primary key and sort instead of this index).
CREATE INDEX events_ai_log_history
    ON events (position)
    WHERE event_type IN ('AiReplyRequested', 'AiReplyGenerated', 'AiReplySent', 'AiReplyFailed', 'AiReplySkipped');
