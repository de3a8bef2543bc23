-- API keys of machine producers (api.api_keys): only the SHA-256 of a key is stored, never the
-- key. Applied once by igflow.migrations; never edit it after release, add a new file instead.

CREATE TABLE api_keys (
    -- Hex SHA-256 of the whole key (igk_<key_id>_<secret>): what a presented key is looked up by.
    key_hash TEXT PRIMARY KEY CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    -- The key's public name, for listings and revocation (also inside the key itself).
    key_id TEXT NOT NULL UNIQUE CHECK (btrim(key_id) <> ''),
    tenant_id TEXT NOT NULL CHECK (btrim(tenant_id) <> ''),
    scopes TEXT[] NOT NULL CHECK (cardinality(scopes) > 0 AND array_position(scopes, NULL) IS NULL),
    label TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- NULL while the key is valid; set once by a revocation, which is never undone.
    revoked_at TIMESTAMPTZ NULL
);

CREATE INDEX api_keys_tenant_id ON api_keys (tenant_id);
