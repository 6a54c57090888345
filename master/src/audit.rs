//! The audit log: who did what, when and from where (sign-ins, refused ones, builds started,
//! cancelled and released, settings, teams, mappings, tokens, slaves). Recording never fails a
//! request: a write that fails is logged.

use crate::db::accounts::{self, Audit};
use crate::state::AppState;
use std::net::IpAddr;

pub async fn record(
    st: &AppState,
    actor: Option<&str>,
    action: &str,
    target: Option<String>,
    address: Option<IpAddr>,
    detail: serde_json::Value,
) {
    let entry = Audit {
        actor,
        action,
        target,
        address: address.map(|a| a.to_string()),
        detail,
    };
    if let Err(e) = accounts::audit(&st.db, entry).await {
        tracing::warn!(action, "cannot write the audit log: {e}");
    }
}
