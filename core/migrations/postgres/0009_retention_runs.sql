-- Retention enforced (igflow retention apply): one row per store and target a run deleted from,
-- written as soon as that store's deletes are done (for Postgres, in the same transaction as
-- them). snapshot_ids are the Iceberg snapshots the lake's delete made (empty elsewhere);
-- expired_snapshots those the run expired afterwards. now is the run's reference time (the
-- cut-offs are now - N days of each tag), at the wall clock of the audit row.
-- Applied once by core.migrations; never edit it after release, add a new file instead.

CREATE TABLE retention_runs (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    store TEXT NOT NULL CHECK (store IN ('lake', 'graph', 'postgres')),
    target TEXT NOT NULL,
    rows_deleted BIGINT NOT NULL CHECK (rows_deleted >= 0),
    -- {tenant_id: rows} of what was deleted.
    per_tenant JSONB NOT NULL,
    -- {tag: cut-off instant} that applied.
    cutoffs JSONB NOT NULL,
    snapshot_ids JSONB NOT NULL DEFAULT '[]',
    expired_snapshots JSONB NOT NULL DEFAULT '[]',
    -- Rows that could not be aged (no tenant or event time, or an unparseable tag).
    unaged BIGINT NOT NULL DEFAULT 0,
    now TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX retention_runs_run ON retention_runs (run_id);
CREATE INDEX retention_runs_at ON retention_runs (at);
