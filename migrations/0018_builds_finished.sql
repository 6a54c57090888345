-- A console's queue snapshot includes every build ended in the last hour (a console that
-- missed an event catches up from it): found by when it ended, not by scanning every build.
CREATE INDEX builds_finished ON builds (finished_at) WHERE finished_at IS NOT NULL;
