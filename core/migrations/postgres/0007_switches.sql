-- Kill switches (tenancy.switches, igflow switch): a switch nobody set is on. Every change is a
-- row of switch_audit, written in the same transaction as the change. switch_releases remembers
-- each held record re-sent when its switch came back on, so a second release skips it.
-- Applied once by core.migrations; never edit it after release, add a new file instead.

CREATE TABLE switches (
    kind TEXT NOT NULL CHECK (kind IN ('source', 'tenant', 'flow', 'operation')),
    name TEXT NOT NULL CHECK (btrim(name) <> ''),
    enabled BOOLEAN NOT NULL,
    note TEXT NULL,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);

CREATE TABLE switch_audit (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    -- What the switch was before (NULL: never set, so on) and after the change.
    was_enabled BOOLEAN NULL,
    enabled BOOLEAN NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX switch_audit_kind_name ON switch_audit (kind, name, at);

CREATE TABLE switch_releases (
    -- Where the held record was read (its quarantine row's provenance).
    kafka_topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Where its copy was sent.
    sent_partition INTEGER NOT NULL,
    sent_offset BIGINT NOT NULL,
    released_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
