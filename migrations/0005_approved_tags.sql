-- What an admin allowed a slave to be: the tags given when it was registered (a slave can no
-- longer declare itself into a tag such as `release-signing`) and the architecture of its first
-- connection (a slave cannot claim another one later).
ALTER TABLE slaves ADD COLUMN approved_tags TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE slaves ADD COLUMN approved_arch TEXT;
-- Slaves registered before this keep what they had.
UPDATE slaves SET approved_tags = tags, approved_arch = arch;
