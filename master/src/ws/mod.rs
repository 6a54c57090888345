//! The master's WebSockets: `/ws/slave` for build machines, `/ws/console` for browsers.

pub mod console;
pub mod holdings;
pub mod slave;
