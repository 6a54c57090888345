//! The Kiln slave as a library; `main.rs` parses the command line and calls [`run`].
//!
//! - [`connection`]: the one WebSocket to the master (hello, heartbeats, reconnect with backoff)
//! - [`outbox`]: what each held build still owes the master (log lines, start, result)
//! - [`job`]: the life of one build on this machine
//! - [`fetch`]: shallow git fetch of the configuration branch
//! - [`recipe`]: the branch's `kiln.toml`
//! - [`backend`]: one file per image tool, behind one trait
//! - [`process`]: running a command in its own process group, its output into the log
//! - [`upload`]: artifacts to the master over streaming HTTP
//! - [`machine`]: what this machine is (architecture, tools, apt mirror)

pub mod backend;
pub mod connection;
pub mod fetch;
pub mod job;
pub mod machine;
pub mod outbox;
pub mod process;
pub mod recipe;
pub mod settings;
pub mod upload;

pub use connection::run;
