-- Enrolment and token rotation (expand only).

-- One-time (or few-times) tokens an admin hands to whoever sets up a board; exchanged by
-- `kiln-slave register` for the slave's own token. Only hashes are stored.
CREATE TABLE registration_tokens (
    id           BIGSERIAL PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    name         TEXT,                      -- the slave name it is for; any when NULL
    tags         TEXT[] NOT NULL DEFAULT '{}',
    uses_left    INT NOT NULL CHECK (uses_left >= 0),
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked      BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- After a rotation the previous token keeps working until it expires (the grace period).
ALTER TABLE slaves
    ADD COLUMN previous_token_sha256  TEXT,
    ADD COLUMN previous_token_expires TIMESTAMPTZ;
