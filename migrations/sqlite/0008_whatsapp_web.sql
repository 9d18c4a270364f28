-- WhatsApp Web sessions (issue 23): whatsapp-rust's session store (Signal sessions, prekeys,
-- identities, app-state keys, the device, ...) of each `whatsapp_web` account, written by
-- `wagate_waweb::store::SessionStore`.
--
-- One generic table: a row is one item of one `space` (identity, session, prekey, device, ...)
-- of one account, addressed by `scope` (a grouping: a group JID, an app-state collection, a
-- chat, ... or '') and `key`. `value` is sealed with the master key and bound to
-- (account, space, scope, key), so a row copied elsewhere does not open. `num` and `num2` are the
-- plain numbers the store's range queries need (a prekey id, an expiry or insertion time, an
-- uploaded flag; see the store's code for each space). Logging out deletes the account's rows.
CREATE TABLE whatsapp_web_store
(
    account text    NOT NULL,
    space   text    NOT NULL,
    scope   text    NOT NULL,
    key     text    NOT NULL,
    value   text    NOT NULL,
    num     integer,
    num2    integer,
    PRIMARY KEY (account, space, scope, key)
) STRICT;

-- Lookups by key across scopes (a LID mapping by LID, sender-key devices by device JID).
CREATE INDEX whatsapp_web_store_by_key ON whatsapp_web_store (account, space, key);
-- Expiry sweeps and the highest prekey id.
CREATE INDEX whatsapp_web_store_by_num ON whatsapp_web_store (account, space, num);
