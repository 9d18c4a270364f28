-- Several gateways on one database (docs/adr/0026-account-leases.md).
--
-- `cluster_nodes`: one row per configured node id, held by one running process (`instance`) and
-- kept alive by its heartbeat; a row past `expires_at` belongs to a process that stopped or died.
-- `account_leases`: which node runs each account's replies. Every takeover raises `epoch`; reply
-- steps are appended under the epoch they were started with and refused once it moved on. Expiry
-- is decided by the database's clock (`now()`), never a node's.
CREATE TABLE cluster_nodes
(
    node_id      text        PRIMARY KEY,
    instance     text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

CREATE TABLE account_leases
(
    account_id     text        PRIMARY KEY,
    owner          text,
    owner_instance text,
    epoch          bigint      NOT NULL DEFAULT 1,
    acquired_at    timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);

CREATE INDEX account_leases_by_owner ON account_leases (owner_instance);
