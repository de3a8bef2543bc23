-- Source registry (tenancy.sources, igflow sources): every change to a source is a new row of
-- source_revisions, never an update, so the table is its own audit and a flow can judge a record
-- by the revision in force at its Kafka timestamp (effective_from = the change + a grace).
-- action 'remove' ends a source (its other columns then say nothing). The view sources is the
-- newest revision of each source that is not removed.
-- Applied once by core.migrations; never edit it after release, add a new file instead.

CREATE TABLE source_revisions (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL CHECK (btrim(name) <> ''),
    action TEXT NOT NULL CHECK (action IN ('add', 'set', 'remove')),
    owners TEXT[] NOT NULL DEFAULT '{}',
    transports TEXT[] NOT NULL DEFAULT '{}'
        CHECK (transports <@ ARRAY['kafka', 'api']::TEXT[]),
    license TEXT NOT NULL DEFAULT '',
    tos TEXT NOT NULL DEFAULT '',
    retention TEXT NOT NULL DEFAULT '',
    residency TEXT NOT NULL DEFAULT '',
    sla_seconds DOUBLE PRECISION NULL
        CHECK (sla_seconds IS NULL OR (sla_seconds > 0 AND sla_seconds < 'Infinity')),
    actor TEXT NOT NULL,
    note TEXT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    effective_from TIMESTAMPTZ NOT NULL
);

CREATE INDEX source_revisions_name ON source_revisions (name, id);

CREATE VIEW sources AS
SELECT DISTINCT ON (name) *
FROM source_revisions
ORDER BY name, id DESC;
