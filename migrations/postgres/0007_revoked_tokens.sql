-- Revoked admin sessions (docs/adr/0017-token-revocation.md).
--
-- A logout (`POST /v1/auth/logout`, the dashboard's "Log out") writes the `jti` of its admin JWT
-- here with the token's expiry (Unix seconds), so every gateway on this store refuses the token
-- from then on. Rows are purged once their token has expired; deleting one would bring a
-- logged-out session back until it expires, so only the gateway deletes them.
CREATE TABLE revoked_tokens
(
    jti        text        PRIMARY KEY,
    expires_at bigint      NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
