-- A dispatch round reads the head of each project's queue, the project's running builds and
-- whether any queued build still lacks a waiting reason (master/src/db/builds.rs `candidates`).
-- These indexes make each of those a short index probe per project, so a queue of 10,000
-- builds or a project with a long history costs a round nothing extra.
CREATE INDEX builds_queued_by_project ON builds (project_id, priority DESC, id)
    WHERE state = 'queued';
CREATE INDEX builds_active_by_project ON builds (project_id)
    WHERE state IN ('dispatched', 'running');
CREATE INDEX builds_queued_unexplained ON builds (project_id)
    WHERE state = 'queued' AND waiting_reason IS NULL;
