-- Where each gateway of a cluster can be reached by the others (`WAGATE_NODE_URL`, or the
-- address it listens on): a request that needs the node running an account (its WhatsApp Web
-- connection) is forwarded there, one hop (docs/adr/0029-forward-to-the-owner.md).
ALTER TABLE cluster_nodes ADD COLUMN url text;
