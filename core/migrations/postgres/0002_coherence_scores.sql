-- The read model of the coherence score: one row per tenant, its newest change (sinks.postgres).
-- Applied once by igflow.migrations; never edit it after release, add a new file instead.

CREATE TABLE coherence_scores (
    tenant_id TEXT PRIMARY KEY,
    -- The exact score rounded half-even to two places by the flow (ScoreChange.score_2dp), so
    -- the column never rounds it again.
    score NUMERIC(5, 2) NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('HEALTHY', 'WARN', 'CRITICAL')),
    -- The tenant's event time, never the wall clock: with seq, the order the upsert guards on.
    updated_at TIMESTAMPTZ NOT NULL,
    -- The tenant's deterministic change number: a replayed change has the one already held.
    seq BIGINT NOT NULL,
    -- The exact weighted mean as a double, and the signals in the 24 h window.
    score_exact DOUBLE PRECISION NOT NULL,
    window_count BIGINT NOT NULL,
    -- The change's origin: provenance_id, topic, partition, offset, schema_version, input_hash.
    provenance JSONB NOT NULL
);
