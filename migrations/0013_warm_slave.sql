-- The slave that last took a build of each project: its package and git caches are warm for
-- that project, so the dispatcher offers the project's next build to it first.
ALTER TABLE projects ADD COLUMN last_slave_id BIGINT REFERENCES slaves (id) ON DELETE SET NULL;
