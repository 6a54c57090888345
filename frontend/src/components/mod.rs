pub mod ansi;
pub mod live_status;
pub mod log_view;
pub mod settings_form;
pub mod state_badge;

/// "12.3 s", "4 min 05 s".
pub fn duration(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let (Some(a), Some(b)) = (from, to) else {
        return String::new();
    };
    let s = (b - a).num_milliseconds().max(0) as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{} min {:02} s", (s / 60.0) as u64, (s as u64) % 60)
    }
}

pub fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

pub fn short(commit: &Option<String>) -> String {
    commit
        .as_deref()
        .map(|c| c.chars().take(10).collect())
        .unwrap_or_default()
}
