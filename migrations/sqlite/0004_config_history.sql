-- The configuration's history: the events the config read model folds (every event that is not a
-- chat's, and the chats' human-takeover pauses), by position. `?as_of=`, `wagate replay
-- --projection config` and `wagate audit` read only these; without this index each read went
-- through every chat event of the history (5.8 s for an `as_of` on 1,000,000 events).
-- The predicate is written exactly as `store::CONFIG_HISTORY` writes it in queries (SQLite uses a
-- partial index only for a query holding the same term).
CREATE INDEX events_config_history
    ON events (position)
    WHERE aggregate_type <> 'chat' OR event_type IN ('AiPaused', 'AiResumed');
