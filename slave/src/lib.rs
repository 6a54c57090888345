//! The Kiln slave as a library; `main.rs` parses the command line and calls [`run`].
//!
//! - [`connection`]: the one WebSocket to the master (hello, heartbeats, reconnect with backoff)
//! - [`outbox`]: what each held build still owes the master (log lines, start, result)
//! - [`supervisor`]: the daemon's side of a build: start its runner, watch, stop, upload, report,
//!   and re-adopt builds after a restart
//! - [`runner`]: `kiln-slave run-build`, the detached process that fetches and runs the backend
//! - [`sandbox`]: each build's own user, files and processes (namespaces, ids, mounts)
//! - [`cgroup`]: a cgroup v2 directory per build, killed as a whole at its end
//! - [`leftovers`]: loop devices and mounts a build left attached, released at its end
//! - [`tree`]: walking a directory tree without following links
//! - [`store`]: the build's directory in the work dir (the local store that outlives the daemon)
//! - [`fetch`]: shallow git fetch of the configuration branch (no cache), and unpacking an export
//! - [`git_cache`]: the slave's bare mirror per branch URL, and each build's export from it
//! - [`git_refs`]: the head of a branch as a `git://` or smart-HTTP server advertises it (no
//!   fetch when the mirror has it)
//! - [`git_objects`]: whether the mirror has that commit, read from its object store in-process
//! - [`recipe`]: the branch's `kiln.toml`
//! - [`backend`]: one file per image tool, behind one trait
//! - [`process`]: running a command with its output in the build log
//! - [`upload`]: artifacts to the master over streaming HTTP
//! - [`machine`]: what this machine is (architecture, tools, apt mirror)
//! - [`rootfs_cache`]: per project, the last mmdebstrap root file system and the key of its inputs
//! - [`register`]: `kiln-slave register`, enrolment with a registration token
//! - [`tls`]: how the master's certificate is verified (system roots, `--ca`, `--ca-sha256`)

pub mod apt_cache;
pub mod backend;
pub mod boot;
pub mod capabilities;
pub mod cgroup;
pub mod connection;
pub mod events;
pub mod fetch;
pub mod git_cache;
pub mod git_objects;
pub mod git_refs;
pub mod leftovers;
pub mod machine;
pub mod outbox;
pub mod process;
pub mod recipe;
pub mod record;
pub mod register;
pub mod rootfs_cache;
pub mod runner;
pub mod sandbox;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod tree;
pub mod upload;

pub use connection::run;
