-- What an image carries (issue 18): per build, the record its slave read after the backend
-- (apt sources without credentials, installed packages, disk image layouts); per project, the
-- map that turns internal mirror URLs into public ones when sources are shown.

CREATE TABLE build_records (
    build_id    BIGINT PRIMARY KEY REFERENCES builds(id) ON DELETE CASCADE,
    -- kiln_shared::record::AptSource list, as the slave sent it (credentials removed there and
    -- again on arrival; the rewrite maps are applied when served, so a map edited later applies
    -- to past builds too).
    sources     JSONB NOT NULL DEFAULT '[]',
    -- kiln_shared::record::Package list.
    packages    JSONB NOT NULL DEFAULT '[]',
    -- kiln_shared::record::ImageLayout list.
    images      JSONB NOT NULL DEFAULT '[]',
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE projects
    ADD COLUMN source_rewrites JSONB NOT NULL DEFAULT '{}';
