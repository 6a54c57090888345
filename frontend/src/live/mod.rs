//! The console's live layer: one WebSocket per tab (`/ws/console`) shared by every page through
//! Yew's context, carrying subscriptions by topic (the queue; a build's log). Pages only call the
//! hooks; they never see the socket or a frame.
//!
//! - `socket`: the WebSocket: opens, reopens with backoff, encodes and decodes with the shared codec
//! - `topics`: which topics are followed and by how many, so the first subscriber subscribes and
//!   the last one unsubscribes
//! - `dedup`: which lines of a log chunk are new (trims what a resubscription resends, spots gaps)
//! - `queue`: the live queue, a pure reducer of events
//! - `log`: one followed log: its lines (opened at its tail; earlier lines loaded on demand and
//!   put before the first one) and its end
//! - `hub`: the above put together without I/O: subscriptions and socket events in, requests and
//!   changed topics out; resubscribes everything after a reconnect or a `Resync`
//! - `provider`: `LiveProvider` at the app root, and the hooks `use_queue`, `use_log`,
//!   `use_connection` (and `use_live`, for the shell to suspend the connection when signed out)
//!
//! All but `socket` and `provider` are plain Rust, tested natively (`cargo test -p kiln-frontend`).

mod dedup;
mod hub;
mod log;
mod provider;
mod queue;
mod socket;
mod topics;

pub use log::{LogBuf, EARLIER_LINES, TAIL_LINES};
pub use provider::{use_connection, use_live, use_log, use_queue, LiveProvider};
pub use topics::LogStart;
