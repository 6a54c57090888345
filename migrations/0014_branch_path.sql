-- A project may build in a directory of its branch (`path`, like `images/board`), so a repository
-- holding several image configurations needs no restructuring. Each build keeps the path it was
-- requested with, as it keeps its branch URL and branch.
ALTER TABLE projects ADD COLUMN path TEXT;
ALTER TABLE builds ADD COLUMN path TEXT;
