-- Media bytes shared by several messages, and their time-based purge (docs/adr/0028-media.md).
--
-- `media_uses`: one row per message that put the bytes (the same content sent twice is one
-- `media` row with two uses). A settled reply drops its trigger's use and, unless
-- `WAGATE_MEDIA_KEEP_SECONDS` keeps them, deletes the bytes only when no use is left, so a second
-- reply waiting for the same content still finds them. `media.touched_at`: when a message last
-- put the bytes; the purge deletes bytes kept longer than the setting, and gives up the uses of
-- replies that never settled after a bound.
ALTER TABLE media ADD COLUMN touched_at text NOT NULL DEFAULT '';
UPDATE media SET touched_at = created_at;
CREATE INDEX media_by_touched_at ON media (touched_at);

CREATE TABLE media_uses
(
    account_id text NOT NULL,
    sha256     text NOT NULL,
    chat_id    text NOT NULL,
    message_id text NOT NULL,
    created_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (account_id, sha256, chat_id, message_id)
) STRICT;
CREATE INDEX media_uses_by_created_at ON media_uses (created_at);

-- Bytes kept before this migration may still wait for a reply: one use of no message each keeps
-- them until the purge gives it up.
INSERT INTO media_uses (account_id, sha256, chat_id, message_id, created_at)
SELECT account_id, sha256, '', '', created_at FROM media;
