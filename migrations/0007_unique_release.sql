-- A release name is unique within its project: asking for a release named like an earlier one
-- is refused (409, master/src/api/builds.rs), and this index closes the race of two requests
-- at once.
--
-- Only the build that was asked for counts (attempt 0): the requeued retries of a lost release
-- build carry its name on purpose (they are the same release).
--
-- Databases from before this rule may hold duplicates. They are kept as they are (renaming a
-- published release would rewrite history): the index leaves out every build up to the newest
-- one that has a duplicate, and the master's check before each insert (over all builds of the
-- project, whatever their id) keeps new requests from reusing any of those names. Without
-- duplicates the bound is 0 and the index covers every build.
DO $$
DECLARE
    bound BIGINT;
BEGIN
    SELECT COALESCE(MAX(b.id), 0) INTO bound
    FROM builds b
    WHERE b.release IS NOT NULL AND b.attempt = 0
      AND EXISTS (SELECT 1 FROM builds o
                  WHERE o.project_id = b.project_id AND o.release = b.release
                    AND o.attempt = 0 AND o.id <> b.id);
    IF bound > 0 THEN
        RAISE NOTICE 'builds up to id % keep their duplicate release names', bound;
    END IF;
    EXECUTE format(
        'CREATE UNIQUE INDEX builds_release_unique ON builds (project_id, release)
         WHERE release IS NOT NULL AND attempt = 0 AND id > %s', bound);
END
$$;
