-- Every change to an API key (created, revoked, deleted) is announced on the channel
-- igflow_api_keys with the key's hash, so each igflow serve process drops its cached answer for
-- that key at once (api.api_keys listens). A trigger, not the revoke command, sends it: a
-- revocation made with plain SQL reaches the servers too. The notification leaves only when the
-- transaction commits. Applied once by igflow.migrations; never edit it, add a new file instead.

CREATE FUNCTION api_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('igflow_api_keys', OLD.key_hash);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('igflow_api_keys', NEW.key_hash);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_notify();
