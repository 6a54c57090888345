pub mod ansi;
pub mod deliveries;
pub mod live_status;
pub mod log_text;
pub mod log_view;
pub mod record;
mod regex;
pub mod settings_form;
pub mod state_badge;
pub mod subscriptions;
pub mod templates_editor;

/// "12.3 s", "4 min 05 s". (Integer arithmetic: the console formats no floats, which keeps
/// the float formatting code out of the wasm.)
pub fn duration(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let (Some(a), Some(b)) = (from, to) else {
        return String::new();
    };
    let ms = (b - a).num_milliseconds().max(0);
    if ms < 59_950 {
        let tenths = (ms + 50) / 100;
        format!("{}.{} s", tenths / 10, tenths % 10)
    } else {
        let s = ms / 1000;
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

/// "2026-11-26 14:02:07 UTC" (without chrono's strftime machinery, which is large in wasm).
pub fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    use chrono::{Datelike, Timelike};
    t.map(|t| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    })
    .unwrap_or_default()
}

pub fn short(commit: &Option<String>) -> String {
    commit
        .as_deref()
        .map(|c| c.chars().take(10).collect())
        .unwrap_or_default()
}

/// A size for people: "512 B", "1.5 KiB", "3.0 MiB", "1.2 GiB" (one decimal above bytes).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Tenths of the unit, rounded half up; a value that rounds to 1024.0 shows in the next unit.
    let mut unit = 0;
    let mut div: u128 = 1024;
    let tenths = |div: u128| (u128::from(bytes) * 10 + div / 2) / div;
    while tenths(div) >= 10240 && unit + 1 < UNITS.len() {
        div *= 1024;
        unit += 1;
    }
    let t = tenths(div);
    format!("{}.{} {}", t / 10, t % 10, UNITS[unit])
}

/// "42 s", "3 min 05 s", "1 h 02 min": how long something has been going.
pub fn elapsed(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

#[derive(yew::Properties, PartialEq)]
pub struct CopyProps {
    pub text: yew::AttrValue,
    /// What is copied, for screen readers ("sha256 of x.img").
    #[prop_or_default]
    pub label: yew::AttrValue,
}

/// A "Copy" button that puts `text` on the clipboard and says so.
#[yew::function_component(CopyButton)]
pub fn copy_button(p: &CopyProps) -> yew::Html {
    use yew::prelude::*;
    let done = use_state(|| false);
    let onclick = {
        let (text, done) = (p.text.clone(), done.clone());
        Callback::from(move |_: MouseEvent| {
            let (text, done) = (text.clone(), done.clone());
            if let Some(w) = web_sys::window() {
                let promise = w.navigator().clipboard().write_text(&text);
                wasm_bindgen_futures::spawn_local(async move {
                    if wasm_bindgen_futures::JsFuture::from(promise).await.is_ok() {
                        done.set(true);
                    }
                });
            }
        })
    };
    let label = if p.label.is_empty() {
        None
    } else {
        Some(format!("Copy {}", p.label))
    };
    html! {
        <button type="button" class="copy quiet-light" {onclick} aria-label={label}>
            { if *done { "Copied" } else { "Copy" } }
        </button>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human_size(1024 * 1024 - 1), "1.0 MiB", "never 1024.0 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024 / 2), "2.5 GiB");
        assert!(!human_size(1).contains("0.0"));
    }

    #[test]
    fn elapsed_times_tick_in_seconds() {
        assert_eq!(elapsed(0), "0 s");
        assert_eq!(elapsed(59), "59 s");
        assert_eq!(elapsed(65), "1 min 05 s");
        assert_eq!(elapsed(3720), "1 h 02 min");
        assert_eq!(elapsed(-3), "0 s");
    }
}
