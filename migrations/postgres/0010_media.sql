-- Media of inbound messages (docs/adr/0028-media.md).
--
-- The bytes of an image, voice note, sticker or document a customer sent, kept only until the
-- AI reply that uses them settles (then deleted): events record the media's kind, MIME type, size
-- and SHA-256, never its bytes. Keyed by account and content hash: the same file sent twice is
-- one row.
CREATE TABLE media
(
    account_id text        NOT NULL,
    sha256     text        NOT NULL,
    mime_type  text        NOT NULL,
    bytes      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, sha256)
);
