-- What a release build is for, in the words of the person who started it ("first factory
-- image; fixes the eMMC timing"). Given with the release request, shown on the build page.
ALTER TABLE builds ADD COLUMN release_notes TEXT
    CHECK (release_notes IS NULL OR length(release_notes) <= 10000);
