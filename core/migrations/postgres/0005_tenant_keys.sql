-- Tenant-scoped keys (tenancy.keys, core.envelope): one key-encryption key (KEK) per tenant and
-- version, wrapped by the KMS's root key; data keys per (tenant, scope, version), wrapped by the
-- tenant's KEK; and the audit of every key event. No key is ever stored unwrapped.
-- Applied once by core.migrations; never edit it after release, add a new file instead.

CREATE TABLE tenant_keks (
    tenant_id TEXT NOT NULL CHECK (btrim(tenant_id) <> ''),
    version INTEGER NOT NULL CHECK (version >= 1),
    -- The KEK as the KMS wrapped it, under the context {tenant_id, kek_version}.
    wrapped BYTEA NOT NULL,
    -- Which root key wrapped it (LocalKms: "local:<fingerprint>"; AWS: the key's ARN).
    kms_key_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE tenant_data_keys (
    tenant_id TEXT NOT NULL CHECK (btrim(tenant_id) <> ''),
    -- A store or table: lake.signals, redis, graph, postgres, dlq, ...
    scope TEXT NOT NULL CHECK (btrim(scope) <> ''),
    version INTEGER NOT NULL CHECK (version >= 1),
    -- The key encrypts fields of event times from here on (until the next version's): so which
    -- key a record gets follows from the record alone, and a replay encrypts it alike.
    effective_from TIMESTAMPTZ NOT NULL,
    -- Wrapped by this KEK version (a rotation re-wraps every data key under the new one).
    kek_version INTEGER NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, scope, version),
    UNIQUE (tenant_id, scope, effective_from),
    FOREIGN KEY (tenant_id, kek_version) REFERENCES tenant_keks (tenant_id, version)
);

-- Every key event; never updated or deleted (an offboarded tenant's rows stay here).
CREATE TABLE key_audit (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    tenant_id TEXT NOT NULL,
    -- kek_created, data_key_created, rotated, offboarded
    action TEXT NOT NULL CHECK (btrim(action) <> ''),
    detail JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX key_audit_tenant ON key_audit (tenant_id, at);
