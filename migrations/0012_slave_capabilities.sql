-- What a slave's machine offers image tools (its tools and their versions, KVM, loop devices,
-- device-mapper, qemu-user binfmt, free disk), as it said in its last hello.
ALTER TABLE slaves ADD COLUMN capabilities JSONB;
