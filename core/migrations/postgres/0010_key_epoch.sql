-- One counter that every change to the tenant key tables moves, so that a process caching
-- unwrapped keys (tenancy.keys) can tell with one read whether any key changed since it read
-- them, instead of re-reading each tenant's keys every refresh. A statement trigger moves it, in
-- the changing transaction: a reader that sees the new counter sees the change, and a change
-- made with plain SQL moves it too. Applied once by core.migrations; never edit it after
-- release, add a new file instead.

CREATE TABLE key_epoch (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch BIGINT NOT NULL
);

INSERT INTO key_epoch (only_row, epoch) VALUES (true, 0);

CREATE FUNCTION key_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE key_epoch SET epoch = epoch + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenant_keks_epoch AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenant_keks
    FOR EACH STATEMENT EXECUTE FUNCTION key_epoch_bump();
CREATE TRIGGER tenant_data_keys_epoch AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON tenant_data_keys FOR EACH STATEMENT EXECUTE FUNCTION key_epoch_bump();
