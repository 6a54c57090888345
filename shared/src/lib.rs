//! `kiln-shared`: everything that crosses a wire between the master, its slaves and the web
//! console. It compiles for native targets and for `wasm32-unknown-unknown` alike, so it holds no
//! runtime, HTTP or database code.
//!
//! - [`codec`] is the only module that knows about bincode.
//! - [`frames`] are the messages on `/ws/slave` and `/ws/console`.
//! - [`api`] are the JSON bodies of the REST API.
//! - [`state`] is the build state machine.
//! - [`branch_url`] validates configuration branch URLs (the master refuses bad ones, the console
//!   can show the same message before it submits).

pub mod api;
pub mod branch_url;
pub mod codec;
#[cfg(feature = "config")]
pub mod config;
pub mod frames;
pub mod ids;
pub mod log_rules;
pub mod notify;
pub mod record;
pub mod state;
pub mod ts;

pub use ids::{BuildId, SlaveId};
pub use state::BuildState;
