-- The tenant registry: who may send signals, and from which sources (tenancy.registry).
-- Applied once by igflow.migrations; never edit it after release, add a new file instead.

CREATE TABLE tenants (
    tenant_id TEXT PRIMARY KEY CHECK (btrim(tenant_id) <> ''),
    active BOOLEAN NOT NULL DEFAULT TRUE,
    -- NULL: any source; otherwise only these (an empty array accepts none).
    sources TEXT[] NULL CHECK (array_position(sources, NULL) IS NULL),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
