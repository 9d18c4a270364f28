-- Start-up from a checkpoint (docs/adr/0015-read-model-checkpoint.md).
--
-- The messages read model as folded up to `position`, so a start folds only the events after it
-- instead of the whole history. A cache of the events, never the truth: a checkpoint whose
-- `format` or `retention` is not the running gateway's, or whose position the history does not
-- reach, is ignored, and deleting every row is always safe (the next start folds everything).
-- `body` is the model as JSON, compressed with Zstandard.
CREATE TABLE read_model_checkpoints
(
    name       text    PRIMARY KEY,
    position   integer NOT NULL,
    format     integer NOT NULL,
    retention  text    NOT NULL,
    body       blob    NOT NULL,
    written_at text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

-- The highest position whose reply text the AI-log retention erased (ADR 0014), written in the
-- erasure's own transaction: a start from an older checkpoint erases those texts in memory too.
CREATE TABLE ai_log_erasures
(
    id            integer PRIMARY KEY CHECK (id = 1),
    upto_position integer NOT NULL
) STRICT;
