-- Notifications (issue 17): who is told what is data, edited by maintainers; what is to be sent
-- is an outbox written in the transaction that ends a build, so a master restart or a mail
-- server that is down loses nothing.

-- Who asked for a build (a user name; NULL for the scheduler and for builds from before this).
ALTER TABLE builds ADD COLUMN requested_by TEXT;

CREATE TABLE subscriptions (
    id          BIGSERIAL PRIMARY KEY,
    -- A project's, or a team's (covering all of the team's projects).
    project_id  BIGINT REFERENCES projects(id) ON DELETE CASCADE,
    team_id     BIGINT REFERENCES teams(id) ON DELETE CASCADE,
    -- Exactly one recipient: an address, a user (their account's address), or a webhook.
    email       TEXT,
    user_id     BIGINT REFERENCES users(id) ON DELETE CASCADE,
    webhook     TEXT,
    -- The webhook's HMAC key (never shown again).
    secret      TEXT,
    events      TEXT[] NOT NULL,
    triggers    TEXT[] NOT NULL,
    created_by  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((project_id IS NULL) <> (team_id IS NULL)),
    CHECK (num_nonnulls(email, user_id, webhook) = 1),
    CHECK ((webhook IS NULL) = (secret IS NULL))
);
CREATE INDEX subscriptions_project ON subscriptions (project_id);
CREATE INDEX subscriptions_team ON subscriptions (team_id);

-- Subject and body per event: a site's (project_id NULL) or a project's; Kiln's built-in
-- defaults are in the code.
CREATE TABLE notify_templates (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT REFERENCES projects(id) ON DELETE CASCADE,
    event       TEXT NOT NULL,
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    updated_by  TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX notify_templates_one ON notify_templates (COALESCE(project_id, 0), event);

-- The outbox: one row per message to one recipient. Rendered on its first attempt and kept as
-- sent, so a retry sends the same message (with the same Message-ID).
CREATE TABLE notifications (
    id              BIGSERIAL PRIMARY KEY,
    subscription_id BIGINT REFERENCES subscriptions(id) ON DELETE SET NULL,
    build_id        BIGINT REFERENCES builds(id) ON DELETE CASCADE,
    slave_name      TEXT,
    event           TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('email', 'webhook')),
    -- The address (lower-cased) or the webhook URL; one message per recipient per ending.
    recipient       TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_attempt_at TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ,
    response_code   INT,
    last_error      TEXT,
    -- What is sent (filled on the first attempt): subject and bodies of a mail, the JSON
    -- of a webhook.
    subject         TEXT,
    body_text       TEXT,
    body_html       TEXT,
    payload         JSONB,
    redelivery_of   BIGINT REFERENCES notifications(id) ON DELETE SET NULL,
    -- Which ending this is of (a build ends once; a slave goes offline many times).
    occasion        TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX notifications_once ON notifications (occasion, kind, recipient)
    WHERE redelivery_of IS NULL;
CREATE INDEX notifications_due ON notifications (kind, next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_subscription ON notifications (subscription_id, id DESC);
CREATE INDEX notifications_build ON notifications (build_id);

-- The key that signs the unsubscribe links in mails (made by the first master that needs it).
CREATE TABLE notify_key (
    id  INT PRIMARY KEY CHECK (id = 1),
    key BYTEA NOT NULL
);
