-- Kiln foundation schema: projects, slaves, builds with their state history, artifacts.
-- Never edit this file once landed; add a new migration instead (expand, then contract).

CREATE TABLE projects (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    branch_url   TEXT NOT NULL,
    branch       TEXT NOT NULL,
    architecture TEXT,
    tags         TEXT[] NOT NULL DEFAULT '{}',
    lost_retries INT NOT NULL DEFAULT 1,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE slaves (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    enabled      BOOLEAN NOT NULL DEFAULT true,
    online       BOOLEAN NOT NULL DEFAULT false,
    arch         TEXT,
    tags         TEXT[] NOT NULL DEFAULT '{}',
    backends     TEXT[] NOT NULL DEFAULT '{}',
    capacity     INT NOT NULL DEFAULT 1,
    version      TEXT,
    last_seen    TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE builds (
    id               BIGSERIAL PRIMARY KEY,
    project_id       BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    state            TEXT NOT NULL CHECK (state IN
                        ('queued','dispatched','running','succeeded','failed','cancelled','lost')),
    -- Why the build is in its state; required for failed, cancelled and lost.
    reason           TEXT,
    trigger          TEXT NOT NULL DEFAULT 'manual',
    release          TEXT,
    requested_commit TEXT,
    commit_sha       TEXT,
    -- The branch as it was when the build was asked for.
    branch_url       TEXT NOT NULL,
    branch           TEXT NOT NULL,
    slave_id         BIGINT REFERENCES slaves(id) ON DELETE SET NULL,
    retry_of         BIGINT REFERENCES builds(id) ON DELETE SET NULL,
    -- How many builds before this one in its chain of lost-and-requeued builds.
    attempt          INT NOT NULL DEFAULT 0,
    priority         INT NOT NULL DEFAULT 0,
    log_lines        BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    dispatched_at    TIMESTAMPTZ,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    CONSTRAINT terminal_has_reason CHECK (
        state NOT IN ('failed','cancelled','lost') OR (reason IS NOT NULL AND reason <> ''))
);

CREATE INDEX builds_queue ON builds (priority DESC, id) WHERE state = 'queued';
CREATE INDEX builds_active_slave ON builds (slave_id) WHERE state IN ('dispatched','running');
CREATE INDEX builds_project ON builds (project_id, id DESC);

-- Every change of state, with time and reason.
CREATE TABLE build_events (
    id         BIGSERIAL PRIMARY KEY,
    build_id   BIGINT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    from_state TEXT,
    to_state   TEXT NOT NULL,
    reason     TEXT
);
CREATE INDEX build_events_build ON build_events (build_id, id);

CREATE TABLE artifacts (
    build_id   BIGINT NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (build_id, name)
);
