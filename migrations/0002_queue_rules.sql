-- Schedules, priorities, dispatch rules, time-outs and retention (expand only: every new column
-- has a default, so a master of the previous version keeps working on this schema).

ALTER TABLE projects
    ADD COLUMN schedule           TEXT,          -- "daily HH:MM" or a five-field cron expression
    ADD COLUMN timezone           TEXT,          -- IANA name; NULL: the master's
    ADD COLUMN only_if_changed    BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN priority           INT NOT NULL DEFAULT 0,
    ADD COLUMN timeout_minutes    INT,
    ADD COLUMN keep_builds        INT,
    ADD COLUMN keep_days          INT,
    ADD COLUMN max_running        INT,           -- per-project limit of running builds
    ADD COLUMN allow_emulation    BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN next_run           TIMESTAMPTZ,   -- next scheduled build
    ADD COLUMN last_dispatched_at TIMESTAMPTZ;   -- fairness between projects

ALTER TABLE builds
    ADD COLUMN waiting_reason TEXT,              -- why a queued build still waits
    ADD COLUMN rebuild_of     BIGINT REFERENCES builds(id) ON DELETE SET NULL,
    ADD COLUMN log_bytes      BIGINT NOT NULL DEFAULT 0;

ALTER TABLE slaves
    ADD COLUMN emulates TEXT[] NOT NULL DEFAULT '{}';  -- foreign architectures it can run (qemu-user)

CREATE INDEX projects_next_run ON projects (next_run) WHERE schedule IS NOT NULL;
CREATE INDEX builds_retention ON builds (project_id, id DESC) WHERE release IS NULL;
