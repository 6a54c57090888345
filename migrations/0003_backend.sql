-- A project may name the backend its kiln.toml uses; it is then dispatched only to slaves that
-- report that backend in their hello (expand only: NULL means any slave).
ALTER TABLE projects ADD COLUMN backend TEXT;
