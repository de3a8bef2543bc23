-- A counter that every change to the tenant key tables moves, and the value it had at each
-- tenant's last change, so that a process caching unwrapped keys (tenancy.keys) can tell with
-- one read whether any key changed since it read them, and whose: it reads again only those
-- tenants' keys, instead of every tenant's keys every refresh. Row triggers move it, in the
-- changing transaction; the counter's row lock orders the changes as they commit, so a reader
-- that sees the counter at n sees every change up to n and none after. A change made with plain
-- SQL moves it too (a TRUNCATE marks every tenant: tenant_id ''). Applied once by
-- core.migrations; never edit it after release, add a new file instead.

CREATE TABLE key_epoch (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch BIGINT NOT NULL
);

INSERT INTO key_epoch (only_row, epoch) VALUES (true, 0);

-- The counter at each tenant's last key change ('': a TRUNCATE, every tenant).
CREATE TABLE tenant_key_epochs (
    tenant_id TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL
);

CREATE INDEX tenant_key_epochs_epoch ON tenant_key_epochs (epoch);

CREATE FUNCTION key_epoch_moved(tenant TEXT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    moved BIGINT;
BEGIN
    UPDATE key_epoch SET epoch = epoch + 1 RETURNING epoch INTO moved;
    INSERT INTO tenant_key_epochs (tenant_id, epoch) VALUES (tenant, moved)
        ON CONFLICT (tenant_id) DO UPDATE SET epoch = EXCLUDED.epoch;
END
$$;

CREATE FUNCTION key_epoch_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM key_epoch_moved(OLD.tenant_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM key_epoch_moved(NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION key_epoch_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM key_epoch_moved('');
    RETURN NULL;
END
$$;

CREATE TRIGGER tenant_keks_epoch AFTER INSERT OR UPDATE OR DELETE ON tenant_keks
    FOR EACH ROW EXECUTE FUNCTION key_epoch_row();
CREATE TRIGGER tenant_keks_epoch_truncate AFTER TRUNCATE ON tenant_keks
    FOR EACH STATEMENT EXECUTE FUNCTION key_epoch_truncate();
CREATE TRIGGER tenant_data_keys_epoch AFTER INSERT OR UPDATE OR DELETE ON tenant_data_keys
    FOR EACH ROW EXECUTE FUNCTION key_epoch_row();
CREATE TRIGGER tenant_data_keys_epoch_truncate AFTER TRUNCATE ON tenant_data_keys
    FOR EACH STATEMENT EXECUTE FUNCTION key_epoch_truncate();
