-- The read model enforces the tenant itself (api.scores): the API reads as the role
-- igflow_tenant_reader, with its caller's tenant in the setting igflow.tenant_id (SET LOCAL), and
-- row-level security shows that role the caller's rows only, whatever the query asks for. The
-- flow's sinks write as the owner, which row-level security does not restrict.
-- Needs CREATEROLE (the local stack grants it; docker-compose's user is a superuser) unless a
-- DBA created the role beforehand. Applied once by core.migrations; never edit it after release.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'igflow_tenant_reader') THEN
        CREATE ROLE igflow_tenant_reader NOLOGIN NOSUPERUSER NOINHERIT NOBYPASSRLS;
    END IF;
END
$$;

GRANT igflow_tenant_reader TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO igflow_tenant_reader;
GRANT SELECT ON coherence_scores TO igflow_tenant_reader;

ALTER TABLE coherence_scores ENABLE ROW LEVEL SECURITY;

-- No setting, or an empty one: no row (current_setting(..., true) is NULL when unset).
CREATE POLICY coherence_scores_own_tenant ON coherence_scores
    FOR SELECT TO igflow_tenant_reader
    USING (tenant_id = current_setting('igflow.tenant_id', true));
