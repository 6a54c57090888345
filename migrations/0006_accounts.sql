-- People, teams and roles (issue 14). A project belongs to a team; a team's members hold a role
-- on its projects; `admin` is an account flag. Secrets (passwords, session ids, API tokens) are
-- stored only as hashes.

CREATE TABLE users (
    id                   BIGSERIAL PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE,
    email                TEXT,
    admin                BOOLEAN NOT NULL DEFAULT FALSE,
    -- argon2id PHC string; NULL: no local password (provider sign-in only, or the admin token's
    -- owner).
    password_hash        TEXT,
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_login           TIMESTAMPTZ
);

-- Who someone is at a sign-in provider (`oidc:NAME` or `launchpad`).
CREATE TABLE identities (
    provider        TEXT NOT NULL,
    subject         TEXT NOT NULL,
    user_id         BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- The provider's own name for the person (Launchpad's nickname, for its REST API).
    name            TEXT,
    -- The groups the provider last said the person is in (at sign-in or refresh): memberships
    -- are recomputed from them when an admin changes a group mapping.
    groups          TEXT[] NOT NULL DEFAULT '{}',
    -- Background membership refresh (Launchpad): when next, and how many failed in a row.
    next_refresh    TIMESTAMPTZ,
    refresh_failures INT NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX identities_user ON identities (user_id);

CREATE TABLE teams (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per way someone is in a team: `manual` (an admin put them there) or the provider whose
-- group mapping did. Their role is the highest of their rows.
CREATE TABLE team_members (
    team_id BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source  TEXT NOT NULL,
    role    TEXT NOT NULL CHECK (role IN ('viewer', 'builder', 'maintainer')),
    PRIMARY KEY (team_id, user_id, source)
);
CREATE INDEX team_members_user ON team_members (user_id);

-- `group G of provider P` → `team T with role R`.
CREATE TABLE group_mappings (
    id       BIGSERIAL PRIMARY KEY,
    team_id  BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    grp      TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('viewer', 'builder', 'maintainer')),
    UNIQUE (team_id, provider, grp)
);

CREATE TABLE sessions (
    id_sha256  TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    -- How the person signed in: `local`, `oidc:NAME`, `launchpad`.
    via        TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL,
    address    TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'builder', 'maintainer', 'admin')),
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    last_used    TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    -- The admin.token of master.admin_token_sha256: replaced when the config names another.
    from_config  BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor   TEXT,
    action  TEXT NOT NULL,
    target  TEXT,
    address TEXT,
    detail  JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);

-- A sign-in in progress at a provider (OIDC state, nonce and PKCE verifier; OpenID 2.0 return
-- key), keyed by the hash of the random value the browser carries. Taken once.
CREATE TABLE login_flows (
    key_sha256 TEXT PRIMARY KEY,
    provider   TEXT NOT NULL,
    data       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Response nonces already accepted (OpenID 2.0): a replayed assertion is refused.
CREATE TABLE used_nonces (
    provider TEXT NOT NULL,
    nonce    TEXT NOT NULL,
    seen_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, nonce)
);

ALTER TABLE projects ADD COLUMN team_id BIGINT REFERENCES teams(id) ON DELETE RESTRICT;
ALTER TABLE projects ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private'
    CHECK (visibility IN ('private', 'public'));
CREATE INDEX projects_team ON projects (team_id);
