-- Whoever holds a long-lived connection (an open console) keeps its access verdicts until the
-- master hears that access may have changed: these triggers notify `kiln_access` on commit of
-- any write that can change who may see what, whichever process made it. Row triggers, so that a
-- statement that changes nothing (the sweep of expired sessions finding none) says nothing; the
-- database sends one notification per transaction however many rows it changed.
CREATE FUNCTION kiln_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kiln_access', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER access_sessions AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION kiln_access_changed();
CREATE TRIGGER access_tokens AFTER UPDATE OF revoked_at, expires_at, role OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION kiln_access_changed();
CREATE TRIGGER access_members AFTER INSERT OR UPDATE OR DELETE ON team_members
    FOR EACH ROW EXECUTE FUNCTION kiln_access_changed();
CREATE TRIGGER access_projects AFTER INSERT OR DELETE OR UPDATE OF visibility, team_id, name
    ON projects FOR EACH ROW EXECUTE FUNCTION kiln_access_changed();
CREATE TRIGGER access_users AFTER UPDATE OF admin OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION kiln_access_changed();
