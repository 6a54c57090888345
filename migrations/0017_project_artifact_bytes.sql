-- Each project's stored artifact bytes, kept by triggers, so an upload's quota check
-- (`master.limits.project_storage_bytes`) reads one row instead of summing every artifact the
-- project keeps (a sum that grew with the project's history, twice per upload).
ALTER TABLE projects ADD COLUMN artifact_bytes BIGINT NOT NULL DEFAULT 0;

UPDATE projects p SET artifact_bytes = COALESCE(
    (SELECT SUM(a.size) FROM artifacts a JOIN builds b ON b.id = a.build_id WHERE b.project_id = p.id),
    0);

-- An artifact stored, replaced or removed moves its project's total.
CREATE FUNCTION kiln_artifact_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- A build being deleted (with its artifacts, ON DELETE CASCADE) is gone by now: its
        -- bytes left the project in kiln_build_artifact_bytes.
        UPDATE projects SET artifact_bytes = artifact_bytes - OLD.size
         WHERE id = (SELECT project_id FROM builds WHERE id = OLD.build_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE projects SET artifact_bytes = artifact_bytes + NEW.size
         WHERE id = (SELECT project_id FROM builds WHERE id = NEW.build_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER artifacts_project_bytes
    AFTER INSERT OR UPDATE OF size, build_id OR DELETE ON artifacts
    FOR EACH ROW EXECUTE FUNCTION kiln_artifact_bytes();

-- A build deleted: its artifacts' bytes leave the project before the cascade removes them.
CREATE FUNCTION kiln_build_artifact_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE projects SET artifact_bytes = artifact_bytes
        - COALESCE((SELECT SUM(size) FROM artifacts WHERE build_id = OLD.id), 0)
     WHERE id = OLD.project_id;
    RETURN OLD;
END $$;

CREATE TRIGGER builds_project_bytes
    BEFORE DELETE ON builds
    FOR EACH ROW EXECUTE FUNCTION kiln_build_artifact_bytes();
